"""desired_table and adoption: the rules that decide what the kernel should hold."""

from __future__ import annotations

from lvsmon.engine.desired import adopt_health, desired_table
from lvsmon.engine.health import ADOPTED_UP, DOWN, RealHealth
from lvsmon.engine.jobs import Mode, RealRef, build_plan
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Service, ServiceConf, ServiceKey, Table

from .conftest import cfg

BASE = """\
checktimeout=3
virtual=192.168.6.240:80
\treal=192.168.6.2:80 masq 3
\treal=192.168.6.3:80 masq 2 l:5 u:50
\tfallback=127.0.0.1:80
\tservice=http
\trequest="index.html"
\treceive="ok"
"""
VKEY = ServiceKey.inet("tcp", "192.168.6.240", 80)
R1 = RealRef(VKEY, "192.168.6.2", 80)
R2 = RealRef(VKEY, "192.168.6.3", 80)
FB = DestKey("127.0.0.1", 80)


def dests(table: Table) -> dict[DestKey, DestConf]:
    return table[VKEY].dests


def test_fresh_table_has_only_the_fallback_before_any_check() -> None:
    c = cfg(BASE)
    health = adopt_health(c, {})
    assert not any(h.up for h in health.values())
    t = desired_table(c, health, (), {})
    assert dests(t) == {FB: DestConf(Forward.GATE, 1, 0, 0)}
    assert t[VKEY].conf.scheduler == "wrr"


def test_up_reals_get_their_weight_and_thresholds_and_the_fallback_leaves() -> None:
    c = cfg(BASE)
    t = desired_table(c, {R1: ADOPTED_UP, R2: ADOPTED_UP}, (), {})
    assert dests(t) == {
        DestKey("192.168.6.2", 80): DestConf(Forward.MASQ, 3, 0, 0),
        DestKey("192.168.6.3", 80): DestConf(Forward.MASQ, 2, 50, 5),
    }


def test_down_real_is_deleted_without_quiescent() -> None:
    c = cfg(BASE)
    actual = desired_table(c, {R1: ADOPTED_UP, R2: ADOPTED_UP}, (), {})
    t = desired_table(c, {R1: ADOPTED_UP, R2: DOWN}, (), actual)
    assert set(dests(t)) == {DestKey("192.168.6.2", 80)}


def test_down_real_is_quiesced_with_quiescent_and_fallback_joins_when_none_is_up() -> None:
    c = cfg("quiescent=yes\n" + BASE)
    actual = desired_table(c, {R1: ADOPTED_UP, R2: ADOPTED_UP}, (), {})
    t = desired_table(c, {R1: ADOPTED_UP, R2: DOWN}, (), actual)
    assert dests(t)[DestKey("192.168.6.3", 80)].weight == 0
    t = desired_table(c, {R1: DOWN, R2: DOWN}, (), t)
    assert {d: x.weight for d, x in dests(t).items()} == {
        DestKey("192.168.6.2", 80): 0,
        DestKey("192.168.6.3", 80): 0,
        FB: 1,
    }


def test_quiesced_real_deleted_by_hand_stays_out_unless_readdquiescent() -> None:
    c = cfg("quiescent=yes\n" + BASE)
    t = desired_table(c, {R1: ADOPTED_UP, R2: DOWN}, (), {})
    assert DestKey("192.168.6.3", 80) not in dests(t)
    c = cfg("quiescent=yes\nreaddquiescent=yes\n" + BASE)
    t = desired_table(c, {R1: ADOPTED_UP, R2: DOWN}, (), {})
    assert dests(t)[DestKey("192.168.6.3", 80)].weight == 0


def test_maintenance_forces_a_healthy_real_down() -> None:
    c = cfg(BASE)
    t = desired_table(c, {R1: ADOPTED_UP, R2: ADOPTED_UP}, {R2}, {})
    assert set(dests(t)) == {DestKey("192.168.6.2", 80)}


def test_adoption_reproduces_the_table_so_a_restart_changes_nothing() -> None:
    c = cfg("quiescent=yes\n" + BASE)
    for states in ([True, True], [True, False], [False, False]):
        health = {R1: RealHealth(up=states[0]), R2: RealHealth(up=states[1])}
        first = desired_table(c, health, (), desired_table(c, health, (), {}))
        adopted = adopt_health(c, first)
        assert desired_table(c, adopted, (), first) == first


def test_gate_reals_take_the_virtual_port_as_the_kernel_does() -> None:
    c = cfg("virtual=10.0.0.1:80\n\treal=10.0.0.2:8080 gate\n\tservice=http\n")
    ref = RealRef(ServiceKey.inet("tcp", "10.0.0.1", 80), "10.0.0.2", 8080)
    t = desired_table(c, {ref: ADOPTED_UP}, (), {})
    assert set(t[ref.service].dests) == {DestKey("10.0.0.2", 80)}


def test_global_fallback_applies_to_fwmark_virtuals() -> None:
    c = cfg(
        "fallback=127.0.0.1\nvirtual=7\n\treal=10.0.0.2 gate\n\tchecktype=connect\n\tcheckport=80\n"
    )
    key = ServiceKey.fwm(7)
    t = desired_table(c, adopt_health(c, {}), (), {})
    assert list(t[key].dests.values()) == [DestConf(Forward.GATE, 1, 0, 0)]


def test_checktype_off_activates_nothing_and_keeps_what_it_finds() -> None:
    c = cfg(BASE.replace("service=http", "checktype=off"))
    plan = build_plan(c)
    assert plan.mode_of[R1] == Mode.FROZEN and not plan.jobs
    actual: Table = {
        VKEY: Service(ServiceConf("wrr"), {DestKey("192.168.6.2", 80): DestConf(Forward.MASQ, 3)})
    }
    t = desired_table(c, adopt_health(c, actual), (), actual)
    assert dests(t) == dests(actual)


def test_identical_checks_in_two_virtuals_run_once() -> None:
    c = cfg(
        BASE
        + "virtual=192.168.6.241:80\n\treal=192.168.6.2:80 masq\n\tservice=http\n"
        + '\trequest="index.html"\n\treceive="ok"\n'
    )
    plan = build_plan(c)
    shared = plan.job_of[R1]
    assert len(plan.jobs[shared]) == 2
    assert len(plan.jobs) == 2  # R1 shared, R2 alone
