"""A dialogue over asyncio's stream transports: TLS (https, pops, imaps) and resolved host names.

The plain-TCP checks run on the `prober` instead; both drive the same `Dialogue`, so they speak
and judge alike. The deadline is not ours: `run_check` wraps the whole exchange (connect, TLS,
dialogue) in one `asyncio.timeout`, and the `finally` here closes the socket when it fires, so no
I/O outlives the check. The dialogue is fed at most its `budget` of the peer's bytes (after TLS):
past it the check is down and the connection aborted.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from lvsmon.checks.base import CheckResult, describe_error, received_counter
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.step import Step
from lvsmon.checks.tlsverify import context_for


def tls_context() -> ssl.SSLContext:
    """The client TLS context of `sslverify = no` (the default): no certificate or host name
    checks (ldirectord checks no host name, but Debian 12's verifies the chain:
    docs/compatibility.md D18); the verifying ones are checks/tlsverify.py's."""
    return context_for("no", "")


class _Driver(asyncio.Protocol):
    """Feeds the dialogue what arrives, writes what it answers, resolves `done` at the verdict."""

    __slots__ = ("dialogue", "done", "received", "room", "step", "transport")

    def __init__(self, dialogue: Dialogue, done: asyncio.Future[CheckResult], step: Step) -> None:
        self.dialogue = dialogue
        self.done = done
        self.step = step
        self.transport: asyncio.Transport | None = None
        self.room = dialogue.budget  # the peer's bytes the dialogue may still be fed
        self.received = received_counter()  # the check's count (base.Received): the lag rule

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.step.name = self.dialogue.step
        opening = self.dialogue.opening()
        if opening:
            transport.write(opening)
        if self.dialogue.shut_wr and transport.can_write_eof():
            transport.write_eof()

    def _outcome(self, outcome: bytes | CheckResult | None) -> None:
        self.step.name = self.dialogue.step
        if outcome is None or self.done.done():
            return
        transport = self.transport
        assert transport is not None
        if isinstance(outcome, bytes):
            if outcome:
                transport.write(outcome)
            return
        if self.dialogue.farewell:
            transport.write(self.dialogue.farewell)
        self.done.set_result(outcome)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.received.count += len(data)
        self.room -= len(data)
        if self.room < 0:
            # the verdict, and no more reading: what the peer still streams is not taken
            self.done.set_result(self.dialogue.over_budget())
            if self.transport is not None:
                self.transport.abort()
            return
        self._outcome(self.dialogue.feed(data))

    def eof_received(self) -> bool:
        if not self.done.done():
            self._outcome(self.dialogue.feed_eof())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self._outcome(self.dialogue.feed_eof())
            else:
                reason = f"{self.dialogue.step}: {describe_error(exc)}"
                self.done.set_result(CheckResult(False, reason))


async def converse(
    dialogue: Dialogue,
    family: int,
    addr: tuple[str, int],
    step: Step,
    *,
    tls: bool = False,
    server_hostname: str = "",
    context: ssl.SSLContext | None = None,
) -> CheckResult:
    """Connect to `addr`, run `dialogue` to its verdict (over TLS if asked); the caller's deadline
    bounds it all. `server_hostname` is the SNI name ("" sends none), and the name verified by
    a `context` that checks names."""
    loop = asyncio.get_running_loop()
    step.name = "connect"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    done: asyncio.Future[CheckResult] = loop.create_future()
    transport: asyncio.Transport | None = None
    if tls:
        step.name = "tls"
    try:
        transport, _ = await loop.create_connection(
            lambda: _Driver(dialogue, done, step),
            sock=sock,
            ssl=(context or tls_context()) if tls else None,
            server_hostname=server_hostname if tls else None,  # "": no SNI
        )
        result = await done
    finally:
        if transport is None:
            sock.close()
        elif done.done() and not done.cancelled() and done.exception() is None:
            transport.close()
        else:
            transport.abort()
    return result
