"""Probe services (issue 23, pure planning): one per (real, forwarding) checked through the VIP,
marks from checkmarkbase, stable across reloads and restarts; a reload that changes checkpath
touches its probe services only, never a production service; foreign services are never taken."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.config.checkpathconf import PROBE_MARKS
from lvsmon.config.model import Config
from lvsmon.engine.desired import desired_table, managed_services
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import Plan, RealRef, refs_of
from lvsmon.engine.probepath import (
    PROBE_CONF,
    Probes,
    adopted,
    allocate,
    changed_probes,
    is_probe,
    plan_probes,
    probe_service,
    with_probes,
)
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Family,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)

from .conftest import cfg

BASE = 0x4C560000
UP = RealHealth(up=True, checked=True)


def config_of(virtuals: list[tuple[str, list[tuple[int, str]]]], base: int | None = None) -> Config:
    """virtuals: (checkpath, [(real host number, forwarding)]) each, on ports 80, 81, ..."""
    text = "" if base is None else f"checkmarkbase={base}\n"
    for i, (path, reals) in enumerate(virtuals):
        text += f"virtual=10.30.0.100:{80 + i}\n\tservice=http\n\tcheckpath={path}\n"
        for host, forward in reals:
            text += f"\treal=10.30.0.{host}:{80 + i} {forward}\n"
    return cfg(text)


def test_one_probe_service_per_real_and_forwarding() -> None:
    config = config_of(
        [
            ("vip", [(1, "gate"), (2, "ipip"), (3, "masq")]),
            ("both", [(1, "gate"), (2, "gate")]),
            ("real", [(4, "gate")]),
        ]
    )
    probes = plan_probes(config)
    assert dict(probes.marks) == {
        ("10.30.0.1", Forward.GATE): BASE,
        ("10.30.0.2", Forward.GATE): BASE + 1,
        ("10.30.0.2", Forward.IPIP): BASE + 2,
    }
    assert probes.table == {
        ServiceKey.fwm(BASE): Service(
            ServiceConf("rr"), {DestKey("10.30.0.1", 0): DestConf(Forward.GATE, 1, 0, 0)}
        ),
        ServiceKey.fwm(BASE + 1): probe_service("10.30.0.2", Forward.GATE),
        ServiceKey.fwm(BASE + 2): probe_service("10.30.0.2", Forward.IPIP),
    }
    assert all(is_probe(k, BASE) for k in probes.keys)
    assert probes.mark_of("10.30.0.2", Forward.IPIP) == BASE + 2
    assert probes.mark_of("10.30.0.3", Forward.MASQ) is None


def test_no_vip_path_no_probe_service() -> None:
    config = config_of([("real", [(1, "gate")]), ("vip", [(2, "masq")])])
    assert plan_probes(config).table == {}


def test_ipv6_probe_services_are_inet6() -> None:
    config = cfg(
        "virtual6=[2001:db8::100]:80\n\tservice=http\n\tcheckpath=vip\n"
        "\treal6=[2001:db8::1]:80 gate\n"
    )
    probes = plan_probes(config)
    assert probes.keys == {ServiceKey.fwm(BASE, Family.INET6)}


def test_checkmarkbase_moves_the_block() -> None:
    config = config_of([("vip", [(1, "gate")])], base=5000)
    assert plan_probes(config).keys == {ServiceKey.fwm(5000)}


def test_a_restart_adopts_the_kernel_marks_whatever_the_config_order() -> None:
    first = config_of([("vip", [(1, "gate"), (2, "gate")]), ("vip", [(3, "ipip")])])
    running = plan_probes(first)
    # the reals listed in another order, a new one first: a fresh allocation would move marks
    second = config_of([("vip", [(9, "gate"), (3, "ipip")]), ("vip", [(2, "gate"), (1, "gate")])])
    kernel: Table = dict(running.table)
    restarted = plan_probes(second, None, kernel)
    for need, mark in running.marks.items():
        assert restarted.marks[need] == mark
    assert restarted.marks[("10.30.0.9", Forward.GATE)] == BASE + 3  # the lowest free one


def test_foreign_services_in_the_block_are_neither_adopted_nor_reused() -> None:
    config = config_of([("vip", [(1, "gate"), (2, "gate")])])
    two_dests = Service(
        PROBE_CONF,
        {
            DestKey("10.30.0.1", 0): DestConf(Forward.GATE, 1, 0, 0),
            DestKey("10.30.0.7", 0): DestConf(Forward.GATE, 1, 0, 0),
        },
    )
    with_port = Service(PROBE_CONF, {DestKey("10.30.0.2", 80): DestConf(Forward.GATE, 1, 0, 0)})
    kernel: Table = {ServiceKey.fwm(BASE): two_dests, ServiceKey.fwm(BASE + 1): with_port}
    assert adopted(kernel, BASE) == {}
    probes = plan_probes(config, None, kernel)
    assert set(probes.marks.values()) == {BASE + 2, BASE + 3}
    # and the reconciler, owning these keys only, leaves the foreign ones alone
    ops = diff(with_probes({}, probes), kernel, probes.keys)
    assert {op.service for op in ops} == probes.keys


def test_a_service_outside_the_block_is_not_adopted() -> None:
    kernel: Table = {ServiceKey.fwm(BASE - 1): probe_service("10.30.0.1", Forward.GATE)}
    assert adopted(kernel, BASE) == {}


# ---- property tests -------------------------------------------------------------------------

FORWARDS = st.sampled_from(["gate", "ipip", "masq"])
PATHS = st.sampled_from(["real", "vip", "both"])
REALS = st.lists(st.tuples(st.integers(1, 12), FORWARDS), max_size=6).map(
    # one line per address in a virtual (the kernel has one destination per address and port)
    lambda rs: list({host: (host, fwd) for host, fwd in rs}.values())
)
VIRTUALS = st.lists(st.tuples(PATHS, REALS), min_size=1, max_size=5)


def production(config: Config) -> Table:
    health = {ref: UP for v in config.virtuals for ref in refs_of(config, v)}
    return desired_table(config, health, (), {})


@settings(max_examples=300, deadline=None)
@given(VIRTUALS, st.data())
def test_a_reload_changing_checkpath_touches_its_probe_services_only(
    virtuals: list[tuple[str, list[tuple[int, str]]]], data: st.DataObject
) -> None:
    old_config = config_of(virtuals)
    i = data.draw(st.integers(0, len(virtuals) - 1))
    path = data.draw(PATHS)
    changed = list(virtuals)
    changed[i] = (path, virtuals[i][1])
    new_config = config_of(changed)

    old = plan_probes(old_config)
    new = plan_probes(new_config, old.marks)
    # every real keeps its mark; the others' services are the same objects' equals
    for need in old.marks.keys() & new.marks.keys():
        assert new.marks[need] == old.marks[need]
    assert len(set(new.marks.values())) == len(new.marks)
    assert all(BASE <= m < BASE + PROBE_MARKS for m in new.marks.values())
    added = new.marks.keys() - old.marks.keys()
    removed = old.marks.keys() - new.marks.keys()
    assert changed_probes(old, new) == {ServiceKey.fwm(new.marks[n]) for n in added} | {
        ServiceKey.fwm(old.marks[n]) for n in removed
    }

    # the reconcile of that reload: ops on probe services only, exactly the changed ones
    actual = with_probes(production(old_config), old)
    desired = with_probes(production(new_config), new)
    managed = managed_services(new_config) | new.keys | old.keys
    ops = diff(desired, actual, managed)
    assert {op.service for op in ops} == changed_probes(old, new)
    assert all(is_probe(op.service, BASE) for op in ops)


@settings(max_examples=300, deadline=None)
@given(
    st.sets(st.tuples(st.integers(1, 40), st.sampled_from([Forward.GATE, Forward.IPIP]))),
    st.dictionaries(
        st.tuples(st.integers(1, 40), st.sampled_from([Forward.GATE, Forward.IPIP])),
        st.integers(BASE - 3, BASE + 50),
    ),
    st.sets(st.integers(BASE, BASE + 50)),
)
def test_allocate(
    needs_in: set[tuple[int, Forward]],
    previous_in: dict[tuple[int, Forward], int],
    taken: set[int],
) -> None:
    needs = {(f"10.0.0.{h}", f) for h, f in needs_in}
    previous = {(f"10.0.0.{h}", f): m for (h, f), m in previous_in.items()}
    marks = allocate(needs, previous, BASE, taken)
    assert marks.keys() == needs
    values = list(marks.values())
    assert len(set(values)) == len(values)  # one service per mark
    assert not set(values) & taken
    assert all(BASE <= m < BASE + PROBE_MARKS for m in values)
    # a previous mark is kept unless it is outside the block, taken, or shared with a need
    # sorted before it
    for need, mark in marks.items():
        was = previous.get(need)
        usable = was is not None and BASE <= was < BASE + PROBE_MARKS and was not in taken
        if usable and was is not None and list(previous.values()).count(was) == 1:
            assert mark == was
    # new ones take the lowest marks nobody holds
    fresh = sorted(m for n, m in marks.items() if previous.get(n) != m)
    held = {m for n, m in marks.items() if previous.get(n) == m} | taken
    free = [m for m in range(BASE, BASE + PROBE_MARKS) if m not in held]
    assert fresh == free[: len(fresh)]


@settings(max_examples=200, deadline=None)
@given(VIRTUALS)
def test_a_restart_on_its_own_table_changes_nothing(
    virtuals: list[tuple[str, list[tuple[int, str]]]],
) -> None:
    config = config_of(virtuals)
    running = plan_probes(config)
    kernel = with_probes(production(config), running)
    restarted = plan_probes(config, None, kernel)
    assert restarted.marks == running.marks
    assert diff(with_probes(production(config), restarted), kernel, restarted.keys) == []


def test_probes_compare_by_marks() -> None:
    assert Probes(BASE) == Probes(BASE, {})


def test_lvsmon_plan_of_a_reload_changing_checkpath() -> None:
    """`lvsmon plan` (engine/planning.py) sees the running probe services in the kernel: a reload
    that keeps checkpath plans nothing for them, one to `real` deletes them only."""
    from lvsmon.engine.planning import plan_reload, running_from_kernel
    from lvsmon.ipvs.ops import DeleteService

    vip = config_of([("vip", [(1, "gate"), (2, "ipip")])])
    kernel = with_probes(production(vip), plan_probes(vip))
    running = running_from_kernel(vip, kernel)
    assert plan_probes(vip).keys <= set(running.managed)

    def nothing(config: Config, plan: Plan) -> frozenset[RealRef]:
        return frozenset()

    assert plan_reload(running, config_of([("vip", [(1, "gate"), (2, "ipip")])]), nothing).ops == []
    ops = plan_reload(running, config_of([("real", [(1, "gate"), (2, "ipip")])]), nothing).ops
    assert ops == [DeleteService(ServiceKey.fwm(BASE)), DeleteService(ServiceKey.fwm(BASE + 1))]
