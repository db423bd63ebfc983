"""One running lvsmon: parts started in order and stopped in reverse under one time bound
(lifecycle.py): the IPVS backend, the event stream (log, fallbackcommand, callback and
monitorfile subscribers), the commands those start, the engine (check runner and reconciler),
and housekeeping (status file, maintenance scans, config watching).

TERM is acted on at once in every phase: start-up (even while the first round of checks runs)
and reloads are tasks that a stop cancels. A crash of any engine loop or of a reload is logged
with its traceback and stops the daemon with exit 1, so systemd or Pacemaker restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from lvsmon.alerts.hooks import Callback, Commands, FallbackCommands, MonitorFiles
from lvsmon.alerts.sender import KINDS as ALERT_KINDS
from lvsmon.alerts.sender import Alerts
from lvsmon.api.control import BindError, LazyControlServer
from lvsmon.api.eventfeed import EventFeed
from lvsmon.atomicfile import write_atomic
from lvsmon.config import Config, ConfigError, probehost
from lvsmon.config.load import parse_config
from lvsmon.config.watch import ConfigWatcher
from lvsmon.daemon.lifecycle import Lifecycle, Part
from lvsmon.daemon.sdnotify import Notifier
from lvsmon.daemon.syncdaemons import SyncDaemons
from lvsmon.daemon.systemd import SystemdLink
from lvsmon.engine.arpguard import ArpGuard
from lvsmon.engine.bgp import Announcer, make_speaker
from lvsmon.engine.drain import Outcome, drain, listing, select, undrain
from lvsmon.engine.engine import Engine
from lvsmon.engine.eventlog import LOGGED, log_event
from lvsmon.engine.events import (
    CheckDone,
    ConfigFileChanged,
    ConfigLoaded,
    ConfigRejected,
    EventBus,
    FallbackChanged,
    Phase,
    PhaseChanged,
)
from lvsmon.engine.forced import Forcing
from lvsmon.engine.jobs import Plan, RealRef
from lvsmon.engine.status import Status, StatusEncoder, TableDigests
from lvsmon.ipvs.backend import IpvsBackend
from lvsmon.ipvs.errors import BackendError

log = logging.getLogger("lvsmon")

Ready = Callable[[str | None], None]  # called once: None when programmed, else the error
STOP_BOUND_S = 30.0  # the whole stop, every component, cleanstop included
ALERT_STOP_BOUND_S = 10.0  # of which the last alert mails may take at most this
EXIT_CRASHED = 1
# a reload collects garbage in full (a walk of the whole heap: 0.4 s at 37,000 reals, 1 s at
# 100,000) at most this often; the others only freeze what they built. Measured at 37,298
# reals, three reloads in a row without the collection left no unreachable object for it to
# find: the old config, plan and health are freed by reference counting, not in cycles.
RELOAD_COLLECT_EVERY_S = 600.0


def first_pass_bound(config: Config) -> float:
    """How long the first round of checks can take: the longest deadline, plus slack."""
    longest = max(
        (max(v.checktimeout * v.checkcount, v.negotiatetimeout) for v in config.virtuals),
        default=0,
    )
    return float(longest) + 5.0


def settle_memory(*, collect: bool) -> None:
    """Move what start-up or a reload built (config, plan, health: most of the heap at 10,000
    reals) out of the garbage collector's sight, so full collections walk only what changed
    since. After a reload what the old config held may be garbage in cycles: one collection
    first (a stall that start-up, with little garbage yet, does without)."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    release_free_memory()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc's malloc_trim): a start-up or a
    reload peaks above what it keeps (a first round of 2,000 TLS handshakes at once, a parse,
    the status entries built and dropped), and glibc returns only the top of its heap by itself.
    A few ms at 100 MB; not glibc: nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return cast(Callable[[int], int], trim)


_status_failing: set[str] = set()  # status files whose last write failed

# from this many reals on, a status whose only change is in its counters (`stats`) is written at
# most every COUNTERS_ONLY_EVERY_S: a change of any virtual, real, table digest or phase is
# written within the second as always
BIG_STATUS_REALS = 10_000
COUNTERS_ONLY_EVERY_S = 10.0
TRIM_EVERY_TICKS = 60  # housekeeping seconds between two release_free_memory


def write_status(path: str, data: bytes) -> bool:
    """The status as Daemon.status_json encoded it, atomically (`lvsmon status` never reads half
    a file), not through symlinks, mode 0644; True when written. A failure is a warning once
    per streak (the file goes stale: out of descriptors, a full disk), and the recovery is
    logged once."""
    try:
        write_atomic(path, data)
    except OSError as exc:
        if path not in _status_failing:
            _status_failing.add(path)
            text = exc.strerror or str(exc)
            log.warning(
                "cannot write the status file %s: %s (it goes stale until a write works again)",
                path,
                text[:1].lower() + text[1:],
            )
        return False
    if path in _status_failing:
        _status_failing.discard(path)
        log.info("status file %s written again", path)
    return True


class StatusFile:
    """The status file: rewritten when the status changed, touched (its modification time set
    to now, one syscall) when it did not, so that its age still says when the daemon last
    vouched for it (`lvsmon verify-table` calls a file older than 15 s a hung daemon). At
    100,000 reals without checks the text is 22 MB: writing it each second was most of the
    daemon's idle CPU.

    Touched only while it is the file this daemon wrote last, as it wrote it (same inode, size
    and time): a file replaced or edited since, or one whose last write failed, is written
    anew, and a write that keeps failing leaves it to age."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.version: int | None = None  # the status version the file holds, as written
        self.written_at = -math.inf  # when (monotonic)
        self._stamp: tuple[int, int, int] | None = None  # its inode, size and mtime (ns)

    def update(self, version: int, text: Callable[[], bytes]) -> None:
        """`version`: the status's (StatusEncoder.update); `text`: gives it whole, called only
        when the file must be written."""
        if version == self.version and self._stamp is not None and self._touch():
            return
        self.version = self._stamp = None
        data = text()
        if write_status(self.path, data):
            with contextlib.suppress(OSError):
                st = os.stat(self.path, follow_symlinks=False)
                self.version, self._stamp = version, (st.st_ino, st.st_size, st.st_mtime_ns)
                self.written_at = time.monotonic()

    def _touch(self) -> bool:
        """The file's time set to now, if it is still as written; False if it is not."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
            if (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp:
                return False
            now = time.time_ns()
            os.utime(self.path, ns=(now, now), follow_symlinks=False)
        except OSError:
            return False
        self._stamp = (st.st_ino, st.st_size, now)
        return True


class Daemon:
    def __init__(
        self,
        config: Config,
        backend: IpvsBackend,
        status_path: str | None = None,
        *,
        resync_s: float | None = None,
        notifier: Notifier | None = None,
        control_socket: str | None = None,
        listen: str | None = None,
        drain_state: str | None = None,
    ) -> None:
        """`resync_s`: overrides the config's resyncinterval (tests). `notifier`: systemd's
        notification socket (run_daemon takes it from the environment). `control_socket`,
        `listen`: where the control server (lvsmon.api) answers; neither: no server.
        `drain_state`: the drain state file, used without maintenancedir (None: kept in
        memory)."""
        self._resync_override = resync_s
        self.status_path = status_path
        self.status_file = StatusFile(status_path) if status_path else None
        self.started_at = time.time()
        self._collected_at = time.monotonic()  # start-up leaves little garbage: as collected
        self.backend = backend
        self.events = EventBus()
        self.events.subscribe("log", log_event, kinds=LOGGED)
        # maintenancedir and drains, one rule with `lvsmon plan`'s (engine/forced.py)
        self.forcing = Forcing(drain_state)
        self.drains = self.forcing.drains
        self.engine = Engine(
            config,
            backend,
            maintained=self.forcing.maintained,
            drained=self.forcing.drained,
            events=self.events,
            resync_s=resync_s or config.settings.resyncinterval,
        )
        self.engine.on_crash = self._crashed
        self.systemd = SystemdLink(notifier or Notifier(None), self.engine)
        self.commands = Commands()
        self.sync = SyncDaemons(backend, self.events)  # connection sync (syncdaemon)
        self.arpguard = ArpGuard(self.events, spawn=self._supervised)  # arpguard (idle when off)
        self.arpguard.use(config)
        # BGP announcements (bgp = bird|exabgp, engine/bgp.py): a part after the engine, so
        # that its graceful stop ends before IPVS is purged
        self.bgp: Announcer | None = None
        if config.settings.bgp.enabled:
            files = status_path or f"{tempfile.gettempdir()}/lvsmon-{os.getpid()}.status.json"
            base = files.removesuffix(".status.json")
            speaker = make_speaker(config.settings.bgp, base)
            self.bgp = Announcer(
                self.engine, speaker, self.events, drained_path=f"{base}.director-drained"
            )
            self.bgp.on_crash = self._crashed

        fallbacks = FallbackCommands(lambda: self.config, self.commands)
        self.events.subscribe("fallbackcommand", fallbacks, kinds=(FallbackChanged,))
        callback = Callback(lambda: self.config, self.commands)
        self.events.subscribe("callback", callback, kinds=(ConfigFileChanged,))
        self.monitor = MonitorFiles(config)
        self.events.subscribe("monitorfile", self.monitor, kinds=(CheckDone,))
        self.alerts = Alerts(config, spawn=self._supervised)
        self._alert_events = self.events.subscribe("e-mail alerts", self.alerts, kinds=ALERT_KINDS)
        self._use_monitorfiles(config)
        # checks through the VIP need sysctls start checked: a reload checks them too (the
        # memory backend programs no kernel, so nothing there would drop an answer)
        parse = parse_config if backend.name == "memory" else probehost.parse_ready(parse_config)
        self.watcher = ConfigWatcher(config.path, config.digest, parse=parse)
        # config reloads by result (SIGHUP, autoreload), for /metrics; rejected autoreloads are
        # the watcher's count. Start-up loaded a good config: the last good load is now.
        self.reloads_ok = 0
        self.reloads_rejected = 0
        self.last_good_config_at = time.time()
        self.feed = EventFeed()
        self.events.subscribe("control server events", self.feed.on_event)
        self.control = (
            LazyControlServer(self, self.feed, control_socket, listen, spawn=self._supervised)
            if control_socket or listen
            else None
        )
        self._status_cache: tuple[float, bytes] | None = None
        self._encoder = StatusEncoder()
        self.phase = Phase.STARTING
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._stop_signal = "TERM"
        self._reloading = asyncio.Lock()
        self._started = False
        self._start_failed = False
        self._step_failed: dict[str, str] = {}  # housekeeping step -> the error last logged
        self._ticks = 1  # housekeeping rounds (the first trim a minute in: start-up settles)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.scheduler = AsyncIOScheduler()
        self._digests = TableDigests()

    @property
    def config(self) -> Config:
        """The running config: the engine's, which a reload replaces."""
        return self.engine.config

    # ---- read by the control server (lvsmon.api.app.DaemonView) -----------------------------

    @property
    def reload_counts(self) -> dict[str, int]:
        """Config reloads by result (SIGHUP, and the watcher's rejected autoreloads)."""
        return {"ok": self.reloads_ok, "rejected": self.reloads_rejected + self.watcher.rejected}

    @property
    def alert_mails(self) -> dict[str, int]:
        return {"sent": self.alerts.sent, "dropped": self.alerts.lost}

    @property
    def alert_mails_queued(self) -> int:
        return sum(len(box) for box in self.alerts.outboxes.values())

    @property
    def drain_where(self) -> str:
        return self.drains.store(self.config).where

    def _use_monitorfiles(self, config: Config) -> None:
        # per-result events only while a monitorfile wants them: otherwise a good result that
        # changes nothing costs nothing
        self.monitor.use(config)
        self.engine.want_every_result(bool(self.monitor.path_of))

    def drain_listing(self) -> dict[str, object]:
        """GET /drains: the drained pairs of the running config, and the entries it ignores."""
        config = self.config
        return listing(
            self.drains.store(config), self.forcing.drain_index(config, self.engine.plan)
        )

    async def drain_command(self, real: str, virtual: str | None, on: bool) -> list[Outcome]:
        """POST /drain, /undrain: checked against the running config, kept in the drain state,
        applied to the kernel before it returns. DrainError when `real` (in `virtual`) names
        nothing of the config; OSError when the state cannot be written."""
        async with self._reloading:  # the config a drain was checked against is the one it meets
            config, plan = self.config, self.engine.plan
            # names may need the resolver: not in the loop, whose checks would wait
            targets = await asyncio.to_thread(select, config, real, virtual)
            store, index = self.drains.store(config), self.forcing.drain_index(config, plan)
            if on:
                outcome = drain(store, index, targets, everywhere=virtual is None)
            else:
                outcome = undrain(store, index, targets)
            if self.engine.refresh_drained():
                self._status_cache = None
                await self.engine.reconcile()
                self._write_status()  # `lvsmon status` right after `drain` shows it
            return outcome

    def reload_preview(
        self,
    ) -> tuple[
        Callable[[Config, Plan], frozenset[RealRef]], Callable[[Config, Plan], frozenset[RealRef]]
    ]:
        """The maintained and the drained pairs of a config that does not run (`lvsmon plan`), as
        the reload to it would find them (lvsmon.engine.forced.Preview). Called in the loop; the
        two functions it returns may run in a thread."""
        preview = self.forcing.preview(self.config)
        return preview.maintained, preview.drained

    def _set_phase(self, phase: Phase) -> None:
        self.phase = phase
        self.events.publish(PhaseChanged(phase))
        self.systemd.phase_changed(phase, self._stop_signal)

    # ---- stopping ---------------------------------------------------------------------------

    def request_stop(self, signame: str = "TERM") -> None:
        if not self._stop.is_set():
            self._stop_signal = signame
            self._stop.set()

    def _crashed(self, name: str, exc: BaseException) -> None:
        self.exit_code = EXIT_CRASHED
        self.request_stop(f"internal error in {name}: {exc!r}")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A supervised task of the daemon, cancelled when the daemon stops: an exception in it
        stops the daemon, loudly."""
        task = self._supervised(coro, name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _supervised(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task whose crash stops the daemon, loudly; ended by the part that started it (the
        alert tasks outlive the engine, so that the "stopping" mails still go out)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)

        def ended(t: asyncio.Task[Any]) -> None:
            if not t.cancelled() and (exc := t.exception()) is not None:
                log.critical(
                    "%s crashed; lvsmon stops so that it is restarted",
                    name,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
                self._crashed(name, exc)

        task.add_done_callback(ended)
        return task

    # ---- the whole life ---------------------------------------------------------------------

    def _parts(self) -> Lifecycle:
        """In start order: what later parts use comes first, and is stopped last. What can fail
        to bind comes before the first kernel op (the engine's), so a start that fails on it
        changes nothing; served only once the table is programmed."""
        return Lifecycle(
            [
                *(
                    [Part("the control server's addresses", self.control.bind, self.control.stop)]
                    if self.control
                    else []
                ),
                Part("the IPVS backend", stop=lambda _left: self.backend.close()),
                Part("the event stream", self.events.start, self.events.stop),
                Part("e-mail alerts", self.alerts.start, self._stop_alerts),
                Part("fallbackcommand and callback", stop=lambda _left: self.commands.drain()),
                Part("the engine", self._start_engine, self._stop_engine),
                *([Part("BGP announcements", self.bgp.start, self.bgp.stop)] if self.bgp else []),
                Part("connection sync daemons", self._start_sync, lambda _left: self.sync.stop()),
                Part("the ARP guard", self.arpguard.start, self.arpguard.stop),
                Part("housekeeping", self._start_housekeeping, self._stop_housekeeping),
                *(
                    [Part("the control server", self.control.start, self.control.stop)]
                    if self.control
                    else []
                ),
            ]
        )

    async def _stop_alerts(self, left: float) -> None:
        # the engine has stopped: its last events ("stopping" removals) reach the policy first,
        # then what is due goes out, within a share of the stop bound (a dead relay must not
        # hold the stop)
        bound = min(left / 2, ALERT_STOP_BOUND_S)
        await self._alert_events.stop(bound / 2)
        await self.alerts.stop(bound / 2)

    async def run(self, ready: Ready) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.request_stop, sig.name.removeprefix("SIG"))
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        parts = self._parts()
        self._set_phase(Phase.STARTING)
        startup = loop.create_task(parts.start(), name="lvsmon-startup")
        stopping = loop.create_task(self._stop.wait())
        await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if startup.done():
            error = None
            try:
                startup.result()
            except BackendError as exc:
                error = f"cannot use the IPVS backend {self.backend.name}: {exc}"
            except BindError as exc:
                error = str(exc)
            except Exception as exc:  # a bug, or a backend raising what it must not: be loud
                log.critical("start-up failed", exc_info=exc)
                error = f"start-up failed: {exc!r}"
            if error is not None:
                # a start that failed leaves the table as it found it or made it: what it
                # adopted is never purged on the way out (a restart adopts it again)
                self._start_failed = True
                stopping.cancel()
                log.error("%s", error)
                ready(error)
                self.exit_code, self._stop_signal = EXIT_CRASHED, error
            else:
                self._set_phase(Phase.RUNNING)
                self._write_status()  # `lvsmon status` as soon as start returns sees the table
                self.systemd.started()
                ready(None)
                if self.systemd.enabled:
                    self._spawn(self.systemd.run(), "systemd notifications")
                await stopping
        else:
            startup.cancel()
            await asyncio.gather(startup, return_exceptions=True)
            ready(f"stopped during start-up (signal {self._stop_signal})")
        self._set_phase(Phase.STOPPING)
        tasks = list(self._tasks)  # reloads, callbacks in flight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await parts.stop(STOP_BOUND_S)
        if self.exit_code:
            log.critical("Linux Director Daemon stopped: %s", self._stop_signal)
        else:
            log.info("Linux Director Daemon terminated on signal: %s", self._stop_signal)
        return self.exit_code

    async def _start_engine(self) -> None:
        """Adopt and program the table, then wait (bounded) for the first round of checks."""
        await self.engine.start()
        self._started = True
        log.info("Starting Linux Director Daemon (lvsmon) with %s", self.config.path)
        try:
            async with asyncio.timeout(first_pass_bound(self.config)):
                await self.engine.wait_programmed()
        except TimeoutError:
            log.warning("first checks still running; continuing")
        # reals down after the first round get reminders (emailalertfreq) without a first mail:
        # a restart must not mail again what was mailed before it
        for service, real in self.engine.down_slots():
            self.alerts.known_down(service, real)
        settle_memory(collect=False)

    async def _start_sync(self) -> None:
        # after the table is programmed: a backup director's synced connections find it there
        await self.sync.use(self.config.settings.syncdaemon)

    async def _stop_engine(self, _left: float) -> None:
        await self.engine.stop(clean=self._started and not self._start_failed)

    async def _start_housekeeping(self) -> None:
        self.scheduler.add_job(
            self._housekeeping,
            "interval",
            seconds=1.0,
            id="housekeeping",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self.scheduler.start()

    async def _stop_housekeeping(self, _left: float) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.status_path:
            with contextlib.suppress(OSError):
                os.unlink(self.status_path)

    # ---- reloads ----------------------------------------------------------------------------

    def _on_hup(self) -> None:
        log.info("Reloading Linux Director Daemon config on signal")
        self._spawn(self.reload(), "reload")

    def status(self) -> Status:
        """The whole status, built now (tests and tools; the status file and the control server
        read status_json())."""
        status = self.status_head()
        status["virtuals"] = self.engine.status()["virtuals"]
        return status

    def status_head(self) -> Status:
        status = self.engine.status_head()
        status["pid"] = os.getpid()
        status["started_at"] = self.started_at
        status["phase"] = str(self.phase)
        status["sync"] = self.sync.status()
        # what it last programmed, per managed service: `lvsmon verify-table` compares it with
        # the kernel (the resource agent's deep monitor)
        reconciler = self.engine.reconciler
        status["table"] = self._digests.of(reconciler.actual, reconciler.managed)
        status["resync_s"] = reconciler.resync_s
        status["bgp"] = self.bgp.summary() if self.bgp is not None else None
        status["arp_conflicts"] = self.arpguard.status()
        return status

    def _status_version(self) -> int:
        return self._encoder.update(self.status_head(), self.engine.status_texts())

    def status_json(self, max_age: float = 0.5) -> bytes:
        """The status as compact JSON, built at most every `max_age` s: every client of the
        control server shares one build (10,000 reals cost some ms each)."""
        now = time.monotonic()
        cached = self._status_cache
        if cached is None or now - cached[0] > max_age:
            self._status_version()
            cached = self._status_cache = (now, self._encoder.text())
        return cached[1]

    def _write_status(self) -> None:
        """The status file as of now: rewritten if the status changed, else only touched. The
        whole text is joined only to be written, and a client's copy is not kept for long (at
        37,298 reals it is 8 MB)."""
        cached = self._status_cache
        if cached is not None and time.monotonic() - cached[0] > 0.5:
            self._status_cache = None
        status_file, encoder = self.status_file, self._encoder
        if status_file is None:
            return
        version = self._status_version()
        if (
            status_file.version is not None
            and status_file.version >= encoder.body_version  # only the counters changed since
            and len(self.engine.health) >= BIG_STATUS_REALS
            and time.monotonic() - status_file.written_at < COUNTERS_ONLY_EVERY_S
        ):
            # a pool this big writes megabytes per status (22 MB at 100,000 reals): new
            # counters alone (a resync, a few checks) wait; the file is touched meanwhile
            version = status_file.version
        status_file.update(version, encoder.text)

    async def _housekeeping(self) -> None:
        """Once a second, each step on its own: one that fails (logged once per distinct
        error, with its traceback) never skips the others (a broken drain state must not stop
        autoreload or the sync daemons' upkeep). The status file last: what the others found
        is in it the same second."""
        await self._step("maintenance scan", self._scan_maintenance)
        # files an operator touched by hand in maintenancedir, the drain state file
        await self._step("drain state", self.engine.refresh_drained)
        await self._step("config poll", self._poll_config)
        # every 30 s: read back, restart a vanished sync daemon
        await self._step("sync daemons", self.sync.maintain)
        await self._step("status file", self._write_status)
        if self._ticks % TRIM_EVERY_TICKS == 0:
            # what small blocks freed in the middle of the C heap hold: the soak's RSS rose
            # with them (lvsmon/daemon/runner.py cap_malloc_arenas has the rest)
            await self._step("memory", release_free_memory)
        self._ticks += 1

    def _scan_maintenance(self) -> None:
        if self.engine.refresh_maintenance():
            log.info("maintenance set changed: %s", sorted(map(str, self.engine.maintained)))

    async def _step(self, name: str, step: Callable[[], object]) -> None:
        try:
            result = step()
            if asyncio.iscoroutine(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = repr(exc)
            if self._step_failed.get(name) != failed:
                self._step_failed[name] = failed
                log.exception("housekeeping: %s failed", name)
        else:
            if self._step_failed.pop(name, None) is not None:
                log.info("housekeeping: %s works again", name)

    async def _poll_config(self) -> None:
        """autoreload / callback, by the watcher's rules (it logs what it sees): only a
        readable, valid file whose content has settled is applied; the running config's
        settings decide what is done."""
        if self._stop.is_set() or self._reloading.locked():
            return
        settings = self.config.settings
        change = await self.watcher.poll(autoreload=settings.autoreload)
        if change.config is not None:
            self._spawn(self._apply_locked(change.config), "autoreload")
        if change.changed:
            self.events.publish(ConfigFileChanged(self.config.path, self.watcher.settled_digest))

    async def reload(self) -> bool:
        """An explicit reload (SIGHUP): read the file now; only a valid config replaces the
        running one (one with no virtual service too: the operator asked for it)."""
        if self._stop.is_set() or not self._started:
            return False
        new = await self.watcher.load_now()
        if isinstance(new, ConfigError):
            for d in new.diagnostics:
                self.events.publish(ConfigRejected(self.config.path, str(d)))
            self.systemd.reload_rejected(str(new.diagnostics[0]) if new.diagnostics else "")
            self.reloads_rejected += 1
            return False
        return await self._apply_locked(new)

    async def _apply_locked(self, new: Config) -> bool:
        async with self._reloading:
            if self._stop.is_set():
                return False
            self._set_phase(Phase.RELOADING)
            try:
                await self.engine.reload(new)
                self._use_monitorfiles(new)
                self.alerts.use(new)
                await self.sync.use(new.settings.syncdaemon)
                self.arpguard.use(new)
                self.engine.reconciler.resync_s = (
                    self._resync_override or new.settings.resyncinterval
                )
                self.watcher.applied(new.digest)
                self.events.publish(ConfigLoaded(new.path, new.digest, len(new.virtuals)))
                self.reloads_ok += 1
                self.last_good_config_at = time.time()
                # last: the new config runs and its ops are applied
                now = time.monotonic()
                collect = now - self._collected_at >= RELOAD_COLLECT_EVERY_S
                if collect:
                    self._collected_at = now
                settle_memory(collect=collect)
            finally:
                if not self._stop.is_set():
                    self._set_phase(Phase.RUNNING)
            return True


async def run_daemon(
    config: Config,
    backend: IpvsBackend,
    ready: Ready,
    status_path: str | None = None,
    *,
    control_socket: str | None = None,
    listen: str | None = None,
    drain_state: str | None = None,
) -> int:
    daemon = Daemon(
        config,
        backend,
        status_path,
        notifier=Notifier.from_environ(),
        control_socket=control_socket,
        listen=listen,
        drain_state=drain_state,
    )
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run(ready)
    return 1
