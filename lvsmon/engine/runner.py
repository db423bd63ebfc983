"""The check runner: starts every check job on its slot of the timetable, on the prober (plain
TCP checks, no task each) or as a task, and hands each result to the engine.

It knows nothing of health or the kernel: `on_result(refs, result)` is all it calls.

Admission (lvsmon/engine/lag.py, "Admission"): at most `window.size` checks are in flight; a
due check past it waits in the timetable and starts late (`deferred` counts those of the grid,
not the first round's), so that an overloaded daemon stretches its periods, as keepalived does,
instead of starting checks whose answers it cannot read in time. The window follows the lag
monitor's ticks and how slow the good results were since the last one (their share of the
timeout); while checks are deferred a log line says so at most every DEFER_LOG_EVERY_S.

The checks' file descriptors are bounded by the prober's budget (lvsmon/checks/fds.py): a probe
takes one, a check run as a task takes `task_fds(spec)` once it is through the gate, and waits
for them, its deadline not running yet, when the budget is spent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, ItemsView, Iterator, Mapping, ValuesView

from lvsmon.addr import host_port
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.fds import HELD, task_fds
from lvsmon.checks.prober import ProbePlan, Prober, hold_prober, release_prober
from lvsmon.checks.registry import plan_probe
from lvsmon.engine.checkstats import CheckCounts
from lvsmon.engine.jobs import CheckJob, Plan, RealRef, Refs, packed_refs, unpack_refs
from lvsmon.engine.lag import (
    SLOW_SHARE,
    AdmissionWindow,
    LagMonitor,
    forgiven,
    late_timeout,
    overload_lag,
    slow,
)
from lvsmon.engine.status import Stats
from lvsmon.engine.timetable import Entry, Timetable
from lvsmon.text import LIMIT, clean

# The check loop sleeps at least this long between rounds of starts. A small pool pays for its
# wake-ups more than for its checks: at 500 HTTP checks a second the daemon's Python ran 50-60 µs a
# check (16 at 10,000 a second, where the work comes in batches), most of it an interpreter woken
# with cold caches for one or two starts. 20 ms starts ten at a time there: 150-204 -> 121-150 µs
# of CPU a check (user + system, in-process, four runs), for starts up to 20 ms late (2 % of a
# 1 s interval; the period is unchanged, every round being late alike).
WAKE_QUANTUM_S = 0.02
DEFER_LOG_EVERY_S = 10.0  # the overload line, at most this often

log = logging.getLogger("lvsmon")

RunCheck = Callable[[CheckSpec], Awaitable[CheckResult]]
# returns whether another good result with the same reason would change nothing (see steady)
OnResult = Callable[[tuple[RealRef, ...], CheckResult], bool]
# a timed-out result judged unknown (the daemon was late): the words status shows for it
OnUnknown = Callable[[tuple[RealRef, ...], str], None]
OnCert = Callable[[tuple[RealRef, ...], float], None]


def _timeout(job: CheckJob) -> float:
    """The smallest timeout of a job's checks (a combined one's connect may be shorter)."""
    connect = job.connect
    return job.spec.timeout if connect is None else min(job.spec.timeout, connect.timeout)


class _Gate:
    """Bounds the checks in flight as tasks (their descriptors are the prober's budget's).
    asyncio.Semaphore rescans its waiters on every release, which turns quadratic when thousands
    of late checks queue at once; here a release hands its slot to the oldest waiter in O(1)."""

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


class _Rare:
    """A JobRun's state that few jobs ever need, made on first use (a combined check's at
    once): five slots fewer make a JobRun 128 bytes instead of 160 (pymalloc rounds to 16), at
    37,000 jobs."""

    __slots__ = ("connect_plan", "connects_left", "unknown_since", "unknowns")

    def __init__(self) -> None:
        # a combined check's connect on the prober (None: as a task through run_check), and
        # the connects still due before the next negotiate
        self.connect_plan: ProbePlan | None = None
        self.connects_left = 0
        self.unknowns = 0  # late timeouts in a row (lvsmon/engine/lag.py), and since when
        self.unknown_since = 0.0


class JobRun(CheckCounts, Entry):
    """A check job's running state. It is the timetable's key: hashed by identity, where the
    CheckJob itself hashes every field of its spec on each lookup. Its /metrics figures are its
    own slots (CheckCounts), and so is its place in the timetable (Entry): one object per job,
    not three; no callback of its own (the prober gives it to the runner's)."""

    __slots__ = (
        "job",  # and its lag_mark, at its place (CheckCounts')
        "packed",
        "rare",
        "running",  # Entry's four, but its interval (its job's) and its phase (CheckCounts')
        "slot",
        "spec_plan",
        "steady",
    )

    def __init__(self, job: CheckJob, refs: Refs, probes: bool) -> None:
        super().__init__()
        Entry.__init__(self)
        self.job = job
        self.packed = refs  # the plan's own (jobs.JobRefs): a single ref needs no tuple
        # how each of its checks runs on the prober; None: as a task through run_check
        self.spec_plan: ProbePlan | None = plan_probe(job.spec) if probes else None
        # the reason of the last good result when every ref's health is exactly what another good
        # result with that reason would make it: that result then changes nothing
        self.steady: str | None = None
        self.rare: _Rare | None = None  # a combined check's connects, late timeouts
        if job.connect is not None:
            self.rare = _Rare()
            if probes:
                self.rare.connect_plan = plan_probe(job.connect)

    @property
    def interval(self) -> float:
        """The timetable's (Entry): its job's, fixed for its life (a job with another interval
        is another job, so another run)."""
        return self.job.interval

    @interval.setter
    def interval(self, value: float) -> None:
        if value != self.job.interval:
            raise ValueError(f"a run's interval is its job's ({self.job.interval}), not {value}")

    @property
    def refs(self) -> tuple[RealRef, ...]:
        """The (virtual, real) pairs its results feed."""
        return unpack_refs(self.packed)

    @property
    def counts(self) -> CheckCounts:
        """For /metrics: every (virtual, real) of the job shows them."""
        return self

    def __repr__(self) -> str:
        # also the timetable's key for the job's phase (timetable.spread_phase hashes the
        # repr): its check and real, never its address, so that a restart keeps the spread
        job = self.job
        return f"JobRun({job.kind} {host_port(job.host, job.port)} {job.service} {job.interval:g}s)"


# a dropped run's `packed` (schedule): a check of it still in flight must not reach health; an
# empty tuple of its own, never a plan's refs nor run_once's ()
class _Dropped(tuple[RealRef, ...]):
    __slots__ = ()


_DROPPED: tuple[RealRef, ...] = _Dropped()


class Runs(Mapping[CheckJob, JobRun]):
    """The scheduled jobs' runs, in plan order: a list, where a dict by job was 35 bytes a job
    more (the plan's own dict has the jobs; a run has its job). A lookup by job scans them (for
    tests and tools: run_once, and setting one); values() and items() do not look up."""

    __slots__ = ("_runs",)

    def __init__(self, runs: list[JobRun]) -> None:
        self._runs = runs

    def __getitem__(self, job: CheckJob) -> JobRun:
        for run in self._runs:
            if run.job is job or run.job == job:
                return run
        raise KeyError(job)

    def __iter__(self) -> Iterator[CheckJob]:
        return (run.job for run in self._runs)

    def __len__(self) -> int:
        return len(self._runs)

    def values(self) -> ValuesView[JobRun]:
        return _RunValues(self)

    def items(self) -> ItemsView[CheckJob, JobRun]:
        return _RunItems(self)

    def add(self, run: JobRun) -> None:
        self._runs.append(run)

    def __setitem__(self, job: CheckJob, run: JobRun) -> None:
        """`run` for `job` (its job, or one equal to it), instead of that job's run if any:
        that one is dropped (its checks in flight are ignored, as a reload's are)."""
        for i, known in enumerate(self._runs):
            if known.job is job or known.job == job:
                if known is not run:
                    known.packed = _DROPPED
                self._runs[i] = run
                return
        self._runs.append(run)

    def __repr__(self) -> str:
        return f"Runs({self._runs!r})"


class _RunValues(ValuesView[JobRun]):
    _mapping: Runs

    def __iter__(self) -> Iterator[JobRun]:
        return iter(self._mapping._runs)


class _RunItems(ItemsView[CheckJob, JobRun]):
    _mapping: Runs

    def __iter__(self) -> Iterator[tuple[CheckJob, JobRun]]:
        return ((run.job, run) for run in self._mapping._runs)


class CheckRunner:
    def __init__(
        self,
        on_result: OnResult,
        stats: Stats,
        *,
        run_check: RunCheck | None = None,
        max_in_flight: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = run_check is None
        if run_check is None:
            from lvsmon.checks.registry import run_check as default_run_check

            run_check = default_run_check
        self._run_check = run_check
        self._on_result = on_result
        self.stats = stats
        # set while someone wants every result (a monitorfile): the steady fast path is off
        self.every_result = False
        self._prober: Prober | None = None
        self._runs = Runs([])
        self._clock = clock
        self._timetable: Timetable[JobRun] = Timetable()
        self._in_flight = _Gate(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiter: asyncio.Future[None] | None = None
        self._first_pending: set[JobRun] = set()
        self.first_done = asyncio.Event()
        self.on_first_done: Callable[[], None] | None = None
        # the loop's lag, on the real monotonic clock whatever `clock` is: deadlines run on it
        self.lag = LagMonitor()
        self.lag_clock = time.monotonic
        self.on_unknown: OnUnknown | None = None
        # a TLS check read its certificate's notAfter (sslexpirywarn: engine/certexpiry.py)
        self.on_cert: OnCert | None = None
        # admission: the checks in flight, bounded by a window that follows the lag
        self.window = AdmissionWindow()
        self._late_s = overload_lag(math.inf)  # set from the jobs' smallest timeout
        self._held = False  # the window held a due check back since the last lag tick
        self._good = self._slow = 0  # good results since the last lag tick, and slow ones
        self._done_at = 0  # stats.checks_done at the last lag tick
        self._slow_s = math.inf  # a good result this slow may be slow (SLOW_SHARE, smallest)
        self.lag.on_tick = self._on_lag_tick
        self.deferred = 0  # starts of the grid that began late because the window was full
        self._deferred_logged = 0
        self._deferred_logged_at = -math.inf
        # since that line: the deferred starts' lateness (s) in all and at most, the longest period
        self._late_sum = self._late_max = self._stretched_to = 0.0
        # what the prober calls back with the run: made once, not per job nor per check
        self._on_spec_done = self._spec_done
        self._on_connect_done = self._connect_done

    @property
    def running(self) -> int:
        return self._timetable.running

    @property
    def skipped(self) -> int:
        return self._timetable.skipped

    @property
    def runs(self) -> Runs:
        """The scheduled jobs' running state (schedule() replaces the mapping)."""
        return self._runs

    @property
    def tasks(self) -> set[asyncio.Task[None]]:
        return self._tasks

    def schedule(self, plan: Plan) -> None:
        """Run `plan`'s jobs from now on; a job that stays keeps its state and its slot."""
        # the plan's jobs (a dict of this call's own): a run that stays takes its job's place
        jobs: dict[CheckJob, Refs | JobRun] = dict(packed_refs(plan.jobs))
        for run in self._runs._runs:
            refs = jobs.get(run.job)
            if refs is None or isinstance(refs, JobRun):
                run.packed = _DROPPED
            else:
                run.packed = refs
                jobs[run.job] = run
        runs: list[JobRun] = []
        pending: set[JobRun] = set()
        for job, entry in jobs.items():
            if isinstance(entry, JobRun):
                run = entry
                if run in self._first_pending:
                    pending.add(run)
            else:
                run = self._new_run(job, entry)
                pending.add(run)
            run.steady = None  # health may have been adopted anew
            runs.append(run)
        self._runs = Runs(runs)
        self._first_pending = pending
        smallest = min((_timeout(run.job) for run in runs), default=math.inf)
        self._late_s = overload_lag(smallest)
        self._slow_s = SLOW_SHARE * smallest
        if not pending:
            self._first_round_over()
        self._timetable.set_jobs({run: run.job.interval for run in runs}, self._clock())
        self._wake()

    def _new_run(self, job: CheckJob, refs: Refs) -> JobRun:
        return JobRun(job, refs, self._probes)

    def _ensure_prober(self) -> None:
        if self._probes and self._prober is None:
            self._prober = hold_prober(asyncio.get_running_loop())
            self._prober.lost = self.lag.lost_at  # a server's turn counts while we are on time

    async def run_once(self, job: CheckJob, refs: tuple[RealRef, ...] = ()) -> None:
        """Run one slot of `job` now, the way the scheduler would, without the clock (for tests
        and tools): returns when its result has been taken in."""
        run = self._runs.get(job)
        if run is None:
            run = self._new_run(job, refs)
            self._runs.add(run)
        self._ensure_prober()
        run.lag_mark = self.lag.lost_at(self.lag_clock())
        connect, plan = self._route(run)
        if plan is not None and self._prober is not None:
            self._done(run, connect, await self._prober.probe(plan))
        else:
            await self._run_job(run, connect)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def run(self) -> None:
        """The check loop: runs until cancelled."""
        self._ensure_prober()
        loop = asyncio.get_running_loop()
        tt = self._timetable
        lag = self.lag
        monitor = loop.create_task(lag.run(), name="lvsmon-lag")
        try:
            await self._loop(loop, tt, lag)
        finally:
            monitor.cancel()

    async def _loop(
        self, loop: asyncio.AbstractEventLoop, tt: Timetable[JobRun], lag: LagMonitor
    ) -> None:
        window = self.window
        while True:
            now = self._clock()
            mark = -1.0  # read once per round, and only when a check starts
            held = tt.held_at  # a start due by then had been held back by the window
            for start in tt.pop_due(now, window.size - tt.running):
                self.stats.checks_started += 1
                self.stats.record_lateness(start.lateness)
                if mark < 0:
                    mark = lag.lost_at(self.lag_clock())
                run = start.key
                run.lag_mark = mark
                if start.due <= held:
                    self._deferred(run, start.lateness)
                self._start(run)
            if tt.held_at == now:
                self._held = True
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

    def _deferred(self, run: JobRun, lateness: float) -> None:
        """A start the window held back; the first round's pacing is by design, not counted."""
        if self._first_pending and run in self._first_pending:
            return
        self.deferred += 1
        self._late_sum += lateness
        if lateness > self._late_max:
            self._late_max = lateness
        period = run.job.interval + lateness
        if period > self._stretched_to:
            self._stretched_to = period

    def _on_lag_tick(self, lag: float, now: float) -> None:
        """The lag monitor's tick: the window follows the lag; the overload line."""
        done = self.stats.checks_done
        self.window.tick(
            lag, self._held, self._late_s, slow(self._good, self._slow), done - self._done_at
        )
        self._held = False
        self._good = self._slow = 0
        self._done_at = done
        fresh = self.deferred - self._deferred_logged
        if not fresh or now - self._deferred_logged_at < DEFER_LOG_EVERY_S:
            return
        log.warning(
            "the daemon is overloaded: %d checks started late to keep the others on time (%.2f s"
            " late on average, up to %.1f s); period stretched to up to %.1f s (checks in flight"
            " at most %d, event loop lag up to %.0f ms in the last minute)",
            fresh,
            self._late_sum / fresh,
            self._late_max,
            self._stretched_to,
            self.window.size,
            self.lag.peak * 1000,
        )
        self._deferred_logged, self._deferred_logged_at = self.deferred, now
        self._late_sum = self._late_max = self._stretched_to = 0.0

    async def stop(self) -> None:
        """Cancel every check in flight and close the prober."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._prober is not None:
            release_prober(self._prober)
            self._prober = None

    @staticmethod
    def _route(run: JobRun) -> tuple[bool, ProbePlan | None]:
        """Which of the job's checks is due (the connect of a combined check?), and its probe
        plan when it runs on the prober."""
        rare = run.rare
        if rare is not None and rare.connects_left > 0 and run.job.connect is not None:
            return True, rare.connect_plan
        return False, run.spec_plan

    def _start(self, run: JobRun) -> None:
        connect, plan = self._route(run)
        if plan is not None and self._prober is not None:
            self._prober.start_with(
                plan, self._on_connect_done if connect else self._on_spec_done, run
            )
            return
        task = asyncio.get_running_loop().create_task(self._run_job(run, connect))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, run: JobRun, connect: bool) -> None:
        spec = run.job.connect if connect else run.job.spec
        assert spec is not None
        try:
            await self._in_flight.acquire()
            try:
                result = await self._run_metered(spec)
            finally:
                self._in_flight.release()
        except asyncio.CancelledError:
            self._finished(run)  # stopping: no result to count
            raise
        except Exception as exc:  # run_check never raises; an injected one might
            result = CheckResult(False, f"check failed: {exc!r}")
        self._done(run, connect, result)

    async def _run_metered(self, spec: CheckSpec) -> CheckResult:
        """run_check with the check's descriptors taken from the prober's budget (none without
        a prober: an injected run_check)."""
        prober = self._prober
        if prober is None:
            return await self._run_check(spec)
        fds = task_fds(spec)
        await prober.fds.acquire(fds)
        token = HELD.set(True)  # its own probes are counted in these
        try:
            return await self._run_check(spec)
        finally:
            HELD.reset(token)
            prober.fds.give(fds)

    def _spec_done(self, run: JobRun, result: CheckResult) -> None:
        self._done(run, False, result)

    def _connect_done(self, run: JobRun, result: CheckResult) -> None:
        self._done(run, True, result)

    def _done(self, run: JobRun, connect: bool, result: CheckResult) -> None:
        """One finished check: its result, then its slot in the timetable."""
        try:
            job = run.job
            if run.packed is _DROPPED:
                # a check of a job a reload dropped: its spec is gone, and its result must not
                # reach the health of reals a new job checks now (whose steady shortcut would
                # then hide their good results: down for good)
                return
            rare = run.rare
            if job.connect is not None:  # combined: N connects after each good negotiate
                if rare is None:
                    rare = run.rare = _Rare()
                if not connect:
                    rare.connects_left = job.num_connects if result.ok else 0
                elif result.ok:
                    rare.connects_left -= 1
                else:
                    rare.connects_left = 0
            if result.timed_out:
                judged = self._judge_timeout(run, connect, result)
                if judged is None:
                    return
                result = judged
            elif rare is not None and rare.unknowns:
                rare.unknowns = 0
            if result.ok:
                self._good += 1
                latency = result.latency_s  # the smallest timeout's share first: one compare
                if latency >= self._slow_s and latency >= SLOW_SHARE * _timeout(job):
                    self._slow += 1
            run.record(result)  # its counts; before the steady shortcut: every check counts
            if result.cert_not_after is not None and self.on_cert is not None:
                self.on_cert(run.refs, result.cert_not_after)  # steady or not
            if not result.ok:
                self.stats.checks_failed += 1
            # the steady state of a healthy pool: another good result changes nothing
            reason = result.reason
            if not (result.ok and run.steady == reason and not self.every_result):
                # the server's words reach health, status, log, events, mails and monitorfile
                # from here: clean (lvsmon/text.py); inlined, its common case is one C-speed test
                if not (reason.isprintable() and len(reason) <= LIMIT):
                    result = dataclasses.replace(result, reason=clean(reason))
                settled = self._on_result(run.refs, result)
                # not while a real counts passes toward risecount or is held by flap damping:
                # each of those passes changes its health (compared as the check said it)
                run.steady = reason if result.ok and settled else None
        finally:
            self._finished(run)

    def _judge_timeout(self, run: JobRun, connect: bool, result: CheckResult) -> CheckResult | None:
        """A timed-out result as it counts: None when unknown (the daemon lost a good share of
        the check's time), else the result (a late one past the bound says so)."""
        spec = run.job.connect if connect else run.job.spec
        assert spec is not None
        now = self.lag_clock()
        lost = self.lag.lost_at(now) - run.lag_mark
        # the peer's bytes the check received (the prober and run_check count them)
        received = result.received
        if not late_timeout(lost, spec.timeout, received, result.peer_turn_s):
            if run.rare is not None:
                run.rare.unknowns = 0
            return result
        rare = run.rare
        if rare is None:
            rare = run.rare = _Rare()
        if not rare.unknowns:
            rare.unknown_since = now
        if forgiven(rare.unknowns, now - rare.unknown_since):
            rare.unknowns += 1
            self.stats.checks_unknown += 1
            self.lag.unknown += 1
            run.steady = None  # the next pass must reach health: its reason is stale now
            if self.on_unknown is not None:
                self.on_unknown(
                    run.refs,
                    f"last check unknown: {clean(result.reason)}, but the daemon was late"
                    f" (lost {lost * 1000:.0f} ms of it)",
                )
            return None
        self.stats.checks_untrusted += 1
        self.lag.untrusted += 1
        return CheckResult(
            False,
            f"{result.reason} (the daemon was late, but this check has timed out late for too"
            " long: counted as a failure)",
            result.latency_s,
            True,
            received,
        )

    def _finished(self, run: JobRun) -> None:
        self._timetable.finished(run)
        self.stats.checks_done += 1
        # empty after the first round; runs hash by identity, so the lookup is cheap
        if self._first_pending and run in self._first_pending:
            self._first_pending.discard(run)
            if not self._first_pending:
                # a fresh set: an emptied one keeps its table (some 50 bytes a job at 10,000)
                self._first_pending = set()
                self._first_round_over()

    def _first_round_over(self) -> None:
        if not self.first_done.is_set():
            self.first_done.set()
            if self.on_first_done is not None:
                self.on_first_done()
