from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lvsmon.engine.health import ADOPTED_UP, DOWN, RealHealth, Transition


def feed(state: RealHealth, results: list[bool], failurecount: int) -> list[Transition | None]:
    out = []
    for ok in results:
        state, t = state.observe(ok, "r", failurecount)
        out.append(t)
    return out


def test_one_success_brings_a_down_real_up() -> None:
    assert feed(DOWN, [True], 3) == [Transition.UP]


def test_failurecount_consecutive_failures_take_it_down() -> None:
    assert feed(ADOPTED_UP, [False, False, False], 3) == [None, None, Transition.DOWN]


def test_a_success_resets_the_soft_failures() -> None:
    assert feed(ADOPTED_UP, [False, False, True, False, False, False], 3) == [
        None,
        None,
        None,
        None,
        None,
        Transition.DOWN,
    ]


def test_failurecount_one_is_ldirectords_default() -> None:
    assert feed(ADOPTED_UP, [False], 1) == [Transition.DOWN]


def test_down_stays_down_silently() -> None:
    assert feed(DOWN, [False] * 5, 1) == [None] * 5


def test_soft_failing_is_visible() -> None:
    s, _ = ADOPTED_UP.observe(False, "connect: refused", 2)
    assert s.up and s.soft_failing and s.reason == "connect: refused"


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.booleans())
def test_transitions_alternate_and_match_the_rule(
    results: list[bool], fc: int, start_up: bool
) -> None:
    state = ADOPTED_UP if start_up else DOWN
    up = start_up
    run = 0  # consecutive failures since the last success
    for ok in results:
        state, t = state.observe(ok, "", fc)
        run = 0 if ok else run + 1
        if t is Transition.UP:
            assert not up and ok
            up = True
        elif t is Transition.DOWN:
            assert up and not ok and run >= fc
            up = False
        assert state.up == up
        if ok:
            assert up
        if up:
            assert run < fc
