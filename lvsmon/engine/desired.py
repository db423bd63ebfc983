"""The IPVS table lvsmon wants: a pure function of config, health, maintenance and (for the one
rule that depends on it) the table as it is.

Rules (ldirectord's, with its start-up bug fixed):
- a real that is up and not in maintenance has its configured weight, thresholds and forwarding;
- a real that is down is deleted, or with `quiescent` kept at weight 0. A quiesced real that is
  missing from the kernel (an operator deleted it to end persistent sessions) is re-added at weight
  0 only with `readdquiescent`;
- a real that was never seen up is absent: it never gets its full weight before a check passed;
- the fallback is present exactly while no real of the virtual is up (checktype=off excepted:
  nothing is activated there).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from lvsmon.config.model import CheckType, Config, Virtual
from lvsmon.engine.health import RealHealth
from lvsmon.engine.plan import RealRef
from lvsmon.engine.wording import fallback_dest
from lvsmon.ipvs.model import DestConf, DestKey, Service, ServiceKey, Table, kernel_dest_port


def is_up(
    ref: RealRef, health: Mapping[RealRef, RealHealth], maintained: Collection[RealRef]
) -> bool:
    state = health.get(ref)
    return state is not None and state.up and ref not in maintained


def desired_service(
    v: Virtual,
    health: Mapping[RealRef, RealHealth],
    maintained: Collection[RealRef],
    present: Collection[DestKey],
    readdquiescent: bool,
) -> Service:
    key = v.key
    dests: dict[DestKey, DestConf] = {}
    any_up = False
    for r in v.reals:
        ref = RealRef(key, r.address, r.port)
        dest = kernel_dest_port(key, ref.dest, r.forward)
        conf = DestConf(r.forward, r.weight, r.upper, r.lower)
        if is_up(ref, health, maintained):
            any_up = True
            dests[dest] = conf
        elif v.quiescent and (dest in present or readdquiescent) and dest not in dests:
            dests[dest] = DestConf(r.forward, 0, r.upper, r.lower)
    fdest = fallback_dest(v)
    if not any_up and fdest is not None and v.fallback and v.checktype is not CheckType.OFF:
        dests[fdest] = DestConf(v.fallback.forward, 1, 0, 0)
    return Service(v.service_conf, dests)


def desired_table(
    config: Config,
    health: Mapping[RealRef, RealHealth],
    maintained: Collection[RealRef],
    actual: Table,
) -> Table:
    table: Table = {}
    for v in config.virtuals:
        present = actual[v.key].dests.keys() if v.key in actual else ()
        table[v.key] = desired_service(
            v, health, maintained, present, config.settings.readdquiescent
        )
    return table


def managed_services(config: Config) -> set[ServiceKey]:
    return {v.key for v in config.virtuals}


def adopt_health(config: Config, actual: Table) -> dict[RealRef, RealHealth]:
    """Health as the kernel table shows it, before any check ran: a real that is there and
    serving is taken as up, anything else as down. With unchanged health, desired_table() then
    reproduces the table exactly, so a restart makes no kernel change."""
    from lvsmon.engine.health import ADOPTED_UP, DOWN

    health: dict[RealRef, RealHealth] = {}
    for v in config.virtuals:
        dests = actual[v.key].dests if v.key in actual else {}
        for r in v.reals:
            ref = RealRef(v.key, r.address, r.port)
            conf = dests.get(kernel_dest_port(v.key, ref.dest, r.forward))
            serving = conf is not None and (conf.weight > 0 or r.weight == 0)
            health[ref] = ADOPTED_UP if serving else DOWN
    return health
