"""The three dialogue drivers take at most a budget of a peer's bytes per check (issue 21, class 1).

A real that streams without end must not make a check hold, or parse, more than a fixed amount
of its bytes, whatever the dialogue would still read (one that skips untagged IMAP lines, ignores
unverifiable RADIUS replies or waits for a line that never matches): the prober (plain TCP), the
stream driver (TLS) and the datagram driver (UDP) stop feeding it at its `budget` and end the
check down with "response too large", long before the deadline. Before, each streamed to the
deadline (or, for http, judged a body it took 6 MiB of chunk framing to fill).

Each peer is a thread on loopback that sends as fast as the check reads, until the check hangs
up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.budget import PEER_BYTES
from lvsmon.checks.datagram import converse_datagram
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.prober import DialoguePlan, prober_for
from lvsmon.checks.step import Step
from lvsmon.checks.stream import converse

DEADLINE = 5.0
WITHIN = 2.5  # the budget is spent in milliseconds on loopback; the deadline is twice as far
TOO_LARGE = f"response too large (over {PEER_BYTES // 1024} KiB)"
FLOOD = b"* x\r\n" * 13000  # about 64 KiB of untagged IMAP lines


class Sink(Dialogue):
    """Needs more, always: counts what it is fed."""

    step = "sink"

    def __init__(self) -> None:
        self.fed = 0

    def opening(self) -> bytes:
        return b"?"  # over UDP, the peer learns where to flood from it

    def feed(self, data: bytes) -> Outcome:
        self.fed += len(data)
        return None


Talk = Callable[[socket.socket], None]


def _stream(sock: socket.socket, opening: bytes, wait_for: bytes | None, chunk: bytes) -> None:
    """Send `opening`, read up to `wait_for` (the check's command), then `chunk` forever."""
    sock.sendall(opening)
    if wait_for is not None:
        seen = b""
        while wait_for not in seen:
            data = sock.recv(4096)
            if not data:
                return
            seen += data
    while True:
        sock.sendall(chunk)


@contextlib.contextmanager
def tcp_peer(talk: Talk, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A loopback TCP server running `talk` on each connection (over TLS if given)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    threads: list[threading.Thread] = []

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(DEADLINE * 2)
            if tls is None:
                talk(conn)
                return
            with tls.wrap_socket(conn, server_side=True) as wrapped:
                talk(wrapped)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                thread = threading.Thread(target=serve, args=(conn,), daemon=True)
                threads.append(thread)
                thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield port
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        acceptor.join(5)
        for thread in threads:
            thread.join(DEADLINE * 2)


@contextlib.contextmanager
def udp_flood(datagram: bytes) -> Iterator[int]:
    """A loopback UDP peer that answers the first datagram with `datagram`, again and again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(DEADLINE)
    stop = threading.Event()

    def flood() -> None:
        with contextlib.suppress(OSError):
            _, client = sock.recvfrom(65535)
            while not stop.is_set():
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.sendto(datagram, client)
                time.sleep(0.0002)  # loopback drops what the check cannot take: no need to race

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@pytest.fixture(scope="module")
def tls_server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def spec(port: int, **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "host": "127.0.0.1",
        "port": port,
        "timeout": DEADLINE,
    }
    fields.update(kw)
    return CheckSpec(**fields)


async def timed(check: Any) -> tuple[CheckResult, float]:
    started = time.monotonic()
    async with asyncio.timeout(DEADLINE + 1):
        result = await check
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.05)  # a transport closes its socket on the loop's next turns
    return result, elapsed


def assert_too_large(result: CheckResult, elapsed: float, step: str) -> None:
    assert not result.ok
    assert result.reason == f"{step}: {TOO_LARGE}" or (
        step == "http" and "response too large" in result.reason
    ), result
    assert not result.timed_out
    assert elapsed < WITHIN, (elapsed, result)


# ---- the prober (plain TCP) -------------------------------------------------------------------


async def test_prober_stops_feeding_at_the_budget() -> None:
    sink = Sink()
    with tcp_peer(lambda s: _stream(s, b"", None, b"x" * 65536)) as port:
        plan = DialoguePlan(spec(port), socket.AF_INET, ("127.0.0.1", port), lambda: sink)
        result, elapsed = await timed(prober_for().probe(plan))
    assert_too_large(result, elapsed, "sink")
    assert 0 < sink.fed <= PEER_BYTES


async def test_imap_untagged_flood_on_the_prober() -> None:
    talk = lambda s: _stream(s, b"* OK hi\r\n", b"LOGIN", FLOOD)  # noqa: E731
    with tcp_peer(talk) as port:
        result, elapsed = await timed(run_check(spec(port, service="imap", login="u", passwd="p")))
    assert_too_large(result, elapsed, "imap login")


async def test_http_chunk_framing_flood_on_the_prober() -> None:
    # 1-byte chunks: the 1 MiB body the parser keeps would take 6 MiB of framing; the parser's
    # framing bound (64 KiB) ends it before the driver's budget (1280 KiB)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    talk = lambda s: _stream(s, head, b"\r\n\r\n", b"1\r\nx\r\n" * 10000)  # noqa: E731
    with tcp_peer(talk) as port:
        result, elapsed = await timed(run_check(spec(port, service="http")))
    assert not result.ok
    assert result.reason == "http: response too large (chunk framing over 64 KiB)"
    assert elapsed < WITHIN * 2


# ---- the stream driver (TLS) --------------------------------------------------------------------


async def test_tls_stream_stops_feeding_at_the_budget(tls_server_context: ssl.SSLContext) -> None:
    sink = Sink()
    talk = lambda s: _stream(s, b"", None, b"x" * 16384)  # noqa: E731
    with tcp_peer(talk, tls_server_context) as port:
        conversation = converse(sink, socket.AF_INET, ("127.0.0.1", port), Step(), tls=True)
        result, elapsed = await timed(conversation)
    assert_too_large(result, elapsed, "sink")
    assert 0 < sink.fed <= PEER_BYTES


async def test_imaps_untagged_flood(tls_server_context: ssl.SSLContext) -> None:
    talk = lambda s: _stream(s, b"* OK hi\r\n", b"LOGIN", FLOOD)  # noqa: E731
    with tcp_peer(talk, tls_server_context) as port:
        check = run_check(spec(port, service="imaps", login="u", passwd="p"))
        result, elapsed = await timed(check)
    assert_too_large(result, elapsed, "imaps login")


# ---- the datagram driver (UDP) ------------------------------------------------------------------


async def test_datagram_driver_stops_feeding_at_the_budget() -> None:
    sink = Sink()
    with udp_flood(b"x" * 60000) as port:
        conversation = converse_datagram(sink, socket.AF_INET, ("127.0.0.1", port), Step())
        result, elapsed = await timed(conversation)
    assert_too_large(result, elapsed, "sink")
    assert 0 < sink.fed <= PEER_BYTES


async def test_radius_unverifiable_replies_flood() -> None:
    # a well-formed Access-Accept of 4096 bytes signed with another secret: each is ignored
    attrs = (bytes([18, 255]) + b"x" * 253) * 16
    reply = bytes([2, 0]) + (20 + len(attrs)).to_bytes(2, "big") + b"\0" * 16 + attrs
    with udp_flood(reply) as port:
        fields = {"login": "u", "passwd": "p", "secret": "s", "protocol": "udp"}
        check = run_check(spec(port, service="radius", **fields))
        result, elapsed = await timed(check)
    assert not result.ok
    assert result.reason.endswith(TOO_LARGE), result
    assert elapsed < WITHIN, (elapsed, result)
