"""The depool threshold in the desired table (pure): pools of 0..20 reals, thresholds 0, 0.x, 1
and off, any set of failures in any order, maintenance and drain mixed in; the kept reals
checked against a model written here, and the table against the table without the threshold."""

from __future__ import annotations

import dataclasses
import functools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.engine.desired import (
    VirtualLayout,
    depool_ratio,
    desired_service,
    desired_table,
    kept_by_threshold,
    layout_of,
    max_depooled,
)
from lvsmon.engine.health import DOWN, RealHealth
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import DestKey, Service, ServiceKey

from .conftest import cfg

VKEY = ServiceKey.inet("tcp", "192.168.6.240", 80)
FB = DestKey("127.0.0.1", 80)
UP = RealHealth(up=True, checked=True)


def failed(at: float) -> RealHealth:
    """Down by its checks at `at` (the engine sets down_at at the transition)."""
    return RealHealth(up=False, checked=True, reason="connect: refused", down_at=at)


@functools.cache
def pool(n: int, quiescent: bool) -> VirtualLayout:
    reals = "".join(f"\treal=192.168.6.{10 + i}:80 masq {i + 1}\n" for i in range(n))
    config = cfg(
        f"quiescent={'yes' if quiescent else 'no'}\n"
        "virtual=192.168.6.240:80\n" + reals + "\tfallback=127.0.0.1:80\n"
        '\tservice=http\n\treceive="ok"\n'
    )
    (layout,) = layout_of(config)
    return layout


def with_threshold(v: VirtualLayout, threshold: float | None) -> VirtualLayout:
    return dataclasses.replace(v, depool=depool_ratio(threshold))


# ---- the model ----------------------------------------------------------------------------------


def model_kept(
    v: VirtualLayout,
    threshold: float | None,
    health: dict[RealRef, RealHealth],
    maintained: frozenset[RealRef],
    drained: frozenset[RealRef],
) -> set[RealRef]:
    """The rule as docs/configuration.md states it, computed the slow way."""
    if threshold is None:
        return set()
    decided = [(i, s.ref) for i, s in enumerate(v.reals) if s.ref not in maintained | drained]
    down = [(i, ref) for i, ref in decided if not health[ref].up]
    # exact: the decimal as written, not its float
    may_go = math.floor(Fraction(str(threshold)) * len(decided))
    surplus = len(down) - may_go
    candidates = [(i, ref) for i, ref in down if health[ref].down_at is not None]
    latest_first = sorted(candidates, key=lambda c: (-(health[c[1]].down_at or 0.0), c[0]))
    return {ref for _, ref in latest_first[: max(0, surplus)]}


# ---- strategies ---------------------------------------------------------------------------------

THRESHOLDS = st.one_of(
    st.none(),
    st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.75, 0.1, 0.9, 0.3333, 0.29, 0.01, 0.99]),
    st.integers(0, 10_000).map(lambda k: k / 10_000),
)
# a real: up, down by checks (at a time: small integers give ties), or down since start
REAL = st.one_of(
    st.just(("up", 0)),
    st.tuples(st.just("failed"), st.integers(0, 8)),
    st.just(("unchecked", 0)),
)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[VirtualLayout, float | None, dict, frozenset, frozenset, set]:  # type: ignore[type-arg]
    n = draw(st.integers(0, 20))
    v = pool(n, draw(st.booleans()))
    threshold = draw(THRESHOLDS)
    health: dict[RealRef, RealHealth] = {}
    maintained: set[RealRef] = set()
    drained: set[RealRef] = set()
    present: set[DestKey] = set()
    for slot in v.reals:
        kind, at = draw(REAL)
        health[slot.ref] = UP if kind == "up" else failed(float(at)) if kind == "failed" else DOWN
        if draw(st.integers(0, 5)) == 0:
            maintained.add(slot.ref)
        if draw(st.integers(0, 5)) == 0:
            drained.add(slot.ref)
        if draw(st.booleans()):
            present.add(slot.dest)
    return v, threshold, health, frozenset(maintained), frozenset(drained), present


def service(
    v: VirtualLayout,
    health: dict[RealRef, RealHealth],
    maintained: frozenset[RealRef],
    drained: frozenset[RealRef],
    present: set[DestKey],
) -> Service:
    return desired_service(v, health, maintained, present, False, drained)


# ---- properties -------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(scenarios())
def test_the_kept_reals_are_the_models(case: tuple) -> None:  # type: ignore[type-arg]
    v, threshold, health, maintained, drained, _ = case
    kept = kept_by_threshold(with_threshold(v, threshold), health, maintained, drained)
    assert set(kept) == model_kept(v, threshold, health, maintained, drained)
    order = [s.ref for s in v.reals]
    assert list(kept) == sorted(kept, key=order.index)  # config order, no repeats


@settings(max_examples=1500, deadline=None)
@given(scenarios())
def test_invariants(case: tuple) -> None:  # type: ignore[type-arg]
    v, threshold, health, maintained, drained, present = case
    limited = with_threshold(v, threshold)
    kept = set(kept_by_threshold(limited, health, maintained, drained))
    decided = [s.ref for s in v.reals if s.ref not in maintained and s.ref not in drained]
    down = [ref for ref in decided if not health[ref].up]
    candidates = [ref for ref in down if health[ref].down_at is not None]

    # only reals checks took down, never an operator's, never one not yet seen up
    assert kept <= set(candidates)
    if threshold is None:
        assert not kept
    else:
        may_go = max_depooled(limited.depool or (0, 1), len(decided))
        # never more than the share out by checks, unless there is nothing left to keep
        assert len(down) - len(kept) <= may_go or kept == set(candidates)
        # and no more kept than that takes
        assert len(kept) == min(len(candidates), max(0, len(down) - may_go))
    # the kept ones are the latest failures: each failed after (or with, and before in the
    # config) every failed real that goes out
    index = {s.ref: i for i, s in enumerate(v.reals)}
    for k in kept:
        for out in set(candidates) - kept:
            kt, ot = health[k].down_at, health[out].down_at
            assert kt is not None and ot is not None
            assert kt > ot or (kt == ot and index[k] < index[out])

    table = service(limited, health, maintained, drained, present)
    plain = service(v, health, maintained, drained, present)
    # kept reals are in service at their configured weight: the table is the one without the
    # threshold where they are up
    as_up = dict(health)
    for ref in kept:
        as_up[ref] = UP
    assert table == service(v, as_up, maintained, drained, present)
    for slot in v.reals:
        if slot.ref in kept:
            assert table.dests[slot.dest] == slot.conf
        elif slot.ref in maintained or slot.ref in drained:
            # an operator's choice: as without the threshold
            assert table.dests.get(slot.dest) == plain.dests.get(slot.dest)
    # the fallback exactly while no real is in service
    serving = any(
        (health[s.ref].up and s.ref not in maintained and s.ref not in drained) or s.ref in kept
        for s in v.reals
    )
    assert (FB in table.dests) == (not serving)
    # off, and 1 (every real may go), are the table without the threshold
    if threshold is None or threshold == 1.0:
        assert table == plain


# ---- examples -----------------------------------------------------------------------------------


def refs(n: int) -> list[RealRef]:
    return [s.ref for s in pool(n, False).reals]


def test_four_reals_half_three_fail_then_the_fourth() -> None:
    v = with_threshold(pool(4, False), 0.5)
    a, b, c, d = refs(4)
    health = {a: failed(1.0), b: failed(2.0), c: failed(3.0), d: UP}
    # two may go: a and b (the first failures) are out, c stays in
    assert kept_by_threshold(v, health, frozenset()) == (c,)
    health[d] = failed(4.0)
    assert kept_by_threshold(v, health, frozenset()) == (c, d)
    table = desired_service(v, health, frozenset(), (), False)
    assert set(table.dests) == {s.dest for s in v.reals[2:]}  # no fallback: two serve
    # c comes back: a, b and d are down, two may go: d, the latest failure, stays in
    health[c] = UP
    assert kept_by_threshold(v, health, frozenset()) == (d,)


def test_ties_keep_the_first_in_the_config() -> None:
    v = with_threshold(pool(4, False), 0.5)
    a, b, c, d = refs(4)
    health = {a: failed(5.0), b: failed(5.0), c: failed(5.0), d: failed(5.0)}
    assert kept_by_threshold(v, health, frozenset()) == (a, b)


def test_rounding_keeps_the_ceiling_in() -> None:
    # 5 reals, half may go: floor(2.5) = 2 out, 3 stay (PyBal keeps ceil(0.5 * 5) = 3)
    v = with_threshold(pool(5, False), 0.5)
    health = {ref: failed(float(i)) for i, ref in enumerate(refs(5))}
    assert kept_by_threshold(v, health, frozenset()) == tuple(refs(5)[2:])
    # the decimal as written: 0.29 of 100 is 29, though 0.29 * 100 == 28.999999999999996
    assert max_depooled(depool_ratio(0.29) or (0, 1), 100) == 29
    assert max_depooled(depool_ratio(0.0) or (0, 1), 7) == 0
    assert max_depooled(depool_ratio(1.0) or (0, 1), 7) == 7


def test_threshold_zero_keeps_every_failed_real() -> None:
    v = with_threshold(pool(3, False), 0.0)
    health = {ref: failed(1.0) for ref in refs(3)}
    assert kept_by_threshold(v, health, frozenset()) == tuple(refs(3))


def test_reals_never_seen_up_are_not_kept_but_count_as_down() -> None:
    v = with_threshold(pool(4, False), 0.5)
    a, b, c, d = refs(4)
    # a and b never passed since start; c and d failed later: 2 may go, a and b are those
    health = {a: DOWN, b: DOWN, c: failed(1.0), d: failed(2.0)}
    assert kept_by_threshold(v, health, frozenset()) == (c, d)
    # nothing to keep at all: nothing is limited, and the fallback takes over
    health = {a: DOWN, b: DOWN, c: DOWN, d: DOWN}
    assert kept_by_threshold(v, health, frozenset()) == ()
    assert FB in desired_service(v, health, frozenset(), (), False).dests


def test_maintenance_and_drain_are_outside_the_share() -> None:
    v = with_threshold(pool(4, False), 0.5)
    a, b, c, d = refs(4)
    health = {a: UP, b: UP, c: failed(1.0), d: failed(2.0)}
    # a in maintenance, b drained: N = 2 (c, d), one may go: d (the later) stays in
    assert kept_by_threshold(v, health, frozenset({a}), frozenset({b})) == (d,)
    table = desired_service(v, health, frozenset({a}), (), False, frozenset({b}))
    assert table.dests[v.reals[3].dest] == v.reals[3].conf
    assert v.reals[0].dest not in table.dests  # maintenance: out whatever the threshold
    assert table.dests[v.reals[1].dest].weight == 0  # drained: weight 0 whatever it
    assert FB not in table.dests


def test_the_directive_reaches_the_table() -> None:
    config = cfg(
        "depoolthreshold=50%\n"
        "virtual=192.168.6.240:80\n"
        "\treal=192.168.6.10:80 masq 3\n"
        "\treal=192.168.6.11:80 masq 2\n"
        "\tfallback=127.0.0.1:80\n"
        "\tservice=http\n"
        '\treceive="ok"\n'
        "virtual=192.168.6.241:80\n"
        "\treal=192.168.6.10:80 masq 3\n"
        "\tdepoolthreshold=1\n"
        "\tservice=http\n"
        '\treceive="ok"\n'
    )
    v1, v2 = config.virtuals
    health = {RealRef(v.key, r.address, r.port): failed(1.0) for v in (v1, v2) for r in v.reals}
    table = desired_table(config, health, frozenset(), {})
    # half of two may go: one stays in at its weight; a threshold of 1 lets every real go
    assert [c.weight for c in table[v1.key].dests.values()] == [3]
    assert set(table[v2.key].dests) == set()


@pytest.mark.parametrize("n", range(0, 21))
def test_every_real_failed_in_order_keeps_the_last_ones(n: int) -> None:
    for threshold in (0.0, 0.1, 0.5, 0.75, 1.0):
        v = with_threshold(pool(n, True), threshold)
        health = {ref: failed(float(i)) for i, ref in enumerate(refs(n))}
        stay = n - math.floor(Fraction(str(threshold)) * n)
        assert kept_by_threshold(v, health, frozenset()) == tuple(refs(n)[n - stay :])


# ---- the failure time -------------------------------------------------------------------------


def test_health_keeps_the_failure_time_while_down_and_drops_it_when_up() -> None:
    from lvsmon.engine.health import Damping

    for damping in (None, Damping(5, 60.0, 10.0)):
        state = failed(7.0)
        for ok, reason in ((False, "refused"), (False, "refused"), (True, "ok")):
            state, _ = state.observe(ok, reason, 1, 3, damping, 100.0)
            assert state.down_at == 7.0  # still down: two passes short of risecount=3
        state, _ = state.observe(True, "ok", 1, 3, damping, 101.0)
        state, transition = state.observe(True, "ok", 1, 3, damping, 102.0)
        assert state.up and state.down_at is None and transition is not None
        # observe never sets it: the engine does, on its clock, at the transition
        state, _ = state.observe(False, "refused", 1, 1, damping, 103.0)
        assert not state.up and state.down_at is None
