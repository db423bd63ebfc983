"""Issue 22 goal 5: per-real state holds no copy of what is shared (bench/memory_per_real.py).

Each test checks identity (one object where each real had its own) next to the value it had."""

from __future__ import annotations

from lvsmon.config import Config
from lvsmon.engine.desired import adopt_health, layout_of
from lvsmon.engine.health import LDIRECTORD, RealHealth
from lvsmon.engine.jobs import CheckJob, FailureCounts, build_plan, refs_of

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
