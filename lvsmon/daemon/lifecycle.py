"""The daemon as parts started in order and stopped in reverse under one time bound.

A part whose start was begun is stopped, even if its start was cancelled half-way (TERM during
start-up): each part's stop copes with a partial start. A stop that fails or overruns is logged
and the next part is stopped anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("lvsmon")


async def _nothing(*_args: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[float], Awaitable[None]] = _nothing  # gets the seconds left of the bound


class Lifecycle:
    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts
        self._begun: list[Part] = []

    async def start(self) -> None:
        """Start every part in order; an exception stops the sequence (the caller stops what
        was begun)."""
        for part in self.parts:
            self._begun.append(part)
            await part.start()

    async def stop(self, bound_s: float) -> None:
        deadline = time.monotonic() + bound_s
        while self._begun:
            part = self._begun.pop()
            left = max(0.1, deadline - time.monotonic())
            try:
                async with asyncio.timeout(left):
                    await part.stop(left)
            except TimeoutError:
                log.error("stop: %s did not finish within the stop bound", part.name)
            except Exception:
                log.exception("stop: %s failed", part.name)
