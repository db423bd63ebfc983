"""Graceful removal (issue 25 point 3, lvsmon's `removedrain`): the reals a reload removed that
are still leaving.

ldirectord deletes a real the moment a reload drops it, and the kernel then drops the packets of
its established connections (keepalived #1228: a reload at 500 requests/s loses requests). With
`removedrain = S` (> 0) of the virtual it was in, a removed real instead stays in the kernel at
weight 0, so that no new connection goes to it and its own go on, and is deleted when the kernel
counts no connection on it any more, or after S seconds, whichever comes first. A virtual a
reload removes drains all its destinations that way, and its service is deleted with the last.
A real a later reload adds back before it left stops leaving and gets its weight again (the
desired table wins over this set: the merge fills in only what the config does not want).

"Connections" are the kernel's active ones (ActiveConn: TCP established) for TCP and SCTP; for
a UDP service, whose entries the kernel counts as inactive only, every entry (InActConn), so a
datagram flow keeps its real until it has been quiet for the kernel's UDP timeout or the time is
up. A firewall-mark service counts ActiveConn (its protocol is not known).

The decisions are pure functions: `started` (a reload: who starts leaving, who comes back),
`settled` (a reading of the counters: who is done) and `merged` (the set into the desired table,
engine/desired.py stays as it was). `LeavingState` keeps the set for the engine, and reads the
counters at most once a second while anything is leaving (none while nothing is).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from lvsmon.config.model import Config
from lvsmon.config.removalconf import deadconns_problem, read_expire_nodest_conn
from lvsmon.engine.desired import VirtualLayout, layout_of
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.status import LeavingStatus
from lvsmon.ipvs.model import (
    NO_STATS,
    DestConf,
    DestKey,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)

READ_EVERY_S: Final = 1.0  # the counters are read at most this often, only while a real leaves

# why a real stopped leaving
NO_CONNECTIONS: Final = "no active connections"
TIME_UP: Final = "time up"
ADDED_AGAIN: Final = "added again"
GONE: Final = "gone from the kernel"


@dataclass(frozen=True, slots=True)
class Leaver:
    """One destination leaving its service."""

    conf: DestConf  # as the kernel had it, at weight 0
    since: float  # on the engine's clock
    deadline: float  # deleted then at the latest
    connections: int | None = None  # at the last reading since it started; None: none yet
    serving: bool = True  # it had a weight above 0 when it started leaving


@dataclass(frozen=True, slots=True)
class LeavingService:
    """The leaving destinations of one service."""

    conf: ServiceConf | None  # a removed virtual's settings (kept until its last real left)
    dests: Mapping[DestKey, Leaver]


Leaving = Mapping[ServiceKey, LeavingService]


@dataclass(frozen=True, slots=True)
class Change:
    """A real started leaving (`started`) or stopped; for the events and the log."""

    service: ServiceKey
    dest: DestKey
    started: bool
    reason: str  # started: "removed" or "virtual removed"; ended: NO_CONNECTIONS, TIME_UP, ...
    seconds: float  # started: the removedrain; ended: how long it took
    serving: bool = False  # ADDED_AGAIN: it had a weight when it started leaving


def _dests(v: VirtualLayout) -> set[DestKey]:
    out = set(v.dests)
    if v.fallback is not None:
        out.add(v.fallback[0])
    return out


def started(
    leaving: Leaving,
    old: Config,
    old_layout: Iterable[VirtualLayout],
    new: Config,
    new_layout: Iterable[VirtualLayout],
    actual: Table,
    now: float,
) -> tuple[dict[ServiceKey, LeavingService], list[Change]]:
    """A reload from `old` to `new` (each with its layout): the destinations of `old` that
    `new` no longer has and the kernel has now start leaving, for removedrain seconds (the new
    config's value where the virtual is still in it, so that one edit can set it and remove a
    real; a removed virtual's own); leaving ones the new config has again stop. The others go on
    as they were."""
    new_dests = {v.key: _dests(v) for v in new_layout}
    new_drain = {v.key: v.removedrain for v in new.virtuals}
    out: dict[ServiceKey, LeavingService] = {}
    changes: list[Change] = []
    for key, service in leaving.items():
        wanted = new_dests.get(key)
        dests = dict(service.dests)
        if wanted is not None:
            for dest in sorted(dests.keys() & wanted):
                back = dests.pop(dest)
                changes.append(
                    Change(key, dest, False, ADDED_AGAIN, now - back.since, back.serving)
                )
        if dests:
            conf = None
            if wanted is None:
                # its virtual is gone (now, or before): the service stays as the kernel has it
                there = actual.get(key)
                conf = service.conf or (there.conf if there is not None else None)
            out[key] = LeavingService(conf, dests)
    for v, lv in zip(old.virtuals, old_layout, strict=True):
        drain = new_drain.get(v.key, v.removedrain)
        if drain <= 0 or v.key not in actual:
            continue
        key = lv.key
        in_kernel = actual[key].dests
        wanted = new_dests.get(key)
        gone = _dests(lv) - (wanted or set())
        fresh = {
            dest: Leaver(
                dataclasses.replace(in_kernel[dest], weight=0),
                now,
                now + drain,
                serving=in_kernel[dest].weight > 0,
            )
            for dest in sorted(gone)
            if dest in in_kernel and dest not in (out[key].dests if key in out else ())
        }
        if not fresh:
            continue
        why = "removed" if wanted is not None else "virtual removed"
        changes.extend(Change(key, dest, True, why, float(drain)) for dest in fresh)
        before = out.get(key)
        dests = {**(before.dests if before is not None else {}), **fresh}
        out[key] = LeavingService(None if wanted is not None else lv.conf, dests)
    return out, changes


def returning(changes: Iterable[Change], layout: Iterable[VirtualLayout]) -> list[RealRef]:
    """The reals a reload added back while they were leaving with a weight: the engine takes
    them as up (as start adopts a real the kernel shows with its weight), so that they get their
    weight back at once instead of being deleted until a check passes; the next check decides."""
    back = {(c.service, c.dest) for c in changes if c.reason == ADDED_AGAIN and c.serving}
    if not back:
        return []
    return [
        ref
        for v in layout
        for ref, dest in zip(v.refs, v.dests, strict=True)
        if (v.key, dest) in back
    ]


def connections(key: ServiceKey, service: Service, dest: DestKey) -> int:
    """The kernel's count that must reach 0 before `dest` may go (see the module's words)."""
    stats = service.stats.get(dest, NO_STATS)
    if key.protocol is Proto.UDP:
        return stats.active_conns + stats.inactive_conns
    return stats.active_conns


def settled(
    leaving: Leaving, actual: Table, now: float, *, fresh: bool
) -> tuple[dict[ServiceKey, LeavingService], list[Change]]:
    """The set after a look at `actual` at `now`: a destination whose time is up, that the
    kernel no longer has, or (`fresh`: `actual` is a dump, its counters read now) that has no
    connection left, is done."""
    out: dict[ServiceKey, LeavingService] = {}
    changes: list[Change] = []
    for key, service in leaving.items():
        table = actual.get(key)
        dests: dict[DestKey, Leaver] = {}
        for dest, leaver in service.dests.items():
            count = None
            if table is None or dest not in table.dests:
                why: str | None = GONE
            elif now >= leaver.deadline:
                why = TIME_UP
            elif fresh and (count := connections(key, table, dest)) == 0:
                why = NO_CONNECTIONS
            else:
                why = None
            if why is None:
                if count is not None and count != leaver.connections:
                    leaver = dataclasses.replace(leaver, connections=count)
                dests[dest] = leaver
            else:
                changes.append(Change(key, dest, False, why, now - leaver.since))
        if dests:
            out[key] = (
                service
                if len(dests) == len(service.dests)
                and all(dests[d] is service.dests[d] for d in dests)
                else LeavingService(service.conf, dests)
            )
    return out, changes


def merged(table: Table, leaving: Leaving, keys: Collection[ServiceKey] | None = None) -> None:
    """Puts the leaving destinations into the desired `table` (in place) where it wants nothing
    of theirs; a removed virtual's service too. `keys`: of those services only."""
    for key, service in leaving.items():
        if keys is not None and key not in keys:
            continue
        want = table.get(key)
        if want is None:
            if service.conf is None:
                continue  # the config's virtual, left out of this computation
            want = table[key] = Service(service.conf)
        for dest, leaver in service.dests.items():
            if dest not in want.dests:
                want.dests[dest] = leaver.conf


def next_deadline(leaving: Leaving) -> float | None:
    deadlines = [lv.deadline for s in leaving.values() for lv in s.dests.values()]
    return min(deadlines) if deadlines else None


def status_of(
    leaving: Leaving, clock_now: float, wall_now: float, label: Callable[[ServiceKey], str]
) -> list[LeavingStatus]:
    """The leaving reals for the status, by virtual then real; times as wall-clock seconds."""
    out: list[LeavingStatus] = []
    for key in sorted(leaving):
        for dest, lv in sorted(leaving[key].dests.items()):
            out.append(
                {
                    "virtual": label(key),
                    "real": str(dest),
                    "since": round(wall_now - (clock_now - lv.since), 3),
                    "deadline": round(wall_now + (lv.deadline - clock_now), 3),
                    "connections": lv.connections,
                }
            )
    return out


def deadconns_warning(config: Config, backend: str) -> str | None:
    """The warning for a config with deadconns=expire on a kernel whose expire_nodest_conn is
    not 1 (the engine logs it at start and at each reload); None without one, and for the
    memory backend (no kernel)."""
    if backend == "memory":
        return None
    problem = deadconns_problem(config.virtuals, read_expire_nodest_conn)
    return None if problem is None else problem[1]


class LeavingState:
    """The engine's set of leaving reals and the one reader of their counters."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.leaving: dict[ServiceKey, LeavingService] = {}
        self._some = asyncio.Event()  # set while anything leaves

    def __bool__(self) -> bool:
        return bool(self.leaving)

    def reload(
        self,
        old: Config,
        old_layout: tuple[VirtualLayout, ...] | None,
        new: Config,
        new_layout: Iterable[VirtualLayout],
        actual: Table,
    ) -> list[Change]:
        if old_layout is None:
            old_layout = layout_of(old)
        self.leaving, changes = started(
            self.leaving, old, old_layout, new, new_layout, actual, self.clock()
        )
        self._wake()
        return changes

    def settle(self, actual: Table, *, fresh: bool) -> list[Change]:
        if not self.leaving:
            return []
        self.leaving, changes = settled(self.leaving, actual, self.clock(), fresh=fresh)
        self._wake()
        return changes

    def _wake(self) -> None:
        if self.leaving:
            self._some.set()
        else:
            self._some.clear()

    async def run(
        self,
        read: Callable[[], Awaitable[Table | None]],
        on_changes: Callable[[list[Change]], None],
    ) -> None:
        """While anything leaves: every READ_EVERY_S (sooner for a deadline), read the table
        (`read`: a dump, None when it failed) and settle; `on_changes` gets what ended. Waits
        on an event, not a timer, while nothing leaves."""
        while True:
            await self._some.wait()
            wait = READ_EVERY_S
            deadline = next_deadline(self.leaving)
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - self.clock()))
            await asyncio.sleep(wait)
            if not self.leaving:
                continue
            table = await read()
            if table is None:
                # the kernel could not be read: only deadlines end a leave
                changes = self.settle(_as_present(self.leaving), fresh=False)
            else:
                changes = self.settle(table, fresh=True)
            if changes:
                on_changes(changes)


def _as_present(leaving: Leaving) -> Table:
    """A table that holds every leaving destination (no counters): what `settled` reads when
    the kernel could not be read, so that only deadlines end a leave."""
    return {
        key: Service(ServiceConf(), {d: lv.conf for d, lv in s.dests.items()})
        for key, s in leaving.items()
    }
