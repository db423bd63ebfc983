"""Lag-aware timeouts (lvsmon/engine/lag.py): the monitor on a fake clock, the pure rules, and the
runner's judgement of a timed-out result."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine import lag as lagmod
from lvsmon.engine.jobs import CheckJob, RealRef
from lvsmon.engine.lag import (
    LAG_SHARE,
    TICK_S,
    UNKNOWN_MAX_S,
    UNKNOWN_MIN_RUNS,
    LagMonitor,
    forgiven,
    late_timeout,
)
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from lvsmon.ipvs.model import ServiceKey


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_700_000_000.0
        self.boot = 500.0

    def advance(self, s: float, *, wall: float | None = None, boot: float | None = None) -> None:
        self.mono += s
        self.wall += s if wall is None else wall
        self.boot += s if boot is None else boot

    def monitor(self) -> LagMonitor:
        return LagMonitor(lambda: self.mono, lambda: self.wall, lambda: self.boot)


def test_on_time_ticks_lose_nothing() -> None:
    c = Clocks()
    m = c.monitor()
    assert m.lost_at(c.mono) == 0.0  # not running: nothing overdue
    for _ in range(50):
        due = m.tick()
        assert due == pytest.approx(c.mono + TICK_S)
        c.advance(TICK_S)
    assert m.lost == pytest.approx(0.0, abs=1e-9)
    assert m.peak == pytest.approx(0.0, abs=1e-9)


def test_a_late_tick_adds_its_lag_and_the_overdue_part_counts_before_it() -> None:
    c = Clocks()
    m = c.monitor()
    m.tick()
    c.advance(TICK_S + 2.0)  # the loop stalled two seconds
    # a check timing out now runs before the monitor's own wake-up: the overdue part counts
    assert m.lost_at(c.mono) == pytest.approx(2.0)
    m.tick()
    assert m.lost == pytest.approx(2.0)
    assert m.lost_at(c.mono) == pytest.approx(2.0)
    assert m.last == pytest.approx(2.0)
    assert m.peak == pytest.approx(2.0)


def test_peak_is_the_largest_lag_of_the_last_minute() -> None:
    c = Clocks()
    m = c.monitor()
    m.tick()
    c.advance(TICK_S + 0.5)
    m.tick()
    c.advance(TICK_S + 0.2)
    m.tick()
    assert m.peak == pytest.approx(0.5)
    for _ in range(int(lagmod.WINDOW_S / TICK_S) + 5):
        c.advance(TICK_S)
        m.tick()
    assert m.peak == pytest.approx(0.0, abs=1e-9)


def test_suspend_counts_as_lag_and_a_wall_step_does_not(caplog: pytest.LogCaptureFixture) -> None:
    c = Clocks()
    m = c.monitor()
    m.tick()
    c.advance(TICK_S, boot=TICK_S + 30.0)  # suspended 30 s: monotonic stood still
    m.tick()
    assert m.lost == pytest.approx(30.0)
    with caplog.at_level(logging.WARNING, logger="lvsmon"):
        c.advance(TICK_S, wall=TICK_S + 3600.0)  # NTP stepped the wall clock an hour
        m.tick()
    assert m.lost == pytest.approx(30.0)
    assert m.clock_steps == 1
    assert "wall clock stepped by +3600" in caplog.text


def test_rules() -> None:
    assert late_timeout(LAG_SHARE * 2.0, 2.0)
    assert not late_timeout(LAG_SHARE * 2.0 - 0.01, 2.0)
    assert not late_timeout(0.0, 1.0)
    # a server that had its turn for all but LAG_SHARE of the timeout: its own silence
    assert late_timeout(2.0, 2.0, peer_turn=(1 - LAG_SHARE) * 2.0 - 0.01)
    assert not late_timeout(2.0, 2.0, peer_turn=(1 - LAG_SHARE) * 2.0)
    # forgiven while the run is short in count or in time; beyond both it is a failure
    assert forgiven(0, 0.0)
    assert forgiven(UNKNOWN_MIN_RUNS - 1, 1000.0)
    assert forgiven(1000, UNKNOWN_MAX_S - 1)
    assert not forgiven(UNKNOWN_MIN_RUNS, UNKNOWN_MAX_S)


def test_report_is_aggregated(caplog: pytest.LogCaptureFixture) -> None:
    c = Clocks()
    m = c.monitor()
    with caplog.at_level(logging.WARNING, logger="lvsmon"):
        m.tick()
        for _ in range(30):
            m.unknown += 5
            c.advance(TICK_S)
            m.tick()
    lines = [r for r in caplog.records if "counted as unknown" in r.getMessage()]
    assert len(lines) == 1  # 3 s of ticks: one line, at the first
    assert lines[0].getMessage().startswith("5 check timeouts")


# ---- the runner's judgement --------------------------------------------------------------------


REF = RealRef(ServiceKey.inet("tcp", "127.0.0.100", 80), "127.0.0.1", 8080)
SPEC = CheckSpec("connect", "127.0.0.1", 8080, timeout=1.0)
TIMED_OUT = CheckResult(False, "timeout after 1s during connect", 1.0, timed_out=True)


class Fed:
    def __init__(self) -> None:
        self.results: list[CheckResult] = []
        self.unknown: list[str] = []

    def result(self, refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        self.results.append(result)
        return False

    def on_unknown(self, refs: tuple[RealRef, ...], reason: str) -> None:
        self.unknown.append(reason)


def runner_with(fed: Fed) -> CheckRunner:
    async def never(spec: CheckSpec) -> CheckResult:
        raise AssertionError("not run")

    runner = CheckRunner(fed.result, Stats(), run_check=never)
    runner.on_unknown = fed.on_unknown
    return runner


def judge(runner: CheckRunner, lost: float, result: CheckResult = TIMED_OUT) -> None:
    """One check of the job that lost `lost` s to the daemon's lag during its life."""
    job = CheckJob(SPEC, 1.0)
    run = runner._runs.get(job) or runner._new_run(job, (REF,))
    runner._runs[job] = run
    run.lag_mark = runner.lag.lost_at(runner.lag_clock())
    runner.lag.lost += lost
    runner._done(run, False, result)


async def test_a_timeout_without_lag_is_a_failure() -> None:
    fed = Fed()
    runner = runner_with(fed)
    judge(runner, 0.0)
    judge(runner, LAG_SHARE * SPEC.timeout * 0.9)
    assert [r.ok for r in fed.results] == [False, False]
    assert runner.stats.checks_unknown == 0
    assert runner.stats.checks_failed == 2


async def test_a_late_timeout_is_unknown_and_reaches_no_health() -> None:
    fed = Fed()
    runner = runner_with(fed)
    judge(runner, 0.9)
    assert fed.results == []
    assert runner.stats.checks_unknown == 1
    assert runner.stats.checks_failed == 0
    assert runner.stats.checks_done == 1
    assert "last check unknown: timeout after 1s during connect" in fed.unknown[0]
    assert "lost 900 ms" in fed.unknown[0]
    # a late failure that is not a timeout is a failure: lag did not cause "refused"
    judge(runner, 0.9, CheckResult(False, "connect: connection refused", 0.001))
    assert [r.reason for r in fed.results] == ["connect: connection refused"]


async def test_late_timeouts_count_again_past_the_bound() -> None:
    now = [1000.0]
    fed = Fed()
    runner = runner_with(fed)
    runner.lag_clock = lambda: now[0]
    for _ in range(UNKNOWN_MIN_RUNS + 5):  # many, but quickly: all forgiven
        judge(runner, 0.9)
        now[0] += 1.0
    assert fed.results == []
    now[0] += UNKNOWN_MAX_S
    judge(runner, 0.9)
    judge(runner, 0.9)
    assert len(fed.results) == 2
    assert all(not r.ok and "counted as a failure" in r.reason for r in fed.results)
    assert runner.stats.checks_untrusted == 2
    # a pass ends the run: late timeouts are forgiven again
    judge(runner, 0.0, CheckResult(True, "connect: connected", 0.001))
    judge(runner, 0.9)
    assert runner.stats.checks_unknown == UNKNOWN_MIN_RUNS + 6
    assert len(fed.results) == 3


async def test_monitor_runs_with_the_runner() -> None:
    fed = Fed()
    runner = runner_with(fed)
    task = asyncio.get_running_loop().create_task(runner.run())
    await asyncio.sleep(0.25)
    assert runner.lag.due != float("inf")
    time.sleep(0.5)  # noqa: ASYNC251 - blocking the loop on purpose: the monitor sees it
    await asyncio.sleep(0.25)
    assert runner.lag.lost >= 0.35
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runner.lag.due == float("inf")
