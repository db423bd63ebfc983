"""Issue 22: a reload reconciles only the virtual services that changed, and does what a whole pass
would do (the ops `lvsmon plan` computes with the whole desired table); a reload that changes
no virtual service does nothing and says so."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.config import Config, Virtual
from lvsmon.engine.engine import Engine
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import Plan, RealRef, build_plan
from lvsmon.engine.planning import (
    Running,
    carried_health,
    changed_services,
    plan_reload,
    same_but_lines,
)
from lvsmon.engine.reconciler import Desired
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.ipvsadm_format import op_line
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey, Table
from tests.helpers import wait_for

from .conftest import cfg

# a virtual: its reals (address number, weight), checktype, quiescent, own fallback
VirtualSpec = tuple[tuple[tuple[int, int], ...], str, bool, bool]

virtual_spec = st.tuples(
    st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 3)), max_size=4, unique_by=lambda r: r[0]
    ).map(tuple),
    st.sampled_from(["connect", "on", "off"]),
    st.booleans(),
    st.booleans(),
)
pool = st.dictionaries(st.integers(1, 5), virtual_spec, min_size=1, max_size=5)


def text(spec: dict[int, VirtualSpec], readdquiescent: bool = False) -> str:
    lines = [f"readdquiescent={'yes' if readdquiescent else 'no'}"]
    for v, (reals, checktype, quiescent, fallback) in sorted(spec.items()):
        lines.append(f"virtual=10.0.0.{v}:80")
        lines += [f"\treal=10.0.{v}.{r}:80 masq {w}" for r, w in reals]
        lines.append(f"\tchecktype={checktype}")
        lines.append(f"\tquiescent={'yes' if quiescent else 'no'}")
        if fallback:
            lines.append("\tfallback=127.0.0.1:80")
    return "\n".join(lines) + "\n"


async def never(_spec: CheckSpec) -> CheckResult:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def nothing(_config: Config, _plan: Plan) -> frozenset[RealRef]:
    return frozenset()


class Asking(Engine):
    """An engine that notes which services the reconciler asked it about."""

    asked: list[Collection[ServiceKey] | None]

    def desired_for(self, actual: Table, keys: Collection[ServiceKey] | None = None) -> Desired:
        self.asked.append(None if keys is None else set(keys))
        return super().desired_for(actual, keys)


async def settled(engine: Asking) -> None:
    """Once the reconciler's loop has taken every mark (its passes ask too), forget who asked."""
    await wait_for(lambda: not (engine.reconciler.pending or engine.reconciler.lock.locked()))
    engine.asked = []


async def reloaded(old: Config, new: Config, up: list[bool]) -> None:
    """Run `old` with the checks' verdicts `up` (in turn), reload to `new`: the ops are the
    planned ones, the health the planned one, and the reconciler was asked about the services
    that changed alone."""
    backend = MemoryBackend()
    engine = Asking(old, backend, run_check=never)
    engine.asked = []
    await engine.start()
    try:
        for i, ref in enumerate(engine.plan.job_of):
            engine.health[ref] = RealHealth(up=up[i % len(up)], checked=True, reason="check")
        await engine.reconcile()
        assert engine.actual is not None
        await settled(engine)
        snapshot = Running(
            engine.config, engine.plan, dict(engine.health), set(engine.managed), engine.actual
        )
        planned = plan_reload(snapshot, new, nothing)
        changed = changed_services(engine.plan, planned.plan)
        before = len(backend.log)
        await engine.reload(new)
        assert backend.log[before:] == [f"ipvsadm {op_line(op)}" for op in planned.ops]
        assert engine.health == planned.health and list(engine.health) == list(planned.health)
        if old.settings == new.settings:
            assert engine.asked == ([changed] if changed else [])
        assert not diff(engine.desired(), engine.actual, engine.managed)  # nothing left over
    finally:
        await engine.stop(clean=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool, pool, st.lists(st.booleans(), min_size=1, max_size=5), st.booleans())
def test_a_reload_does_what_a_whole_pass_would(
    old: dict[int, VirtualSpec], edit: dict[int, VirtualSpec], up: list[bool], readd: bool
) -> None:
    # the edit replaces some virtuals and adds others; the rest stay as they were
    new = {**old, **edit}
    for v in list(new)[: len(edit) // 2]:
        if len(new) > 1 and v not in edit:
            del new[v]
    asyncio.run(reloaded(cfg(text(old)), cfg(text(new, readd)), up))


async def test_an_unchanged_config_does_nothing(caplog: pytest.LogCaptureFixture) -> None:
    spec: dict[int, VirtualSpec] = {1: (((1, 1), (2, 2)), "connect", False, True)}
    old = cfg(text(spec))
    engine = Asking(old, MemoryBackend(), run_check=never)
    engine.asked = []
    await engine.start()
    try:
        await settled(engine)
        plan, health = engine.plan, engine.health
        with caplog.at_level(logging.INFO, logger="lvsmon"):
            await engine.reload(cfg(text(spec)))
        assert engine.asked == []  # no desired table, no diff
        assert engine.plan is plan and engine.health is health
        assert "Configuration unchanged: nothing to do" in caplog.text
        # another text (a comment), equal virtuals: the table has nothing to do either
        with caplog.at_level(logging.INFO, logger="lvsmon"):
            await engine.reload(cfg(text(spec) + "# a note\n"))
        assert engine.asked == []
        assert "Virtual services unchanged: nothing to do in the IPVS table" in caplog.text
    finally:
        await engine.stop(clean=False)


async def test_a_pending_change_makes_the_reload_a_whole_pass() -> None:
    spec: dict[int, VirtualSpec] = {1: (((1, 1),), "connect", False, True)}
    engine = Asking(cfg(text(spec)), MemoryBackend(), run_check=never)
    engine.asked = []
    await engine.start()
    try:
        await settled(engine)
        engine.reconciler.mark_dirty()  # a check result the loop has not taken yet
        await engine.reload(cfg(text(spec)))
        assert engine.asked == [None]
    finally:
        await engine.stop(clean=False)


def test_carried_health_of_a_reused_part_is_the_one_compared() -> None:
    """The shortcut for a virtual whose part the new plan reuses gives what comparing each
    real's job and mode gives (a plan without parts takes that path)."""
    old = cfg(
        text({1: (((1, 1), (2, 1)), "connect", False, False), 2: (((3, 1),), "on", False, False)})
    )
    new = cfg(
        text({1: (((1, 1), (2, 1)), "connect", False, False), 2: (((3, 2),), "on", False, False)})
    )
    old_plan = build_plan(old)
    plan = build_plan(new, old_plan)
    seen = RealHealth(up=False, checked=True, reason="seen")
    old_health = {ref: seen for ref in old_plan.failurecount}
    without_parts = Plan(plan.jobs, plan.job_of, plan.mode_of, plan.failurecount, plan.rules)
    assert carried_health(old_plan, old_health, new, plan, {}) == carried_health(
        old_plan, old_health, new, without_parts, {}
    )


def unlined(v: Virtual) -> Virtual:
    """`v` with every line number 0: the reference for same_but_lines."""
    reals = tuple(r.at_line(0) for r in v.reals)
    fallback = None if v.fallback is None else dataclasses.replace(v.fallback, line=0)
    return dataclasses.replace(v, line=0, reals=reals, fallback=fallback)


@settings(max_examples=100, deadline=None)
@given(virtual_spec, virtual_spec, st.integers(0, 3))
def test_same_but_lines_is_equal_but_for_the_lines(
    a: VirtualSpec, b: VirtualSpec, above: int
) -> None:
    va = cfg(text({1: a})).virtuals[0]
    vb = cfg("#\n" * above + text({1: b})).virtuals[0]
    assert same_but_lines(va, vb) == (unlined(va) == unlined(vb))


async def test_lines_added_above_change_no_virtual_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec: dict[int, VirtualSpec] = {
        1: (((1, 1), (2, 2)), "connect", False, True),
        2: (((3, 1),), "on", True, False),
    }
    old = cfg(text(spec))
    new = cfg("# a note\n# another\n" + text(spec))
    assert new.virtuals[0].line == old.virtuals[0].line + 2
    assert changed_services(build_plan(old), build_plan(new)) == set()
    engine = Asking(old, MemoryBackend(), run_check=never)
    engine.asked = []
    await engine.start()
    try:
        await settled(engine)
        health = dict(engine.health)
        parts, layout = dict(engine.plan.parts), engine.layout()
        with caplog.at_level(logging.INFO, logger="lvsmon"):
            await engine.reload(new)
        assert engine.asked == []
        assert engine.health == health
        assert "Virtual services unchanged: nothing to do in the IPVS table" in caplog.text
        # the moved virtuals took the running refs, jobs and layout over: nothing rebuilt
        for key, part in engine.plan.parts.items():
            assert part[0] in new.virtuals
            assert part[1] is parts[key][1] and part[2] is parts[key][2]
        assert all(a is b for a, b in zip(engine.layout(), layout, strict=True))
    finally:
        await engine.stop(clean=False)
