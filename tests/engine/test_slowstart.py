"""Slow start's ramp (engine/slowstart.py, pure): the steps of every weight, their times, the
heap of due steps; and the log lines of its event."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.engine.eventlog import log_event
from lvsmon.engine.events import RampChanged
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.slowstart import MAX_STEPS, Ramps, ramp_at, schedule, step_time
from lvsmon.ipvs.model import ServiceKey

VKEY = ServiceKey.inet("tcp", "192.168.6.240", 80)
REFS = [RealRef(VKEY, f"192.168.6.{n}", 80) for n in range(2, 12)]


@pytest.mark.parametrize("weight", range(0, 260))
def test_every_weight_ramps_in_at_most_ten_distinct_rising_steps_to_its_weight(
    weight: int,
) -> None:
    steps = schedule(weight, 30)
    if weight < 2:
        assert steps == []  # nothing to ramp: weight 1 is the first step already
        return
    times = [t for t, _ in steps]
    weights = [w for _, w in steps]
    assert len(steps) == min(MAX_STEPS, weight) <= MAX_STEPS
    assert weights[-1] == weight and weights[0] >= 1
    assert weights == sorted(set(weights))  # distinct and rising
    assert times[0] == 0 and times[-1] == pytest.approx(30)
    assert times == sorted(times)
    n = len(steps)
    assert weights == [max(1, math.ceil(weight * k / n)) for k in range(1, n + 1)]
    if weight <= MAX_STEPS:
        assert weights == list(range(1, weight + 1))  # from 1


def test_ten_over_nine_seconds_is_one_a_second() -> None:
    assert schedule(10, 9) == [(float(k), k + 1) for k in range(10)]
    assert schedule(3, 10) == [(0.0, 1), (5.0, 2), (10.0, 3)]
    assert schedule(100, 9)[:3] == [(0.0, 10), (1.0, 20), (2.0, 30)]


def test_no_ramp_without_slowstart() -> None:
    assert schedule(10, 0) == []
    assert ramp_at(0, 0, 10, 0) is None


@given(
    weight=st.integers(0, 65535),
    slowstart=st.floats(0.001, 1e6),
    start=st.floats(-1e6, 1e6),
    at=st.floats(0, 2),
)
def test_ramp_at_agrees_with_the_schedule_and_never_stalls(
    weight: int, slowstart: float, start: float, at: float
) -> None:
    now = start + at * slowstart
    step = ramp_at(start, now, weight, slowstart)
    if step is None:
        assert weight < 2 or now >= step_time(start, min(weight, 10), min(weight, 10), slowstart)
        return
    assert 1 <= step.weight < weight
    assert step.k < step.n
    assert step.next_at > now  # a timer set for next_at finds a new step there
    later = ramp_at(start, step.next_at, weight, slowstart)
    assert later is None or later.k == step.k + 1


def test_the_heap_wakes_for_the_earliest_step_and_stale_entries_vanish() -> None:
    r = Ramps()
    assert r.next_at() is None and r.due(100) == []
    s0 = r.start(REFS[0], 0.0, 10, 9)  # steps every second
    s1 = r.start(REFS[1], 0.5, 2, 1)  # 1 at 0.5, done at 1.5
    assert s0 is not None and s0.weight == 1 and s0.next_at == 1.0
    assert s1 is not None and s1.weight == 1
    assert r.next_at() == 1.0
    assert r.due(0.99) == []
    (due,) = r.due(1.0)
    assert due[0] == REFS[0] and due[1] is not None and due[1].weight == 2
    assert r.next_at() == 1.5
    (due,) = r.due(1.5)
    assert due == (REFS[1], None) and REFS[1] not in r  # over: dropped
    r.stop(REFS[0])
    assert r.next_at() is None and len(r) == 0


def test_a_late_wake_jumps_to_the_step_of_now() -> None:
    r = Ramps()
    r.start(REFS[0], 0.0, 10, 9)
    ((ref, step),) = r.due(5.5)
    assert ref == REFS[0] and step is not None and (step.k, step.weight) == (6, 6)
    assert r.due(100) == [(REFS[0], None)]


def test_steps_close_in_time_are_taken_together_but_never_skipped() -> None:
    r = Ramps()
    r.start(REFS[0], 0.0, 10, 9)  # steps at 1, 2, ...
    r.start(REFS[1], 0.1, 10, 9)  # at 1.1, 2.1, ...
    r.start(REFS[2], 0.95, 10, 0.9)  # at 1.05, 1.15, ...: faster than the window
    got = dict(r.due(1.0, ahead=0.25))
    assert {ref: s.weight for ref, s in got.items() if s} == {REFS[0]: 2, REFS[1]: 2, REFS[2]: 2}
    # each moved one step only, at its own step's time (REFS[1] 0.1 s early)
    assert r.next_at() == pytest.approx(1.15)  # REFS[2]'s next step, not skipped
    ((ref, step),) = r.due(1.15, ahead=0.25)
    assert ref == REFS[2] and step is not None and step.weight == 3


def test_a_restart_with_an_earlier_start_keeps_its_place() -> None:
    r = Ramps()
    r.start(REFS[0], 0.0, 10, 9)
    step = r.start(REFS[0], 4.2, 20, 9, since=0.0)  # a reload doubled the weight
    assert step is not None and (step.k, step.n, step.weight) == (5, 10, 10)
    assert r.next_at() == 5.0  # the old entry (at 1.0) is stale


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(("start", "stop", "due")),
            st.sampled_from(REFS),
            st.integers(0, 30),
            st.floats(0, 5),
        ),
        max_size=60,
    )
)
def test_ramps_against_a_model(ops: list[tuple[str, RealRef, int, float]]) -> None:
    r = Ramps()
    model: dict[RealRef, tuple[float, int, float]] = {}
    now = 0.0
    for op, ref, weight, dt in ops:
        now += dt
        if op == "start":
            step = r.start(ref, now, weight, 3.0)
            if weight >= 2:
                model[ref] = (now, weight, 3.0)
                assert step is not None and step.k == 1
            else:
                model.pop(ref, None)
                assert step is None
        elif op == "stop":
            r.stop(ref)
            model.pop(ref, None)
        else:
            got = dict(r.due(now))
            for m_ref, (start, w, s) in list(model.items()):
                want = ramp_at(start, now, w, s)
                if m_ref in got:
                    assert got[m_ref] == want
                if want is None:
                    del model[m_ref]
            # nothing due remains due
            nxt = r.next_at()
            assert nxt is None or nxt > now
        assert set(r) == set(model)
        # the heap's head is the earliest live next step
        wants = [ramp_at(start, now, w, s) for start, w, s in model.values()]
        live = [w.next_at for w in wants if w is not None]
        nxt = r.next_at()
        if live and nxt is not None:
            assert nxt <= min(live)


def test_the_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    log_event(RampChanged(REFS[0], True, 10, 30.0, 10))
    log_event(RampChanged(REFS[0], False, 10, 30.0, 10, "done"))
    log_event(RampChanged(REFS[0], False, 10, 30.0, 10, "down"))
    assert caplog.messages == [
        "Slow start of real server 192.168.6.2:80 (tcp:192.168.6.240:80): ramping to weight 10"
        " over 30 s in 10 steps",
        "Slow start of real server 192.168.6.2:80 (tcp:192.168.6.240:80) done: weight 10",
        "Slow start of real server 192.168.6.2:80 (tcp:192.168.6.240:80) ended: down",
    ]
