"""A dialogue over UDP (sip): the opening is one datagram, every datagram back is one `feed`.

UDP loses packets, and one lost request must not take a real out of the pool, so the opening is
sent again after 0.5 s, then 1 s, 2 s... (SIP's own T1 doubling, RFC 3261 17.1.1.2) until the
check's one deadline, which `run_check` holds. An ICMP port unreachable ends the check at once
("connection refused"), as a closed TCP port does. The datagrams back count against the
dialogue's `budget` of the peer's bytes: past it the check is down ("response too large").
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

from lvsmon.checks.base import CheckResult, describe_error, received_counter
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.step import Step

FIRST_RESEND_S: Final = 0.5
MAX_DATAGRAM: Final = 65535


class _Driver(asyncio.DatagramProtocol):
    def __init__(self, dialogue: Dialogue, done: asyncio.Future[CheckResult]) -> None:
        self.dialogue = dialogue
        self.done = done
        self.transport: asyncio.DatagramTransport | None = None
        self.room = dialogue.budget  # the peer's bytes the dialogue may still be fed
        self.received = received_counter()  # the check's count (base.Received): the lag rule

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector's datagram transport does not subclass DatagramTransport in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.done.done():
            return
        self.received.count += len(data)
        self.room -= len(data)
        if self.room < 0:  # a peer flooding datagrams the dialogue ignores
            self.done.set_result(self.dialogue.over_budget())
            return
        outcome = self.dialogue.feed(data)
        if isinstance(outcome, CheckResult):
            self.done.set_result(outcome)
        elif outcome and self.transport is not None:
            self.transport.sendto(outcome)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_result(CheckResult(False, f"{self.dialogue.step}: {describe_error(exc)}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done() and exc is not None:
            self.done.set_result(CheckResult(False, f"{self.dialogue.step}: {describe_error(exc)}"))


async def converse_datagram(
    dialogue: Dialogue, family: int, addr: tuple[str, int], step: Step
) -> CheckResult:
    """Run `dialogue` over UDP to `addr`; the caller's deadline bounds it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[CheckResult] = loop.create_future()
    step.name = dialogue.step
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Driver(dialogue, done), remote_addr=addr, family=family
    )
    try:
        opening = dialogue.opening()
        wait = FIRST_RESEND_S
        while True:
            transport.sendto(opening)
            try:
                return await asyncio.wait_for(asyncio.shield(done), wait)
            except TimeoutError:
                wait *= 2
    finally:
        transport.abort()
