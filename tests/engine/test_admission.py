"""Admission (lvsmon/engine/lag.py, "Admission"; issue 22): the window's rule, pure and exhaustive;
the timetable's limit; the runner holding due checks back while its window is full (a fake clock
and lag ticks fed by hand), counting them and saying so in the log."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine import runner as runnermod
from lvsmon.engine.jobs import CheckJob, Plan, RealRef
from lvsmon.engine.lag import (
    LAG_SHARE,
    OVERLOAD_LAG_MAX_S,
    OVERLOAD_LAG_MIN_S,
    SHRINK_GAP_TICKS,
    WINDOW_CEILING,
    WINDOW_FLOOR,
    WINDOW_START,
    AdmissionWindow,
    overload_lag,
    slow,
)
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from lvsmon.engine.timetable import Timetable
from lvsmon.ipvs.model import ServiceKey

LATE = 0.25

# ---- the rule ----------------------------------------------------------------------------------


def test_overload_lag_is_well_under_what_makes_a_timeout_unknown() -> None:
    assert overload_lag(3.0) == pytest.approx(LAG_SHARE * 3.0 / 3)
    assert overload_lag(1.0) == pytest.approx(LAG_SHARE / 3)
    for timeout in (0.25, 0.5, 1.0, 3.0, 5.0):
        assert overload_lag(timeout) < LAG_SHARE * timeout
    assert overload_lag(0.01) == OVERLOAD_LAG_MIN_S  # a tick's own jitter is not overload
    assert overload_lag(60.0) == OVERLOAD_LAG_MAX_S
    assert overload_lag(float("inf")) == OVERLOAD_LAG_MAX_S  # no job yet


def test_a_late_tick_halves_it_then_waits_for_what_was_in_flight_to_drain() -> None:
    w = AdmissionWindow()
    assert w.size == WINDOW_START
    assert w.tick(LATE + 0.01, True, LATE) == WINDOW_START // 2
    for _ in range(SHRINK_GAP_TICKS - 1):  # still late: the last cut has not taken effect yet
        assert w.tick(5.0, True, LATE) == WINDOW_START // 2
    assert w.tick(5.0, True, LATE) == max(WINDOW_FLOOR, WINDOW_START // 4)
    for _ in range(100):
        w.tick(5.0, True, LATE)
    assert w.size == WINDOW_FLOOR  # checks always progress


def test_on_time_it_grows_by_a_quarter_of_what_finished_only_while_it_holds_checks_back() -> None:
    w = AdmissionWindow()
    many = 10**6
    assert w.tick(LATE, False, LATE, done=many) == WINDOW_START  # on time, but never full
    assert w.tick(0.0, True, LATE, done=0) == WINDOW_START  # nothing came back: no evidence
    assert w.tick(0.0, True, LATE, done=400) == WINDOW_START + 100  # a quarter of the results
    assert w.tick(0.0, True, LATE, done=many) == WINDOW_START + 100 + (WINDOW_START + 100) // 4
    for _ in range(200):
        w.tick(0.0, True, LATE, done=many)
    assert w.size == WINDOW_CEILING


def test_slow_good_answers_shrink_it_as_a_late_tick_does() -> None:
    assert not slow(100, 50) and slow(100, 51)  # most of the good results
    assert not slow(0, 0)
    w = AdmissionWindow()
    assert w.tick(0.0, True, LATE, slowed=True) == WINDOW_START // 2


def test_sizes_are_clamped_at_construction() -> None:
    assert AdmissionWindow(1).size == WINDOW_FLOOR
    assert AdmissionWindow(10**9).size == WINDOW_CEILING


@given(
    st.lists(
        st.tuples(st.floats(0.0, 10.0), st.booleans(), st.booleans(), st.integers(0, 10**5)),
        max_size=300,
    ),
    st.integers(1, 5000),
    st.integers(1, 100),
)
def test_any_ticks_keep_it_in_bounds_and_move_it_the_right_way(
    ticks: list[tuple[float, bool, bool, int]], start: int, floor: int
) -> None:
    w = AdmissionWindow(start, floor=floor, ceiling=4096)
    for lag, limited, slowed, done in ticks:
        before = w.size
        after = w.tick(lag, limited, LATE, slowed, done)
        assert floor <= after <= 4096
        if lag > LATE or slowed:
            assert after in (before, max(floor, before // 2))  # never grows when late
        elif limited:
            assert after == min(4096, before + min(before // 4, done // 4))
        else:
            assert after == before


# ---- the timetable's limit ---------------------------------------------------------------------


def test_a_limit_holds_the_rest_due_oldest_first_and_late_starts_rejoin_the_grid() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({f"j{i}": 1.0 for i in range(10)}, now=0.0)
    first = tt.pop_due(0.0, 4)
    assert len(first) == 4 and tt.held_at == 0.0
    assert tt.pop_due(0.1, 0) == [] and tt.held_at == 0.1
    later = tt.pop_due(0.5, 100)
    assert len(later) == 6 and tt.held_at == 0.1  # nothing held back this time
    assert all(s.lateness == pytest.approx(0.5) for s in later)
    for s in first + later:
        tt.finished(s.key)
    # each job's next slot is on its own grid after the late start: one start each, no burst
    seen: dict[str, list[float]] = {}
    t = 0.5
    while t < 4.0:
        t = round(t + 0.01, 6)
        for s in tt.pop_due(t):
            seen.setdefault(s.key, []).append(t)
            tt.finished(s.key)
    assert sorted(seen) == sorted(f"j{i}" for i in range(10))
    for times in seen.values():
        assert len(times) in (3, 4)
        assert all(0.98 <= b - a <= 1.02 for a, b in itertools.pairwise(times))


def test_without_a_limit_it_never_holds() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({f"j{i}": 1.0 for i in range(100)}, now=0.0)
    assert len(tt.pop_due(0.0)) == 100
    assert tt.held_at == float("-inf")


# ---- the runner --------------------------------------------------------------------------------

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)


def plan_of(n: int, interval: float = 1.0) -> Plan:
    jobs: dict[CheckJob, tuple[RealRef, ...]] = {}
    for i in range(n):
        spec = CheckSpec("connect", f"127.0.1.{i + 1}", 80, timeout=3.0)
        jobs[CheckJob(spec, interval)] = (RealRef(VKEY, spec.host, 80),)
    return Plan(
        jobs=jobs,
        job_of={refs[0]: job for job, refs in jobs.items()},
        mode_of={},
        failurecount={refs[0]: 1 for refs in jobs.values()},
    )


class Held:
    """An injected run_check whose checks stay in flight until released."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future[CheckResult]] = []
        self.started = 0

    async def __call__(self, spec: CheckSpec) -> CheckResult:
        self.started += 1
        future: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        return await future

    def release(self) -> None:
        for future in self.waiting:
            future.set_result(CheckResult(True, "connect: connected", 0.001))
        self.waiting = []


@pytest.fixture
def clock() -> Iterator[list[float]]:
    yield [1000.0]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


async def test_the_runner_defers_what_its_window_cannot_take_and_says_so(
    clock: list[float], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runnermod, "DEFER_LOG_EVERY_S", 0.0)
    held = Held()
    results: list[bool] = []

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        results.append(result.ok)
        return result.ok

    runner = CheckRunner(on_result, Stats(), run_check=held, clock=lambda: clock[0])
    runner.window = AdmissionWindow(4, floor=4, ceiling=8)
    runner.schedule(plan_of(10, interval=1.0))
    task = asyncio.get_running_loop().create_task(runner._loop(
        asyncio.get_running_loop(), runner._timetable, runner.lag
    ))  # fmt: skip
    try:
        # the first round is admitted four at a time, paced, and not counted as deferred
        await settle()
        assert held.started == 4 and runner.running == 4
        held.release()
        await settle()
        assert held.started == 8
        held.release()
        await settle()
        assert held.started == 10
        held.release()
        await settle()
        assert runner.first_done.is_set() and runner.deferred == 0
        # a second past every job's next slot: ten due, four taken, six deferred
        clock[0] += 2.0
        runner._wake()
        await settle()
        assert held.started == 14 and runner.running == 4
        with caplog.at_level(logging.WARNING, logger="lvsmon"):
            runner._on_lag_tick(0.0, 1.0)  # on time, and the window held checks back: grows
        assert runner.window.size == 5
        assert caplog.messages == []  # nothing deferred has started yet
        held.release()  # the window frees up: the deferred ones start, late
        await settle()
        assert held.started == 19
        held.release()
        await settle()
        assert held.started == 20
        held.release()
        await settle()
        assert runner.deferred == 6
        assert max(runner.stats.lateness) >= 0.5
        with caplog.at_level(logging.WARNING, logger="lvsmon"):
            runner._on_lag_tick(5.0, 2.0)  # late: halved, down to its floor
        assert runner.window.size == 4
        (line,) = [m for m in caplog.messages if "overloaded" in m]
        assert line.startswith("the daemon is overloaded: 6 checks started late")
        assert re.search(r"\(\d\.\d\d s late on average, up to \d\.\d s\)", line), line
        assert re.search(r"period stretched to up to (1\.[5-9]|2\.\d) s", line), line
        assert all(results) and runner.stats.checks_done == 20  # (steady passes skip health)
        assert runner.stats.checks_unknown == runner.stats.checks_failed == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        held.release()
        await runner.stop()


async def test_slow_good_results_shrink_the_window_and_timeouts_do_not() -> None:
    runner = CheckRunner(lambda refs, result: True, Stats(), run_check=Held())
    runner.schedule(plan_of(40))
    runs = list(runner.runs.values())
    hung = CheckResult(False, "timeout after 3s during connect", 3.0, timed_out=True)
    for run in runs:  # hung reals: their timeouts say nothing of the others' queues
        runner._done(run, False, hung)
    for run in runs:
        runner._done(run, False, CheckResult(True, "connect: connected", 0.01))
    runner._on_lag_tick(0.0, 1.0)
    assert runner.window.size == WINDOW_START
    for run in runs[:20]:  # half of the good results took half their timeout: a few backends
        runner._done(run, False, CheckResult(True, "connect: connected", 1.5))
    for run in runs[20:]:
        runner._done(run, False, CheckResult(True, "connect: connected", 0.01))
    runner._on_lag_tick(0.0, 1.1)
    assert runner.window.size == WINDOW_START
    for run in runs[:21]:  # most of them: the reals' queues
        runner._done(run, False, CheckResult(True, "connect: connected", 1.5))
    for run in runs[21:]:
        runner._done(run, False, CheckResult(True, "connect: connected", 0.01))
    runner._on_lag_tick(0.0, 1.2)
    assert runner.window.size == WINDOW_START // 2


async def test_the_lag_monitor_drives_the_window() -> None:
    runner = CheckRunner(lambda refs, result: True, Stats(), run_check=Held())
    runner.schedule(plan_of(3))
    assert runner._late_s == overload_lag(3.0)
    runner.lag.tick()
    runner.lag.due = runner.lag._clock() - 1.0  # the next tick is a second late
    runner.lag.tick()
    assert runner.window.size == WINDOW_START // 2
