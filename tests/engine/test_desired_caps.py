"""Weight caps (engine/steering.py) in the desired table (pure): every combination of up, drained,
maintained, present and a cap (none, 0, below, equal, above the weight) on a small pool,
against a model written here; by hypothesis, that the table without caps is the table with
empty caps and that a cap never raises a weight; and the Steering store itself."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.engine.desired import desired_table, layout_of
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.steering import Steering
from lvsmon.ipvs.model import DestConf, DestKey, Forward, ServiceKey

from .conftest import cfg

POOL = """\
{globals}
virtual=192.168.6.240:80
\treal=192.168.6.2:80 masq 3 u:50 l:5
\treal=192.168.6.3:80 masq 10
\treal=192.168.6.4:80 masq 0
\tfallback=127.0.0.1:80
\tservice=http
\treceive="ok"
"""
VKEY = ServiceKey.inet("tcp", "192.168.6.240", 80)
REFS = [RealRef(VKEY, f"192.168.6.{n}", 80) for n in (2, 3, 4)]
WEIGHTS = {REFS[0]: 3, REFS[1]: 10, REFS[2]: 0}
THRESHOLDS = {REFS[0]: (50, 5), REFS[1]: (0, 0), REFS[2]: (0, 0)}
FB = DestKey("127.0.0.1", 80)
CAP_CHOICES = (None, 0, 1, 2, 3, 10, 99)


def dest(ref: RealRef) -> DestKey:
    return DestKey(ref.address, ref.port)


def model(
    ref: RealRef,
    up: bool,
    drained: bool,
    maintained: bool,
    present: bool,
    cap: int | None,
    quiescent: bool,
) -> tuple[int | None, bool]:
    """(kernel weight or None: absent, counts as up for the fallback)."""
    weight = WEIGHTS[ref]
    live = up and not maintained
    if live and drained:
        return 0, False
    if live:
        if cap is not None and cap < weight:
            return cap, cap > 0
        return weight, True
    if quiescent and present:
        return 0, False
    return None, False


@pytest.mark.parametrize("quiescent", [True, False])
def test_every_combination_on_three_reals(quiescent: bool) -> None:
    config = cfg(POOL.format(globals=f"quiescent={'yes' if quiescent else 'no'}"))
    layout = layout_of(config)
    per_real = list(
        itertools.product((True, False), (True, False), (True, False), (True, False), CAP_CHOICES)
    )
    # every real's case independently would be 160**3; each real runs through all of its
    # cases while the other two take the cases in step, so every pair of (real, case) and
    # the fallback's every outcome are met
    n = len(per_real)
    for i in range(n):
        cases = [per_real[i], per_real[(i * 7 + 3) % n], per_real[(i * 13 + 5) % n]]
        for shift in range(3):
            cs = cases[shift:] + cases[:shift]
            health = {r: RealHealth(up=c[0]) for r, c in zip(REFS, cs, strict=True)}
            drained = {r for r, c in zip(REFS, cs, strict=True) if c[1]}
            maintained = {r for r, c in zip(REFS, cs, strict=True) if c[2]}
            present = {dest(r) for r, c in zip(REFS, cs, strict=True) if c[3]}
            caps = {r: c[4] for r, c in zip(REFS, cs, strict=True) if c[4] is not None}
            actual = {VKEY: desired_table(config, {}, (), {})[VKEY]}
            actual[VKEY].dests = {d: DestConf(Forward.MASQ, 0) for d in present}
            got = desired_table(config, health, maintained, actual, layout, drained, caps)
            got_dests = got[VKEY].dests
            serving = False
            for ref, c in zip(REFS, cs, strict=True):
                weight, counts = model(ref, *c, quiescent=quiescent)
                conf = got_dests.get(dest(ref))
                if weight is None:
                    assert conf is None, (ref, c)
                else:
                    upper, lower = THRESHOLDS[ref]
                    assert conf == DestConf(Forward.MASQ, weight, upper, lower), (ref, c)
                serving = serving or counts
            assert (FB in got_dests) is not serving, cs


UPS = st.lists(st.booleans(), min_size=3, max_size=3)
CAPS = st.dictionaries(st.sampled_from(REFS), st.integers(0, 70_000))


@given(up=UPS, caps=CAPS, quiescent=st.booleans())
def test_a_cap_never_raises_a_weight_and_no_caps_is_the_old_table(
    up: list[bool], caps: dict[RealRef, int], quiescent: bool
) -> None:
    config = cfg(POOL.format(globals=f"quiescent={'yes' if quiescent else 'no'}"))
    health = {r: RealHealth(up=u) for r, u in zip(REFS, up, strict=True)}
    plain = desired_table(config, health, (), {})
    assert desired_table(config, health, (), {}, caps={}) == plain
    capped = desired_table(config, health, (), {}, caps=caps)
    for d, conf in capped[VKEY].dests.items():
        if d == FB:
            continue
        base = plain[VKEY].dests[d]  # a cap never adds a real
        assert conf.weight <= base.weight
        assert (conf.forward, conf.upper, conf.lower) == (base.forward, base.upper, base.lower)
    # a cap never removes one either: an up real capped to 0 stays, at weight 0
    assert set(capped[VKEY].dests) - {FB} == set(plain[VKEY].dests) - {FB}


def test_a_cap_at_or_above_the_weight_is_the_very_conf() -> None:
    config = cfg(POOL.format(globals=""))
    health = {r: RealHealth(up=True) for r in REFS}
    layout = layout_of(config)
    plain = desired_table(config, health, (), {}, layout)
    same = desired_table(config, health, (), {}, layout, caps={REFS[0]: 3, REFS[1]: 11})
    for d in plain[VKEY].dests:
        assert same[VKEY].dests[d] is plain[VKEY].dests[d]


def test_depool_kept_reals_keep_their_configured_weight() -> None:
    config = cfg(POOL.format(globals="depoolthreshold=0"))
    down = RealHealth(up=False, checked=True, down_at=1.0)
    health = {REFS[0]: down, REFS[1]: RealHealth(up=True), REFS[2]: RealHealth(up=True)}
    table = desired_table(config, health, (), {}, caps={REFS[0]: 1, REFS[1]: 4})
    assert table[VKEY].dests[dest(REFS[0])].weight == 3  # kept by the threshold: as it was
    assert table[VKEY].dests[dest(REFS[1])].weight == 4


# ---- the store ----------------------------------------------------------------------------------


def test_the_lowest_source_wins_and_removal_restores_the_next() -> None:
    changes: list[int] = []
    s = Steering(on_change=lambda: changes.append(1))
    r = REFS[1]
    assert s.set("ramp", r, 5)
    assert s.caps() == {r: 5}
    assert s.set("agent", r, 3)
    assert s.caps()[r] == 3
    assert not s.set("agent", r, 3)  # no change, no call
    assert s.of(r) == {"ramp": 5, "agent": 3}
    assert s.set("agent", r, None)
    assert s.caps()[r] == 5
    assert not s.set("agent", r, None)
    assert s.set("ramp", r, None)
    assert dict(s.caps()) == {}
    assert s.of(r) == {}
    assert len(changes) == 4
    s.set("agent", r, 1)
    s.set("ramp", r, 4)  # under the agent's 1: the merged cap does not move
    assert len(changes) == 5
    with pytest.raises(ValueError):
        s.set("agent", r, -1)


def test_caps_is_one_view_kept_current_and_read_only() -> None:
    s = Steering()
    view = s.caps()
    s.set("ramp", REFS[0], 2)
    assert s.caps() is view and view[REFS[0]] == 2
    with pytest.raises(TypeError):
        view[REFS[0]] = 9  # type: ignore[index]
    v = s.version
    s.set("ramp", REFS[0], 2)
    assert s.version == v


def test_keep_only_and_drop_source() -> None:
    s = Steering()
    s.set("ramp", REFS[0], 1)
    s.set("agent", REFS[0], 2)
    s.set("agent", REFS[1], 2)
    assert s.drop_source("agent", keep={REFS[1]}) == 1
    assert s.of(REFS[0]) == {"ramp": 1}
    assert s.keep_only({REFS[0]}) == 1
    assert dict(s.caps()) == {REFS[0]: 1}


OPS = st.lists(
    st.tuples(
        st.sampled_from(("agent", "ramp", "x")),
        st.sampled_from(REFS),
        st.one_of(st.none(), st.integers(0, 20)),
    ),
    max_size=40,
)


@given(ops=OPS)
def test_caps_are_the_minimum_of_what_each_source_said_last(
    ops: list[tuple[str, RealRef, int | None]],
) -> None:
    s = Steering()
    last: dict[tuple[str, RealRef], int] = {}
    version, merged = s.version, dict[RealRef, int]()
    for source, ref, cap in ops:
        changed = s.set(source, ref, cap)
        before = last.get((source, ref))
        assert changed is (before != cap)
        if cap is None:
            last.pop((source, ref), None)
        else:
            last[(source, ref)] = cap
        want: dict[RealRef, int] = {}
        for (_, r), c in last.items():
            want[r] = min(c, want.get(r, c))
        assert dict(s.caps()) == want
        assert (s.version != version) is (want != merged)
        version, merged = s.version, want


def test_each_virtual_has_its_own_version() -> None:
    other = RealRef(ServiceKey.inet("tcp", "192.168.6.241", 80), "192.168.6.2", 80)
    s = Steering()
    assert s.version_of(VKEY) == 0
    s.set("ramp", REFS[0], 2)
    v = s.version_of(VKEY)
    assert v > 0 and s.version_of(other.service) == 0
    s.set("agent", REFS[0], 5)  # under the ramp's 2: the caps stay, its sources changed
    assert s.version_of(VKEY) > v and dict(s.caps()) == {REFS[0]: 2}
    v = s.version_of(VKEY)
    s.set("ramp", other, 1)
    assert s.version_of(VKEY) == v
    s.keep_only({other})
    assert s.version_of(VKEY) > v
