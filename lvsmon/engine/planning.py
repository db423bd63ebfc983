"""What a reload would do to the kernel (`lvsmon plan`), computed by the code the reload runs.

`Engine.reload` takes its new health from `carried_health` below, and the reconciler's next pass
is `diff(desired_table(...), actual, managed)`, over the services `changed_services` names (the
others' desired state is what the last pass wrote). `plan_reload` runs the same steps over every
service on a snapshot of the running state (`Running`) without touching it, so a plan and the
reload that follows it cannot disagree as long as nothing else moves in between (a check
result, the maintenance directory, an operator's ipvsadm): tests/engine/
test_reload_incremental.py holds the two to the same ops on random edits.

Pure: no I/O, no clock. The maintenance scan of the new config's reals is the caller's
(`maintained`), as the daemon's is for `Engine.reload`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any

from lvsmon.config.model import Config, Fallback, Virtual, real_but_line
from lvsmon.engine.desired import adopt_health, desired_table, layout_of, managed_services
from lvsmon.engine.health import ADOPTED_UP, RealHealth
from lvsmon.engine.jobs import Mode, Plan, RealRef, build_plan
from lvsmon.engine.leaving import Change, Leaving, merged, returning, started
from lvsmon.engine.probepath import plan_probes, with_probes
from lvsmon.engine.wording import describe
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.ipvsadm_format import op_line
from lvsmon.ipvs.model import ServiceKey, Table
from lvsmon.ipvs.ops import DeleteDest, DeleteService, EditDest, Op

ALWAYS_UP = RealHealth(up=True, checked=True, reason="not checked: always up")

# the maintenance scan, the drain state: the pairs they force, for a config and its plan
Forced = Callable[[Config, Plan], Collection[RealRef]]


def apply_modes(plan: Plan, health: dict[RealRef, RealHealth]) -> None:
    """Reals that no check decides (checktype=on, service=none) are up whatever the kernel
    shows; `health` is updated in place."""
    for ref, mode in plan.mode_of.items():
        if mode == Mode.ALWAYS_UP:
            health[ref] = ALWAYS_UP


def carried_health(
    old_plan: Plan,
    old_health: Mapping[RealRef, RealHealth],
    config: Config,
    plan: Plan,
    actual: Table,
    drained: Collection[RealRef] = (),
) -> dict[RealRef, RealHealth]:
    """Health after a reload to `config` (whose plan is `plan`): a real whose check and mode did
    not change keeps what its checks found; any other is adopted from the kernel table, as at a
    start (a changed check has not spoken yet)."""
    new_mode = plan.mode_of
    # in config order; a real to adopt holds its place with a stand-in until it is adopted
    health: dict[RealRef, RealHealth] = {}
    adopting: list[RealRef] = []
    old_parts = old_plan.parts
    moded: list[Collection[RealRef]] = []  # the reals apply_modes' rule is applied to below
    # every real of `config`, in its order, a virtual at a time
    for key, refs in _refs_by_virtual(plan):
        if key is not None and _unchanged(old_parts, key, plan.parts[key]):
            # the running plan's part, or one made of a virtual that differs in its lines
            # alone: every real's check is as it was, nothing to compare; apply_modes' rule here
            for ref, job in zip(refs, plan.parts[key][2], strict=True):
                if isinstance(job, str) and job == Mode.ALWAYS_UP:
                    health[ref] = ALWAYS_UP
                elif (kept := old_health.get(ref)) is not None:
                    health[ref] = kept
                else:
                    health[ref] = ALWAYS_UP  # a stand-in
                    adopting.append(ref)
            continue
        moded.append(refs)
        # each real's job or mode, in the running plan and in this one: a dict of the old
        # part's for this virtual alone (a real may sit at another place in it now)
        old_of = _items_by_ref(old_plan, key)
        new_items = plan.parts[key][2] if key is not None else None
        for i, ref in enumerate(refs):
            kept = old_health.get(ref)
            new_item = new_items[i] if new_items is not None else _item(plan, ref)
            if kept is not None and old_of.get(ref) == new_item:
                health[ref] = kept
            else:
                health[ref] = ALWAYS_UP  # a stand-in
                adopting.append(ref)
    if adopting:
        # adopted from the kernel (a real's kernel key is parsed): their virtuals alone
        keys = {ref.service for ref in adopting}
        virtuals = tuple(v for v in config.virtuals if v.key in keys)
        fresh = adopt_health(replace(config, virtuals=virtuals), actual, drained)
        for ref in adopting:
            health[ref] = fresh[ref]
    for refs in moded:  # apply_modes, but not again for the unchanged parts
        for ref in refs:
            if new_mode.get(ref) == Mode.ALWAYS_UP:
                health[ref] = ALWAYS_UP
    return health


def _item(plan: Plan, ref: RealRef) -> object:
    """`ref`'s job or mode in `plan` (None: neither)."""
    job = plan.job_of.get(ref)
    return job if job is not None else plan.mode_of.get(ref)


def _items_by_ref(plan: Plan, key: ServiceKey | None) -> Mapping[RealRef, object]:
    """The job or mode of each real of `plan`'s virtual `key` (None, or a plan made without
    parts: of each of its reals)."""
    if key is None or not plan.parts:
        return {**plan.mode_of, **plan.job_of}
    part = plan.parts.get(key)
    return {} if part is None else dict(zip(part[1], part[2], strict=True))


def _refs_by_virtual(plan: Plan) -> Iterable[tuple[ServiceKey | None, Collection[RealRef]]]:
    """The plan's reals per virtual, in config order (a plan made without parts: all at once,
    under no virtual)."""
    if plan.parts:
        return ((key, part[1]) for key, part in plan.parts.items())
    return [(None, plan.failurecount)]


# one virtual's part of a plan (jobs.py): the virtual, its reals' refs, their jobs or modes
Part = tuple[Virtual, tuple[RealRef, ...], tuple[object, ...]]


def _compared(cls: type, *leave_out: str) -> Callable[[Any], object]:
    """What == compares of a `cls`, but `leave_out`, as one tuple (at C speed)."""
    return attrgetter(*(f.name for f in fields(cls) if f.compare and f.name not in leave_out))


# a Virtual's values (its settings through their properties: config/model.py), but these three
_VIRTUAL_FIELDS = attrgetter(*(n for n in Virtual.VALUES if n not in ("line", "reals", "fallback")))
_REAL_FIELDS = real_but_line  # its line is in two parts (config/model.py)
_FALLBACK_FIELDS = _compared(Fallback, "line")


def same_but_lines(a: Virtual, b: Virtual) -> bool:
    """`a` and `b` differ in their line numbers at most (a block moved by lines added or removed
    above it): the same checks, the same desired state."""
    if a is b:
        return True
    if len(a.reals) != len(b.reals) or _VIRTUAL_FIELDS(a) != _VIRTUAL_FIELDS(b):
        return False
    fa, fb = a.fallback, b.fallback
    if fa is None or fb is None:
        if fa is not fb:
            return False
    elif _FALLBACK_FIELDS(fa) != _FALLBACK_FIELDS(fb):
        return False
    return all(_REAL_FIELDS(x) == _REAL_FIELDS(y) for x, y in zip(a.reals, b.reals, strict=True))


def _unchanged(old_parts: Mapping[ServiceKey, Part], key: ServiceKey, part: Part) -> bool:
    """The virtual of this part is the one of `old_parts` (build_plan reused its part), or
    differs from it in its lines alone."""
    old = old_parts.get(key)
    return old is part or (old is not None and same_but_lines(old[0], part[0]))


def anchored(old: Plan, config: Config) -> Plan:
    """`old` (the running plan) with the part of each virtual that `config` holds again, moved by
    lines added or removed above it, made of `config`'s virtual: build_plan then reuses its refs
    and jobs (the very objects, as for an unchanged virtual), and carried_health and
    changed_services find it unchanged at once."""
    parts = old.parts
    moved: dict[ServiceKey, Part] | None = None
    for v in config.virtuals:
        part = parts.get(v.key)
        if part is not None and part[0] is not v and same_but_lines(part[0], v):
            if moved is None:
                moved = dict(parts)
            moved[v.key] = (v, part[1], part[2])
    return old if moved is None else replace(old, parts=moved)  # type: ignore[arg-type]


def anchored_config(old: Config, plan: Plan) -> Config:
    """`old` with each virtual that anchored() took over by its new self replaced by it: the
    layout of `old` (engine/desired.py's layout_of, by identity) serves it then."""
    parts = plan.parts
    virtuals = tuple(parts[v.key][0] if v.key in parts else v for v in old.virtuals)
    return replace(old, virtuals=virtuals)


def changed_services(old: Plan, new: Plan) -> set[ServiceKey]:
    """The virtual services whose desired state a reload from `old` to `new` may change: those
    whose virtual is neither the one of `old` nor differs from it in its lines alone (their
    reals keep their health, and the same virtual wants the same), and the removed ones."""
    old_parts = old.parts
    changed = {key for key, part in new.parts.items() if not _unchanged(old_parts, key, part)}
    changed.update(key for key in old_parts if key not in new.parts)
    return changed


def reload_managed(old_managed: Collection[ServiceKey], config: Config) -> set[ServiceKey]:
    """The services the reconciler diffs after `Reconciler.own(managed_services(config))`: the
    new config's, and the ones it dropped (deleted by that pass, if in the kernel)."""
    return managed_services(config) | set(old_managed)


@dataclass(frozen=True, slots=True)
class Running:
    """The running side of a reload, as the engine holds it (a snapshot: `health` is a copy)."""

    config: Config
    plan: Plan
    health: Mapping[RealRef, RealHealth]
    managed: Collection[ServiceKey]  # owned and retiring services (Reconciler.managed)
    actual: Table  # what the reconciler believes the kernel holds
    leaving: Leaving = field(default_factory=dict)  # reals leaving now (removedrain)
    # weight caps now (engine/steering.py: slow start, agent check): a reload keeps them for
    # the reals it keeps, so the plan does not show a ramping real at its full weight
    caps: Mapping[RealRef, int] = field(default_factory=dict)


def running_from_kernel(
    config: Config, actual: Table, drained: Collection[RealRef] = ()
) -> Running:
    """A daemon running `config` that has just started on `actual`, before any check: what
    `lvsmon plan` assumes without a daemon (Engine.start's adoption)."""
    plan = build_plan(config)
    health = adopt_health(config, actual, drained)
    apply_modes(plan, health)
    managed = managed_services(config) | plan_probes(config, None, actual).keys
    return Running(config, plan, health, managed, actual)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config
    plan: Plan
    health: dict[RealRef, RealHealth]
    managed: set[ServiceKey]
    desired: Table
    ops: list[Op]
    # removedrain: the reals this reload starts leaving (their weight 0 is among `ops`), and
    # the reals and removed virtuals still leaving after it, with their removedrain
    leaving: Leaving = field(default_factory=dict)
    started: list[Change] = field(default_factory=list)


def plan_reload(
    running: Running,
    config: Config,
    maintained: Forced,
    drained: Forced | None = None,
) -> ReloadPlan:
    """The ops the reconcile of a reload to `config` applies, in its order. `maintained`,
    `drained`: the daemon's maintenance scan and drain state, asked for the new config's plan
    as Engine.reload asks them (no `drained`: nothing is drained)."""
    previous = anchored(running.plan, config)
    plan = build_plan(config, previous)
    drained_now = frozenset(drained(config, plan)) if drained is not None else frozenset()
    health = carried_health(previous, running.health, config, plan, running.actual, drained_now)
    leaving: Leaving = running.leaving
    changes: list[Change] = []
    if running.leaving or any(v.removedrain for v in (*running.config.virtuals, *config.virtuals)):
        # as Engine.reload: removed reals start leaving, reals added back stop (and are up)
        layout = layout_of(config)
        leaving, changes = started(
            running.leaving, running.config, layout_of(running.config), config, layout,
            running.actual, 0.0,
        )  # fmt: skip
        for ref in returning(changes, layout):
            health[ref] = ADOPTED_UP
    forced_down = maintained(config, plan)
    # the probe services of checks through the VIP, marks as the kernel holds them (the
    # running daemon's): Engine.reload keeps the same ones
    probes = plan_probes(config, None, running.actual)
    managed = reload_managed(running.managed, config) | probes.keys
    desired = desired_table(
        config, health, forced_down, running.actual, drained=drained_now, caps=running.caps
    )
    if leaving:
        merged(desired, leaving)
    ops = diff(with_probes(desired, probes), running.actual, managed)
    starting = [c for c in changes if c.started]
    return ReloadPlan(config, plan, health, managed, desired, ops, leaving, starting)


def op_fields(op: Op) -> dict[str, Any]:
    """One op as JSON, for /events (a KernelOp's "op") and `lvsmon plan --json`: its kind, the
    keys to filter on, and the line `ipvsadm` would be told (what operators read)."""
    dest = getattr(op, "dest", None)
    return {
        "kind": type(op).__name__,
        "virtual": str(op.service),
        "real": None if dest is None else str(dest),
        "ipvsadm": op_line(op),
    }


def op_json(op: Op, config: Config) -> dict[str, Any]:
    """One op as `lvsmon plan --json` and POST /plan show it: the KernelOp event's keys, and
    ldirectord's wording as the reload will log it."""
    return {**op_fields(op), "text": describe(op, config, False)}


def plan_json(
    running: Running, new: Config, maintained: Forced, drained: Forced | None = None
) -> dict[str, Any]:
    """A reload's plan as `lvsmon plan --json` and POST /plan answer it."""
    reload = plan_reload(running, new, maintained, drained)
    ops = [op_json(op, new) for op in reload.ops]
    drain = {(c.service, c.dest): c.seconds for c in reload.started}
    for op, shown in zip(reload.ops, ops, strict=True):
        if isinstance(op, EditDest) and (op.service, op.dest) in drain:
            shown["when"] = "now"
            shown["text"] += (
                f"; leaving: weight 0 now, deleted when it has 0 active connections or at"
                f" +{drain[op.service, op.dest]:g} s"
            )
    answer: dict[str, Any] = {"config": new.path, "ops": ops, "changes": len(ops)}
    if reload.started:
        answer["later"] = later_json(reload)  # only then: the answer is as it was without
    return answer


def later_json(reload: ReloadPlan) -> list[dict[str, Any]]:
    """The deletes a reload with removedrain leaves for later, each with when it happens: a
    leaving real's when it has no active connection or its time is up, a removed virtual's
    when its last real has left."""
    later: list[dict[str, Any]] = []
    for c in sorted(reload.started, key=lambda c: (str(c.service), str(c.dest))):
        op = DeleteDest(c.service, c.dest)
        when = f"when it has 0 active connections, at +{c.seconds:g} s at the latest"
        later.append({**op_json(op, reload.config), "when": when})
    gone = {c.service for c in reload.started if reload.leaving[c.service].conf is not None}
    for key in sorted(gone, key=str):
        when = "when its last leaving real has left"
        later.append({**op_json(DeleteService(key), reload.config), "when": when})
    return later
