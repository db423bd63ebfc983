"""What lvsmon tells systemd under Type=notify, and when (the protocol is in sdnotify.py).

- READY=1 once the IPVS table is programmed (the moment `lvsmon start` returns in the forking
  form); RELOADING=1 then READY=1 around every reload, a rejected one included; STOPPING=1 at
  stop. Each with a STATUS= line.
- STATUS= "12 virtuals, 340/342 reals up", sent again when it changes, at most every few seconds.
- With WatchdogSec= (WATCHDOG_USEC): WATCHDOG=1 every half of it, but only while the engine
  makes progress (EngineProgress): a wedged engine stops the pings and systemd restarts lvsmon,
  which adopts the kernel table without a flap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from lvsmon.daemon.sdnotify import Notifier
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import Phase
from lvsmon.engine.jobs import Plan

log = logging.getLogger("lvsmon")

STATUS_EVERY_S = 2.0  # STATUS= changes are sent at most this often
TICK_MAX_S = 1.0  # progress is sampled at least this often


def pool_summary(engine: Engine) -> str:
    """The STATUS= line: "12 virtuals, 340/342 reals up (1 in maintenance)"."""
    # from the health map, not the per-virtual layout: at 10,000 reals this takes 0.1 ms, where
    # building down_slots() took 100 ms of the checks' event loop
    health, maintained = engine.health, engine.maintained
    total = len(health)
    up = sum(1 for state in health.values() if state.up)
    if maintained:  # (hashing every ref is most of the cost: only when some are maintained)
        up -= sum(1 for ref in maintained if (state := health.get(ref)) and state.up)
    n = len(engine.config.virtuals)
    text = f"{n} virtual{'' if n == 1 else 's'}, {up}/{total} reals up"
    if engine.maintained:
        text += f" ({len(engine.maintained)} in maintenance)"
    return text


class EngineProgress:
    """Is the engine moving? Judged from its counters, sampled often, so that it costs the
    checks nothing:

    - the check scheduler: every due slot either starts a check or is counted as skipped (its
      previous run still going); no slot for longer than `bound_s` plus the shortest check
      interval (a slot comes at most 1.5 intervals after the last) means the loop is stuck;
    - the reconciler: one pass (table dump and ops) holding its lock without finishing for
      longer than `bound_s` (a backend call that never returns).

    A blocked event loop needs no judging: then nothing runs, the pings included."""

    def __init__(
        self, engine: Engine, bound_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine, self.bound_s, self._clock = engine, bound_s, clock
        now = clock()
        self._slots, self._slots_at = -1, now
        self._passes, self._passes_at = -1, now
        self._plan: Plan | None = None
        self._shortest = math.inf

    def sample(self) -> None:
        now, engine = self._clock(), self.engine
        if engine.plan is not self._plan:  # a reload: new jobs, new intervals, a fresh start
            self._plan = engine.plan
            self._shortest = min((job.interval for job in engine.plan.jobs), default=math.inf)
            self._slots_at = now
        slots = engine.stats.checks_started + engine.runner.skipped
        if slots != self._slots:
            self._slots, self._slots_at = slots, now
        passes = engine.stats.reconciles
        if passes != self._passes or not engine.reconciler.lock.locked():
            self._passes, self._passes_at = passes, now

    def stalled(self) -> str | None:
        """Why the engine is not making progress, or None when it is."""
        self.sample()
        now = self._clock()
        idle = now - self._slots_at
        if idle > self.bound_s + 1.5 * self._shortest:
            return f"no check started or skipped for {idle:.0f} s"
        busy = now - self._passes_at
        if busy > self.bound_s:
            return f"an IPVS table update has not finished for {busy:.0f} s"
        return None


class SystemdLink:
    """The daemon's side of Type=notify; every method is a no-op without NOTIFY_SOCKET."""

    def __init__(self, notifier: Notifier, engine: Engine) -> None:
        self.notifier = notifier
        self.engine = engine
        self._ready = False
        self._reloading = False
        self._rejected: str | None = None  # the last reload's rejection, until a good one
        self._status = ""  # the last STATUS= sent

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def summary(self) -> str:
        text = pool_summary(self.engine)
        if self._rejected:
            text += f"; last reload rejected ({self._rejected}), running config kept"
        return text

    def started(self) -> None:
        """The table is programmed: READY=1."""
        if self.enabled:
            self._ready = True
            self.notifier.ready(self._new_status())

    def _new_status(self) -> str:
        self._status = self.summary()
        return self._status

    def phase_changed(self, phase: Phase, reason: str = "") -> None:
        if not self.enabled:
            return
        if phase is Phase.RUNNING:  # the end of a reload (the first READY=1 is started()'s)
            if self._ready:
                self._reloading = False
                self.notifier.ready(self._new_status())
        elif phase is Phase.RELOADING:
            self._rejected = None
            self._begin_reload()
        elif phase is Phase.STOPPING:
            self.notifier.stopping(f"stopping: {reason}" if reason else "stopping")

    def _begin_reload(self) -> None:
        if not self._reloading:
            self._reloading = True
            self.notifier.reloading()

    def reload_rejected(self, reason: str) -> None:
        """A reload whose file was refused: systemd still sees RELOADING=1 then READY=1 (with
        Type=notify-reload it waits for them), and STATUS says why the old config runs on."""
        if not self.enabled or not self._ready:
            return
        self._rejected = reason
        self._begin_reload()
        self._reloading = False
        self.notifier.ready(self._new_status())

    async def run(self) -> None:
        """After READY=1: STATUS= updates and, with a watchdog, the pings. A supervised task of
        the daemon, cancelled at stop."""
        period = None if self.notifier.watchdog_s is None else self.notifier.watchdog_s / 2
        # ticks at half the period at most: a ping is then never more than 1.5 periods late
        tick = TICK_MAX_S if period is None else min(TICK_MAX_S, period / 2)
        progress = None
        if self.notifier.watchdog_s is not None:
            # the engine must move within the watchdog timeout itself: a table update allowed
            # that long is far above any healthy one (ipvsadm's runs are cut at 30 s)
            progress = EngineProgress(self.engine, self.notifier.watchdog_s)
        loop = asyncio.get_running_loop()
        next_ping = next_status = loop.time()
        stall: str | None = None
        while True:
            now = loop.time()
            if progress is not None:
                progress.sample()
                if period is not None and now >= next_ping:
                    next_ping = now + period
                    reason = progress.stalled()
                    if reason is None:
                        self.notifier.watchdog()
                        if stall is not None:
                            log.warning("watchdog: the engine makes progress again")
                    elif stall is None:
                        log.error(
                            "watchdog: %s; not telling systemd lvsmon is alive, so that it"
                            " restarts it",
                            reason,
                        )
                        self.notifier.status(f"engine stalled: {reason}")
                    stall = reason
            if now >= next_status and stall is None:
                next_status = now + STATUS_EVERY_S
                if self.summary() != self._status:
                    self.notifier.status(self._new_status())
            await asyncio.sleep(tick)
