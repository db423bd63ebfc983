"""The engine: config and plan, health per (virtual, real), and the two supervised loops that
run on them (the check runner, the reconciler). Check results become health; health changes
become events and a dirty reconciler; the reconciler alone writes the kernel.

The decisions are the pure functions of `health`, `desired`, `ipvs.diff`; this module wires
them. Either loop ending with an exception is a bug that must not leave a half-alive daemon: it
is logged with its traceback and `on_crash` is told (the daemon then stops, non-zero, so systemd
or Pacemaker restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from typing import Any

from lvsmon.checks import viapath
from lvsmon.checks.base import CheckResult
from lvsmon.config.model import Config
from lvsmon.engine.agentcheck import AgentRunner
from lvsmon.engine.certexpiry import CertWatch
from lvsmon.engine.checkstats import Transitions
from lvsmon.engine.desired import (
    VirtualLayout,
    adopt_health,
    capped_out,
    desired_table,
    fallbacks_of,
    is_up,
    kept_by_threshold,
    layout_of,
    managed_services,
)
from lvsmon.engine.eventlog import LOGGED, log_event
from lvsmon.engine.events import (
    CheckDone,
    DepoolLimited,
    DrainChanged,
    EventBus,
    FallbackChanged,
    FirstCheckDown,
    RealChanged,
    RealLeaving,
    SoftFailure,
    SoftReset,
)
from lvsmon.engine.health import ADOPTED_UP, RealHealth, Transition
from lvsmon.engine.jobs import CheckJob, Mode, Plan, RealRef, build_plan
from lvsmon.engine.leaving import (
    Change,
    LeavingState,
    deadconns_warning,
    merged,
    returning,
    status_of,
)
from lvsmon.engine.planning import (
    anchored,
    anchored_config,
    apply_modes,
    carried_health,
    changed_services,
)
from lvsmon.engine.probepath import NO_PROBES, Probes, changed_probes, plan_probes, with_probes
from lvsmon.engine.ramping import SlowStart
from lvsmon.engine.reconciler import DEFAULT_RESYNC_S, Desired, Reconciler
from lvsmon.engine.runner import CheckRunner, RunCheck
from lvsmon.engine.status import ProbesStatus, Stats, Status
from lvsmon.engine.statusview import StatusInputs, StatusView, stats_status
from lvsmon.engine.steering import Steering
from lvsmon.ipvs.backend import IpvsBackend
from lvsmon.ipvs.model import ServiceKey, Table

log = logging.getLogger("lvsmon")

OnCrash = Callable[[str, BaseException], None]


class Engine:
    def __init__(
        self,
        config: Config,
        backend: IpvsBackend,
        *,
        run_check: RunCheck | None = None,
        maintained: Callable[[Config, Plan], Collection[RealRef]] | None = None,
        drained: Callable[[Config, Plan], Collection[RealRef]] | None = None,
        events: EventBus | None = None,
        max_in_flight: int = 4096,
        reconcile_batch_s: float = 0.005,
        resync_s: float = DEFAULT_RESYNC_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.plan = build_plan(config)
        self.backend = backend
        self.clock = clock  # also health's time: flap damping's windows and holds
        self.health: dict[RealRef, RealHealth] = {}
        self.status_view = StatusView()  # status(): the entries it keeps, the places in health
        self.stats = Stats()
        self.transitions = Transitions()  # per (virtual, real), for /metrics
        self.transitions.follow(_refs_by_virtual(self.plan))
        # without a bus of its own caller (tests, the demo), the engine runs one with the log on it
        self._owns_events = events is None
        self.events = events if events is not None else EventBus()
        if self._owns_events:
            self.events.subscribe("log", log_event, kinds=LOGGED)
        self.runner = CheckRunner(
            self._fan_out,
            self.stats,
            run_check=run_check,
            max_in_flight=max_in_flight,
            clock=clock,
        )
        self.runner.on_first_done = self._first_round_over
        self.runner.on_unknown = self._unknown
        # the reconciler asks the engine what it wants (desired_for), nothing else
        self.reconciler = Reconciler(
            backend,
            self,
            self.events,
            self.stats,
            batch_s=reconcile_batch_s,
            resync_s=resync_s,
            clock=clock,
        )
        self.reconciler.own(managed_services(config))
        # the probe services' one destination each is read at every 12th resync only
        self.reconciler.light = lambda: self.probes.keys
        # weight caps (agent check, slow start): a change is a dirty reconciler, as a drain is
        self.steering = Steering(on_change=self.reconciler.mark_dirty)
        # slow start: a real that comes up ramps its weight, as a "ramp" cap (one timer)
        self.slowstart = SlowStart(self.steering, self.events.publish, clock)
        self.slowstart.configure(config)
        # the agent check: each real's agent lowers its weight (an "agent" cap) or takes it out
        # (counted as maintained); its exchanges a supervised loop of their own
        self.agents = AgentRunner(
            self.steering, self.events.publish, on_out_change=self.refresh_maintenance, clock=clock
        )
        # reals a reload removed, at weight 0 until they have no connection (removedrain)
        self.leaving = LeavingState(clock)
        # sslexpirywarn: each watched real's certificate end, and when to warn of it
        self.certs = CertWatch(self.events.publish)
        self.certs.configure(config, self.plan.rules)
        self.runner.on_cert = self.certs.observe
        self._maintained_fn = maintained
        self._maintained: frozenset[RealRef] = frozenset()
        self._drained_fn = drained
        self._drained: frozenset[RealRef] = frozenset()
        self._pool_up: dict[ServiceKey, bool] = {}
        # per virtual whose depool threshold keeps reals in now: those reals
        self._depool: dict[ServiceKey, tuple[RealRef, ...]] = {}
        self._layout: tuple[VirtualLayout, ...] = ()
        self._layout_for: Config | None = None
        self._loops: list[asyncio.Task[None]] = []
        # the probe services of checks through the VIP (engine/probepath.py), planned at start
        self.probes: Probes = NO_PROBES
        self._probes_counted: tuple[Probes, Table | None, int] | None = None
        self.on_crash: OnCrash | None = None
        self.crashed: BaseException | None = None

    # ---- views ------------------------------------------------------------------------------

    @property
    def actual(self) -> Table | None:
        return self.reconciler.actual

    @property
    def managed(self) -> set[ServiceKey]:
        return self.reconciler.managed

    @property
    def maintained(self) -> Collection[RealRef]:
        return self._maintained

    @property
    def drained(self) -> Collection[RealRef]:
        """(virtual, real) pairs an operator drained (`lvsmon drain`): weight 0 while up."""
        return self._drained

    @property
    def depool_limited(self) -> dict[ServiceKey, tuple[RealRef, ...]]:
        """Virtuals whose depool threshold keeps reals in although their checks took them down
        (as of the last reconcile), with those reals."""
        return self._depool

    @property
    def first_round_done(self) -> bool:
        """Every check has reported once: states from here on are observed, not assumed."""
        return self.runner.first_done.is_set()

    def desired(self) -> Table:
        return self.desired_for(self.actual or {}).table

    def desired_for(self, actual: Table, keys: Collection[ServiceKey] | None = None) -> Desired:
        """The reconciler's question (DesiredSource): the table for config, health,
        maintenance and drains, and each virtual's fallback destination; `keys`: of those
        services only."""
        config = self.config
        layout = self._layout_now()
        if keys is not None:
            layout = tuple(v for v in layout if v.key in keys)
        table = desired_table(
            config,
            self.health,
            self._maintained,
            actual,
            layout,
            self._drained,
            self.steering.caps(),
        )
        if self.leaving:
            merged(table, self.leaving.leaving, keys)
        with_probes(table, self.probes)
        return Desired(table, fallbacks_of(config))

    def _layout_now(self) -> tuple[VirtualLayout, ...]:
        if self._layout_for is not self.config:
            # a reload reuses the layout of every virtual it left as it was
            previous = None if self._layout_for is None else (self._layout_for, self._layout)
            self._layout, self._layout_for = layout_of(self.config, previous), self.config
        return self._layout

    def layout(self) -> tuple[VirtualLayout, ...]:
        """Each virtual's key and its reals' kernel keys, parsed once per config (/metrics)."""
        return self._layout_now()

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the kernel table, program what can be programmed now, start checking. A table
        that cannot be read or written now is retried by the reconciler; BackendError is raised
        only when the first dump fails (no IPVS, no permission): nothing to adopt from."""
        if self._owns_events:
            await self.events.start()
        self.reconciler.actual = await self.backend.dump()
        self.refresh_drained()
        # a drained real at weight 0 in the kernel is adopted as up: a restart changes nothing
        self.health = adopt_health(self.config, self.reconciler.actual, self._drained)
        # probe services before the first check: a marked check without its service would reach
        # any real of the production service; marks as the kernel holds them (a restart)
        self._use_probes(plan_probes(self.config, None, self.reconciler.actual))
        unchecked = self._unchecked_down(None)
        self._apply_modes()
        # checktype=on reals that were not serving come up now: slow start ramps them too
        for ref in unchecked:
            self.slowstart.came_up(ref)
        self.refresh_maintenance()
        self._warn_deadconns()
        await self.reconcile()
        self.runner.schedule(self.plan)
        self.agents.schedule(self.config)
        self._loops = [
            self._supervised(self.runner.run(), "lvsmon-checks"),
            self._supervised(self._reconcile_loop(), "lvsmon-reconcile"),
            self._supervised(self.slowstart.run(), "lvsmon-slowstart"),
            self._supervised(self.agents.run(), "lvsmon-agents"),
            self._supervised(self.leaving.run(self._read_counters, self._left), "lvsmon-leaving"),
        ]

    async def _reconcile_loop(self) -> None:
        """The reconciler's loop; after each of its passes, the edges it may have moved."""
        async with contextlib.aclosing(self.reconciler.passes()) as passes:
            async for _ in passes:
                self._pool_edges()

    async def reconcile(self, keys: Collection[ServiceKey] | None = None) -> bool:
        """One reconcile now (True: every op succeeded), then the edges it may have moved.
        `keys`: only these services may have changed (Reconciler.reconcile)."""
        ok = await self.reconciler.reconcile(keys)
        self._pool_edges()
        return ok

    def _supervised(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._loop_ended)
        return task

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            exc = RuntimeError(f"{task.get_name()} returned")
        self.crashed = exc
        log.critical(
            "%s crashed; lvsmon stops so that it is restarted",
            task.get_name(),
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if self.on_crash is not None:
            self.on_crash(task.get_name(), exc)

    async def wait_programmed(self) -> None:
        """Wait until every check has reported once and the table reflects it (callers bound
        this with asyncio.timeout)."""
        await self.runner.first_done.wait()
        await self.reconcile()

    async def stop(self, *, clean: bool = True) -> None:
        """Stop checking; with `clean`, delete the virtual services whose cleanstop is yes (and
        any removed virtual whose delete has not succeeded yet)."""
        for task in self._loops:
            task.remove_done_callback(self._loop_ended)
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        await self.runner.stop()
        if clean:
            keys = [v.key for v in self.config.virtuals if v.cleanstop]
            await self.reconciler.purge([*keys, *self.probes.keys])
        if self._owns_events:
            await self.events.stop()

    async def reload(self, config: Config) -> None:
        """Switch to a new, already validated config: health of reals whose check did not change
        carries over, everything else is adopted from the kernel; then one minimal reconcile
        (retried by the reconciler until it succeeds) of the virtual services that changed.
        When none did (and nothing else is pending), there is nothing to do, and it says so."""
        async with self.reconciler.lock:
            old_config, old_plan, old_health = self.config, self.plan, self.health
            actual = self.reconciler.actual
            if actual is None:
                try:
                    actual = await self.backend.dump()
                except Exception as exc:
                    log.error("cannot read the IPVS table: %s", exc)
                    actual = {}
                else:
                    self.reconciler.actual = actual
            if config.virtuals == self.config.virtuals:
                # no virtual changed (settings may have): the plan is made of the virtuals
                # alone, so it is the same, and every real's health carries over as it is (what
                # carried_health would give, without a pass over every real), its layout too
                plan, health = old_plan, old_health
                if self._layout_for is self.config:
                    self._layout_for = config
            else:
                old_layout = self._layout if self._layout_for is old_config else None
                # a virtual that lines added or removed above it moved keeps its part of the
                # plan (refs, jobs) and its layout: the running ones, taken over by its new self
                old_plan = anchored(old_plan, config)
                if self._layout_for is old_config:
                    self._layout_for = anchored_config(old_config, old_plan)
                plan = build_plan(config, old_plan)
                # the same function as `lvsmon plan`'s (engine/planning.py): a plan cannot
                # disagree
                drained = self._drained_of(config, plan)
                health = carried_health(old_plan, old_health, config, plan, actual, drained)
            self.config, self.plan, self.health = config, plan, health
            # ramps keep their start; those of removed reals end
            self.slowstart.configure(config)
            if plan is not old_plan:
                # checktype=on reals the reload added (or made so while down) came up
                for ref in self._unchecked_down(old_health, self.health):
                    self.slowstart.came_up(ref)
            self.certs.configure(config, plan.rules)
            self.agents.schedule(config)
            if plan is not old_plan:
                # removedrain: removed reals leave at weight 0, re-added ones stop leaving
                left = self.leaving.reload(
                    old_config, old_layout, config, self._layout_now(), actual
                )
                self._publish_leaving(left)
                for ref in returning(left, self._layout_now()):
                    self.health[ref] = ADOPTED_UP  # it had its weight: checks decide from here
            # each real keeps its probe mark: only the probe services of reals that gained or
            # lost a check through the VIP change
            probes = plan_probes(config, self.probes.marks, actual)
            moved = changed_probes(self.probes, probes)
            self._use_probes(probes)
            self.refresh_maintenance()
            self.refresh_drained()
            self._warn_deadconns()
            # which services the reload may change (None: all of them): the desired state of
            # any other is what the last pass wrote, the same inputs giving the same table
            changed: set[ServiceKey] | None = changed_services(old_plan, plan)
            if config.settings.readdquiescent != old_config.settings.readdquiescent:
                changed = None
            elif changed is not None:
                changed |= moved
        if changed is not None and not changed and not self.reconciler.pending:
            if config.digest == old_config.digest:
                log.info("Configuration unchanged: nothing to do")
            else:
                log.info("Virtual services unchanged: nothing to do in the IPVS table")
        else:
            await self.reconcile(changed)
        if plan is not old_plan:  # the same plan: the runner goes on as it was
            self.runner.schedule(self.plan)
            # reals removed with their counts: forgotten (the soak's edits grew the counts
            # without end where /metrics was never scraped)
            self.transitions.follow(_refs_by_virtual(plan))
            self.transitions.keep_only(plan.rules)
            # caps of pairs the reload removed go with them
            self.steering.keep_only(plan.rules)

    def _use_probes(self, probes: Probes) -> None:
        """Own the config's services and these probe services; the checks take their marks."""
        self.probes = probes
        self.reconciler.own(managed_services(self.config) | probes.keys)
        viapath.use_marks({(a, f.value): mark for (a, f), mark in probes.marks.items()})

    # ---- checks -----------------------------------------------------------------------------

    def _apply_modes(self) -> None:
        apply_modes(self.plan, self.health)

    def _unchecked_down(
        self,
        before: Mapping[RealRef, RealHealth] | None,
        after: Mapping[RealRef, RealHealth] | None = None,
    ) -> list[RealRef]:
        """The reals no check decides (checktype=on) that were not up in `before` (None: in
        self.health now, a start before apply_modes) and are up in `after` (None: taken as
        up): they come up without a transition. Only with slow start somewhere (else nothing
        is looked at)."""
        if not self.slowstart.settings:
            return []
        old = self.health if before is None else before
        out = []
        for ref, mode in self.plan.mode_of.items():
            if mode != Mode.ALWAYS_UP:
                continue
            prev = old.get(ref)
            if prev is not None and prev.up:
                continue
            if after is None or ((now := after.get(ref)) is not None and now.up):
                out.append(ref)
        return out

    def want_every_result(self, on: bool) -> None:
        """Publish CheckDone for every result (a monitorfile needs them); off, a healthy pool's
        steady state does no per-result work."""
        self.runner.every_result = on

    async def run_once(self, job: CheckJob) -> None:
        """Run one slot of `job` now, without the clock (for tests and tools)."""
        await self.runner.run_once(job, self.plan.jobs.get(job, ()))

    def _fan_out(self, refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        """One check result to every (virtual, real) it feeds. True when another good result
        with the same reason would change nothing (the runner's steady shortcut may skip it):
        every one is up, so none is counting passes toward risecount or held by damping."""
        publish = self.events.publish
        every = self.runner.every_result
        rules_of = self.plan.rules
        settled = True
        for ref in refs:
            old = self.health.get(ref)
            if old is None:
                continue
            rules = rules_of[ref]
            failurecount, damping = rules.failurecount, rules.damping
            new, transition = old.observe(
                result.ok,
                result.reason,
                failurecount,
                rules.risecount,
                damping,
                0.0 if damping is None else self.clock(),
            )
            if transition is Transition.DOWN:
                # the depool threshold keeps the latest failures in
                new = dataclasses.replace(new, down_at=self.clock())
            self.health[ref] = new
            settled = settled and new.up
            if transition is not None:
                self.transitions.record(ref, transition is Transition.UP)
                # the state's reason: a real that flap damping holds down says so
                publish(RealChanged(ref, transition is Transition.UP, new.reason))
                self.reconciler.mark_dirty()
                if transition is Transition.UP:
                    self.slowstart.came_up(ref)
                else:
                    self.slowstart.went_down(ref)
            elif not result.ok and new.up:
                publish(SoftFailure(ref, new.failcount, failurecount, result.reason))
            elif not old.checked and not result.ok:
                # never up, so no transition: the log still says why it is out
                publish(FirstCheckDown(ref, new.reason))
            elif result.ok and old.failcount and old.up:
                publish(SoftReset(ref))
            if every:
                publish(CheckDone(ref, result.ok, result.reason))
        return settled

    def _unknown(self, refs: tuple[RealRef, ...], reason: str) -> None:
        """A check judged unknown (the daemon was late): health stays as it was, counts and all;
        only its reason says what the last check was."""
        for ref in refs:
            old = self.health.get(ref)
            if old is not None:
                self.health[ref] = dataclasses.replace(old, reason=reason)

    def _first_round_over(self) -> None:
        self.reconciler.mark_dirty()

    # ---- the table --------------------------------------------------------------------------

    def refresh_maintenance(self) -> bool:
        """Re-read forced-down reals (maintenance, and the reals agents take out); True when
        that set changed."""
        new = self.agents.out
        if self._maintained_fn is not None:
            new = frozenset(self._maintained_fn(self.config, self.plan)) | new
        if new == self._maintained:
            return False  # the same object stays: the status's shortcut compares by identity
        self._maintained = new
        self.reconciler.mark_dirty()
        return True

    def _drained_of(self, config: Config, plan: Plan) -> frozenset[RealRef]:
        if self._drained_fn is None:
            return frozenset()
        return frozenset(self._drained_fn(config, plan))

    def refresh_drained(self) -> bool:
        """Re-read the drained pairs; True when that set changed (each change is an event)."""
        new = self._drained_of(self.config, self.plan)
        old = self._drained
        if new == old:
            return False
        self._drained = new
        known = self.plan.failurecount
        for ref in sorted(new - old, key=str):
            self.events.publish(DrainChanged(ref, True))
        # a pair gone with the config it was in is not undrained: its entry stays for later
        for ref in sorted(old - new, key=str):
            if ref in known:
                self.events.publish(DrainChanged(ref, False))
        self.reconciler.mark_dirty()
        return True

    def up_of(self) -> dict[ServiceKey, bool]:
        """Per virtual: is any of its reals up (and neither in maintenance nor drained nor
        capped to weight 0)?"""
        health, maintained, drained = self.health, self._maintained, self._drained
        caps = self.steering.caps()
        return {
            v.key: any(
                is_up(ref, health, maintained)
                and ref not in drained
                and not capped_out(ref, conf, caps)
                for ref, conf in zip(v.refs, v.confs, strict=True)
            )
            # reals the depool threshold keeps in serve as well
            or bool(v.depool is not None and kept_by_threshold(v, health, maintained, drained))
            for v in self._layout_now()
        }

    def down_slots(self) -> list[tuple[ServiceKey, str]]:
        """(virtual, kernel destination "rip:port") of every real that is not up now."""
        health, maintained = self.health, self._maintained
        return [
            (v.key, str(dest))
            for v in self._layout_now()
            for ref, dest in zip(v.refs, v.dests, strict=True)
            if not is_up(ref, health, maintained)
        ]

    def _pool_edges(self) -> None:
        """After each reconcile or resync, whatever its outcome: FallbackChanged when a
        virtual's "no real is up" state changed, DepoolLimited when its depool threshold started
        or stopped keeping reals in."""
        self._depool_states()
        # before the first round of checks, "no real is up" only means "none checked yet"
        if not self.first_round_done:
            return
        for key, up in self.up_of().items():
            if self._pool_up.get(key) is not up:
                self._pool_up[key] = up
                self.events.publish(FallbackChanged(key, not up))

    def _depool_states(self) -> None:
        """DepoolLimited when a virtual's threshold starts or stops keeping reals in (only reals
        that checks took down can be kept: none before the first failure)."""
        health, maintained, drained = self.health, self._maintained, self._drained
        now: dict[ServiceKey, tuple[RealRef, ...]] = {}
        for v in self._layout_now():
            if v.depool is not None:
                kept = kept_by_threshold(v, health, maintained, drained)
                if kept:
                    now[v.key] = kept
        old = self._depool
        if not now and not old:
            return
        self._depool = now
        for key, kept in now.items():
            if key not in old:
                self.events.publish(DepoolLimited(key, kept, True))
        for key in old:
            if key not in now:  # also a virtual a reload removed, or whose threshold it did
                self.events.publish(DepoolLimited(key, (), False))

    # ---- leaving reals (removedrain) ---------------------------------------------------------

    async def _read_counters(self) -> Table | None:
        """The kernel's connection counters for the leaving reals: a dump, under the
        reconciler's lock (one backend call at a time); None when it failed."""
        async with self.reconciler.lock:
            try:
                return await self.backend.dump()
            except Exception as exc:  # BackendError, or a broken backend: the deadlines still run
                log.error("cannot read the connection counters: %s", exc)
                return None

    def _warn_deadconns(self) -> None:
        """deadconns=expire without the kernel's expire_nodest_conn: said at start and reload."""
        warning = deadconns_warning(self.config, self.backend.name)
        if warning is not None:
            log.warning("%s", warning)

    def _left(self, changes: list[Change]) -> None:
        """Reals done leaving: deleted by the next pass."""
        self._publish_leaving(changes)
        self.reconciler.mark_dirty()

    def _publish_leaving(self, changes: list[Change]) -> None:
        for c in changes:
            self.events.publish(RealLeaving(c.service, c.dest, c.started, c.reason, c.seconds))

    # ---- status -----------------------------------------------------------------------------

    def status(self) -> Status:
        """The state an operator wants to see: every virtual, every real, why, and the figures,
        built now (the daemon encodes status_head() and status_texts() instead)."""
        virtuals = self.status_view.virtuals(self._status_inputs())
        status = self.status_head()
        status["virtuals"] = virtuals
        return status

    def status_head(self) -> Status:
        """The status without its virtuals: the figures (the daemon adds its own)."""
        stats = stats_status(
            self.stats, len(self.plan.jobs), self.runner, self.reconciler, self.events
        )
        return {
            "config": self.config.path,
            "backend": self.backend.name,
            "stats": stats,
            "probes": self._probes_status(),
            "leaving": status_of(self.leaving.leaving, self.clock(), time.time(), str),
        }

    def _probes_status(self) -> ProbesStatus | None:
        """Counted again only when the probes or the table are new objects (an apply, a
        resync): a ServiceKey hashes in Python, and the status is built each second."""
        probes, actual = self.probes, self.actual
        if not probes.table:
            return None
        cached = self._probes_counted
        if cached is None or cached[0] is not probes or cached[1] is not actual:
            table = actual or {}
            present = sum(1 for k, svc in probes.table.items() if table.get(k) == svc)
            cached = self._probes_counted = (probes, actual, present)
        return {"markbase": probes.base, "services": len(probes.table), "in_kernel": cached[2]}

    def status_texts(self) -> list[bytes]:
        """Each virtual's status entry as compact JSON (lvsmon/engine/statusview.py: a
        virtual's text is kept while nothing of it changed)."""
        return self.status_view.texts(self._status_inputs())

    def _status_inputs(self) -> StatusInputs:
        return StatusInputs(
            self.config,
            self._layout_now(),
            self.health,
            self.actual or {},
            self._maintained,
            self._drained,
            self.plan.rules,
            self.clock,
            self.steering,
            self.slowstart.step_of,
            self.agents,
        )

    def health_places(self) -> list[Sequence[int]]:
        """Per virtual, its reals' places in the order of self.health (-1: none): /metrics reads
        health by place, as the status does."""
        return self.status_view.health_places(self.config, self.health, self._layout_now())


def _refs_by_virtual(plan: Plan) -> Iterator[tuple[ServiceKey, tuple[RealRef, ...]]]:
    """Each virtual's reals, in the plan's order (what Transitions follows)."""
    return ((key, part[1]) for key, part in plan.parts.items())
