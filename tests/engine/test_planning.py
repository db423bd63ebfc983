"""lvsmon plan's pure part (lvsmon/engine/planning.py): the ops a reload to a new config applies,
computed from a snapshot of the running state; and that Engine.reload does exactly those."""

from __future__ import annotations

import asyncio
import dataclasses

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.config import Config
from lvsmon.engine.desired import adopt_health
from lvsmon.engine.engine import Engine
from lvsmon.engine.health import ADOPTED_UP, DOWN, RealHealth
from lvsmon.engine.jobs import Plan, RealRef, build_plan
from lvsmon.engine.planning import (
    ALWAYS_UP,
    Running,
    carried_health,
    op_json,
    plan_reload,
    running_from_kernel,
)
from lvsmon.ipvs.apply import apply_ops
from lvsmon.ipvs.ipvsadm_format import op_line
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, DestKey, Forward, ServiceKey, Table
from lvsmon.ipvs.ops import AddDest, AddService, DeleteDest, DeleteService, EditDest, Op

from .conftest import cfg

V1 = ServiceKey.inet("tcp", "10.0.0.1", 80)
V2 = ServiceKey.inet("tcp", "10.0.0.2", 80)
R5 = RealRef(V1, "10.0.0.5", 80)
R6 = RealRef(V1, "10.0.0.6", 80)


def text(
    reals: str = "\treal=10.0.0.5:80 masq 1\n\treal=10.0.0.6:80 masq 2\n", extra: str = ""
) -> str:
    return (
        "virtual=10.0.0.1:80\n"
        f"{reals}"
        '\tservice=http\n\treceive="ok"\n\tchecktype=negotiate\n'
        f"{extra}"
    )


def nothing(_config: Config, _plan: Plan) -> frozenset[RealRef]:
    return frozenset()


def running_on_checked_kernel(config: Config) -> Running:
    """A daemon that has run `config` for a while: every real checked up, the table programmed."""
    plan = build_plan(config)
    health = {ref: RealHealth(up=True, checked=True, reason="ok") for ref in plan.failurecount}
    ops = plan_reload(Running(config, plan, health, set(), {}), config, nothing).ops
    actual, results = apply_ops({}, ops)
    assert all(r.ok for r in results)
    return Running(config, plan, health, {v.key for v in config.virtuals}, actual)


def ops_of(running: Running, new: Config) -> list[Op]:
    return plan_reload(running, new, nothing).ops


def test_the_same_config_plans_nothing() -> None:
    c = cfg(text())
    assert ops_of(running_on_checked_kernel(c), cfg(text())) == []


def test_a_changed_weight_is_one_edit() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(text("\treal=10.0.0.5:80 masq 1\n\treal=10.0.0.6:80 masq 7\n"))
    assert ops_of(running, new) == [
        EditDest(V1, DestKey("10.0.0.6", 80), DestConf(Forward.MASQ, 7, 0, 0))
    ]


def test_an_added_real_is_not_in_before_its_first_check() -> None:
    """A new real is adopted from the kernel (absent: down): the reload adds nothing for it; its
    first good check will."""
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(
        text("\treal=10.0.0.5:80 masq 1\n\treal=10.0.0.6:80 masq 2\n\treal=10.0.0.7:80 masq\n")
    )
    result = plan_reload(running, new, nothing)
    assert result.ops == []
    assert result.health[RealRef(V1, "10.0.0.7", 80)] == DOWN


def test_an_added_real_with_checktype_on_is_added() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(
        text("\treal=10.0.0.5:80 masq 1\n\treal=10.0.0.6:80 masq 2\n")
        + "virtual=10.0.0.2:80\n\treal=10.0.0.8:80 masq 3\n\tchecktype=on\n"
    )
    assert ops_of(running, new) == [
        AddService(V2, new.virtuals[1].service_conf),
        AddDest(V2, DestKey("10.0.0.8", 80), DestConf(Forward.MASQ, 3, 0, 0)),
    ]


def test_a_removed_real_is_deleted() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(text("\treal=10.0.0.5:80 masq 1\n"))
    assert ops_of(running, new) == [DeleteDest(V1, DestKey("10.0.0.6", 80))]


def test_a_removed_virtual_is_deleted_and_others_are_left_alone() -> None:
    two = text() + "virtual=10.0.0.2:80\n\treal=10.0.0.8:80 masq 3\n\tchecktype=on\n"
    running = running_on_checked_kernel(cfg(two))
    # a service lvsmon does not own stays, whatever the new config says
    foreign = ServiceKey.inet("tcp", "10.9.9.9", 80)
    kernel: Table = {**running.actual, foreign: running.actual[V2]}
    running = dataclasses.replace(running, actual=kernel)
    assert ops_of(running, cfg(text())) == [DeleteService(V2)]


def test_a_changed_check_only_changes_no_kernel_op_and_readopts_health() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(text().replace('receive="ok"', 'receive="fine"'))
    result = plan_reload(running, new, nothing)
    assert result.ops == []
    # the check changed: what the old one found no longer counts; the kernel decides (up)
    assert result.health[R5] == ADOPTED_UP and not result.health[R5].checked
    # the running snapshot is untouched
    assert running.health[R5].checked


def test_an_unchanged_check_keeps_its_health_and_a_down_real_stays_out() -> None:
    c = cfg(text())
    running = running_on_checked_kernel(c)
    failed = RealHealth(up=False, failcount=3, checked=True, reason="refused")
    running = dataclasses.replace(running, health={**running.health, R6: failed})
    # R6 is still in the kernel (the reconciler has not run yet): the reload removes it
    new = cfg(text("\treal=10.0.0.5:80 masq 4\n\treal=10.0.0.6:80 masq 2\n"))
    result = plan_reload(running, new, nothing)
    assert result.health[R6] is failed
    assert result.ops == [
        EditDest(V1, DestKey("10.0.0.5", 80), DestConf(Forward.MASQ, 4, 0, 0)),
        DeleteDest(V1, DestKey("10.0.0.6", 80)),
    ]


def test_always_up_modes_apply_to_the_new_config() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(text(extra="").replace("checktype=negotiate", "checktype=on"))
    result = plan_reload(running, new, nothing)
    assert result.health[R5] == ALWAYS_UP and result.ops == []


def test_maintenance_of_the_new_config_takes_reals_out() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(text())

    def maintained(config: Config, plan: Plan) -> frozenset[RealRef]:
        assert config is new and R5 in plan.failurecount
        return frozenset({R5})

    assert plan_reload(running, new, maintained).ops == [DeleteDest(V1, DestKey("10.0.0.5", 80))]


def test_a_drained_real_of_the_new_config_goes_to_weight_0() -> None:
    running = running_on_checked_kernel(cfg(text()))
    new = cfg(text())

    def drained(config: Config, plan: Plan) -> frozenset[RealRef]:
        assert config is new and R5 in plan.failurecount
        return frozenset({R5})

    assert plan_reload(running, new, nothing, drained).ops == [
        EditDest(V1, DestKey("10.0.0.5", 80), DestConf(Forward.MASQ, 0, 0, 0))
    ]


def test_carried_health_keeps_only_unchanged_checks() -> None:
    old = cfg(text())
    new = cfg(text().replace("10.0.0.6:80 masq 2", "10.0.0.6:80 masq 9"))
    seen = RealHealth(up=True, checked=True, reason="ok")
    health = carried_health(build_plan(old), {R5: seen}, new, build_plan(new), {})
    # R5: same check, kept; R6: not known before, adopted (not in the kernel: down)
    assert health == {R5: seen, R6: DOWN}


def test_without_a_daemon_an_empty_kernel_plans_every_service() -> None:
    c = cfg(text() + "virtual=10.0.0.2:80\n\treal=10.0.0.8:80 masq 3\n\tchecktype=on\n")
    running = running_from_kernel(c, {})
    assert running.health == {**adopt_health(c, {}), RealRef(V2, "10.0.0.8", 80): ALWAYS_UP}
    ops = ops_of(running, c)
    # the negotiate reals have not been checked: their virtual is created empty
    assert [type(op).__name__ for op in ops] == ["AddService", "AddService", "AddDest"]
    assert [op_json(op, c)["text"] for op in ops] == [
        "Added virtual server: 10.0.0.1:80",
        "Added virtual server: 10.0.0.2:80",
        "Added real server: 10.0.0.8:80 (10.0.0.2:80) (Weight set to 3)",
    ]
    assert op_json(ops[2], c) == {
        "kind": "AddDest",
        "virtual": "tcp:10.0.0.2:80",
        "real": "10.0.0.8:80",
        "ipvsadm": "-a -t 10.0.0.2:80 -r 10.0.0.8:80 -m -w 3 -x 0 -y 0",
        "text": "Added real server: 10.0.0.8:80 (10.0.0.2:80) (Weight set to 3)",
    }


async def never(_spec: CheckSpec) -> CheckResult:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_engine_reload_does_what_was_planned() -> None:
    """The refactor's point: the engine's reload and the plan share their code, so they agree."""
    old = cfg(text() + "virtual=10.0.0.2:80\n\treal=10.0.0.8:80 masq 3\n\tchecktype=on\n")
    backend = MemoryBackend()
    new = cfg(
        text("\treal=10.0.0.5:80 masq 3\n\treal=10.0.0.7:80 masq 2\n").replace(
            'receive="ok"', 'receive="ok"\n\tquiescent=yes'
        )
        + "virtual=10.0.0.3:80\n\treal=10.0.0.9:80 gate\n\treal=10.0.0.10:80 gate\n"
        + "\tchecktype=on\n"
    )
    drained_ref = RealRef(ServiceKey.inet("tcp", "10.0.0.3", 80), "10.0.0.10", 80)

    def drained(config: Config, _plan: Plan) -> frozenset[RealRef]:
        return frozenset({drained_ref}) if config is new else frozenset()

    # no check may move health meanwhile
    engine = Engine(old, backend, run_check=never, drained=drained)
    await engine.start()
    for ref in engine.plan.job_of:  # as if every check had passed
        engine.health[ref] = RealHealth(up=True, checked=True, reason="ok")
    await engine.reconciler.reconcile()
    assert engine.actual is not None
    snapshot = Running(
        engine.config, engine.plan, dict(engine.health), set(engine.managed), engine.actual
    )
    planned = plan_reload(snapshot, new, nothing, drained)
    # a real test: something changes, the drained real too (in at weight 0)
    assert (
        AddDest(drained_ref.service, drained_ref.dest, DestConf(Forward.GATE, 0, 0, 0))
        in planned.ops
    )
    before = len(backend.log)
    await engine.reload(new)
    await engine.stop(clean=False)
    assert backend.log[before:] == [f"ipvsadm {op_line(op)}" for op in planned.ops]
    assert engine.health == planned.health
