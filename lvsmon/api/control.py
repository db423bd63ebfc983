"""The control server's front, free of aiohttp: what the daemon needs at start (binding, the
listen address's syntax, BindError) and a server loaded on first use.

aiohttp and aiohttp.web cost some 15 MiB and 100 ms of import, and most daemons never serve
anything but the root-only control socket, which `lvsmon drain`, `plan` and `bgp` use now and
then (start, stop, status and the OCF monitor use the pid file, signals and the status file).
So without `--listen` the socket is bound at start as always (before the daemon touches the
kernel, mode 0600), watched for its first connection, and only then is lvsmon.api.server
imported, off the event loop so that the checks keep their times, and served on that same
socket: the waiting client is accepted by aiohttp as any other, only its answer comes later.
With `--listen` the server is loaded and served at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from lvsmon.api.eventfeed import EventFeed

if TYPE_CHECKING:
    from lvsmon.api.app import DaemonView

log = logging.getLogger("lvsmon")

SERVER_MODULE = "lvsmon.api.server"
LISTEN_BACKLOG = 128
MAX_CONNECTIONS_ENV = "LVSMON_LISTEN_MAX_CONNECTIONS"
HOSTS_ENV = "LVSMON_LISTEN_HOSTS"
STOP_BOUND_S = 1.0  # as the server's own stop (server.py): a lazy start cannot hold it longer

Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


class Served(Protocol):
    """What the front uses of server.ControlServer (named here: server.py imports this module)."""

    async def bind(self) -> None: ...

    async def start(self) -> None: ...

    async def stop(self, left: float = STOP_BOUND_S) -> None: ...


class BindError(Exception):
    """The control server cannot bind its socket or listen address (one line, for `start`)."""


def parse_max_connections(text: str) -> int:
    """A connection cap for the TCP listener (ValueError with a message otherwise)."""
    if not text.strip().isdigit() or not 0 < int(text) <= 65536:
        raise ValueError(
            f"--listen-max-connections {text!r}: expected a number of connections, 1 to 65536"
        )
    return int(text)


def parse_hosts(text: str) -> frozenset[str]:
    """Names a client may give as Host over TCP, comma- or space-separated."""
    names = frozenset(n.strip().lower().rstrip(".") for n in text.replace(",", " ").split())
    for name in names:
        if not name or "/" in name or "@" in name or not name.isprintable():
            raise ValueError(f"--listen-host {name!r}: expected a host name")
    return names


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` (ValueError with a message otherwise)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9180")
    return host.strip("[]"), int(port)


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
            sock.listen(LISTEN_BACKLOG)
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
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.setblocking(False)
    return sock


def bind_control_socket(path: str) -> socket.socket:
    """bind_unix, its failure as the one line `start` prints."""
    try:
        return bind_unix(path)
    except OSError as exc:
        raise BindError(f"cannot bind the control socket {path}: {exc.strerror or exc}") from exc


class LazyControlServer:
    """ControlServer's interface (bind, start, stop) for the daemon's parts: with `listen`, the
    server itself from the start; without, the control socket bound and watched, the server
    loaded and started (a task given to `spawn`) on its first connection. A load that fails is
    logged and leaves the daemon and its checks running, the socket refusing connections."""

    def __init__(
        self,
        daemon: DaemonView,
        feed: EventFeed,
        socket_path: str | None,
        listen: str | None,
        *,
        spawn: Spawn,
    ) -> None:
        self.socket_path = socket_path
        self.listen = listen
        self._daemon = daemon
        self._feed = feed
        self._spawn = spawn
        self.server: Served | None = None  # server.ControlServer, once loaded
        self._unix: socket.socket | None = None  # bound, watched, not yet served
        self._watched = False
        self._loading: asyncio.Task[None] | None = None
        if listen:
            self.server = self._build(importlib.import_module(SERVER_MODULE))

    def _build(self, module: Any) -> Served:
        server: Served = module.ControlServer(
            self._daemon, self._feed, self.socket_path, self.listen, unix_socket=self._unix
        )
        self._unix = None  # the server's now: its stop closes it
        return server

    async def bind(self) -> None:
        if self.server is not None:
            await self.server.bind()
        elif self.socket_path and self._unix is None and self._loading is None:
            self._unix = bind_control_socket(self.socket_path)

    async def start(self) -> None:
        if self.server is not None:
            await self.server.start()
            return
        await self.bind()
        if self._unix is not None and not self._watched:
            # readable = a connection waits; it stays queued until aiohttp accepts it
            asyncio.get_running_loop().add_reader(self._unix.fileno(), self._first_connection)
            self._watched = True

    def _unwatch(self) -> None:
        if self._watched and self._unix is not None:
            asyncio.get_running_loop().remove_reader(self._unix.fileno())
        self._watched = False

    def _first_connection(self) -> None:
        self._unwatch()
        if self._loading is None:
            self._loading = self._spawn(self._load(), "the control server's start")

    async def _load(self) -> None:
        began = time.monotonic()
        try:
            module = await asyncio.to_thread(importlib.import_module, SERVER_MODULE)
            self.server = self._build(module)
            await self.server.start()
        except Exception:
            log.critical(
                "the control server cannot start: the control socket %s is closed until lvsmon "
                "is restarted (the checks go on)",
                self.socket_path,
                exc_info=True,
            )
            server, self.server = self.server, None
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop(STOP_BOUND_S)
            if self._unix is not None:
                self._unix.close()
                self._unix = None
            return
        log.debug("control server loaded on first use in %.3f s", time.monotonic() - began)

    async def stop(self, left: float = STOP_BOUND_S) -> None:
        """Bounded as the server's own stop: a load still under way is cancelled (its import
        thread finishes by itself), what it started is stopped."""
        deadline = time.monotonic() + max(0.1, min(STOP_BOUND_S, left))
        self._unwatch()
        loading, self._loading = self._loading, None
        if loading is not None and not loading.done():
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
                    await loading
        server, self.server = self.server, None
        if server is not None:
            await server.stop(max(0.1, deadline - time.monotonic()))
            return
        self._feed.close()
        if self._unix is not None:
            self._unix.close()
            self._unix = None
        if self.socket_path:
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
