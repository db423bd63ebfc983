"""What keeps the control server's clients from costing the checks: a cap on TCP connections, a
share of the file descriptors, and deadlines on every connection.

* **Cap.** The TCP listener (`--listen`) holds at most `max_tcp` connections (64 by default,
  `--listen-max-connections`, `$LVSMON_LISTEN_MAX_CONNECTIONS`); one more is answered 503 and
  closed at once.
* **Descriptors.** The checks keep 80 % of RLIMIT_NOFILE (which the daemon raised to the hard
  limit): control connections, socket and TCP together, never hold more than 20 % of it, and
  none is taken while the process as a whole has 80 % of it open.
* **Header and idle timeout.** A connection whose request headers are not complete within
  `HEADER_TIMEOUT_S` of connecting or of its previous answer is closed (half a request, or
  nothing, or a keep-alive connection left idle).
* **Write timeout.** A connection whose unread answer has not shrunk for `WRITE_TIMEOUT_S` (a
  client of /events or /metrics that stopped reading) is cut off. On the control socket the
  answer's unread part is all of it: what the process has not handed to the kernel yet, and what
  the kernel holds that the client has not read (SIOCOUTQ, bounded by the /events connection's
  small send buffer), so a client there that stops reading is cut off `WRITE_TIMEOUT_S` later,
  however slowly the events come. Over TCP the kernel cannot tell: a client that acknowledges
  but does not read looks like one that reads until its receive buffer is full, which Linux
  grows up to the client's net.ipv4.tcp_rmem maximum (6 MiB by default, measured: the window it
  advertises never shrinks meanwhile); only what is left on this side is timed.

Refusals are logged at most once a minute, with counts; a client cut off is logged at info (at
most `CUT_LOG_PER_MINUTE` lines a minute, the rest counted in the minute's report). Every kind is
counted by reason (`refused`, REASONS) for /metrics.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import logging
import os
import resource
import socket
import termios
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from lvsmon.text import clean

log = logging.getLogger("lvsmon")

MAX_TCP_CONNECTIONS = 64
HEADER_TIMEOUT_S = 5.0  # request headers complete within this of connecting, or of the last answer
WRITE_TIMEOUT_S = 5.0  # an answer not read for this long: the connection is cut off
FD_SHARE = 0.2  # of RLIMIT_NOFILE, what control connections may hold (the checks keep the rest)
SWEEP_S = 0.5
FD_COUNT_MAX_AGE_S = 0.5
REPORT_EVERY_S = 60.0
CUT_LOG_PER_MINUTE = 10
# why a connection was refused or ended by the guard: over the TCP cap, over the descriptor
# share, a Host not served (421, app.known_host), request headers not in time or idle too long,
# an answer not read in time
REASONS = ("cap", "fds", "host", "timeout", "stalled")
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 40\r\n"
    b"Connection: close\r\n\r\nlvsmon: too many control connections now\n"
)


def open_fds() -> int:
    """The process's open file descriptors (each entry of /proc/self/fd; the listing's own
    descriptor is counted too, which errs on the safe side)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def unread_by_peer(transport: asyncio.Transport) -> int:
    """Bytes of a Unix socket's answers that the kernel holds and the client has not read yet
    (SIOCOUTQ; 0 when it cannot be known)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return 0
    queued = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)  # SIOCOUTQ
    except (OSError, ValueError):
        return 0
    return max(0, queued[0])


def peer_name(conn: Connection) -> str:
    if not conn.tcp:
        return "on the control socket"
    transport = conn.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"from {host}:{peer[1]}"
    return "over TCP"


class Connection(RequestHandler):
    """aiohttp's handler of one connection, known to the guard: admitted or refused when it is
    made, and timed while it lives."""

    def __init__(self, guard: Guard, tcp: bool, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.tcp = tcp
        self.admitted = False
        self.busy = 0  # requests in the application (the middleware counts them)
        self.idle_since = time.monotonic()
        self.unsent = 0  # unread answer at the last sweep
        self.stalled_since: float | None = None
        self.path = ""  # of the request in hand (or the last one), for the log
        self.written = 0  # bytes of answers written (counted by /events), and at the last sweep
        self.written_seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.guard.admit(self):
            assert isinstance(transport, asyncio.Transport)
            transport.write(REFUSED)
            transport.close()
            return
        self.admitted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.admitted:
            return
        self.guard.forget(self)
        super().connection_lost(exc)


class Guard:
    def __init__(self, max_tcp: int = MAX_TCP_CONNECTIONS) -> None:
        self.max_tcp = max_tcp
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if self.fd_limit == resource.RLIM_INFINITY or self.fd_limit <= 0:
            self.fd_limit = 1 << 20
        self.connections: set[Connection] = set()
        self.tcp = 0
        self._fds = (0.0, 0)  # (when counted, how many)
        self.refused = dict.fromkeys(REASONS, 0)  # connections refused or ended, by reason
        self._reported = dict(self.refused)
        self._report_at = 0.0
        self._cut_logged: list[float] = []  # when the last cut-off lines were logged
        self._cut_unlogged = 0
        self._sweeper: asyncio.Task[None] | None = None
        # set when there is something to sweep: the sweeper sleeps on it while nothing is
        # (no connection, no report due), so an idle control server costs no wake-up at all
        self._work = asyncio.Event()

    # ---- admission --------------------------------------------------------------------------

    def _open_fds(self) -> int:
        now = time.monotonic()
        at, count = self._fds
        if now - at > FD_COUNT_MAX_AGE_S:
            count = open_fds()
            self._fds = (now, count)
        return count

    def admit(self, conn: Connection) -> bool:
        share = max(8, int(self.fd_limit * FD_SHARE))
        if conn.tcp and self.tcp >= self.max_tcp:
            return self._refuse("cap")
        # counted fds lag by up to FD_COUNT_MAX_AGE_S: the connections taken since are added
        if len(self.connections) >= share or self._open_fds() >= self.fd_limit - share:
            return self._refuse("fds")
        self.connections.add(conn)
        self._work.set()
        if conn.tcp:
            self.tcp += 1
        at, count = self._fds
        self._fds = (at, count + 1)
        return True

    def forget(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            if conn.tcp:
                self.tcp -= 1

    def _refuse(self, why: str) -> bool:
        self.refused[why] += 1
        now = time.monotonic()
        if now >= self._report_at:
            self._report_at = now + REPORT_EVERY_S
            self._work.set()
            self._report()
        return False

    def count(self, why: str) -> None:
        """A connection refused or ended elsewhere (421: app.known_host)."""
        self.refused[why] += 1

    def _report(self) -> None:
        cap = self.refused["cap"] - self._reported["cap"]
        fds = self.refused["fds"] - self._reported["fds"]
        self._reported = dict(self.refused)
        if self._cut_unlogged:
            log.info(
                "control server: cut off %d more client(s) that did not read their answers",
                self._cut_unlogged,
            )
            self._cut_unlogged = 0
        if cap:
            log.warning(
                "control server: refused %d TCP connection(s): %d open, the cap is %d "
                "(--listen-max-connections)",
                cap,
                self.tcp,
                self.max_tcp,
            )
        if fds:
            log.warning(
                "control server: refused %d connection(s) to keep file descriptors for the "
                "checks: %d of %d open, %d of them control connections",
                fds,
                self._open_fds(),
                self.fd_limit,
                len(self.connections),
            )

    # ---- deadlines --------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="lvsmon-control-guard")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            if not self.connections and not self._report_at and not self._cut_unlogged:
                self._work.clear()
                await self._work.wait()
            await asyncio.sleep(SWEEP_S)
            self.sweep(time.monotonic())
            if self._report_at and time.monotonic() >= self._report_at:
                self._report_at = 0.0
                if self._cut_unlogged or any(
                    self.refused[k] != self._reported[k] for k in ("cap", "fds")
                ):
                    self._report()

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            transport = conn.transport
            if not isinstance(transport, asyncio.Transport):
                continue
            unsent = transport.get_write_buffer_size()
            if not conn.tcp:
                unsent += unread_by_peer(transport)
            # what a client that does not read holds only grows with each write (the kernel
            # counts at least the bytes): no more than before, after a write, is progress
            wrote, conn.written_seen = conn.written != conn.written_seen, conn.written
            if unsent and (unsent > conn.unsent or (unsent == conn.unsent and not wrote)):
                if conn.stalled_since is None:
                    conn.stalled_since = now
                elif now - conn.stalled_since >= WRITE_TIMEOUT_S:
                    self.refused["stalled"] += 1
                    self._log_cut(conn, unsent, now - conn.stalled_since)
                    self.forget(conn)
                    transport.abort()
                    continue
            else:
                conn.stalled_since = None
            conn.unsent = unsent
            if not conn.busy and not unsent and now - conn.idle_since >= HEADER_TIMEOUT_S:
                self.refused["timeout"] += 1
                self.forget(conn)
                conn.force_close()

    def _log_cut(self, conn: Connection, unread: int, stalled: float) -> None:
        now = time.monotonic()
        self._cut_logged = [t for t in self._cut_logged if now - t < REPORT_EVERY_S]
        if len(self._cut_logged) >= CUT_LOG_PER_MINUTE:
            self._cut_unlogged += 1
            if not self._report_at:
                self._report_at = now + REPORT_EVERY_S
            return
        self._cut_logged.append(now)
        log.info(
            "control server: cut off a client of %s %s: it read nothing for %.1f s (%d bytes "
            "waiting)",
            conn.path or "the server",
            peer_name(conn),
            stalled,
            unread,
        )

    def close_all(self) -> None:
        """The daemon stops: every connection ends now, whatever its client does."""
        for conn in list(self.connections):
            self.forget(conn)
            if isinstance(conn.transport, asyncio.Transport):
                conn.transport.abort()


@web.middleware
async def busy_while_handled(request: web.Request, handler: Any) -> web.StreamResponse:
    """While the application handles a request its connection has no header deadline; the
    next one starts when the answer is handed over."""
    conn = request.protocol
    if not isinstance(conn, Connection):
        result: web.StreamResponse = await handler(request)
        return result
    conn.busy += 1
    conn.path = clean(request.path, 100)  # the client's words, for the log
    try:
        answer: web.StreamResponse = await handler(request)
        return answer
    finally:
        conn.busy -= 1
        conn.idle_since = time.monotonic()
