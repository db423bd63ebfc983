"""A memory backend that fails on purpose: a share of ops refused, calls that raise, ops of a
chosen kind refused a number of times. The kernel's rules are the memory backend's own."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from lvsmon.ipvs.errors import ErrorKind, OpError, OpResult
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import Table
from lvsmon.ipvs.ops import Op


class FaultyBackend(MemoryBackend):
    name = "faulty"

    def __init__(self, *, seed: int = 0) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.fail_share = 0.0  # of ops: refused with an error result
        self.raise_share = 0.0  # of calls (apply and dump): raise RuntimeError
        self.refuse: Callable[[Op], bool] = lambda op: False  # refuse ops like these...
        self.refusals_left = 0  # ...this many times
        self.faults = 0

    def _maybe_raise(self) -> None:
        if self.raise_share and self.rng.random() < self.raise_share:
            self.faults += 1
            raise RuntimeError("injected backend crash")

    async def dump(self) -> Table:
        self._maybe_raise()
        return await super().dump()

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        self._maybe_raise()
        results: list[OpResult] = []
        for op in ops:
            refused = self.refusals_left > 0 and self.refuse(op)
            if refused:
                self.refusals_left -= 1
            if refused or (self.fail_share and self.rng.random() < self.fail_share):
                self.faults += 1
                results.append(OpResult(op, OpError(ErrorKind.OTHER, "injected failure")))
            else:
                results.extend(await super().apply([op]))
        return results
