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
* **Write timeout.** A connection whose unsent answer has not shrunk for `WRITE_TIMEOUT_S` (a
  client of /events or /metrics that stopped reading) is cut off.

Refusals are logged at most once a minute, with counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("lvsmon")

MAX_TCP_CONNECTIONS = 64
HEADER_TIMEOUT_S = 5.0  # request headers complete within this of connecting, or of the last answer
WRITE_TIMEOUT_S = 5.0  # an answer not read for this long: the connection is cut off
FD_SHARE = 0.2  # of RLIMIT_NOFILE, what control connections may hold (the checks keep the rest)
SWEEP_S = 0.5
FD_COUNT_MAX_AGE_S = 0.5
REPORT_EVERY_S = 60.0
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
        self.unsent = 0  # write buffer at the last sweep
        self.stalled_since: float | None = None

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
        self.refused = {"cap": 0, "fds": 0}
        self.timed_out = 0  # header or idle timeout
        self.cut_off = 0  # write timeout
        self._reported = dict(self.refused)
        self._report_at = 0.0
        self._sweeper: asyncio.Task[None] | None = None

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
            self._report()
        return False

    def _report(self) -> None:
        cap = self.refused["cap"] - self._reported["cap"]
        fds = self.refused["fds"] - self._reported["fds"]
        self._reported = dict(self.refused)
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
            await asyncio.sleep(SWEEP_S)
            self.sweep(time.monotonic())
            if self._report_at and time.monotonic() >= self._report_at:
                self._report_at = 0.0
                if self.refused != self._reported:
                    self._report()

    def sweep(self, now: float) -> None:
        for conn in list(self.connections):
            transport = conn.transport
            if not isinstance(transport, asyncio.Transport):
                continue
            unsent = transport.get_write_buffer_size()
            if unsent and unsent >= conn.unsent:
                if conn.stalled_since is None:
                    conn.stalled_since = now
                elif now - conn.stalled_since >= WRITE_TIMEOUT_S:
                    self.cut_off += 1
                    self.forget(conn)
                    transport.abort()
                    continue
            else:
                conn.stalled_since = None
            conn.unsent = unsent
            if not conn.busy and not unsent and now - conn.idle_since >= HEADER_TIMEOUT_S:
                self.timed_out += 1
                self.forget(conn)
                conn.force_close()

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
    try:
        answer: web.StreamResponse = await handler(request)
        return answer
    finally:
        conn.busy -= 1
        conn.idle_since = time.monotonic()
