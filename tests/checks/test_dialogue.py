"""The three drivers of a sans-IO dialogue (prober, TLS stream, datagram) run one and the same
dialogue to the same verdict: opening, replies, half-close, farewell, deadlines, garbage."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest
import trustme

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.datagram import converse_datagram
from lvsmon.checks.dialogue import MAX_LINE, Dialogue, LineBuffer, LineTooLong, Outcome, shown
from lvsmon.checks.prober import DialoguePlan, prober_for
from lvsmon.checks.step import Step
from lvsmon.checks.stream import converse
from tests.helpers import closed_port


class PingPong(Dialogue):
    """Greeting "+OK", then PING → PONG; the farewell says BYE."""

    farewell = b"BYE\r\n"

    def __init__(self, *, opening: bytes = b"", shut_wr: bool = False) -> None:
        self.lines = LineBuffer()
        self.step = "pingpong greeting"
        self._opening = opening
        self.shut_wr = shut_wr

    def opening(self) -> bytes:
        return self._opening

    def feed(self, data: bytes) -> Outcome:
        try:
            lines = self.lines.lines(data)
        except LineTooLong as exc:
            return CheckResult(False, f"pingpong: {exc}")
        for line in lines:
            if self.step == "pingpong greeting":
                if not line.startswith(b"+OK"):
                    return CheckResult(False, f"pingpong: greeting: {shown(line)}")
                self.step = "pingpong ping"
                return b"PING\r\n"
            return CheckResult(line == b"PONG", f"pingpong: {shown(line)}")
        return None


class LineServer:
    """A loopback TCP server: greets, answers PING, records every line and whether EOF came."""

    def __init__(self, greeting: bytes = b"+OK hello\r\n", answer: bool = True) -> None:
        self.greeting = greeting
        self.answer = answer
        self.lines: list[bytes] = []
        self.eofs = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.greeting:
            writer.write(self.greeting)
        try:
            while line := await reader.readline():
                self.lines.append(line.rstrip(b"\r\n"))
                if line.startswith(b"PING") and self.answer:
                    writer.write(b"PONG\r\n")
                    await writer.drain()
            self.eofs += 1
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def line_server() -> AsyncIterator[tuple[LineServer, int]]:
    ls = LineServer()
    ls.server = await asyncio.start_server(ls.handle, "127.0.0.1", 0)
    async with ls.server:
        yield ls, ls.server.sockets[0].getsockname()[1]


def _spec(port: int, timeout: float = 2.0) -> CheckSpec:
    return CheckSpec(kind="negotiate", host="127.0.0.1", port=port, timeout=timeout)


async def _probe(port: int, dialogue: Dialogue, timeout: float = 2.0) -> CheckResult:
    plan = DialoguePlan(_spec(port, timeout), socket.AF_INET, ("127.0.0.1", port), lambda: dialogue)
    return await prober_for().probe(plan)


def test_line_buffer_splits_crlf_and_lf_and_keeps_the_partial_line() -> None:
    buf = LineBuffer()
    assert buf.lines(b"a\r\nb\nc") == [b"a", b"b"]
    assert buf.partial == b"c"
    assert buf.lines(b"d\r\n") == [b"cd"]


def test_line_buffer_refuses_an_endless_line() -> None:
    buf = LineBuffer()
    with pytest.raises(LineTooLong):
        buf.lines(b"x" * (MAX_LINE + 1))


def test_shown_is_printable_and_short() -> None:
    assert shown(b"-ERR \x00bad\xff\r\n") == "-ERR ?bad\ufffd"
    assert shown(b"y" * 500).endswith("...")


async def test_prober_runs_the_dialogue_and_sends_the_farewell(
    line_server: tuple[LineServer, int],
) -> None:
    server, port = line_server
    result = await _probe(port, PingPong())
    assert (result.ok, result.reason) == (True, "pingpong: PONG")
    await asyncio.sleep(0.1)
    assert server.lines == [b"PING", b"BYE"]


async def test_prober_sends_the_opening_and_half_closes(
    line_server: tuple[LineServer, int],
) -> None:
    server, port = line_server
    server.greeting = b""
    result = await _probe(port, PingPong(opening=b"HELLO\r\n", shut_wr=True))
    # the server saw EOF right after the opening, so it never greeted: the dialogue hears EOF
    assert (result.ok, result.reason) == (
        False,
        "pingpong greeting: connection closed by the server",
    )
    assert server.lines == [b"HELLO"]
    assert server.eofs == 1


async def test_prober_names_the_step_a_deadline_struck(
    line_server: tuple[LineServer, int],
) -> None:
    server, port = line_server
    server.answer = False
    step = Step()
    spec = _spec(port, 0.3)
    plan = DialoguePlan(spec, socket.AF_INET, ("127.0.0.1", port), PingPong)
    started = time.monotonic()
    result = await prober_for().probe(plan, step)
    assert (result.ok, result.reason) == (False, "timeout after 0.3s during pingpong ping")
    assert 0.25 < time.monotonic() - started < 1.5


async def test_prober_judges_garbage() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await _probe(port, PingPong())
    assert (result.ok, result.reason) == (False, "pingpong: greeting: HTTP/1.1 400 Bad Request")


async def test_prober_refused() -> None:
    result = await _probe(closed_port(), PingPong())
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_tls_stream_runs_the_same_dialogue(tls_ca: trustme.CA) -> None:
    ls = LineServer()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("mail.example.test").configure_cert(ctx)
    server = await asyncio.start_server(ls.handle, "127.0.0.1", 0, ssl=ctx)
    async with server:
        port = server.sockets[0].getsockname()[1]
        step = Step()
        result = await converse(PingPong(), socket.AF_INET, ("127.0.0.1", port), step, tls=True)
        assert (result.ok, result.reason) == (True, "pingpong: PONG")
        assert step.name == "pingpong ping"
        await asyncio.sleep(0.1)
    assert ls.lines == [b"PING", b"BYE"]


async def test_tls_stream_against_a_plain_server_fails_in_tls(
    line_server: tuple[LineServer, int],
) -> None:
    _, port = line_server
    with pytest.raises(ssl.SSLError):
        await converse(PingPong(), socket.AF_INET, ("127.0.0.1", port), Step(), tls=True)


class Echo(asyncio.DatagramProtocol):
    """Drops the first `drop` datagrams, then answers each with "+OK" and, for PING, "PONG"."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.seen = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector's datagram transport does not subclass DatagramTransport in 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.seen += 1
        if self.seen <= self.drop or self.transport is None:
            return
        self.transport.sendto(b"+OK\r\n" if data == b"HELLO\r\n" else b"PONG\r\n", addr)


async def test_datagram_resends_the_opening_until_an_answer() -> None:
    loop = asyncio.get_running_loop()
    transport, echo = await loop.create_datagram_endpoint(
        lambda: Echo(drop=1), local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        started = time.monotonic()
        async with asyncio.timeout(3):
            result = await converse_datagram(
                PingPong(opening=b"HELLO\r\n"), socket.AF_INET, ("127.0.0.1", port), Step()
            )
        assert (result.ok, result.reason) == (True, "pingpong: PONG")
        assert echo.seen == 3  # lost HELLO, resent HELLO, PING
        assert 0.4 < time.monotonic() - started < 2.0
    finally:
        transport.close()


async def test_datagram_to_a_closed_port_is_refused_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    async with asyncio.timeout(3):
        result = await converse_datagram(
            PingPong(opening=b"HELLO\r\n"), socket.AF_INET, ("127.0.0.1", port), Step()
        )
    assert (result.ok, result.reason) == (False, "pingpong greeting: connection refused")
    assert time.monotonic() - started < 0.4
