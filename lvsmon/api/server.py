"""The control server: one aiohttp application served on the root-only Unix socket and, when the
operator asks (`--listen`), on a TCP address.

Over TCP only what reads is served (the page, /status, /events, /metrics): what changes the
daemon (drain, undrain) or reads files the daemon can read (plan) is refused there with 403, so
that binding a TCP address never hands out more than a view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from aiohttp import web

from lvsmon.api import drainapi, metrics, page, planapi
from lvsmon.api.app import DAEMON, FEED, DaemonView, local_only
from lvsmon.api.eventfeed import EventFeed

log = logging.getLogger("lvsmon")

SSE_KEEPALIVE_S = 15.0


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` (ValueError with a message otherwise)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9180")
    return host.strip("[]"), int(port)


async def get_status(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return web.Response(body=daemon.status_json(), content_type="application/json")


async def get_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the last events replayed, then live ones until either side ends."""
    feed = request.app[FEED]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    replay, queue = feed.attach()
    try:
        for item in replay:
            await response.write(item)
        while True:
            try:
                async with asyncio.timeout(SSE_KEEPALIVE_S):
                    live = await queue.get()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if live is None:  # cut off (too slow), or the daemon stops
                break
            await response.write(live)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.detach(queue)
    return response


def make_app(daemon: DaemonView, feed: EventFeed) -> web.Application:
    app = web.Application(middlewares=[local_only])
    app[DAEMON] = daemon
    app[FEED] = feed
    app[metrics.EXPORTER] = exporter = metrics.Exporter(daemon)

    async def close_exporter(_app: web.Application) -> None:
        await exporter.close()

    app.on_cleanup.append(close_exporter)
    app.router.add_get("/status", get_status)
    app.router.add_get("/events", get_events)
    app.router.add_get("/metrics", metrics.handler)
    planapi.add_routes(app)
    drainapi.add_routes(app)
    page.add_routes(app)
    return app


class ControlServer:
    """Bound before the daemon touches the kernel (bind: a start that cannot bind changes
    nothing), served after the engine (it shows the engine's state), stopped before it."""

    def __init__(
        self, daemon: DaemonView, feed: EventFeed, socket_path: str | None, listen: str | None
    ) -> None:
        self.socket_path = socket_path
        self.listen = listen
        self._app = make_app(daemon, feed)
        self._feed = feed
        self._runner: web.AppRunner | None = None
        self._unix: socket.socket | None = None  # bound by bind(), served by start()
        self._tcp: list[socket.socket] = []

    async def bind(self) -> None:
        """Bind the socket and the listen address, not serving them yet: the daemon does this
        before it touches the kernel, so that a start that cannot bind changes nothing.
        BindError names what cannot be bound and why, in one line."""
        if self.socket_path and self._unix is None:
            try:
                self._unix = bind_unix(self.socket_path)
            except OSError as exc:
                raise BindError(
                    f"cannot bind the control socket {self.socket_path}: {exc.strerror or exc}"
                ) from exc
        if self.listen and not self._tcp:
            try:
                host, port = parse_listen(self.listen)
                self._tcp = await bind_tcp(host, port)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise BindError(f"cannot listen on {self.listen}: {reason}") from exc

    async def start(self) -> None:
        await self.bind()
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        if self._unix is not None:
            sock, self._unix = self._unix, None
            await web.SockSite(runner, sock).start()
        if self._tcp:
            socks, self._tcp = self._tcp, []
            for sock in socks:
                await web.SockSite(runner, sock).start()
            log.info("control server listening on %s", self.listen)

    async def stop(self, _left: float = 0.0) -> None:
        self._feed.close()
        for sock in [*([self._unix] if self._unix else []), *self._tcp]:
            sock.close()  # bound, never served (a start that failed later)
        self._unix, self._tcp = None, []
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self.socket_path:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)


class BindError(Exception):
    """The control server cannot bind its socket or listen address (one line, for `start`)."""


async def bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` resolves to, as asyncio's create_server binds
    them (SO_REUSEADDR; an IPv6 socket is IPv6 only)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at `path`, mode 0600 from its creation (root only). A file left
    there is stale: whoever calls this holds the pid file's lock."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.setblocking(False)
    return sock
