"""Issue 22 goal 5: per-real state holds no copy of what is shared (bench/memory_per_real.py).

Each test checks identity (one object where each real had its own) next to the value it had."""

from __future__ import annotations

import dataclasses

import pytest

from lvsmon.config import Config
from lvsmon.engine.desired import adopt_health, layout_of
from lvsmon.engine.health import LDIRECTORD, RealHealth
from lvsmon.engine.jobs import CheckJob, FailureCounts, RealRef, RulesOf, build_plan, refs_of

from .conftest import cfg


def pool(virtuals: int = 3, reals: int = 4, failurecount: int = 2) -> Config:
    lines = ["checkinterval=5", f"failurecount={failurecount}"]
    for v in range(virtuals):
        lines.append(f"virtual=10.1.0.{v + 1}:80")
        for r in range(reals):
            i = v * reals + r
            lines.append(f"\treal=10.2.0.{i + 1}:80 masq {2 if i == 1 else 1}")
        lines.append("\tchecktype=connect")
    return cfg("\n".join(lines) + "\n")


def test_layout_and_adopted_health_take_the_plans_refs() -> None:
    config = pool()
    plan = build_plan(config)
    health = adopt_health(config, {})
    for v, lv in zip(config.virtuals, layout_of(config), strict=True):
        refs = plan.parts[v.key][1]
        assert refs_of(config, v) is refs
        assert all(slot.ref is ref for slot, ref in zip(lv.reals, refs, strict=True))
    by_value = {ref: ref for ref in plan.job_of}
    assert all(ref is by_value[ref] for ref in health)


def test_a_layout_keeps_its_reals_in_tuples_of_shared_objects() -> None:
    """No object per real in the layout (a RealSlot was 64 bytes a real): the plan's refs
    tuple itself, the reals' own destination keys, shared confs."""
    config = pool()
    plan = build_plan(config)
    for v, lv in zip(config.virtuals, layout_of(config), strict=True):
        assert lv.refs is plan.parts[v.key][1]
        assert all(d is r.dest for d, r in zip(lv.dests, v.reals, strict=True))  # masq: own port
        assert [s.quiesced for s in lv.reals] == [
            dataclasses.replace(c, weight=0) for c in lv.confs
        ]


def test_status_health_places_are_ranges() -> None:
    """The status reads health by place: a virtual's places are a range (health in config
    order), not an int object per real."""
    from lvsmon.engine.statusview import StatusView

    config = pool()
    layout = layout_of(config)
    health = adopt_health(config, {})
    places = StatusView().health_places(config, health, layout)
    assert places == [range(0, 4), range(4, 8), range(8, 12)]
    reordered = dict(reversed(list(health.items())))
    places = StatusView().health_places(config, reordered, layout)
    assert list(places[0]) == [11, 10, 9, 8] and not isinstance(places[0], range)


def test_reals_share_their_settings_and_read_as_before() -> None:
    """A real's forward, weight, thresholds, request, receive and file are one object for the
    reals that set the same (48 bytes a real), its address and port its DestKey's (16 more);
    a Real reads, compares and copies as before."""
    from lvsmon.config.model import Real

    config = pool()
    reals = [r for v in config.virtuals for r in v.reals]
    assert len({id(r.settings) for r in reals}) == 2  # weight 1, and the one at weight 2
    r = reals[1]
    assert (r.forward.value, r.weight, r.lower, r.upper) == ("masq", 2, 0, 0)
    assert (r.address, r.port) == ("10.2.0.2", 80) and r.address is r.dest.address
    moved = r.at_line(r.line + 5)
    assert moved.settings is r.settings and moved.line == r.line + 5 and moved != r
    assert moved.at_line(r.line) == r and dataclasses.replace(r) == r
    far = r.at_line(70_000)  # its line's upper bits in its settings, the last 8 its own
    assert (far.line, far.low, far.weight) == (70_000, 70_000 % 256, 2) and far != r
    assert far.at_line(r.line) == r
    again = Real(r.address, r.port, r.forward, 2, 0, 0, r.request, r.receive, r.file, r.line)
    assert again == r and hash(again) == hash(r) and again.settings is r.settings


def test_refs_of_a_config_without_a_plan_are_equal_ones() -> None:
    config = pool()
    build_plan(pool(virtuals=2))  # another config's plan
    other = pool()
    build_plan(other)
    v = config.virtuals[0]
    assert refs_of(config, v) == refs_of(other, other.virtuals[0])


def test_equal_dest_confs_are_one_object() -> None:
    slots = [slot for lv in layout_of(pool()) for slot in lv.reals]
    confs = {id(slot.conf) for slot in slots}
    quiesced = {id(slot.quiesced) for slot in slots}
    assert len(confs) == 2  # weight 1 and the one real at weight 2
    assert len(quiesced) == 1  # all at weight 0
    assert [slot.conf.weight for slot in slots[:3]] == [1, 2, 1]
    assert all(slot.quiesced.weight == 0 for slot in slots)


def test_failurecount_is_read_from_the_rules() -> None:
    plan = build_plan(pool(failurecount=3))
    assert isinstance(plan.failurecount, FailureCounts)
    assert plan.failurecount == dict.fromkeys(plan.rules, 3)
    assert list(plan.failurecount) == list(plan.rules)  # config order
    assert len(plan.failurecount) == 12


def test_rules_are_the_virtuals_looked_up_per_real() -> None:
    config = cfg(
        "virtual=10.1.0.1:80\n\treal=10.2.0.1:80 masq\n\treal=10.2.0.2:80 masq\n\tfailurecount=3\n"
        "\tchecktype=connect\n"
        "virtual=10.1.0.2:80\n\treal=10.2.0.1:80 masq\n\tchecktype=on\n"
    )
    plan = build_plan(config)
    assert isinstance(plan.rules, RulesOf)
    first, second = (v.key for v in config.virtuals)
    refs = [RealRef(first, "10.2.0.1", 80), RealRef(first, "10.2.0.2", 80)]
    refs.append(RealRef(second, "10.2.0.1", 80))  # a mode, no job: in the rules all the same
    assert list(plan.rules) == refs and len(plan.rules) == 3
    assert [plan.rules[r].failurecount for r in refs] == [3, 3, 1]
    stranger = RealRef(first, "10.2.0.9", 80)  # its virtual is known, it is not
    assert stranger not in plan.rules and plan.rules.get(stranger) is None
    assert plan.rules[refs[0]] is plan.rules[refs[1]]


def test_a_virtuals_jobs_share_one_interval() -> None:
    plan = build_plan(pool())
    for part in plan.parts.values():
        jobs = [job for job in part[2] if isinstance(job, CheckJob)]
        assert len({id(job.interval) for job in jobs}) == 1 and jobs[0].interval == 5.0


def test_the_settled_up_state_is_shared_per_reason() -> None:
    down = RealHealth(up=False)
    a, _ = down.observe(True, "ok", LDIRECTORD.failurecount)
    b, _ = RealHealth(up=True, failcount=1, checked=True).observe(True, "ok", 2)
    assert a is b and a == RealHealth(True, 0, True, "ok")
    c, _ = down.observe(True, "other words", 1)
    assert c is not a and c.reason == "other words"
    # a state that counts something is its own
    d, _ = a.observe(False, "refused", 2)
    assert d.failcount == 1 and d.up and d is not a


def test_check_counts_live_in_shared_arrays_and_give_their_place_back() -> None:
    from lvsmon.checks.base import CheckResult
    from lvsmon.engine import checkstats
    from lvsmon.engine.checkstats import DURATION_BUCKETS, CheckCounts

    a, b = CheckCounts(), CheckCounts()
    assert not hasattr(a, "__dict__") and "buckets" not in CheckCounts.__slots__
    a.record(CheckResult(True, "ok", 0.0001))
    a.record(CheckResult(False, "connect: connection refused", 2.0))
    b.record(CheckResult(True, "ok", 0.003))
    assert list(a.buckets) == [1, 0, 0, 0, 0, 0, 0, 1] and a.seconds == 2.0001
    assert list(b.buckets) == [0, 0, 1, 0, 0, 0, 0, 0] and b.seconds == 0.003
    assert a.checks == 2 and sum(a.failures) == 1 and sum(b.failures) == 0
    size = len(checkstats._BUCKETS)
    del a  # its place is zeroed and taken again, the arrays do not grow
    c = CheckCounts()
    assert (
        len(checkstats._BUCKETS) == size
        and len(checkstats._BUCKETS) % (len(DURATION_BUCKETS) + 1) == 0
    )
    assert list(c.buckets) == [0] * 8 and c.seconds == 0.0 and c.checks == 0
    assert list(b.buckets) == [0, 0, 1, 0, 0, 0, 0, 0]


def test_the_memory_backends_new_destinations_keep_no_stats_entry() -> None:
    from lvsmon.ipvs.apply import apply_ops
    from lvsmon.ipvs.model import (
        NO_STATS,
        DestConf,
        DestKey,
        DestStats,
        Proto,
        ServiceConf,
        ServiceKey,
    )
    from lvsmon.ipvs.ops import AddDest, AddService

    vip = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
    ops = [AddService(vip, ServiceConf("rr"))] + [
        AddDest(vip, DestKey.of(f"10.0.1.{i}", 80), DestConf()) for i in range(1, 4)
    ]
    table, results = apply_ops({}, ops)
    assert all(r.error is None for r in results)
    assert table[vip].stats == {}  # none: read as NO_STATS
    assert table[vip].stats.get(DestKey.of("10.0.1.1", 80), NO_STATS) == DestStats()


def test_tcp_probe_plans_keep_no_address_of_their_own() -> None:
    from lvsmon.checks.base import CheckSpec
    from lvsmon.checks.connect import connect_plan
    from lvsmon.checks.drive import plain_plan

    spec = CheckSpec(kind="connect", host="127.0.0.1", port=80, timeout=1)
    plan = connect_plan(spec)
    assert plan is not None and plan.addr is None
    assert plain_plan(spec, lambda: None).addr is None  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("service", "port", "virtualhost", "host"),
    [
        ("http", 80, "", "127.0.0.1"),
        ("http", 8080, "", "127.0.0.1:8080"),
        ("https", 443, "", "127.0.0.1"),
        ("http", 80, "www.example.test", "www.example.test"),
    ],
)
def test_http_plans_keep_no_host_value_of_their_own(
    service: str, port: int, virtualhost: str, host: str
) -> None:
    """The Host value that is the real's own authority is made for each check (51 bytes a
    real); a virtualhost is kept. The parts are one tuple, shared by the virtual's reals (one
    slot, not three: 16 bytes a real)."""
    from lvsmon.checks.base import CheckSpec
    from lvsmon.checks.http import probe_plan

    spec = CheckSpec(
        kind="negotiate", host="127.0.0.1", port=port, timeout=1, service=service,
        virtualhost=virtualhost,
    )  # fmt: skip
    plan = probe_plan(spec)
    assert plan is not None
    assert (len(plan.parts) == 2) == (not virtualhost)  # type: ignore[attr-defined]
    assert f"\r\nHost: {host}\r\n".encode() in plan.request  # type: ignore[attr-defined]
    other = probe_plan(dataclasses.replace(spec, host="127.0.0.2"))
    assert other is not None
    assert other.parts is plan.parts  # type: ignore[attr-defined]
    assert other.request == plan.request.replace(b"127.0.0.1", b"127.0.0.2")  # type: ignore[attr-defined]


def test_an_unchanged_maintenance_set_stays_the_same_object() -> None:
    """The maintenance scan runs every second; an equal set must not replace the running one
    (the status's whole-list shortcut compares it by identity first)."""
    from lvsmon.engine.engine import Engine
    from lvsmon.ipvs.memory import MemoryBackend

    config = pool()
    down: set[RealRef] = set()
    engine = Engine(config, MemoryBackend(), maintained=lambda c, p: set(down))
    assert engine.refresh_maintenance() is False
    first = engine.maintained
    down.add(next(iter(build_plan(config).job_of)))
    assert engine.refresh_maintenance() is True
    changed = engine.maintained
    assert changed is not first and set(changed) == down
    assert engine.refresh_maintenance() is False
    assert engine.maintained is changed


def test_per_virtual_objects_are_shared_when_equal() -> None:
    """At 16 reals a virtual (keepalived #2318) per-virtual objects count: equal service
    confs are one object in the layout, the kernel's canonical conf is that very object when
    it is canonical already, and a virtual without a depool threshold keeps no empty set of
    its own in the status cache."""
    from lvsmon.engine.statusview import _kept
    from lvsmon.ipvs.model import ServiceConf
    from lvsmon.ipvs.rules import canonical_service_conf

    config = pool()
    layout = layout_of(config)
    assert len({id(lv.conf) for lv in layout}) == 1
    assert canonical_service_conf(layout[0].key, layout[0].conf) is layout[0].conf
    masked = ServiceConf(persistent=300, netmask="255.255.255.255")
    assert canonical_service_conf(layout[0].key, masked) == ServiceConf(persistent=300)
    with_fallback = layout_of(cfg(pool_text_with_fallbacks()))
    fallbacks = [lv.fallback for lv in with_fallback]
    assert all(f is not None for f in fallbacks) and len({id(f[1]) for f in fallbacks if f}) == 1
    health = adopt_health(config, {})
    empty = frozenset[RealRef]()
    assert _kept(layout[0], health, empty, empty) is _kept(layout[1], health, empty, empty)


def pool_text_with_fallbacks() -> str:
    return "".join(
        f"virtual=10.1.0.{v}:80\n\treal=10.2.0.{v}:80 masq\n\tfallback=127.0.0.1:80 masq\n"
        for v in (1, 2, 3)
    )


def test_an_http_plan_keeps_no_deadline_route_or_factory_of_its_own() -> None:
    """The deadline is the spec's, a checkpath=vip Route sits in `addr`, HttpPlan makes its
    dialogue from its parts: no `timeout`, `via` or `dialogue` slot per real (88 -> 64 bytes)."""
    import sys

    from lvsmon.checks.base import CheckSpec
    from lvsmon.checks.http import HttpPlan, probe_plan
    from lvsmon.checks.prober import ProbePlan

    spec = CheckSpec(kind="negotiate", host="127.0.0.1", port=80, timeout=1, service="http")
    plan = probe_plan(spec)
    assert type(plan) is HttpPlan
    slots = {s for c in type(plan).__mro__ for s in getattr(c, "__slots__", ())}
    assert slots == {"addr", "family", "spec", "parts"}
    assert sys.getsizeof(plan) <= 64
    assert plan.via is None and plan.make_dialogue() is not None
    assert set(ProbePlan.__slots__) == {"addr", "family", "spec"}
