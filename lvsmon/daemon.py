"""One running lvsmon: the engine plus what a daemon around it must do (signals, reload,
autoreload, maintenance scans, hooks, a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from lvsmon.config import Config, ConfigError, load_config
from lvsmon.engine.core import Engine
from lvsmon.engine.maintenance import MaintenanceDir
from lvsmon.engine.plan import Plan, RealRef
from lvsmon.hooks import FallbackCommands, MonitorFiles, run_command
from lvsmon.ipvs.backend import BackendError, IpvsBackend

log = logging.getLogger("lvsmon")

Ready = Callable[[str | None], None]  # called once: None when programmed, else the error


def _digest_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def first_pass_bound(config: Config) -> float:
    """How long the first round of checks can take: the longest deadline, plus slack."""
    longest = max(
        (max(v.checktimeout * v.checkcount, v.negotiatetimeout) for v in config.virtuals),
        default=0,
    )
    return float(longest) + 5.0


def settle_memory(*, collect: bool) -> None:
    """Move what start-up or a reload built (config, plan, health: most of the heap at 10,000
    reals) out of the garbage collector's sight. Each full collection walked all of it, 40-55 ms
    with every check waiting, every few seconds; after this it walks what changed since. After
    a reload, what the old config held may be garbage in cycles: one collection first (it costs
    a stall that start-up, with little garbage yet, does without)."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def write_status(path: str, state: dict[str, object]) -> None:
    """Atomically, so `lvsmon status` never reads half a file."""
    tmp = f"{path}.tmp"
    try:
        # one compact string: json.dump to a file and indent both take the slow, chunked
        # encoder (10,000 reals: 52 ms against 9 ms, all of it time the checks wait)
        text = json.dumps(state, separators=(",", ":"))
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write status file %s: %s", path, exc)


class Daemon:
    def __init__(
        self, config: Config, backend: IpvsBackend, status_path: str | None = None
    ) -> None:
        self.status_path = status_path
        self.started_at = time.time()
        self.config = config
        self.backend = backend
        self.engine = Engine(config, backend, maintained=self._maintained)
        self.fallbacks = FallbackCommands()
        self.engine.after_reconcile.append(self._after_reconcile)
        self._use_monitorfiles(config)
        self._maint: MaintenanceDir | None = None
        self._maint_for: tuple[str | None, frozenset[RealRef]] | None = None
        self._stop = asyncio.Event()
        self._stop_signal = "TERM"
        self._seen_digest = config.digest
        self._stat: tuple[int, int, int] | None = None
        self._reloading = asyncio.Lock()
        self._started = False
        self.scheduler = AsyncIOScheduler()

    def _use_monitorfiles(self, config: Config) -> None:
        # only when one is configured: a listener makes the engine look at every result, where
        # otherwise a good result that changes nothing costs nothing
        monitor = MonitorFiles(config)
        self.engine.listeners = [monitor] if monitor.path_of else []

    # maintenancedir: names are looked up when the set of reals changes, not per check
    def _maintained(self, config: Config, plan: Plan) -> frozenset[RealRef]:
        path = config.settings.maintenancedir
        refs = frozenset(plan.failurecount)
        if self._maint_for != (path, refs):
            self._maint_for = (path, refs)
            self._maint = MaintenanceDir(path, refs) if path else None
        return self._maint.scan() if self._maint else frozenset()

    def _after_reconcile(self, engine: Engine) -> None:
        # before the first round of checks, "no real is up" only means "none checked yet"
        if engine.first_round_done:
            self.fallbacks.update(engine.config, engine.up_of())

    def request_stop(self, signame: str = "TERM") -> None:
        self._stop_signal = signame
        self._stop.set()

    async def run(self, ready: Ready) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.request_stop, sig.name.removeprefix("SIG"))
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        try:
            await self.engine.start()
        except BackendError as exc:
            message = f"cannot use the IPVS backend {self.backend.name}: {exc}"
            log.error("%s", message)
            ready(message)
            return 1
        self._started = True
        log.info("Starting Linux Director Daemon (lvsmon) with %s", self.config.path)
        try:
            async with asyncio.timeout(first_pass_bound(self.config)):
                await self.engine.wait_programmed()
        except TimeoutError:
            log.warning("first checks still running; continuing")
        ready(None)
        settle_memory(collect=False)
        self.scheduler.add_job(self._housekeeping, "interval", seconds=1.0, id="housekeeping")
        self.scheduler.start()
        await self._stop.wait()
        self.scheduler.shutdown(wait=False)
        await self.shutdown()
        if self.status_path:
            with contextlib.suppress(OSError):
                os.unlink(self.status_path)
        return 0

    async def shutdown(self) -> None:
        async with self._reloading:
            await self.engine.stop(clean=True)
            await self.fallbacks.drain()
            await self.backend.close()
        log.info("Linux Director Daemon terminated on signal: %s", self._stop_signal)

    def _on_hup(self) -> None:
        log.info("Reloading Linux Director Daemon config on signal")
        asyncio.get_running_loop().create_task(self.reload())

    def status(self) -> dict[str, object]:
        return {"pid": os.getpid(), "started_at": self.started_at, **self.engine.snapshot()}

    async def _housekeeping(self) -> None:
        if self.status_path:
            write_status(self.status_path, self.status())
        if self.engine.refresh_maintenance():
            log.info("maintenance set changed: %s", sorted(map(str, self.engine.maintained)))
        await self._poll_config()

    async def _poll_config(self) -> None:
        """autoreload / callback: the file's content is compared with the digest of the bytes the
        running config was parsed from, so an edit made during start-up is not missed."""
        path = self.config.path
        try:
            st = os.stat(path)
        except OSError:
            return
        stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stat == self._stat:
            return
        self._stat = stat
        digest = _digest_of(path)
        if digest is None:
            return
        if digest == self._seen_digest:
            return
        self._seen_digest = digest
        log.info("Configuration file '%s' has changed on disk", path)
        settings = self.config.settings
        if settings.autoreload:
            log.info(" - reread new configuration")
            await self.reload()
        else:
            log.info(" - ignore new configuration")
        if settings.callback and os.access(settings.callback, os.X_OK):
            await run_command([settings.callback, path])

    async def reload(self) -> bool:
        """Build a whole new config; only a valid one replaces the running one."""
        async with self._reloading:
            if self._stop.is_set() or not self._started:
                return False
            path = self.config.path
            try:
                new = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                for d in exc.diagnostics:
                    log.error(
                        "Error reading file %s: %s (keeping the running configuration)", path, d
                    )
                return False
            self._seen_digest = new.digest
            await self.engine.reload(new)
            settle_memory(collect=True)
            self.config = new
            self._use_monitorfiles(new)
            return True


async def run_daemon(
    config: Config, backend: IpvsBackend, ready: Ready, status_path: str | None = None
) -> int:
    daemon = Daemon(config, backend, status_path)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.run(ready)
    return 1
