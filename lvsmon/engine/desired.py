"""The IPVS table lvsmon wants: a pure function of config, health, maintenance and (for the one
rule that depends on it) the table as it is.

Rules (ldirectord's, with its start-up bug fixed):
- a real that is up and not in maintenance has its configured weight, thresholds and forwarding;
- a real that is down is deleted, or with `quiescent` kept at weight 0. A quiesced real that is
  missing from the kernel (an operator deleted it to end persistent sessions) is re-added at weight
  0 only with `readdquiescent`;
- a real that was never seen up is absent: it never gets its full weight before a check passed;
- the fallback is present exactly while no real of the virtual is up (checktype=off excepted:
  nothing is activated there);
- a drained real (`lvsmon drain`) that is up stays in the kernel at weight 0, whatever
  `quiescent` says, so that its connections go on; it does not count as up for the fallback. A
  drained real that is down follows the down rule; maintenance wins over drain.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from lvsmon.config.model import CheckType, Config
from lvsmon.engine.health import RealHealth
from lvsmon.engine.plan import RealRef
from lvsmon.engine.wording import fallback_dest
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    kernel_dest_port,
)


def is_up(
    ref: RealRef, health: Mapping[RealRef, RealHealth], maintained: Collection[RealRef]
) -> bool:
    state = health.get(ref)
    return state is not None and state.up and ref not in maintained


@dataclass(frozen=True, slots=True)
class RealSlot:
    ref: RealRef
    dest: DestKey  # the key the kernel stores (gate/ipip force the virtual's port)
    conf: DestConf  # up: configured weight, thresholds, forwarding
    quiesced: DestConf  # down with quiescent=yes, or drained: the same at weight 0


@dataclass(frozen=True, slots=True)
class VirtualLayout:
    """What the desired table needs of one virtual, its addresses parsed once per config."""

    key: ServiceKey
    conf: ServiceConf
    quiescent: bool
    reals: tuple[RealSlot, ...]
    fallback: tuple[DestKey, DestConf] | None  # None also for checktype=off


def layout_of(config: Config) -> tuple[VirtualLayout, ...]:
    """Built once per config: parsing every address each time made a desired table at
    10,000 reals cost a third of a second."""
    out: list[VirtualLayout] = []
    for v in config.virtuals:
        key = v.key
        slots = []
        for r in v.reals:
            ref = RealRef(key, r.address, r.port)
            conf = DestConf(r.forward, r.weight, r.upper, r.lower)
            dest = kernel_dest_port(key, ref.dest, r.forward)
            slots.append(RealSlot(ref, dest, conf, DestConf(r.forward, 0, r.upper, r.lower)))
        fdest = fallback_dest(v)
        fallback = None
        if fdest is not None and v.fallback and v.checktype is not CheckType.OFF:
            fallback = (fdest, DestConf(v.fallback.forward, 1, 0, 0))
        out.append(VirtualLayout(key, v.service_conf, v.quiescent, tuple(slots), fallback))
    return tuple(out)


def desired_service(
    v: VirtualLayout,
    health: Mapping[RealRef, RealHealth],
    maintained: Collection[RealRef],
    present: Collection[DestKey],
    readdquiescent: bool,
    drained: Collection[RealRef] = (),
) -> Service:
    dests: dict[DestKey, DestConf] = {}
    any_up = False
    for slot in v.reals:
        dest = slot.dest
        if is_up(slot.ref, health, maintained):
            if drained and slot.ref in drained:
                # kept (not deleted, even with quiescent=no): its connections go on
                if dest not in dests:
                    dests[dest] = slot.quiesced
                continue
            any_up = True
            dests[dest] = slot.conf
        elif v.quiescent and (dest in present or readdquiescent) and dest not in dests:
            dests[dest] = slot.quiesced
    if not any_up and v.fallback is not None:
        dests[v.fallback[0]] = v.fallback[1]
    return Service(v.conf, dests)


def desired_table(
    config: Config,
    health: Mapping[RealRef, RealHealth],
    maintained: Collection[RealRef],
    actual: Table,
    layout: tuple[VirtualLayout, ...] | None = None,
    drained: Collection[RealRef] = (),
) -> Table:
    """`layout`: layout_of(config), when the caller keeps it across calls."""
    table: Table = {}
    readdquiescent = config.settings.readdquiescent
    for v in layout if layout is not None else layout_of(config):
        present = actual[v.key].dests.keys() if v.key in actual else ()
        table[v.key] = desired_service(v, health, maintained, present, readdquiescent, drained)
    return table


def managed_services(config: Config) -> set[ServiceKey]:
    return {v.key for v in config.virtuals}


def adopt_health(
    config: Config, actual: Table, drained: Collection[RealRef] = ()
) -> dict[RealRef, RealHealth]:
    """Health as the kernel table shows it, before any check ran: a real that is there and
    serving is taken as up, anything else as down (a drained real that is there at all is taken
    as up: its weight 0 is the drain's). With unchanged health, desired_table() then reproduces
    the table exactly, so a restart makes no kernel change."""
    from lvsmon.engine.health import ADOPTED_UP, DOWN

    health: dict[RealRef, RealHealth] = {}
    for v in config.virtuals:
        dests = actual[v.key].dests if v.key in actual else {}
        for r in v.reals:
            ref = RealRef(v.key, r.address, r.port)
            conf = dests.get(kernel_dest_port(v.key, ref.dest, r.forward))
            serving = conf is not None and (conf.weight > 0 or r.weight == 0 or ref in drained)
            health[ref] = ADOPTED_UP if serving else DOWN
    return health
