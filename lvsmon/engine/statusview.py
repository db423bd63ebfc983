"""The status builder: the engine's state as an operator reads it (GET /status, the status file,
`lvsmon status`), every virtual, every real, why, and the figures (the types: engine/status.py).

Built each second: at 10,000 reals building every real's entry anew held the event loop some
20 ms. The daemon reads each virtual's entry as JSON text (StatusView.texts): a virtual whose
reals' health (by identity: a change replaces the object), kernel entry, maintenance, drains and
kept reals are as last time gives its last text again, the very object. Only texts are kept:
the entries (a dict per real) are built for a changed virtual and dropped once encoded.
"""

from __future__ import annotations

import json
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

from lvsmon.config.model import Config, Virtual
from lvsmon.engine.agentcheck import AgentRunner
from lvsmon.engine.desired import VirtualLayout, kept_by_threshold
from lvsmon.engine.events import EventBus
from lvsmon.engine.health import HealthRules, RealHealth
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.reconciler import Reconciler
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.slowstart import Step
from lvsmon.engine.status import RealStatus, Stats, StatsStatus, VirtualStatus, pack
from lvsmon.engine.steering import Steering
from lvsmon.ipvs.model import Service, Table

# a virtual's text and what it was made of (health by place, kernel entry, the maintained,
# drained and kept sets, the versions of its weight caps and of its agents' words)
_Entry = tuple[
    tuple[RealHealth | None, ...],
    Service | None,
    frozenset[RealRef],
    frozenset[RealRef],
    frozenset[RealRef],
    bytes,
    tuple[int, int],
]


def _services(table: Table, layout: Sequence[VirtualLayout]) -> list[Service | None]:
    """Each virtual's kernel entry, in layout order."""
    return [table.get(v.key) for v in layout]


@dataclass(slots=True)
class _Built:
    """The last list and what it was built from: inputs (config, layout, health, rules) by
    identity, the table and each virtual's service in it, the maintained and drained sets, every
    real's health (by identity: a change replaces the object)."""

    inputs: tuple[object, ...]
    table: Table
    services: list[Service | None]
    maintained: frozenset[RealRef]
    drained: frozenset[RealRef]
    healths: list[RealHealth]
    texts: list[bytes]
    steered: tuple[int, int] = (0, 0)  # Steering.changes, AgentRunner.changes


class StatusInputs(NamedTuple):
    """What a status is built from. `layout`: layout_of(config), kept by the engine (it holds
    each virtual's key and each real's kernel key: parsing the addresses each second would
    stall the checks); `clock`: health's (holds are on it)."""

    config: Config
    layout: Sequence[VirtualLayout]
    health: dict[RealRef, RealHealth]
    table: Table
    maintained: frozenset[RealRef]
    drained: frozenset[RealRef]
    rules: Mapping[RealRef, HealthRules]
    clock: Callable[[], float]
    # weight caps (agent check, slow start) and where a real's slow start is
    steering: Steering | None = None
    ramp_of: Callable[[RealRef], Step | None] | None = None
    # the agent check's words per real (engine/agentcheck.py)
    agents: AgentRunner | None = None


def _compact(places: list[int]) -> Sequence[int]:
    """A virtual's places as a range when they follow each other (health is built in config
    order: the usual case), else as an array: not an int object per real (28 bytes each past
    256, issue 22)."""
    if places and places[0] >= 0 and places == list(range(places[0], places[0] + len(places))):
        return range(places[0], places[0] + len(places))
    return array("l", places)


def _at(healths: list[RealHealth], places: Sequence[int]) -> tuple[RealHealth | None, ...]:
    """The health at each place (None for -1)."""
    if type(places) is range:
        return tuple(healths[places.start : places.stop])
    return tuple([healths[p] if p >= 0 else None for p in places])


class StatusView:
    """The virtuals' entries as texts, kept while nothing of them changes, and the reals'
    places in health. One per engine."""

    def __init__(self) -> None:
        self._places: list[Sequence[int]] = []
        self._places_for: tuple[Config, dict[RealRef, RealHealth], int] | None = None
        self._cache: dict[int, _Entry] = {}
        self._last: _Built | None = None

    def clear(self) -> None:
        """Forget the kept texts: the next build is from scratch."""
        self._cache.clear()
        self._last = None

    def health_places(
        self,
        config: Config,
        health: dict[RealRef, RealHealth],
        layout: Sequence[VirtualLayout],
    ) -> list[Sequence[int]]:
        """Per virtual, its reals' places in the order of `health` (-1: none), so that the
        status and /metrics read health by place, not by hashing a RealRef (some 1 µs in
        Python). Health keeps its keys and their order until it is replaced as a whole (start,
        reload)."""
        if (
            self._places_for is None
            or self._places_for[0] is not config
            or self._places_for[1] is not health
            or self._places_for[2] != len(health)
        ):
            place = {ref: i for i, ref in enumerate(health)}
            self._places = [_compact([place.get(ref, -1) for ref in v.refs]) for v in layout]
            self._places_for = (config, health, len(health))
            self._cache.clear()
        return self._places

    def virtuals(self, inputs: StatusInputs) -> list[VirtualStatus]:
        """Every virtual's entry, in config order, built now (tests and tools; the daemon
        reads texts())."""
        (config, layout, health, table, maintained, drained, rules, clock, steering, ramp_of,
         agents) = inputs  # fmt: skip
        places = self.health_places(config, health, layout)
        healths = list(health.values())
        steer = _Steer(steering, ramp_of, agents)
        return [
            _virtual_status(
                v,
                v_layout,
                service,
                _at(healths, places[i]),
                _kept(v_layout, health, maintained, drained),
                maintained,
                drained,
                rules,
                clock,
                steer,
            )
            for i, (v, v_layout, service) in enumerate(
                zip(config.virtuals, layout, _services(table, layout), strict=True)
            )
        ]

    def texts(self, inputs: StatusInputs) -> list[bytes]:
        """Every virtual's entry as compact JSON, packed (status.pack), in config order: what
        virtuals() gives, encoded. Only the packed text is kept, not the entry (a dict per real
        was 200 bytes a real for nothing but the next encoding, its text 212), and a virtual's
        text is kept while nothing of it changes, the very object.

        A build from the very same inputs as the last one (by identity, every real's health
        too: one list comparison at C speed; equal maintained and drained sets) is the last
        list again, without a look at any virtual (a pool without checks: 2,284 virtuals,
        100,000 reals looked at each second for nothing)."""
        (config, layout, health, table, maintained, drained, rules, clock, steering, ramp_of,
         agents) = inputs  # fmt: skip
        identity = (config, layout, health, rules)
        healths = list(health.values())
        steered = (
            0 if steering is None else steering.changes,
            0 if agents is None else agents.changes,
        )
        steer = _Steer(steering, ramp_of, agents)
        last = self._last
        if (
            last is not None
            and all(a is b for a, b in zip(last.inputs, identity, strict=True))
            # by value: the maintenance scan and the drain refresh may give an equal set anew
            # each second (an empty one always compares at once)
            and last.maintained == maintained
            and last.drained == drained
            and last.healths == healths  # element by element, `is` first
            and last.steered == steered
            # a resync gives a new table, keeping each service's object while it is equal (and
            # an equal one gives equal entries): 2,284 lookups, not 2,284 virtuals looked at
            and (last.table is table or last.services == _services(table, layout))
        ):
            last.table = table
            return list(last.texts)
        texts: list[bytes] = []
        services: list[Service | None] = []
        places = self.health_places(config, health, layout)
        cache = self._cache
        for i, (v, v_layout) in enumerate(zip(config.virtuals, layout, strict=True)):
            service = table.get(v_layout.key)
            services.append(service)
            kept = _kept(v_layout, health, maintained, drained)
            hs = _at(healths, places[i])
            version = (
                0 if steering is None else steering.version_of(v_layout.key),
                0 if agents is None else agents.version_of(v_layout.key),
            )
            hit = cache.get(i)
            if (
                hit is not None
                and hit[1] is service
                and hit[0] == hs  # element by element, `is` first: C speed when unchanged
                and hit[2] == maintained
                and hit[3] == drained
                and hit[4] == kept
                and hit[6] == version
            ):
                texts.append(hit[5])
                continue
            entry = _virtual_status(
                v, v_layout, service, hs, kept, maintained, drained, rules, clock, steer
            )
            text = pack(json.dumps(entry, separators=(",", ":")).encode())
            cache[i] = (hs, service, maintained, drained, kept, text, version)
            texts.append(text)
        self._last = _Built(identity, table, services, maintained, drained, healths, texts, steered)
        return list(texts)


def _kept(
    layout: VirtualLayout,
    health: dict[RealRef, RealHealth],
    maintained: frozenset[RealRef],
    drained: frozenset[RealRef],
) -> frozenset[RealRef]:
    if layout.depool is None:
        return _NONE_KEPT
    return frozenset(kept_by_threshold(layout, health, maintained, drained))


# one empty set for every virtual's cache entry: CPython makes a new empty frozenset (216
# bytes) on each frozenset() call (issue 22: 13 bytes a real at 16 reals a virtual)
_NONE_KEPT: frozenset[RealRef] = frozenset()


class _RealEntry:
    """A real's status is this one's __dict__, a plain dict whose keys every real's shares
    (CPython's key-sharing instance dicts): some 220 bytes where a dict display took 500, kept
    for every real while its virtual's entry is (Engine.status, the daemon's JSON encoder).
    Its attributes must be set in the same order each time, that of RealStatus."""

    address: str
    port: int
    state: str
    drained: bool
    kept_by_threshold: bool
    checked: bool
    failcount: int
    reason: str
    rising: str | None
    held_until: float | None
    kernel_weight: int | None
    weight: int
    steering: dict[str, object] | None
    agent: str | None


class _Steer(NamedTuple):
    steering: Steering | None
    ramp_of: Callable[[RealRef], Step | None] | None
    agents: AgentRunner | None = None


_NO_STEER = _Steer(None, None)


def _virtual_status(
    v: Virtual,
    layout: VirtualLayout,
    service: Service | None,
    hs: tuple[RealHealth | None, ...],
    kept: frozenset[RealRef],
    maintained: frozenset[RealRef],
    drained: frozenset[RealRef],
    rules: Mapping[RealRef, HealthRules],
    clock: Callable[[], float],
    steer: _Steer = _NO_STEER,
) -> VirtualStatus:
    # holds are on the engine's clock; the status shows wall-clock time
    now, wall = clock(), time.time()
    steering, ramp_of, agents = steer
    agent_of = agents.text_of if agents is not None and agents.jobs else None
    capped = steering.caps() if steering is not None else {}
    reals: list[RealStatus] = []
    for ref, kdest, conf, h in zip(layout.refs, layout.dests, layout.confs, hs, strict=True):
        dest = service.dests.get(kdest) if service else None
        rising: str | None = None
        held_until: float | None = None
        if h is not None and not h.up:  # the bulk, up, pays this one test
            if h.passcount:
                rising = f"{h.passcount}/{rules[ref].risecount}"
            if h.hold is not None:
                held_until = round(h.hold.until - now + wall, 3)
        e = _RealEntry()  # the keys in RealStatus's order: the JSON's
        e.address = ref.address
        e.port = ref.port
        # a RealRef hashes in Python: the empty sets (the usual case) skip it
        e.state = (
            "maintenance" if maintained and ref in maintained else ("up" if h and h.up else "down")
        )
        e.drained = bool(drained) and ref in drained
        # down by its checks, in service all the same (depoolthreshold)
        e.kept_by_threshold = bool(kept) and ref in kept
        e.checked = bool(h and h.checked)
        e.failcount = h.failcount if h else 0
        e.reason = h.reason if h else ""
        e.rising = rising
        e.held_until = held_until
        e.kernel_weight = None if dest is None else dest.weight
        e.weight = conf.weight
        e.steering = None
        if capped and ref in capped:  # only while some source caps a weight
            assert steering is not None
            step = ramp_of(ref) if ramp_of is not None else None
            e.steering = {
                "caps": steering.of(ref),
                "ramp": None if step is None else f"{step.k}/{step.n}",
                "ramp_until": None if step is None else round(step.ends_at - now + wall, 3),
            }
        e.agent = None if agent_of is None else agent_of(ref)
        reals.append(cast(RealStatus, e.__dict__))
    return {
        "name": v.name,
        "key": str(layout.key),
        "file": v.file,
        "line": v.line,
        "depool_limited": bool(kept),
        "reals": reals,
    }


def stats_status(
    s: Stats, jobs: int, runner: CheckRunner, reconciler: Reconciler, events: EventBus
) -> StatsStatus:
    """The figures: checks, reconciles, ops, events."""
    return {
        "jobs": jobs,
        "checks_started": s.checks_started,
        "checks_done": s.checks_done,
        "checks_failed": s.checks_failed,
        "checks_unknown": s.checks_unknown,
        "checks_untrusted": s.checks_untrusted,
        "loop_lag_ms": round(runner.lag.peak * 1000, 1),
        "checks_running": runner.running,
        "slots_skipped": runner.skipped,
        "slots_deferred": runner.deferred,
        "admission_window": runner.window.size,
        "lateness_ms": s.lateness_ms(),
        "reconciles": s.reconciles,
        "resyncs": s.resyncs,
        "ops_applied": s.ops_applied,
        "ops_failed": s.ops_failed,
        "drift_repairs": s.drift_repairs,
        "retry_pending": reconciler.retry_at is not None,
        "events_published": events.published,
        "events_dropped": events.dropped,
    }
