from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.engine.timetable import Timetable, spread_phase


def drive(
    tt: Timetable[str], until: float, step: float, run_time: float = 0.0
) -> list[tuple[str, float]]:
    """Advance a fake clock; each started job finishes after run_time."""
    starts: list[tuple[str, float]] = []
    pending: list[tuple[float, str]] = []
    now = 0.0
    while now <= until:
        for done in [p for p in pending if p[0] <= now]:
            pending.remove(done)
            tt.finished(done[1])
        for s in tt.pop_due(now):
            starts.append((s.key, now))
            pending.append((now + run_time, s.key))
        now = round(now + step, 9)
    return starts


def test_first_runs_are_immediate_for_all_jobs() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({f"j{i}": 1.0 for i in range(100)}, now=0.0)
    assert len(tt.pop_due(0.0)) == 100


def test_steady_state_is_fixed_rate_and_spread() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({f"j{i}": 1.0 for i in range(200)}, now=0.0)
    starts = drive(tt, until=10.0, step=0.001)
    per_job: dict[str, list[float]] = {}
    for key, t in starts:
        per_job.setdefault(key, []).append(t)
    for times in per_job.values():
        gaps = [b - a for a, b in itertools.pairwise(times[1:])]
        assert all(abs(g - 1.0) < 0.0015 for g in gaps)
        assert 0.5 <= times[1] - times[0] < 1.5
    # after the first round, no millisecond holds more than a few starts of 200 jobs
    later = [round(t, 3) for _, t in starts if t >= 2.0]
    assert max(later.count(t) for t in set(later)) <= 4
    buckets = [sum(1 for t in later if 2.0 + b / 10 <= t < 2.0 + (b + 1) / 10) for b in range(10)]
    assert min(buckets) > 5


def test_a_running_job_is_never_started_twice() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({"slow": 1.0}, now=0.0)
    starts = drive(tt, until=10.0, step=0.01, run_time=2.5)
    times = [t for _, t in starts]
    assert all(b - a >= 2.5 for a, b in itertools.pairwise(times))
    assert tt.skipped > 0


def test_reload_keeps_unchanged_jobs_in_place_and_drops_removed_ones() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({"a": 1.0, "b": 1.0}, now=0.0)
    assert sorted(s.key for s in tt.pop_due(0.0)) == ["a", "b"]
    tt.finished("a")
    tt.finished("b")
    tt.set_jobs({"a": 1.0, "c": 1.0}, now=0.2)
    assert [s.key for s in tt.pop_due(0.2)] == ["c"]  # new job at once, a not restarted
    seen = {s.key for s in tt.pop_due(5.0)}
    assert "b" not in seen and "a" in seen


def test_a_stalled_loop_skips_missed_slots_instead_of_bursting() -> None:
    tt: Timetable[str] = Timetable()
    tt.set_jobs({"a": 1.0}, now=0.0)
    tt.pop_due(0.0)
    tt.finished("a")
    starts = tt.pop_due(100.0)
    assert len(starts) == 1 and starts[0].lateness > 1.0
    tt.finished("a")
    assert tt.pop_due(100.0) == []
    nd = tt.next_due()
    assert nd is not None and 100.0 < nd <= 101.0


@settings(max_examples=50)
@given(st.text(min_size=1, max_size=20), st.floats(0.1, 100))
def test_phase_is_stable_and_inside_the_interval(key: str, interval: float) -> None:
    p = spread_phase(key, interval)
    assert 0 <= p < interval
    assert spread_phase(key, interval) == p
