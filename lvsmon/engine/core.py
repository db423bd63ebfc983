"""The running engine: checks feed health, health feeds one reconciler, the reconciler alone writes
the kernel. Everything here is asyncio on one loop; the decisions it calls are pure functions."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.prober import ProbePlan, Prober, plan_probe
from lvsmon.config.model import Config, Real, Virtual
from lvsmon.engine.desired import adopt_health, desired_table, is_up, managed_services
from lvsmon.engine.health import RealHealth, Transition
from lvsmon.engine.plan import CheckJob, Mode, Plan, RealRef, build_plan
from lvsmon.engine.timetable import Timetable
from lvsmon.engine.wording import describe
from lvsmon.ipvs.apply import apply_ops
from lvsmon.ipvs.backend import BackendError, IpvsBackend
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.model import DestKey, ServiceKey, Table, kernel_dest_port
from lvsmon.ipvs.ops import DeleteService, Op

log = logging.getLogger("lvsmon")

WAKE_QUANTUM_S = 0.004  # the check loop sleeps at least this long between rounds of starts

RunCheck = Callable[[CheckSpec], Awaitable[CheckResult]]
Listener = Callable[["Engine", RealRef, CheckResult, Transition | None], None]


@dataclass(slots=True)
class Stats:
    """Figures the status output and the benchmarks read."""

    checks_started: int = 0
    checks_done: int = 0
    checks_failed: int = 0
    # how late checks started (s) against their slot: the most recent ones, a bounded window
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=20000))
    reconciles: int = 0
    ops_applied: int = 0
    ops_failed: int = 0

    def record_lateness(self, value: float) -> None:
        self.lateness.append(value)

    def lateness_ms(self) -> dict[str, float]:
        if not self.lateness:
            return {}
        ordered = sorted(self.lateness)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 3)}


class _Gate:
    """Bounds the checks in flight. asyncio.Semaphore rescans its waiters on every release, which
    turns quadratic when thousands of late checks queue at once (11 % of the daemon's CPU at
    10,000 reals); here a release hands its slot to the oldest waiter in O(1)."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled before using it: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class _JobRun:
    """A check job's running state. It is the timetable's key: hashed by identity, where the
    CheckJob itself hashes every field of its spec on each lookup."""

    __slots__ = (
        "connect_plan",
        "connects_left",
        "job",
        "on_connect_done",
        "on_spec_done",
        "refs",
        "spec_plan",
        "steady",
    )

    def __init__(
        self,
        job: CheckJob,
        refs: tuple[RealRef, ...],
        probes: bool,
        done: Callable[[_JobRun, bool, CheckResult], None],
    ) -> None:
        self.job = job
        self.refs = refs
        # how each of its checks runs on the prober; None: as a task through run_check
        self.spec_plan: ProbePlan | None = plan_probe(job.spec) if probes else None
        self.connect_plan: ProbePlan | None = (
            plan_probe(job.connect) if probes and job.connect is not None else None
        )
        self.connects_left = 0  # combined checks: connects still due before the next negotiate
        # the reason of the last good result when every ref's health is exactly what another good
        # result with that reason would make it: that result then changes nothing
        self.steady: str | None = None
        # what the prober calls back: made once, not per check
        self.on_spec_done = functools.partial(done, self, False)
        self.on_connect_done = functools.partial(done, self, True)


class Engine:
    def __init__(
        self,
        config: Config,
        backend: IpvsBackend,
        *,
        run_check: RunCheck | None = None,
        maintained: Callable[[Config, Plan], Collection[RealRef]] | None = None,
        max_in_flight: int = 4096,
        reconcile_batch_s: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        default_probes = run_check is None
        if run_check is None:
            from lvsmon.checks.registry import run_check as default_run_check

            run_check = default_run_check
        self.config = config
        self.plan = build_plan(config)
        self.backend = backend
        self.health: dict[RealRef, RealHealth] = {}
        self.actual: Table | None = None
        self.managed: set[ServiceKey] = managed_services(config)
        self.stats = Stats()
        self.listeners: list[Listener] = []
        self.kernel_listeners: list[Callable[[str, bool], None]] = []
        self.after_reconcile: list[Callable[[Engine], None]] = []
        self._run_check = run_check
        self._probes = default_probes
        self._prober: Prober | None = None
        self._runs: dict[CheckJob, _JobRun] = {}
        self._rows: list[tuple[Virtual, ServiceKey, list[tuple[Real, RealRef, DestKey]]]] = []
        self._rows_for: Config | None = None
        self._maintained_fn = maintained
        self._maintained: Collection[RealRef] = frozenset()
        self._clock = clock
        self._timetable: Timetable[_JobRun] = Timetable()
        self._in_flight = _Gate(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()
        self._batch_s = reconcile_batch_s
        self._loops: list[asyncio.Task[None]] = []
        self._first_pending: set[_JobRun] = set()
        self._first_done = asyncio.Event()

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the kernel table, program what can be programmed now, start checking.
        Raises BackendError when the table cannot even be read (no IPVS, no permission)."""
        self.actual = await self.backend.dump()
        self.health = adopt_health(self.config, self.actual)
        self._apply_modes()
        self.refresh_maintenance()
        await self.reconcile()
        self._ensure_prober()
        self._schedule_jobs()
        self._loops = [
            asyncio.create_task(self._check_loop(), name="lvsmon-checks"),
            asyncio.create_task(self._reconcile_loop(), name="lvsmon-reconcile"),
        ]

    async def wait_programmed(self) -> None:
        """Wait until every check has reported once and the table reflects it (callers bound
        this with asyncio.timeout)."""
        await self._first_done.wait()
        await self.reconcile()

    async def stop(self, *, clean: bool = True) -> None:
        """Stop checking; with `clean`, delete the virtual services whose cleanstop is yes."""
        for task in self._loops:
            task.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*self._loops, *tasks, return_exceptions=True)
        self._loops = []
        if self._prober is not None:
            self._prober.close()
            self._prober = None
        if not clean:
            return
        ops: list[Op] = [
            DeleteService(v.key)
            for v in self.config.virtuals
            if v.cleanstop and (self.actual is None or v.key in self.actual)
        ]
        if ops:
            async with self._lock:
                await self._apply(ops, stopping=True)

    async def reload(self, config: Config) -> None:
        """Switch to a new, already validated config: health of reals whose check did not change
        carries over, everything else is adopted from the kernel; then one minimal reconcile."""
        async with self._lock:
            old_plan, old_health = self.plan, self.health
            actual = self.actual if self.actual is not None else await self.backend.dump()
            self.actual = actual
            fresh = adopt_health(config, actual)
            plan = build_plan(config)
            health: dict[RealRef, RealHealth] = {}
            for ref, state in fresh.items():
                same = ref in old_health and (
                    old_plan.job_of.get(ref) == plan.job_of.get(ref)
                    and old_plan.mode_of.get(ref) == plan.mode_of.get(ref)
                )
                health[ref] = old_health[ref] if same else state
            self.managed = managed_services(self.config) | managed_services(config)
            self.config, self.plan, self.health = config, plan, health
            self._apply_modes()
            self.refresh_maintenance()
        await self.reconcile()
        self.managed = managed_services(config)
        self._schedule_jobs()

    # ---- checks -----------------------------------------------------------------------------

    def _apply_modes(self) -> None:
        for ref, mode in self.plan.mode_of.items():
            if mode == Mode.ALWAYS_UP:
                self.health[ref] = RealHealth(
                    up=True, checked=True, reason="not checked: always up"
                )

    def _schedule_jobs(self) -> None:
        runs: dict[CheckJob, _JobRun] = {}
        pending: set[_JobRun] = set()
        for job, refs in self.plan.jobs.items():
            run = self._runs.get(job)  # a job that stays keeps its state and its slot
            if run is None:
                run = self._new_run(job)
                pending.add(run)
            elif run in self._first_pending:
                pending.add(run)
            run.refs = refs
            run.steady = None  # health may have been adopted anew
            runs[job] = run
        self._runs = runs
        self._first_pending = pending
        if not pending:
            self._first_done.set()
        self._timetable.set_jobs({run: run.job.interval for run in runs.values()}, self._clock())
        self._wake()

    def _new_run(self, job: CheckJob) -> _JobRun:
        return _JobRun(job, self.plan.jobs.get(job, ()), self._probes, self._done)

    def _ensure_prober(self) -> None:
        if self._probes and self._prober is None:
            self._prober = Prober(asyncio.get_running_loop())

    async def run_once(self, job: CheckJob) -> None:
        """Run one slot of `job` now, the way the scheduler would, without the clock (for tests
        and tools): returns when its result has been taken in."""
        run = self._runs.get(job)
        if run is None:
            run = self._runs[job] = self._new_run(job)
        self._ensure_prober()
        connect, plan = self._route(run)
        if plan is not None and self._prober is not None:
            self._done(run, connect, await self._prober.probe(plan))
        else:
            await self._run_job(run, connect)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tt = self._timetable
        while True:
            now = self._clock()
            for start in tt.pop_due(now):
                self.stats.checks_started += 1
                self.stats.record_lateness(start.lateness)
                self._start(start.key)
            due = tt.next_due()
            self._waiter = loop.create_future()
            handle = None
            if due is not None:
                # Spread phases put the next start a few µs away at 10,000 checks a second: one
                # loop wake-up (a timer, a future, a task step) per check. A short floor lets one
                # wake-up start every check due in it, for at most that much more lateness.
                delay = max(due - self._clock(), WAKE_QUANTUM_S)
                handle = loop.call_later(delay, self._wake)
            await self._waiter
            if handle is not None:
                handle.cancel()

    @staticmethod
    def _route(run: _JobRun) -> tuple[bool, ProbePlan | None]:
        """Which of the job's checks is due (the connect of a combined check?), and its probe
        plan when it runs on the prober."""
        connect = run.job.connect is not None and run.connects_left > 0
        return connect, run.connect_plan if connect else run.spec_plan

    def _start(self, run: _JobRun) -> None:
        connect, plan = self._route(run)
        if plan is not None and self._prober is not None:
            self._prober.start(plan, run.on_connect_done if connect else run.on_spec_done)
            return
        task = asyncio.get_running_loop().create_task(self._run_job(run, connect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, run: _JobRun, connect: bool) -> None:
        spec = run.job.connect if connect else run.job.spec
        assert spec is not None
        try:
            await self._in_flight.acquire()
            try:
                result = await self._run_check(spec)
            finally:
                self._in_flight.release()
        except asyncio.CancelledError:
            self._finished(run)  # stopping: no result to count
            raise
        except Exception as exc:  # run_check never raises; an injected one might
            result = CheckResult(False, f"check failed: {exc!r}")
        self._done(run, connect, result)

    def _done(self, run: _JobRun, connect: bool, result: CheckResult) -> None:
        """One finished check: its result, then its slot in the timetable."""
        try:
            job = run.job
            if job.connect is not None:  # combined: N connects after each good negotiate
                if not connect:
                    run.connects_left = job.num_connects if result.ok else 0
                elif result.ok:
                    run.connects_left -= 1
                else:
                    run.connects_left = 0
            if not result.ok:
                self.stats.checks_failed += 1
            # the steady state of a healthy pool: another good result changes nothing
            if not (result.ok and run.steady == result.reason and not self.listeners):
                self._fan_out(run.refs, result)
                run.steady = result.reason if result.ok else None
        finally:
            self._finished(run)

    def _finished(self, run: _JobRun) -> None:
        self._timetable.finished(run)
        self.stats.checks_done += 1
        # empty after the first round; runs hash by identity, so the lookup is cheap
        if self._first_pending and run in self._first_pending:
            self._first_pending.discard(run)
            if not self._first_pending:
                self._first_done.set()
                self._dirty.set()

    def _fan_out(self, refs: tuple[RealRef, ...], result: CheckResult) -> None:
        """One check result to every (virtual, real) it feeds."""
        for ref in refs:
            old = self.health.get(ref)
            if old is None:
                continue
            new, transition = old.observe(result.ok, result.reason, self.plan.failurecount[ref])
            self.health[ref] = new
            if transition is not None:
                word = "up" if transition is Transition.UP else "down"
                log.info("Real server %s is %s: %s", ref, word, result.reason)
                self._dirty.set()
            elif not result.ok and new.up:
                log.info(
                    "Soft failure real server: %s failure %d/%d: %s",
                    ref,
                    new.failcount,
                    self.plan.failurecount[ref],
                    result.reason,
                )
            elif result.ok and old.failcount and old.up:
                log.info("Resetting soft failure count: %s", ref)
            for listener in self.listeners:
                listener(self, ref, result, transition)

    # ---- the table --------------------------------------------------------------------------

    def refresh_maintenance(self) -> bool:
        """Re-read forced-down reals; True when that set changed."""
        if self._maintained_fn is None:
            return False
        new = frozenset(self._maintained_fn(self.config, self.plan))
        changed = new != self._maintained
        self._maintained = new
        if changed:
            self._dirty.set()
        return changed

    @property
    def maintained(self) -> Collection[RealRef]:
        return self._maintained

    def desired(self) -> Table:
        return desired_table(self.config, self.health, self._maintained, self.actual or {})

    async def _reconcile_loop(self) -> None:
        while True:
            await self._dirty.wait()
            # results that land within a few ms of each other (a switch port dies) become one batch
            await asyncio.sleep(self._batch_s)
            self._dirty.clear()
            if not await self.reconcile():
                await asyncio.sleep(1.0)  # the kernel refused something: retry from a fresh dump
                self._dirty.set()

    async def reconcile(self) -> bool:
        """Bring the kernel to the desired table; True when every op succeeded."""
        async with self._lock:
            if self.actual is None:
                try:
                    self.actual = await self.backend.dump()
                except BackendError as exc:
                    log.error("cannot read the IPVS table: %s", exc)
                    return False
            ops = diff(self.desired(), self.actual, self.managed)
            self.stats.reconciles += 1
            ok = await self._apply(ops) if ops else True
            for hook in self.after_reconcile:
                hook(self)
            return ok

    def _snapshot_rows(
        self,
    ) -> list[tuple[Virtual, ServiceKey, list[tuple[Real, RealRef, DestKey]]]]:
        """Per virtual its key and per real its ref and kernel key, once per config: building
        the keys parses every address (70 ms at 10,000 reals, each second, checks waiting)."""
        if self._rows_for is not self.config:
            rows = []
            for v in self.config.virtuals:
                key = v.key
                reals = []
                for r in v.reals:
                    ref = RealRef(key, r.address, r.port)
                    reals.append((r, ref, kernel_dest_port(key, ref.dest, r.forward)))
                rows.append((v, key, reals))
            self._rows, self._rows_for = rows, self.config
        return self._rows

    def snapshot(self) -> dict[str, object]:
        """The state an operator wants to see: every virtual, every real, why, and the figures."""
        table = self.actual or {}
        virtuals = []
        for v, key, rows in self._snapshot_rows():
            service = table.get(key)
            reals = []
            for r, ref, kernel_dest in rows:
                h = self.health.get(ref)
                dest = service.dests.get(kernel_dest) if service else None
                reals.append(
                    {
                        "address": r.address,
                        "port": r.port,
                        "state": "maintenance"
                        if ref in self._maintained
                        else ("up" if h and h.up else "down"),
                        "checked": bool(h and h.checked),
                        "failcount": h.failcount if h else 0,
                        "reason": h.reason if h else "",
                        "kernel_weight": None if dest is None else dest.weight,
                        "weight": r.weight,
                    }
                )
            virtuals.append({"name": v.name, "file": v.file, "line": v.line, "reals": reals})
        return {
            "config": self.config.path,
            "backend": self.backend.name,
            "virtuals": virtuals,
            "stats": {
                "jobs": len(self.plan.jobs),
                "checks_started": self.stats.checks_started,
                "checks_done": self.stats.checks_done,
                "checks_failed": self.stats.checks_failed,
                "checks_running": self._timetable.running,
                "slots_skipped": self._timetable.skipped,
                "lateness_ms": self.stats.lateness_ms(),
                "reconciles": self.stats.reconciles,
                "ops_applied": self.stats.ops_applied,
                "ops_failed": self.stats.ops_failed,
            },
        }

    @property
    def first_round_done(self) -> bool:
        """Every check has reported once: states from here on are observed, not assumed."""
        return self._first_done.is_set()

    def up_of(self) -> dict[ServiceKey, bool]:
        """Per virtual: is any of its reals up (and not in maintenance)?"""
        up: dict[ServiceKey, bool] = {}
        for v in self.config.virtuals:
            up[v.key] = any(
                is_up(RealRef(v.key, r.address, r.port), self.health, self._maintained)
                for r in v.reals
            )
        return up

    async def _apply(self, ops: list[Op], stopping: bool = False) -> bool:
        results = await self.backend.apply(ops)
        ok = True
        for res in results:
            text = describe(res.op, self.config, stopping)
            if res.error is None:
                self.stats.ops_applied += 1
                log.info("%s", text)
            else:
                ok = False
                self.stats.ops_failed += 1
                log.error("failed: %s: %s", text, res.error.message)
            for listener in self.kernel_listeners:
                listener(text, res.error is None)
        if ok and self.actual is not None:
            self.actual, _ = apply_ops(self.actual, ops)
        else:
            self.actual = None  # the next reconcile starts from a fresh dump
        return ok
