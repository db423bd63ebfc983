"""The daemon's side of connection synchronisation: it runs the kernel's sync daemons that the
config names (``syncdaemon``, lvsmon.config.syncconf) through the IPVS backend.

* At start (after the table is programmed) and at each reload: what runs is read back; a
  daemon running as configured is kept (a restart of lvsmon does not interrupt the sync), one
  with other settings is stopped and started again, a missing one is started, and a state the
  previous config named and the new one does not is stopped.
* Between reloads, every 30 s, the same again without a config change: `lvsmon status` stays
  true, and a daemon the config names that was stopped behind lvsmon's back is started again
  (as drift in the table is repaired).
* At stop, every daemon the config names is stopped. A state the config never named (say a
  backup daemon started at boot by ``ipvsadm --start-daemon backup``) is never touched.
* Nothing here raises: a failure is one ERROR line in the log and a SyncDaemonOp event, the
  checks and the table carry on (sync is what keeps connections across a failover, not what
  serves them), and ``lvsmon status`` shows the error until an attempt succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from lvsmon.engine.events import EventBus, SyncDaemonOp
from lvsmon.engine.status import SyncStatus
from lvsmon.ipvs.backend import IpvsBackend
from lvsmon.ipvs.errors import BackendError, ErrorKind
from lvsmon.ipvs.sync import SyncDaemon, SyncState, sync_change

log = logging.getLogger("lvsmon")

CHECK_S = 30.0  # between reloads, how often the running daemons are read back


class SyncDaemons:
    def __init__(self, backend: IpvsBackend, events: EventBus, check_s: float = CHECK_S) -> None:
        self.backend = backend
        self.events = events
        self.check_s = check_s
        self.wanted: tuple[SyncDaemon, ...] = ()
        self.running: dict[SyncState, SyncDaemon] = {}
        self.errors: dict[SyncState, str] = {}
        self._lock = asyncio.Lock()  # a reload and a periodic check never interleave
        self._checked = time.monotonic()
        self._read_error: str | None = None

    def _publish(self, action: str, daemon: str, error: str | None = None) -> None:
        self.events.publish(SyncDaemonOp(action, daemon, error))

    async def _read(self) -> tuple[SyncDaemon, ...] | None:
        try:
            running = await self.backend.sync_daemons()
        except BackendError as exc:
            if str(exc) != self._read_error:  # a failure that repeats is logged once
                self._publish("read", "the running sync daemons", str(exc))
            self._read_error = str(exc)
            return None
        self._read_error = None
        self.running = {d.state: d for d in running}
        return running

    async def use(self, wanted: tuple[SyncDaemon, ...]) -> None:
        """Makes the running daemons the wanted ones (see the module docstring)."""
        async with self._lock:
            await self._use(wanted, repair=False)

    async def maintain(self) -> None:
        """Between reloads (called every second, acts every `check_s`): reads the daemons
        back, so that `lvsmon status` stays true, and starts again one the config names that
        is gone (`ipvsadm --stop-daemon` by hand) or runs with other settings, as drift in the
        table is repaired. A failure that repeats is logged once, not every time."""
        if not self.wanted or self._lock.locked():
            return
        if time.monotonic() - self._checked < self.check_s:
            return
        async with self._lock:
            await self._use(self.wanted, repair=True)

    async def _use(self, wanted: tuple[SyncDaemon, ...], *, repair: bool) -> None:
        self._checked = time.monotonic()
        previous, self.wanted = self.wanted, wanted
        named = {d.state for d in wanted}
        dropped = [d for d in previous if d.state not in named]
        if not wanted and not dropped:
            return
        running = await self._read()
        if running is None:
            for daemon in wanted:
                self.errors[daemon.state] = "cannot read the running sync daemons"
            return
        for daemon in dropped:
            if daemon.state in self.running:
                await self._stop(daemon.state, str(daemon))
        change = sync_change(wanted, running)
        for state in change.stop:
            await self._stop(state, str(self.running[state]))
        for daemon in change.keep:
            self.errors.pop(daemon.state, None)
            if not repair:
                log.info("%s already running as configured; kept", daemon)
        for daemon in change.start:
            error = await self.backend.start_sync_daemon(daemon)
            message = None if error is None else error.message
            repeated = message is not None and self.errors.get(daemon.state) == message
            if message is None:
                self.errors.pop(daemon.state, None)
            else:
                self.errors[daemon.state] = message
            if repeated:
                log.debug("still cannot start %s: %s", daemon, message)
            else:
                self._publish("start", str(daemon), message)
        if change.start or change.stop or dropped:
            await self._read()

    async def _stop(self, state: SyncState, shown: str) -> None:
        error = await self.backend.stop_sync_daemon(state)
        if error is not None and error.kind is ErrorKind.NOT_FOUND:
            log.info("%s was not running", shown)  # stopped behind lvsmon's back, or never began
            error = None
        else:
            self._publish("stop", shown, None if error is None else error.message)
        if error is None:
            self.running.pop(state, None)

    async def stop(self) -> None:
        """Stops every daemon the config names (at lvsmon's stop)."""
        async with self._lock:
            for daemon in self.wanted:
                await self._stop(daemon.state, str(daemon))

    def status(self) -> list[SyncStatus]:
        out: list[SyncStatus] = []
        for daemon in self.wanted:
            running = self.running.get(daemon.state)
            out.append(
                {
                    "state": str(daemon.state),
                    "wanted": str(daemon),
                    "running": None if running is None else str(running),
                    "error": self.errors.get(daemon.state),
                }
            )
        return out
