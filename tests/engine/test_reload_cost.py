"""Issue 22: a reload costs what it changes, and a steady pool costs nothing per second per real.

Each test counts work (objects rebuilt, sets built, hashes taken), never time: every one of them
fails on the code before the fix it names."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator

import pytest

from lvsmon.checks.base import CheckSettings
from lvsmon.config import Config
from lvsmon.engine.desired import adopt_health, layout_of
from lvsmon.engine.engine import Engine
from lvsmon.engine.forced import Forcing
from lvsmon.engine.health import ADOPTED_UP, RealHealth
from lvsmon.engine.jobs import CheckJob, RealRef, build_plan
from lvsmon.engine.planning import apply_modes, carried_health
from lvsmon.engine.reconciler import applied, keep_services
from lvsmon.engine.status import unpack
from lvsmon.ipvs.apply import apply_ops
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Service, ServiceConf, ServiceKey, Table
from lvsmon.ipvs.ops import AddDest, AddService, DeleteService, EditDest, Op

from .conftest import cfg


def pool(virtuals: int = 6, reals: int = 4, heavier: frozenset[int] = frozenset()) -> Config:
    """`virtuals` x `reals` connect-checked reals; those numbered in `heavier` at weight 2."""
    lines = ["checkinterval=5"]
    for v in range(virtuals):
        lines.append(f"virtual=10.1.0.{v + 1}:80")
        for r in range(reals):
            i = v * reals + r
            lines.append(f"\treal=10.2.{i // 200}.{i % 200 + 1}:80 masq {2 if i in heavier else 1}")
        lines.append("\tchecktype=connect")
    return cfg("\n".join(lines) + "\n")


def test_a_plan_reuses_each_unchanged_virtuals_part() -> None:
    old = pool()
    new = pool(heavier=frozenset({5}))  # the second virtual's second real
    old_plan = build_plan(old)
    plan = build_plan(new, old_plan)
    assert plan == build_plan(new)  # the same plan as from scratch
    for v_old, v_new in zip(old.virtuals, new.virtuals, strict=True):
        reused = plan.parts[v_new.key] is old_plan.parts[v_old.key]
        assert reused == (v_old == v_new)
    # the very objects: carried_health then compares jobs by identity first
    v0 = new.virtuals[0].key
    assert all(a is b for a, b in zip(plan.parts[v0][1], old_plan.parts[v0][1], strict=True))


def test_a_check_job_hashes_no_settings(monkeypatch: object) -> None:
    """A job is a dict key in the plan, the runner and a reload: its hash is the real's and the
    kind's, never the 22 fields of its settings (the bulk of a reload's plan when it was)."""
    plan = build_plan(pool())
    jobs = list(plan.jobs)
    calls = 0
    settings_hash = CheckSettings.__hash__

    def counting(self: CheckSettings) -> int:
        nonlocal calls
        calls += 1
        return settings_hash(self)

    setattr(CheckSettings, "__hash__", counting)  # noqa: B010 (a slots class: no monkeypatch.setattr)
    try:
        for job in jobs * 10:
            assert plan.jobs[job]
        fresh = CheckJob(jobs[0].spec, jobs[0].interval)
        assert fresh == jobs[0] and hash(fresh) == hash(jobs[0])
        assert fresh != CheckJob(jobs[0].spec, jobs[0].interval + 1)
        assert plan.jobs[fresh] == plan.jobs[jobs[0]]
    finally:
        setattr(CheckSettings, "__hash__", settings_hash)  # noqa: B010
    assert calls == 0


def test_a_layout_reuses_each_unchanged_virtual() -> None:
    old, new = pool(), pool(heavier=frozenset({5}))
    old_layout = layout_of(old)
    layout = layout_of(new, (old, old_layout))
    assert layout == layout_of(new)
    same = [a is b for a, b in zip(layout, old_layout, strict=True)]
    assert same == [v_old == v_new for v_old, v_new in zip(old.virtuals, new.virtuals, strict=True)]


def test_carried_health_adopts_only_the_reals_whose_check_changed() -> None:
    old = pool()
    # the third virtual's checks change: its reals are adopted anew, nothing else is
    changed = dataclasses.replace(old.virtuals[2], checkinterval=7)
    new = dataclasses.replace(old, virtuals=(*old.virtuals[:2], changed, *old.virtuals[3:]))
    old_plan, plan = build_plan(old), build_plan(new)
    seen = RealHealth(up=True, checked=True, reason="seen by a check")
    old_health = {ref: seen for ref in old_plan.failurecount}
    health = carried_health(old_plan, old_health, new, plan, {})
    # the definition: adopt everything, keep what did not change
    fresh = adopt_health(new, {})
    expected = {
        ref: old_health[ref] if old_plan.job_of[ref] == plan.job_of[ref] else fresh[ref]
        for ref in fresh
    }
    apply_modes(plan, expected)
    assert health == expected and list(health) == list(expected)
    assert [ref for ref, h in health.items() if h is not seen] == [
        RealRef(changed.key, r.address, r.port) for r in changed.reals
    ]
    # adopt_health's skip leaves the carried ones out entirely
    assert set(adopt_health(new, {}, skip=set(old_health) - set(health))) == set(fresh)
    only = adopt_health(new, {}, skip={r for r, h in health.items() if h is seen})
    assert set(only) == {RealRef(changed.key, r.address, r.port) for r in changed.reals}


class CountingRefs(dict[RealRef, int]):
    """A plan's reals that count how often they were walked."""

    walks = 0

    def __iter__(self) -> Iterator[RealRef]:
        CountingRefs.walks += 1
        return super().__iter__()


def test_the_maintenance_scan_of_an_unchanged_plan_walks_no_real() -> None:
    config = pool()
    plan = build_plan(config)
    plan = dataclasses.replace(plan, failurecount=CountingRefs(plan.failurecount))
    forcing = Forcing(None)
    CountingRefs.walks = 0
    for _ in range(10):  # once a second: maintenance scan and drain state
        assert forcing.maintained(config, plan) == frozenset()
        assert forcing.drained(config, plan) == frozenset()
    # before: a frozenset of every real per call (20 walks; 100,000 reals each second)
    assert CountingRefs.walks == 0


def _table(n: int) -> Table:
    out: Table = {}
    for i in range(n):
        key = ServiceKey.inet("tcp", f"10.1.0.{i + 1}", 80)
        out[key] = Service(ServiceConf(), {DestKey(f"10.2.0.{i + 1}", 80): DestConf(weight=1)})
    return out


def test_applied_copies_only_the_services_its_ops_touch() -> None:
    table = _table(5)
    keys = list(table)
    new_key = ServiceKey.inet("tcp", "10.1.1.1", 80)
    ops: list[Op] = [
        EditDest(keys[1], DestKey("10.2.0.2", 80), DestConf(Forward.MASQ, 2)),
        DeleteService(keys[3]),
        AddService(new_key, ServiceConf()),
        AddDest(new_key, DestKey("10.2.1.1", 80), DestConf()),
        AddDest(keys[4], DestKey("10.2.0.5", 80), DestConf()),  # fails: exists
    ]
    before = {k: dataclasses.replace(s, dests=dict(s.dests)) for k, s in table.items()}
    out = applied(table, ops)
    assert out == apply_ops(table, ops)[0]
    assert out[keys[0]] is table[keys[0]] and out[keys[2]] is table[keys[2]]
    assert out[keys[4]] is not table[keys[4]]  # touched (its op failed): a copy all the same
    assert out[keys[1]] is not table[keys[1]]
    assert table == before  # the table it was given is untouched


def test_memory_backend_apply_copies_only_what_its_ops_touch() -> None:
    table = _table(5)
    backend = MemoryBackend(table)
    held = dict(backend.table)
    keys = list(table)
    op = EditDest(keys[1], DestKey("10.2.0.2", 80), DestConf(Forward.MASQ, 3))
    results = asyncio.run(backend.apply([op]))
    assert [r.error for r in results] == [None]
    assert backend.table == apply_ops(held, [op])[0]
    assert all(backend.table[k] is held[k] for k in keys if k != keys[1])
    assert held[keys[1]].dests[DestKey("10.2.0.2", 80)].weight == 1  # not changed in place


def test_a_resync_that_finds_the_table_as_programmed_keeps_its_objects() -> None:
    cached = _table(3)
    fresh = {k: dataclasses.replace(s, dests=dict(s.dests), stats={}) for k, s in cached.items()}
    keys = list(cached)
    other = ServiceKey.inet("tcp", "10.9.0.1", 80)  # not ours: left as the dump has it
    fresh[other] = Service(ServiceConf())
    fresh[keys[2]].dests[DestKey("10.2.0.3", 80)] = DestConf(weight=5)  # drift: the dump's
    changed = fresh[keys[2]]
    stats = fresh[keys[0]].stats
    keep_services(cached, fresh, set(keys))
    assert fresh[keys[0]] is cached[keys[0]] and fresh[keys[1]] is cached[keys[1]]
    assert fresh[keys[0]].stats is stats  # the dump's counters
    assert fresh[keys[2]] is changed and cached[keys[2]] != changed
    assert other not in cached


def test_a_reload_to_an_equal_config_keeps_plan_and_health() -> None:
    async def run() -> None:
        config = pool()
        engine = Engine(config, MemoryBackend())
        await engine.start()
        try:
            plan, health = engine.plan, engine.health
            status = engine.status()
            again = dataclasses.replace(config, digest="another digest")  # a comment changed
            await engine.reload(again)
            assert engine.config is again
            assert engine.plan is plan and engine.health is health
            assert engine.status()["virtuals"] == status["virtuals"]
            # a changed virtual: a new plan, the other reals' health carried over
            changed = pool(heavier=frozenset({5}))
            await engine.reload(changed)
            assert engine.plan is not plan
            assert engine.plan.parts[config.virtuals[0].key] is plan.parts[config.virtuals[0].key]
            assert all(engine.health[ref] is health[ref] for ref in health)
        finally:
            await engine.stop()

    asyncio.run(run())


def test_status_of_an_unchanged_pool_looks_at_no_virtual() -> None:
    async def run() -> None:
        config = pool()
        engine = Engine(config, MemoryBackend())
        await engine.start()
        try:
            for ref in engine.plan.failurecount:
                engine.health[ref] = ADOPTED_UP
            first = engine.status_texts()
            engine.status_view._cache.clear()  # a per-virtual build would now make new texts
            second = engine.status_texts()
            assert all(a is b for a, b in zip(first, second, strict=True))
            engine.health[next(iter(engine.health))] = RealHealth(up=False, reason="gone")
            third = engine.status_texts()
            assert third[0] is not first[0]
            assert json.loads(unpack(third[0]))["reals"][0]["state"] == "down"
        finally:
            await engine.stop()

    asyncio.run(run())


def test_a_big_apply_gives_the_subscribers_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: one pass publishing more events than a subscriber's queue holds (a start-up at
    100,000 reals: two per op) lets the subscribers run every APPLY_CHUNK ops; before, the
    log lost 36,000 of 100,000 "Added real server" lines."""
    import lvsmon.engine.reconciler as reconciler_module
    from lvsmon.engine.events import EventBus, KernelOp

    monkeypatch.setattr(reconciler_module, "APPLY_CHUNK", 50)

    async def run() -> tuple[int, int]:
        bus = EventBus()
        seen: list[object] = []
        sub = bus.subscribe("small", seen.append, kinds=(KernelOp,), maxlen=120)
        config = pool(virtuals=10, reals=40)  # 10 services + 400 dests: 410 ops
        engine = Engine(config, MemoryBackend(), events=bus)
        for ref in engine.plan.failurecount:
            engine.health[ref] = ADOPTED_UP
        await bus.start()
        engine.reconciler.actual = {}
        await engine.reconciler.reconcile()
        await bus.stop()
        return len(seen), sub.dropped

    seen, dropped = asyncio.run(run())
    assert (seen, dropped) == (410, 0)


def test_reloads_forget_the_transitions_of_removed_reals() -> None:
    """Issue 22's soak: reals added and removed by reloads left their transition counts behind
    where /metrics was never scraped (its layout pruned them): the dict grew without end."""

    async def run() -> int:
        engine = Engine(pool(virtuals=2, reals=3), MemoryBackend())
        await engine.start()
        try:
            for round_ in range(20):
                lines = ["checkinterval=5"]
                for v in range(2):
                    lines.append(f"virtual=10.1.0.{v + 1}:80")
                    for r in range(3):  # every round, new reals
                        lines.append(f"\treal=10.3.{round_}.{v * 3 + r + 1}:80 masq")
                    lines.append("\tchecktype=connect")
                await engine.reload(cfg("\n".join(lines) + "\n"))
                for ref in engine.plan.failurecount:
                    engine.transitions.record(ref, True)
            return len(engine.transitions.counts)
        finally:
            await engine.stop()

    assert asyncio.run(run()) <= 2 * 6
