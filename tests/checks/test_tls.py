"""lvsmon/checks/tls.py: TLS over memory BIOs, run by the unchanged prober, loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

from lvsmon.checks import CheckResult, CheckSpec
from lvsmon.checks.budget import PEER_BYTES
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.http import HttpDialogue
from lvsmon.checks.http_request import build_target
from lvsmon.checks.pop import PopDialogue
from lvsmon.checks.prober import DialoguePlan, ProbePlan, prober_for
from lvsmon.checks.tls import (
    HANDSHAKE_BYTES,
    STALE_S,
    SessionCache,
    SessionEntry,
    TlsDialogue,
    TlsLayer,
    client_context,
    session_key,
)
from tests.checks.conftest import SERVER_NAME, serve

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def server_context(ca: trustme.CA, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SERVER_NAME, "127.0.0.1").configure_cert(ctx)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


@contextlib.asynccontextmanager
async def tls_web(ca: trustme.CA, version: ssl.TLSVersion | None = None) -> AsyncIterator[Any]:
    ctx = server_context(ca, version)
    sni: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sni.append(name)

    ctx.sni_callback = record_sni
    async with serve("127.0.0.1", ctx) as server:
        server.seen.sni = sni
        yield server


@contextlib.asynccontextmanager
async def tcp_server(handle: Handler, ctx: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


class Runs:
    """A plan whose dialogues are kept, to look at their layer afterwards."""

    def __init__(
        self, port: int, inner: Callable[[CheckSpec], Dialogue] | None = None, **kw: Any
    ) -> None:
        self.spec = CheckSpec(
            kind="negotiate",
            service="https",
            host="127.0.0.1",
            port=port,
            timeout=kw.pop("timeout", 5),
            **kw,
        )
        self.made: list[TlsDialogue] = []
        self.inner = inner

    def plan(
        self, cache: SessionCache | None = None, context: ssl.SSLContext | None = None
    ) -> ProbePlan:
        target = build_target(self.spec)
        key = session_key(self.spec.host, self.spec.port, target.server_hostname)

        def make() -> Dialogue:
            inner = self.inner(self.spec) if self.inner else HttpDialogue(self.spec, target.request)
            made = TlsDialogue(inner, target.server_hostname, key, cache, context)
            self.made.append(made)
            return made

        return DialoguePlan(self.spec, socket.AF_INET, (self.spec.host, self.spec.port), make)

    async def check(self, cache: SessionCache | None = None, **kw: Any) -> CheckResult:
        return await prober_for().probe(self.plan(cache, **kw))

    @property
    def layer(self) -> TlsLayer:
        return self.made[-1].layer


async def test_https_on_the_prober(tls_ca: trustme.CA) -> None:
    async with tls_web(tls_ca) as server:
        runs = Runs(server.port, request="/ok", receive="still alive")
        result = await runs.check()
    assert (result.ok, result.reason) == (True, "http: status 200")
    assert server.seen.targets == ["/ok"]
    assert server.seen.sni == [None]  # no virtualhost: no SNI, as today
    dialogue = runs.made[0]
    assert dialogue.layer.version() == "TLSv1.3"
    assert dialogue.farewell  # the close_notify, sent as a courtesy after the verdict
    # the count is of ciphertext: the handshake (certificate included) and the records
    assert 1000 < result.received <= dialogue.budget
    assert dialogue.budget == HttpDialogue.budget * 9 // 8 + HANDSHAKE_BYTES


async def test_virtualhost_is_the_sni(tls_ca: trustme.CA) -> None:
    async with tls_web(tls_ca) as server:
        result = await Runs(server.port, virtualhost=SERVER_NAME).check()
    assert result.ok, result.reason
    assert server.seen.sni == [SERVER_NAME]
    assert server.seen.hosts == [SERVER_NAME]


async def test_error_status_after_tls(tls_ca: trustme.CA) -> None:
    async with tls_web(tls_ca) as server:
        result = await Runs(server.port, request="/status/503").check()
    assert (result.ok, result.reason) == (False, "http: status 503")


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
)
async def test_the_second_check_resumes(
    tls_ca: trustme.CA, version: ssl.TLSVersion, name: str
) -> None:
    cache = SessionCache()
    async with tls_web(tls_ca, version) as server:
        runs = Runs(server.port, request="/ok")
        first = await runs.check(cache)
        assert first.ok, first.reason
        assert runs.layer.version() == name
        assert (runs.layer.offered, runs.layer.session_reused) == (None, False)
        assert len(cache) == 1  # TLS 1.3: the ticket came after the handshake, with the reply
        for _ in range(3):
            again = await runs.check(cache)
            assert again.ok, again.reason
            assert runs.layer.offered is not None
            assert runs.layer.session_reused
    # a resumed handshake skips the certificate: fewer of the server's bytes
    assert again.received < first.received - 300


async def test_no_session_from_another_context(tls_ca: trustme.CA) -> None:
    cache = SessionCache()
    async with tls_web(tls_ca) as server:
        runs = Runs(server.port)
        assert (await runs.check(cache)).ok
        other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        other.check_hostname, other.verify_mode = False, ssl.CERT_NONE
        result = await runs.check(cache, context=other)  # CPython refuses the session: none
    assert result.ok, result.reason
    assert runs.layer.offered is None
    assert not runs.layer.session_reused


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        await reader.read()
    writer.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await reader.read()
    writer.close()


async def test_garbage_is_a_clean_tls_failure() -> None:
    async with tcp_server(garbage) as port:
        runs = Runs(port)
        result = await runs.check()
    # today's wording for the same server (stream.converse): "tls: wrong version number"
    assert (result.ok, result.reason) == (False, "tls: wrong version number")
    assert result.received == 40  # what was read before the verdict: the garbage


async def test_close_during_the_handshake() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read(65536)  # the ClientHello: one segment on loopback
        writer.close()

    async with tcp_server(closing) as port:
        result = await Runs(port).check()
    assert not result.ok
    # "reset by peer" if the ClientHello was not all read: what the kernel says then
    assert result.reason in (
        "tls: connection closed by the server",
        "tls: connection reset by peer",
    )


async def test_silence_times_out_in_tls() -> None:
    async with tcp_server(silent) as port:
        result = await Runs(port, timeout=0.3).check()
    assert (result.ok, result.reason, result.timed_out) == (
        False,
        "timeout after 0.3s during tls",
        True,
    )


async def test_failed_resumption_makes_the_real_quiet(tls_ca: trustme.CA) -> None:
    cache = SessionCache()
    async with tls_web(tls_ca) as server:
        runs = Runs(server.port)
        assert (await runs.check(cache)).ok
        port = server.port
    key = session_key("127.0.0.1", port, "")
    entry = cache._entries[key]
    assert entry.session is not None
    # the same address and port now answers garbage: the offered session's check fails...
    async with tcp_server(garbage) as other:
        cache._entries[session_key("127.0.0.1", other, "")] = entry
        runs = Runs(other)
        result = await runs.check(cache)
        assert result.reason == "tls: wrong version number"
        assert runs.layer.offered is not None
        # ... and the next is offered nothing for QUIET_S
        await runs.check(cache)
        assert runs.layer.offered is None


async def test_a_timed_out_check_leaves_no_session(tls_ca: trustme.CA) -> None:
    cache = SessionCache()
    async with tls_web(tls_ca) as server:
        runs = Runs(server.port, request="/trickle", timeout=0.3)
        result = await runs.check(cache)
    assert result.timed_out
    assert len(cache) == 0  # taken when offered, put back by a sound verdict only


class Sink(Dialogue):
    """Needs more, always: counts the plaintext it is fed."""

    step = "sink"

    def __init__(self) -> None:
        self.fed = 0

    def opening(self) -> bytes:
        return b"go\r\n"

    def feed(self, data: bytes) -> Outcome:
        self.fed += len(data)
        return None


async def test_a_flood_ends_at_the_budget(tls_ca: trustme.CA) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.readline()
            chunk = b"x" * 65536
            for _ in range(100):
                writer.write(chunk)
                await writer.drain()
        writer.close()

    sinks: list[Sink] = []

    def sink(spec: CheckSpec) -> Dialogue:
        sinks.append(Sink())
        return sinks[-1]

    async with tcp_server(flood, server_context(tls_ca)) as port:
        runs = Runs(port, inner=sink)
        result = await runs.check()
    assert (result.ok, result.reason) == (False, "sink: response too large (over 256 KiB)")
    assert sinks[0].fed <= PEER_BYTES  # the inner's own budget, of plaintext
    assert result.received <= runs.made[0].budget  # the ciphertext's


async def test_pops_server_speaks_first(tls_ca: trustme.CA) -> None:
    said: list[bytes] = []

    async def pop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write(b"+OK ready\r\n")
            while line := await reader.readline():
                said.append(line)
                writer.write(b"+OK\r\n")
                if line == b"QUIT\r\n":
                    break
        writer.close()

    cache = SessionCache()
    async with tcp_server(pop, server_context(tls_ca)) as port:
        runs = Runs(port, inner=lambda spec: PopDialogue("pops", b"user", b"secret"))
        first = await runs.check(cache)
        assert (first.ok, first.reason) == (True, "pops: logged in")
        second = await runs.check(cache)
        assert second.ok, second.reason
        assert runs.layer.session_reused
        for _ in range(50):  # the farewell (QUIT) is sent after the verdict, not awaited
            if said.count(b"QUIT\r\n") == 2:
                break
            await asyncio.sleep(0.01)
    assert said.count(b"USER user\r\n") == 2
    assert said.count(b"QUIT\r\n") == 2


# ---- the session cache on its own


class FakeLayer:
    """What SessionCache.keep reads of a layer."""

    def __init__(self, offered: Any, reused: bool, session: Any, version: str = "TLSv1.3"):
        self.offered = offered
        self.session_reused = reused
        self.session = session
        self._version = version

    def version(self) -> str:
        return self._version


class FakeSession:
    def __init__(self, has_ticket: bool = True, lifetime: int = 300, born: int = 1000) -> None:
        self.has_ticket = has_ticket
        self.id = b"x" * 32
        self.ticket_lifetime_hint = lifetime
        self.time = born


def cache_with_clocks() -> tuple[SessionCache, list[float]]:
    now = [0.0, 1000.0]  # monotonic, wall
    cache = SessionCache(max_entries=3, quiet_s=600, clock=lambda: now[0], wall=lambda: now[1])
    return cache, now


def keep(cache: SessionCache, key: str, layer: FakeLayer, entry: SessionEntry | None) -> None:
    cache.keep(key, layer, entry)  # type: ignore[arg-type]


def test_cache_is_bounded_and_admits_in_place_of_stale_entries() -> None:
    cache, now = cache_with_clocks()
    for key in "abc":
        keep(cache, key, FakeLayer(None, False, FakeSession()), None)
        now[0] += 1
    full = FakeLayer(None, False, FakeSession())
    keep(cache, "d", full, None)  # no room, none stale: d is not admitted (no session read)
    assert len(cache) == 3 and cache.offer("d") is None
    entry = cache.offer("a")
    assert entry is not None
    keep(cache, "a", FakeLayer(entry.session, True, None), entry)  # a is the newest now
    now[0] += STALE_S - 1.5  # b is stale, c and a are not
    keep(cache, "e", FakeLayer(None, False, FakeSession()), None)
    assert cache.offer("b") is None  # b went for e
    keep(cache, "f", FakeLayer(None, False, FakeSession()), None)
    assert len(cache) == 3  # c, a, e: f waits for room (c is not stale yet)
    assert cache.offer("e") is not None and cache.offer("f") is None


def test_stale_entries_go_without_a_full_cache() -> None:
    """Issue 22's soak: the TLS reals a reload removed kept their sessions (~6 KiB each) until
    the cache was full; a put now drops the stale ones at its front (a quiet one waits out its
    quiet time)."""
    now = [0.0, 1000.0]
    cache = SessionCache(max_entries=100, clock=lambda: now[0], wall=lambda: now[1])
    keep(cache, "quiet", FakeLayer(None, False, FakeSession(has_ticket=False)), None)
    for key in "abc":
        keep(cache, key, FakeLayer(None, False, FakeSession()), None)
    now[0] += STALE_S + 1  # a, b and c's reals left the config: never checked again
    keep(cache, "d", FakeLayer(None, False, FakeSession()), None)
    assert len(cache) == 2  # the quiet entry (600 s) and d
    assert cache.offer("a") is None and cache.offer("d") is not None


def test_offer_takes_the_entry_and_a_resumed_check_puts_it_back() -> None:
    cache, _ = cache_with_clocks()
    keep(cache, "a", FakeLayer(None, False, FakeSession()), None)
    entry = cache.offer("a")
    assert entry is not None and len(cache) == 0  # a check that dies leaves nothing
    keep(cache, "a", FakeLayer(entry.session, True, None), entry)  # no session read
    assert cache.offer("a") is entry


def test_no_ticket_no_session_and_quiet() -> None:
    cache, now = cache_with_clocks()
    keep(cache, "a", FakeLayer(None, False, FakeSession(has_ticket=False)), None)
    assert cache.offer("a") is None
    assert len(cache) == 1  # quiet: no session read per check
    now[0] += 601
    assert cache.offer("a") is None
    assert len(cache) == 0


def test_tls12_session_id_is_kept() -> None:
    cache, _ = cache_with_clocks()
    keep(cache, "a", FakeLayer(None, False, FakeSession(has_ticket=False), "TLSv1.2"), None)
    assert cache.offer("a") is not None


def test_two_refusals_in_a_row_make_it_quiet() -> None:
    cache, _ = cache_with_clocks()
    keep(cache, "a", FakeLayer(None, False, FakeSession()), None)
    entry = cache.offer("a")
    keep(cache, "a", FakeLayer(entry.session if entry else None, False, FakeSession()), entry)
    entry = cache.offer("a")
    assert entry is not None and entry.strikes == 1  # refused once: a fresh session to try
    keep(cache, "a", FakeLayer(entry.session, False, FakeSession()), entry)
    assert cache.offer("a") is None
    assert len(cache) == 1


def test_expired_ticket_is_not_offered() -> None:
    cache, now = cache_with_clocks()
    keep(cache, "a", FakeLayer(None, False, FakeSession(lifetime=300, born=1000)), None)
    now[1] = 1300.0
    assert cache.offer("a") is None


def test_layer_alone_in_memory(tls_ca: trustme.CA) -> None:
    """TlsLayer's contract without the prober: bytes in, bytes out, against a server in memory."""
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_server = server_context(tls_ca).wrap_bio(s_in, s_out, server_side=True)
    layer = TlsLayer("", None, client_context())
    to_server = layer.start()
    assert to_server[:1] == b"\x16"  # a handshake record: the ClientHello
    for _ in range(10):
        s_in.write(to_server)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls_server.do_handshake()
        plain, to_server = layer.receive(s_out.read())
        if layer.handshake_done:
            break
    assert layer.handshake_done and plain == b""
    s_in.write(to_server + layer.send(b"ping"))
    with contextlib.suppress(ssl.SSLWantReadError):
        tls_server.do_handshake()
    assert tls_server.read(100) == b"ping"
    tls_server.write(b"pong")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls_server.unwrap()
    plain, _ = layer.receive(s_out.read())
    assert (plain, layer.eof) == (b"pong", True)  # the reply, then close_notify
    assert layer.close_notify()[:1] == b"\x17"  # TLS 1.3: the alert, encrypted
    with pytest.raises(ssl.SSLError):
        TlsLayer().receive(b"\x15\x03\x03\x00\x02\x02\x28" + b"junk" * 10)


def test_tcp_end_during_the_handshake_raises() -> None:
    layer = TlsLayer()
    layer.start()
    with pytest.raises(ssl.SSLEOFError):
        layer.receive(b"")
