"""The control server: one aiohttp application served on the root-only Unix socket and, when the
operator asks (`--listen`), on a TCP address.

Over TCP only what reads is served (the page, /status, /events, /metrics): what changes the
daemon (drain, undrain) or reads files the daemon can read (plan) is refused there with 403, so
that binding a TCP address never hands out more than a view; and only to a Host naming the listen
address, localhost or a name given with --listen-host (421 otherwise: DNS rebinding).

No client can cost the checks their time or their file descriptors (guard.py: a connection cap,
a share of the descriptors, header, idle and write timeouts), nor hold the daemon's stop: the
server's stop ends every connection within STOP_BOUND_S.

The daemon does not import this module at start (it costs aiohttp): control.py binds, and loads
this on the control socket's first connection, or at start with --listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from aiohttp import web

from lvsmon.api import bgpapi, drainapi, metrics, page, planapi
from lvsmon.api.app import ALLOWED_HOSTS, DAEMON, FEED, DaemonView, known_host, local_only
from lvsmon.api.control import (
    HOSTS_ENV,
    LISTEN_BACKLOG,
    MAX_CONNECTIONS_ENV,
    STOP_BOUND_S,
    BindError,
    bind_control_socket,
    bind_tcp,
    parse_hosts,
    parse_listen,
    parse_max_connections,
)
from lvsmon.api.eventfeed import EventFeed
from lvsmon.api.guard import (
    HEADER_TIMEOUT_S,
    MAX_TCP_CONNECTIONS,
    Connection,
    Guard,
    busy_while_handled,
)

log = logging.getLogger("lvsmon")

SSE_KEEPALIVE_S = 15.0
SSE_SNDBUF = 32768  # per /events connection (the kernel doubles it): a stuck client pins little
# An /events stream over TCP ends after this long or this many bytes, whichever comes first:
# a TCP client that acknowledges without reading cannot be told from one that reads (Linux grows
# its receive buffer up to tcp_rmem's maximum while the window it advertises stays open), so the
# write timeout would never cut it, and it would hold a listener slot for as long as it likes.
# Browsers' EventSource reconnects by itself (the page re-reads /status and gets the replay).
SSE_TCP_LIFETIME_S = 300.0
SSE_TCP_BYTES = 1 << 20
STOP_GRACE_S = 0.2  # of STOP_BOUND_S (control.py), handlers get this to end by themselves


def listen_settings() -> tuple[int, frozenset[str]]:
    """The TCP listener's cap and extra Host names, from the environment (the command line's
    --listen-max-connections and --listen-host are passed to the daemon that way too)."""
    raw = os.environ.get(MAX_CONNECTIONS_ENV, "").strip()
    try:
        cap = parse_max_connections(raw) if raw else MAX_TCP_CONNECTIONS
    except ValueError as exc:
        log.warning("%s; using %d", exc, MAX_TCP_CONNECTIONS)
        cap = MAX_TCP_CONNECTIONS
    try:
        hosts = parse_hosts(os.environ.get(HOSTS_ENV, ""))
    except ValueError as exc:
        log.warning("%s; ignored", exc)
        hosts = frozenset()
    return cap, hosts


async def get_status(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    return web.Response(body=daemon.status_json(), content_type="application/json")


async def get_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the last events replayed, then live ones until either side ends."""
    feed = request.app[FEED]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SSE_SNDBUF)
    await response.prepare(request)
    conn = request.protocol if isinstance(request.protocol, Connection) else None
    over_tcp = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + SSE_TCP_LIFETIME_S if over_tcp else float("inf")
    room = SSE_TCP_BYTES if over_tcp else float("inf")

    async def write(data: bytes) -> None:
        nonlocal room
        if conn is not None:
            conn.written += len(data)  # the guard tells a client that reads from one that does not
        room -= len(data)
        await response.write(data)

    replay, queue = feed.attach()
    try:
        for item in replay:
            await write(item)
        while room > 0:
            left = ends_at - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(min(SSE_KEEPALIVE_S, left)):
                    live = await queue.get()
            except TimeoutError:
                if loop.time() < ends_at:
                    await write(b": keep-alive\n\n")
                continue
            if live is None:  # cut off (too slow), or the daemon stops
                break
            await write(live)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client left, or was cut off (guard.py), or the daemon stops
    finally:
        feed.detach(queue)
    return response


def make_app(
    daemon: DaemonView,
    feed: EventFeed,
    hosts: frozenset[str] = frozenset(),
    guard: Guard | None = None,
) -> web.Application:
    app = web.Application(middlewares=[busy_while_handled, known_host, local_only])
    app[DAEMON] = daemon
    app[FEED] = feed
    app[ALLOWED_HOSTS] = hosts
    app[metrics.EXPORTER] = exporter = metrics.Exporter(daemon, guard)

    async def close_exporter(_app: web.Application) -> None:
        await exporter.close()

    app.on_cleanup.append(close_exporter)
    app.router.add_get("/status", get_status)
    app.router.add_get("/events", get_events)
    app.router.add_get("/metrics", metrics.handler)
    planapi.add_routes(app)
    drainapi.add_routes(app)
    bgpapi.add_routes(app)
    page.add_routes(app)
    return app


class ControlServer:
    """Bound before the daemon touches the kernel (bind: a start that cannot bind changes
    nothing), served after the engine (it shows the engine's state), stopped before it."""

    def __init__(
        self,
        daemon: DaemonView,
        feed: EventFeed,
        socket_path: str | None,
        listen: str | None,
        *,
        max_tcp: int | None = None,
        hosts: frozenset[str] | None = None,
        unix_socket: socket.socket | None = None,
    ) -> None:
        """`max_tcp`, `hosts`: the TCP listener's cap and extra Host names (None: from the
        environment, listen_settings). `unix_socket`: `socket_path` already bound (bind_unix),
        served from start() on (control.py binds it at start and loads this on first use)."""
        self.socket_path = socket_path
        self.listen = listen
        env_cap, env_hosts = listen_settings()
        self.guard = Guard(max_tcp if max_tcp is not None else env_cap)
        names = env_hosts if hosts is None else hosts
        if listen:
            names |= {parse_listen(listen)[0].lower().rstrip(".")}
        self._app = make_app(daemon, feed, names, self.guard)
        self._feed = feed
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []
        self._unix = unix_socket  # bound by bind() or given, served by start()
        self._tcp: list[socket.socket] = []

    async def bind(self) -> None:
        """Bind the socket and the listen address, not serving them yet: the daemon does this
        before it touches the kernel, so that a start that cannot bind changes nothing.
        BindError names what cannot be bound and why, in one line."""
        if self.socket_path and self._unix is None:
            self._unix = bind_control_socket(self.socket_path)
        if self.listen and not self._tcp:
            try:
                host, port = parse_listen(self.listen)
                self._tcp = await bind_tcp(host, port)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise BindError(f"cannot listen on {self.listen}: {reason}") from exc

    async def start(self) -> None:
        await self.bind()
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=HEADER_TIMEOUT_S,
            shutdown_timeout=STOP_GRACE_S,
        )
        await runner.setup()
        self._runner = runner
        server = runner.server
        assert server is not None
        loop = asyncio.get_running_loop()

        def factory(tcp: bool) -> Callable[[], Connection]:
            return lambda: Connection(
                self.guard,
                tcp,
                server,
                loop=loop,
                access_log=None,
                keepalive_timeout=HEADER_TIMEOUT_S,
            )

        self.guard.start()
        if self._unix is not None:
            sock, self._unix = self._unix, None
            self._servers.append(await loop.create_server(factory(False), sock=sock))
        if self._tcp:
            socks, self._tcp = self._tcp, []
            for sock in socks:
                self._servers.append(
                    await loop.create_server(factory(True), sock=sock, backlog=LISTEN_BACKLOG)
                )
            log.info("control server listening on %s", self.listen)

    async def stop(self, left: float = STOP_BOUND_S) -> None:
        """Every connection ends within STOP_BOUND_S (or what is `left` of the daemon's stop),
        whatever its client does: what the handlers do not finish in STOP_GRACE_S is cut."""
        deadline = time.monotonic() + max(0.1, min(STOP_BOUND_S, left))
        self._feed.close()
        for sock in [*([self._unix] if self._unix else []), *self._tcp]:
            sock.close()  # bound, never served (a start that failed later)
        self._unix, self._tcp = None, []
        for server in self._servers:
            server.close()
        self._servers.clear()
        await self.guard.stop()
        try:
            # /events handlers see the end of their feed; any other answer may finish
            async with asyncio.timeout(STOP_GRACE_S):
                while any(c.busy for c in self.guard.connections):  # noqa: ASYNC110 (a poll)
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        self.guard.close_all()
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
                    await runner.cleanup()
            except TimeoutError:
                log.warning("stop: the control server's cleanup was cut short")
        if self.socket_path:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
