"""Drained reals in the desired table (pure), and the drain state's rules (lvsmon/engine/drain.py):
names, stores, drain and undrain, over small pools, exhaustively or by hypothesis."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.engine.desired import adopt_health, desired_table, layout_of
from lvsmon.engine.drain import (
    DrainDir,
    DrainEntry,
    DrainError,
    DrainIndex,
    MemoryStore,
    StateFile,
    drain,
    listing,
    real_label,
    select,
    undrain,
    virtual_label,
)
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import RealRef, build_plan
from lvsmon.ipvs.model import DestConf, DestKey, Forward, ServiceKey

from .conftest import cfg

POOL = """\
{globals}
virtual=192.168.6.240:80
\treal=192.168.6.2:80 masq 3 u:50 l:5
\treal=192.168.6.3:80 masq 2
\treal=192.168.6.4:80 masq 1
\tfallback=127.0.0.1:80
\tservice=http
\treceive="ok"
"""
VKEY = ServiceKey.inet("tcp", "192.168.6.240", 80)
REFS = [RealRef(VKEY, f"192.168.6.{n}", 80) for n in (2, 3, 4)]
WEIGHTS = {REFS[0]: 3, REFS[1]: 2, REFS[2]: 1}
FB = DestKey("127.0.0.1", 80)


def dest(ref: RealRef) -> DestKey:
    return DestKey(ref.address, ref.port)


# ---- the desired table ------------------------------------------------------------------------

# every real: up or down, drained or not, in maintenance or not, in the kernel or not
CASES = list(
    itertools.product(
        itertools.product((True, False), repeat=3),  # up
        itertools.product((True, False), repeat=3),  # drained
        itertools.product((True, False), repeat=3),  # maintained
        itertools.product((True, False), repeat=3),  # present in the kernel
    )
)


@pytest.mark.parametrize("quiescent", [True, False])
def test_every_combination_on_three_reals(quiescent: bool) -> None:
    config = cfg(POOL.format(globals=f"quiescent={'yes' if quiescent else 'no'}"))
    layout = layout_of(config)
    for up, drained_bits, maint_bits, present_bits in CASES:
        health = {r: RealHealth(up=u) for r, u in zip(REFS, up, strict=True)}
        drained = {r for r, d in zip(REFS, drained_bits, strict=True) if d}
        maintained = {r for r, m in zip(REFS, maint_bits, strict=True) if m}
        present = {dest(r) for r, p in zip(REFS, present_bits, strict=True) if p}
        actual = {VKEY: desired_table(config, {}, (), {})[VKEY]}
        actual[VKEY].dests = {d: DestConf(Forward.MASQ, 0) for d in present}
        table = desired_table(config, health, maintained, actual, layout, drained)
        got = table[VKEY].dests
        serving = False
        for ref, u in zip(REFS, up, strict=True):
            live = u and ref not in maintained
            conf = got.get(dest(ref))
            if live and ref in drained:
                # kept, whatever quiescent says, at weight 0 with its own forwarding/thresholds
                want_upper, want_lower = (50, 5) if ref == REFS[0] else (0, 0)
                assert conf == DestConf(Forward.MASQ, 0, want_upper, want_lower)
            elif live:
                serving = True
                assert conf is not None and conf.weight == WEIGHTS[ref]
            elif quiescent and dest(ref) in present:
                assert conf is not None and conf.weight == 0  # the usual down rule
            else:
                assert conf is None
        # drained or down: the fallback takes new connections, as when all are down
        assert (FB in got) is not serving


@given(
    up=st.lists(st.booleans(), min_size=3, max_size=3),
    drained=st.sets(st.sampled_from(REFS)),
    quiescent=st.booleans(),
)
def test_a_restart_adopts_a_drained_table_without_changing_it(
    up: list[bool], drained: set[RealRef], quiescent: bool
) -> None:
    config = cfg(POOL.format(globals=f"quiescent={'yes' if quiescent else 'no'}"))
    health = {r: RealHealth(up=u) for r, u in zip(REFS, up, strict=True)}
    first = desired_table(config, health, (), {}, drained=drained)
    first = desired_table(config, health, (), first, drained=drained)
    adopted = adopt_health(config, first, drained)
    assert desired_table(config, adopted, (), first, drained=drained) == first


def test_maintenance_wins_over_drain() -> None:
    config = cfg(POOL.format(globals="quiescent=no"))
    health = {r: RealHealth(up=True) for r in REFS}
    table = desired_table(config, health, {REFS[0]}, {}, drained={REFS[0]})
    assert dest(REFS[0]) not in table[VKEY].dests


def test_undrained_real_gets_its_weight_back() -> None:
    config = cfg(POOL.format(globals=""))
    health = {r: RealHealth(up=True) for r in REFS}
    drained = desired_table(config, health, (), {}, drained={REFS[1]})
    assert drained[VKEY].dests[dest(REFS[1])].weight == 0
    back = desired_table(config, health, (), drained)
    assert back[VKEY].dests[dest(REFS[1])].weight == 2


# ---- names and what they select ---------------------------------------------------------------

TWO = """\
virtual=10.0.0.1:80
\treal=10.0.0.5:80 masq
\treal=10.0.0.6:80 masq
\tservice=http
virtual=10.0.0.1:53
\treal=10.0.0.5:53 masq
\treal=10.0.0.5:80 masq
\tservice=dns
\tprotocol=udp
virtual=7
\treal=10.0.0.5 gate
\tchecktype=connect
\tcheckport=80
virtual6=[2001:db8::1]:80
\treal6=[2001:db8::5]:80 masq
\tservice=http
"""
T80 = ServiceKey.inet("tcp", "10.0.0.1", 80)
U53 = ServiceKey.inet("udp", "10.0.0.1", 53)
F7 = ServiceKey.fwm(7)
V6 = ServiceKey.inet("tcp", "2001:db8::1", 80)


def refs_of(config_text: str) -> list[RealRef]:
    return sorted(build_plan(cfg(config_text)).failurecount, key=str)


def test_labels_are_ldirectords_names() -> None:
    assert real_label("2001:db8::5", 80) == "[2001:db8::5]:80"
    assert virtual_label(T80) == "tcp:10.0.0.1:80"
    assert virtual_label(ServiceKey.fwm(7, "inet6")) == "fwm6:7"  # a file name holds no "/"
    assert DrainEntry.parse("10.0.0.5:80@tcp:10.0.0.1:80") == DrainEntry("10.0.0.5:80", T80_L)
    assert DrainEntry.parse("x@") is None and DrainEntry.parse("@x") is None


T80_L = "tcp:10.0.0.1:80"


def test_select_by_address_port_name_and_virtual() -> None:
    config = cfg(TWO)
    assert select(config, "10.0.0.5:80") == [
        RealRef(T80, "10.0.0.5", 80),
        RealRef(U53, "10.0.0.5", 80),
    ]
    # the bare address: every port it serves on, in every virtual
    assert len(select(config, "10.0.0.5")) == 4
    assert select(config, "10.0.0.5", "fwm:7") == [RealRef(F7, "10.0.0.5", 0)]
    assert select(config, "10.0.0.5:80", "10.0.0.1:80") == [RealRef(T80, "10.0.0.5", 80)]
    assert select(config, "10.0.0.5:80", "udp:10.0.0.1:53") == [RealRef(U53, "10.0.0.5", 80)]
    assert select(config, "[2001:db8::5]:80") == [RealRef(V6, "2001:db8::5", 80)]
    assert select(config, "2001:db8::5", "tcp:[2001:db8::1]:80") == [RealRef(V6, "2001:db8::5", 80)]


@pytest.mark.parametrize(
    ("real", "virtual", "message"),
    [
        ("10.0.0.9:80", None, "10.0.0.9:80 is not a real server of test.cf"),
        ("10.0.0.6:80", "udp:10.0.0.1:53", "not a real server of virtual udp:10.0.0.1:53 in"),
        ("10.0.0.5:80", "fwm:8", "fwm:8 is not a virtual service of test.cf"),
        ("10.0.0.5:99999", None, "neither a real server's address"),
        ("no-such-host.invalid", None, "neither a real server's address"),
    ],
)
def test_select_refuses_what_the_config_does_not_name(
    real: str, virtual: str | None, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LVSMON_RESOLVER", "files")  # no DNS from the tests
    with pytest.raises(DrainError, match=message.replace("(", r"\(")):
        select(cfg(TWO), real, virtual)


# ---- drain and undrain on the stores ----------------------------------------------------------


def stores(tmp: Path) -> list[MemoryStore | StateFile | DrainDir]:
    (tmp / "maint").mkdir()
    return [MemoryStore(), StateFile(str(tmp / "x.drain.json")), DrainDir(str(tmp / "maint"))]


def test_drain_everywhere_then_undrain_in_one_virtual_splits_the_entry(tmp_path: Path) -> None:
    config = cfg(TWO)
    index = DrainIndex.plain(refs_of(TWO))
    for store in stores(tmp_path):
        targets = select(config, "10.0.0.5:80")
        out = drain(store, index, targets, everywhere=True)
        assert [o.changed for o in out] == [True, True]
        assert store.read() == {DrainEntry("10.0.0.5:80", None)}
        assert [o.changed for o in drain(store, index, targets, everywhere=True)] == [False] * 2
        out = undrain(store, index, select(config, "10.0.0.5:80", "tcp:10.0.0.1:80"))
        assert [o.changed for o in out] == [True]
        # still drained in the udp virtual, by an entry of its own
        assert store.read() == {DrainEntry("10.0.0.5:80", "udp:10.0.0.1:53")}
        assert index.resolve(store.read())[0] == {RealRef(U53, "10.0.0.5", 80)}
        assert [o.changed for o in undrain(store, index, targets)] == [False, True]
        assert store.read() == set()


def test_the_stores_keep_what_they_say(tmp_path: Path) -> None:
    config = cfg(TWO)
    index = DrainIndex.plain(refs_of(TWO))
    json_store, dir_store = StateFile(str(tmp_path / "s.json")), DrainDir(str(tmp_path))
    for store in (json_store, dir_store):
        drain(store, index, select(config, "10.0.0.6:80"), everywhere=False)
        drain(store, index, select(config, "10.0.0.5", "fwm:7"), everywhere=False)
    assert json.loads((tmp_path / "s.json").read_text()) == [
        {"real": "10.0.0.5:0", "virtual": "fwm:7"},
        {"real": "10.0.0.6:80", "virtual": "tcp:10.0.0.1:80"},
    ]
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".drain"))
    assert names == ["10.0.0.5:0@fwm:7.drain", "10.0.0.6:80@tcp:10.0.0.1:80.drain"]
    # read again by a fresh reader: a restart
    assert StateFile(str(tmp_path / "s.json")).read() == DrainDir(str(tmp_path)).read()


def test_hand_touched_names_and_unknown_entries(tmp_path: Path) -> None:
    refs = refs_of(TWO)
    names = {r: [real_label(r.address, r.port), r.address, f"web5:{r.port}", "web5"] for r in refs}
    index = DrainIndex({r: n if r.address == "10.0.0.5" else n[:2] for r, n in names.items()})
    store = DrainDir(str(tmp_path))
    (tmp_path / "web5.drain").touch()  # the short name: every port, every virtual
    (tmp_path / "10.0.0.6@tcp:10.0.0.1:80.drain").touch()
    (tmp_path / "10.0.0.99:80.drain").touch()  # no such real: kept, ignored
    (tmp_path / "10.0.0.6:80").touch()  # maintenancedir's own file: not a drain
    drained, unknown = index.resolve(store.read())
    assert len(drained) == 5 and RealRef(T80, "10.0.0.6", 80) in drained
    assert unknown == [DrainEntry("10.0.0.99:80", None)]
    assert listing(store, index)["ignored"] == ["10.0.0.99:80"]
    # undrain one pair: the hand-touched name goes, the other pairs it drained stay drained
    undrain(store, index, [RealRef(U53, "10.0.0.5", 53)])
    assert not (tmp_path / "web5.drain").exists()
    left, _ = index.resolve(store.read())
    assert RealRef(U53, "10.0.0.5", 53) not in left and len(left) == 4
    assert (tmp_path / "10.0.0.99:80.drain").exists()


OPS = st.lists(
    st.tuples(
        st.booleans(),  # drain or undrain
        st.sampled_from(["10.0.0.5:80", "10.0.0.5", "10.0.0.6:80", "10.0.0.5:53"]),
        st.sampled_from([None, "tcp:10.0.0.1:80", "udp:10.0.0.1:53"]),
    ),
    max_size=12,
)


@given(ops=OPS)
def test_drained_pairs_follow_the_commands_as_a_set_would(
    ops: list[tuple[bool, str, str | None]],
) -> None:
    """Whatever the sequence, the store's pairs are those a plain set of pairs would hold."""
    config = cfg(TWO)
    index = DrainIndex.plain(refs_of(TWO))
    store = MemoryStore()
    model: set[RealRef] = set()
    for on, real, virtual in ops:
        try:
            targets = select(config, real, virtual)
        except DrainError:
            continue
        out = (
            drain(store, index, targets, everywhere=virtual is None)
            if on
            else undrain(store, index, targets)
        )
        assert [o.changed for o in out] == [
            (t not in model) if on else (t in model) for t in targets
        ]
        model = model | set(targets) if on else model - set(targets)
        assert index.resolve(store.read())[0] == model
