"""Real servers on loopback for the check tests: aiohttp apps (plain and TLS) and raw TCP peers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme
from aiohttp import web

from tests.helpers import release_held_sockets  # noqa: F401  (an autouse fixture, found by name)

SERVER_NAME = "www.example.test"


@dataclass
class Seen:
    """What the server observed, for assertions on what the check sent."""

    methods: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


@dataclass
class HttpServer:
    host: str
    port: int
    seen: Seen


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_length = 100_000
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        for _ in range(1000):
            await response.write(b"x")
            await asyncio.sleep(0.05)
    return response


def make_app(seen: Seen) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        seen.methods.append(request.method)
        seen.hosts.append(request.headers.get("Host", ""))
        seen.targets.append(str(request._message.url))  # the request-target as sent
        seen.user_agents.append(request.headers.get("User-Agent", ""))
        return await handler(request)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="still alive\nrs1\n")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b"still ", b"al", b"ive"):
            await response.write(part)
        await response.write_eof()
        return response

    app = web.Application(middlewares=[record])
    app.router.add_get("/ok", ok)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/trickle", _trickle)
    app.router.add_get("/{tail:.*}", ok)
    return app


@contextlib.asynccontextmanager
async def serve(host: str, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[HttpServer]:
    seen = Seen()
    runner = web.AppRunner(make_app(seen), access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield HttpServer(host, port, seen)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    async with serve("127.0.0.1") as server:
        yield server


@pytest.fixture
async def http_server6() -> AsyncIterator[HttpServer]:
    async with serve("::1") as server:
        yield server


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def https_server(tls_ca: trustme.CA) -> AsyncIterator[HttpServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert(SERVER_NAME, "127.0.0.1").configure_cert(ctx)
    seen_sni: list[str | None] = []

    def record_sni(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        seen_sni.append(name)

    ctx.sni_callback = record_sni
    async with serve("127.0.0.1", ctx) as server:
        server.seen.sni = seen_sni
        yield server


@dataclass
class RawServer:
    port: int
    connections: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    peer_closed: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def raw_server(reply: bytes | None, host: str = "127.0.0.1") -> AsyncIterator[RawServer]:
    """A TCP peer that sends `reply` and closes, or (None) says nothing and holds the line."""
    state = RawServer(0)
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.connected.set()
        if reply is None:
            held.append(writer)
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the check closes its end
            state.peer_closed.set()
            return
        # read the request first: closing on unread data would make the kernel send a reset
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
