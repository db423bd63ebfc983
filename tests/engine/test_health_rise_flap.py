"""risecount and flap damping in the pure health machine (lvsmon/engine/health.py).

Three kinds of test: with both off the machine is ldirectord's, state for state (against a copy
of the machine as it was before them); against a reference model written plainly (full change
history, no truncation); and named cases for each rule."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.config import Config
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import RealChanged
from lvsmon.engine.health import ADOPTED_UP, DOWN, Damping, RealHealth, Transition
from lvsmon.engine.jobs import CheckJob, RealRef
from lvsmon.engine.status import render_status
from lvsmon.ipvs.memory import MemoryBackend

from .conftest import cfg

# -- the machine before risecount and damping, kept verbatim as the oracle -----------------------


@dataclass(frozen=True)
class OldHealth:
    up: bool
    failcount: int = 0
    checked: bool = False
    reason: str = ""

    def observe(self, ok: bool, reason: str, failurecount: int) -> tuple[OldHealth, str | None]:
        if ok:
            return OldHealth(True, 0, True, reason), (None if self.up else "up")
        if not self.up:
            return OldHealth(False, self.failcount + 1, True, reason), None
        failcount = self.failcount + 1
        if failcount >= failurecount:
            return OldHealth(False, failcount, True, reason), "down"
        return OldHealth(True, failcount, True, reason), None


START_STATES = [
    (DOWN, OldHealth(False)),
    (ADOPTED_UP, OldHealth(True)),
    (RealHealth(up=False, failcount=2, checked=True, reason="x"), OldHealth(False, 2, True, "x")),
    (RealHealth(up=True, failcount=1, checked=True, reason="x"), OldHealth(True, 1, True, "x")),
]
REASONS = st.sampled_from(["200 OK", "connect: refused", "timed out", ""])


@given(
    st.lists(st.tuples(st.booleans(), REASONS), max_size=80),
    st.integers(1, 6),
    st.sampled_from(range(len(START_STATES))),
)
def test_rise_one_and_no_damping_is_the_old_machine_exactly(
    results: list[tuple[bool, str]], failurecount: int, start: int
) -> None:
    new, old = START_STATES[start]
    for ok, reason in results:
        new, t = new.observe(ok, reason, failurecount)
        old, old_t = old.observe(ok, reason, failurecount)
        assert (new.up, new.failcount, new.checked, new.reason) == (
            old.up,
            old.failcount,
            old.checked,
            old.reason,
        )
        assert (new.passcount, new.flaps, new.hold) == (0, (), None)
        assert (t.value if t else None) == old_t
        # the state is the one the old code built: equal to a plain RealHealth of those fields
        assert new == RealHealth(old.up, old.failcount, old.checked, old.reason)


@given(
    st.lists(st.tuples(st.booleans(), REASONS), max_size=60),
    st.integers(1, 6),
    st.sampled_from(range(len(START_STATES))),
    st.floats(0, 1e6, allow_nan=False),
)
def test_rise_one_with_damping_that_never_triggers_is_the_old_machine(
    results: list[tuple[bool, str]], failurecount: int, start: int, t0: float
) -> None:
    """A damping count above any number of changes the sequence can make changes nothing."""
    new, old = START_STATES[start]
    damping = Damping(count=1000, window=1e9, hold=60)
    for i, (ok, reason) in enumerate(results):
        new, t = new.observe(ok, reason, failurecount, 1, damping, t0 + i)
        old, old_t = old.observe(ok, reason, failurecount)
        assert (new.up, new.failcount, new.checked, new.reason, new.hold) == (
            old.up,
            old.failcount,
            old.checked,
            old.reason,
            None,
        )
        assert (t.value if t else None) == old_t


# -- the reference model --------------------------------------------------------------------------


@dataclass
class Expected:
    up: bool  # what the daemon acts on
    passing: bool  # what the checks alone say
    failcount: int
    passcount: int
    held_until: float | None


def reference(
    start: RealHealth,
    steps: list[tuple[bool, float]],
    failurecount: int,
    risecount: int,
    damping: Damping | None,
) -> list[Expected]:
    passing, checked = start.up, start.checked
    fails, passes = start.failcount, start.passcount
    changes: list[float] = []  # every change since the last hold ended
    held_until: float | None = None
    out: list[Expected] = []
    for ok, now in steps:
        if held_until is not None and now >= held_until:
            held_until, changes = None, []
        changed = False
        if ok:
            fails = 0
            if not passing:
                passes += 1
                if passes >= risecount or not checked:
                    passing, passes, changed = True, 0, True
        else:
            passes = 0
            fails += 1
            if passing and fails >= failurecount:
                passing, changed = False, True
        if damping is not None and changed and checked:
            changes.append(now)
            in_window = [c for c in changes if c > now - damping.window]
            if held_until is not None or len(in_window) > damping.count:
                held_until = now + damping.hold
        checked = True
        out.append(Expected(passing and held_until is None, passing, fails, passes, held_until))
    return out


STEPS = st.lists(
    st.tuples(st.booleans(), st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0, 30.0])),
    max_size=80,
)
DAMPING = st.one_of(
    st.none(),
    st.builds(
        Damping,
        st.integers(1, 5),
        st.sampled_from([5.0, 10.0, 30.0, 60.0]),
        st.sampled_from([1.0, 5.0, 20.0, 60.0]),
    ),
)


def _run(
    start: RealHealth,
    steps: list[tuple[bool, float]],
    failurecount: int,
    risecount: int,
    damping: Damping | None,
) -> list[tuple[RealHealth, Transition | None, float]]:
    state, now, out = start, 1000.0, []
    for ok, dt in steps:
        now += dt
        state, t = state.observe(ok, "r", failurecount, risecount, damping, now)
        out.append((state, t, now))
    return out


@settings(max_examples=400)
@given(
    STEPS,
    st.integers(1, 4),
    st.integers(1, 5),
    DAMPING,
    st.sampled_from(range(len(START_STATES))),
)
def test_matches_the_reference_model(
    steps: list[tuple[bool, float]],
    failurecount: int,
    risecount: int,
    damping: Damping | None,
    start: int,
) -> None:
    begin = START_STATES[start][0]
    got = _run(begin, steps, failurecount, risecount, damping)
    timed = [(ok, now) for (ok, _), (_, _, now) in zip(steps, got, strict=True)]
    want = reference(begin, timed, failurecount, risecount, damping)
    before = begin.up
    for (state, t, _), exp in zip(got, want, strict=True):
        assert (state.up, state.failcount, state.passcount, state.held_until) == (
            exp.up,
            exp.failcount,
            exp.passcount,
            exp.held_until,
        )
        assert (state.hold is None) or state.hold.passing == exp.passing
        # a transition is reported exactly when the acted-on state changes, never twice
        assert t == (None if state.up == before else Transition.UP if state.up else Transition.DOWN)
        before = state.up
        assert state.checked
        if damping is not None and state.hold is not None:
            assert state.reason.startswith("flapping: ")
            assert len(state.flaps) <= damping.count + 1
        else:
            assert state.reason == "r"


# -- invariants -----------------------------------------------------------------------------------


@given(STEPS, st.integers(1, 4), st.integers(1, 5), DAMPING)
def test_damping_never_brings_up_what_the_checks_say_is_down(
    steps: list[tuple[bool, float]], failurecount: int, risecount: int, damping: Damping | None
) -> None:
    for state, _, now in _run(DOWN, steps, failurecount, risecount, damping):
        if state.hold is not None:
            assert not state.up
            assert state.hold.until > now - 1e-9
        if state.up:
            assert state.failcount < failurecount and state.passcount == 0


@given(STEPS, st.integers(1, 4), st.integers(2, 5))
def test_a_checked_down_real_comes_back_only_after_risecount_passes_in_a_row(
    steps: list[tuple[bool, float]], failurecount: int, risecount: int
) -> None:
    start = RealHealth(up=False, checked=True)
    run = 0  # passes in a row
    before = False
    got = _run(start, steps, failurecount, risecount, None)
    for (ok, _), (state, t, _) in zip(steps, got, strict=True):
        run = run + 1 if ok else 0
        if t is Transition.UP:
            assert not before and run >= risecount
            run = 0  # counted afresh once up
        if not state.up and not before:
            assert state.passcount == run
        before = state.up


# -- named cases ----------------------------------------------------------------------------------


def feed(
    state: RealHealth,
    results: str,
    *,
    fc: int = 1,
    rise: int = 1,
    damping: Damping | None = None,
    t0: float = 0.0,
    dt: float = 1.0,
) -> tuple[RealHealth, list[str]]:
    """results: "+" a pass, "-" a failure, one check each `dt` s; returns the transitions as
    "U", "D" or "." per check."""
    out = []
    now = t0
    for c in results:
        now += dt
        state, t = state.observe(c == "+", "r", fc, rise, damping, now)
        out.append("." if t is None else t.value[0].upper())
    return state, out


CHECKED_DOWN = RealHealth(up=False, failcount=1, checked=True)
CHECKED_UP = RealHealth(up=True, checked=True)


def test_rise_three_needs_three_passes_in_a_row() -> None:
    state, ts = feed(CHECKED_DOWN, "+++", rise=3)
    assert "".join(ts) == "..U" and state.up


def test_a_failure_during_rise_restarts_the_count() -> None:
    state, ts = feed(CHECKED_DOWN, "++-++-+++", rise=3)
    assert "".join(ts) == "........U"
    state, _ = feed(CHECKED_DOWN, "++-+", rise=3)
    assert not state.up and state.passcount == 1 and state.rising


def test_rise_is_visible_while_counting() -> None:
    state, _ = feed(CHECKED_DOWN, "++", rise=3)
    assert (state.up, state.passcount, state.rising, state.failcount) == (False, 2, True, 0)


def test_an_unchecked_real_comes_up_on_its_first_pass() -> None:
    """At start and after a changed check the first pass decides, as under ldirectord."""
    assert feed(DOWN, "+", rise=5)[1] == ["U"]


def test_rise_and_failurecount_together() -> None:
    _, ts = feed(CHECKED_UP, "--+-+++--++", fc=2, rise=3)
    # down at the 2nd failure; passes 3,5,6,7 -> up at the 3rd in a row; 2 fails -> down
    assert "".join(ts) == ".D....U.D.."


DAMP = Damping(count=3, window=60.0, hold=30.0)


def test_more_than_count_changes_in_the_window_hold_it_down() -> None:
    state, ts = feed(CHECKED_UP, "-+-+", damping=DAMP, dt=5)
    # D, U, D: three changes, not more than 3; the 4th (up) is held
    assert "".join(ts) == "DUD."
    assert not state.up and state.hold is not None
    assert state.held_until == 20.0 + 30.0
    assert state.hold.passing and state.hold.changes == 4
    assert state.reason == (
        "flapping: 4 state changes within 60 s, held down until stable for 30 s (checks say up: r)"
    )


def test_held_until_stable_for_the_hold_time_then_the_next_check_decides() -> None:
    state, _ = feed(CHECKED_UP, "-+-+", damping=DAMP, dt=5)  # held at t=20 until 50
    state, ts = feed(state, "+" * 5, damping=DAMP, t0=20, dt=5)  # t = 25..45
    assert ts == ["."] * 5 and not state.up
    state, ts = feed(state, "+", damping=DAMP, t0=45, dt=5)  # t = 50
    assert ts == ["U"] and state.up and state.hold is None and state.flaps == ()
    assert state.reason == "r"


def test_a_change_during_the_hold_starts_it_again() -> None:
    state, _ = feed(CHECKED_UP, "-+-+", damping=DAMP, dt=5)  # held at 20 until 50
    state, _ = feed(state, "+-", damping=DAMP, t0=20, dt=10)  # down at 40: hold until 70
    assert state.held_until == 70.0 and state.hold is not None and not state.hold.passing
    state, ts = feed(state, "+", damping=DAMP, t0=40, dt=15)  # up at 55: until 85
    assert ts == ["."] and state.held_until == 85.0
    state, ts = feed(state, "+", damping=DAMP, t0=55, dt=30)  # 85: stable for 30 s
    assert ts == ["U"] and state.up


def test_a_hold_that_ends_on_a_failure_leaves_it_down_without_a_new_hold() -> None:
    state, _ = feed(CHECKED_UP, "-+-+", damping=DAMP, dt=5)  # held at 20 until 50
    state, ts = feed(state, "-", damping=DAMP, t0=20, dt=40)  # t=60: the hold is over
    assert ts == ["."] and not state.up and state.hold is None
    assert state.flaps == (60.0,)  # counted afresh


def test_changes_spread_wider_than_the_window_are_not_flapping() -> None:
    state, ts = feed(CHECKED_UP, "-+-+-+-+", damping=DAMP, dt=25)
    assert "".join(ts) == "DUDUDUDU" and state.hold is None
    assert len(state.flaps) <= DAMP.count + 1


def test_the_first_result_after_start_is_not_a_change() -> None:
    state, ts = feed(DOWN, "+-+", damping=Damping(2, 60, 30))
    assert "".join(ts) == "UDU" and state.up  # 2 counted changes: not more than 2


def test_damping_switched_off_while_held_lets_the_checks_decide() -> None:
    state, _ = feed(CHECKED_UP, "-+-+", damping=DAMP, dt=5)
    assert state.hold is not None
    state, t = state.observe(True, "r", 1, 1, None, 21.0)
    assert t is Transition.UP and state.hold is None and state.flaps == ()


def test_rise_counts_under_a_hold_and_the_hold_waits_for_it() -> None:
    """With risecount the passes that bring it back are still counted while held; the checks'
    own state change (after risecount passes) is a change that restarts the hold."""
    damping = Damping(count=1, window=100.0, hold=10.0)
    state, ts = feed(CHECKED_UP, "-+++", damping=damping, rise=3)
    assert "".join(ts) == "D..." and state.hold is not None  # 2 changes > 1: held at t=4
    assert state.hold.passing and state.held_until == 14.0
    state, ts = feed(state, "+" * 10, damping=damping, rise=3, t0=4)
    assert "".join(ts) == "." * 9 + "U"


# -- in the engine: every pass reaches a rising or held real ---------------------------------------


def _engine(extra: str) -> tuple[Engine, RealRef, CheckJob, list[CheckResult], list[float]]:
    config = _conf(extra)
    results: list[CheckResult] = []
    clock = [1000.0]

    async def run_check(spec: CheckSpec) -> CheckResult:
        return results.pop(0)

    engine = Engine(config, MemoryBackend(), run_check=run_check, clock=lambda: clock[0])
    (ref,) = engine.plan.job_of
    engine.health = {ref: RealHealth(up=True, checked=True)}
    return engine, ref, engine.plan.job_of[ref], results, clock


async def _check(engine: Engine, job: CheckJob, results: list[CheckResult], ok: bool) -> None:
    results.append(CheckResult(ok, "200 OK" if ok else "connect: refused"))
    await engine.run_once(job)


async def test_the_steady_shortcut_does_not_skip_the_passes_of_a_rising_real() -> None:
    """A good result like the last one is skipped only when it could change nothing; each
    pass of a rising real counts."""
    engine, ref, job, results, _ = _engine("risecount=3\n")
    await _check(engine, job, results, True)  # up, steady from here on
    await _check(engine, job, results, False)
    assert not engine.health[ref].up
    await _check(engine, job, results, True)
    await _check(engine, job, results, True)
    (real,) = engine.status()["virtuals"][0]["reals"]
    assert (real["state"], real["rising"], real["held_until"]) == ("down", "2/3", None)
    assert "down rising 2/3" in render_status(engine.status())
    await _check(engine, job, results, True)
    assert engine.health[ref].up
    (real,) = engine.status()["virtuals"][0]["reals"]
    assert (real["state"], real["rising"]) == ("up", None)


async def test_a_held_real_gets_every_pass_and_comes_back_after_the_hold() -> None:
    engine, ref, job, results, clock = _engine("flapcount=2\nflapwindow=60\nflaphold=30\n")
    # not started: the events stay in its queue
    sub = engine.events.subscribe("test", lambda e: None, kinds=(RealChanged,))
    for ok in (False, True, False):  # three changes, more than 2: held at the third
        clock[0] += 1
        await _check(engine, job, results, ok)
    h = engine.health[ref]
    assert not h.up and h.held_until == clock[0] + 30
    (real,) = engine.status()["virtuals"][0]["reals"]
    assert real["held_until"] is not None
    assert abs(real["held_until"] - (time.time() + 30)) < 5
    assert real["reason"].startswith("flapping: 3 state changes within 60 s")
    assert " held until " in render_status(engine.status())
    for _ in range(3):  # passes within the hold: still down, each one seen
        clock[0] += 10
        await _check(engine, job, results, True)
        assert not engine.health[ref].up
    clock[0] += 10  # 31 s after the hold started, stable
    await _check(engine, job, results, True)
    assert engine.health[ref].up and engine.health[ref].hold is None
    changes = [e for e in sub.queue if isinstance(e, RealChanged)]
    assert [(e.up, e.reason.split(":")[0]) for e in changes] == [
        (False, "connect"),
        (True, "200 OK"),
        (False, "flapping"),  # the change that started the hold says why
        (True, "200 OK"),
    ]


def _conf(extra: str, checktype: str = "connect") -> Config:
    return cfg(
        f"checkinterval=1\n{extra}virtual=127.0.0.100:80\n"
        f"\treal=127.0.0.1:8080 masq\n\tchecktype={checktype}\n"
    )


async def test_a_reload_keeps_the_count_and_the_hold_and_applies_the_new_values() -> None:
    engine, ref, job, results, clock = _engine("risecount=3\nflapcount=5\n")
    await _check(engine, job, results, False)
    await _check(engine, job, results, True)
    rising = engine.health[ref]
    assert rising.passcount == 1
    # another hold time: the check is the same, so is the health
    await engine.reload(_conf("risecount=3\nflapcount=5\nflaphold=10\n"))
    assert engine.health[ref] is rising
    # a lower risecount applies from the next pass on
    await engine.reload(_conf("risecount=2\nflapcount=5\n"))
    await _check(engine, job, results, True)
    assert engine.health[ref].up
    # held, then damping switched off by a reload: the next check decides
    await engine.reload(_conf("flapcount=1\nflaphold=100\n"))
    for ok in (False, True):
        clock[0] += 1
        await _check(engine, job, results, ok)
    held = engine.health[ref]
    assert held.hold is not None and not held.up
    await engine.reload(_conf("flapcount=1\nflaphold=50\n"))
    assert engine.health[ref] is held  # the hold as it was (until its next change)
    await engine.reload(_conf("risecount=3\n"))
    await _check(engine, job, results, True)
    assert engine.health[ref].up and engine.health[ref].hold is None
    # a changed check starts afresh, from the kernel: the count is not carried
    await _check(engine, job, results, False)
    await _check(engine, job, results, True)
    assert not engine.health[ref].up
    await engine.reload(_conf("risecount=3\n", checktype="ping"))
    assert engine.health[ref].passcount == 0 and not engine.health[ref].checked
