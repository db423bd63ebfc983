"""The IPVS table lvsmon wants: a pure function of config, health, maintenance and (for the one
rule that depends on it) the table as it is.

Rules (ldirectord's, with its start-up bug fixed):
- a real that is up and not in maintenance has its configured weight, thresholds and forwarding;
- a real that is down is deleted, or with `quiescent` kept at weight 0 (not with
  `deadconns = expire`: deleted, so that the kernel expires its connections). A quiesced real
  that is missing from the kernel (an operator deleted it to end persistent sessions) is
  re-added at weight 0 only with `readdquiescent`;
- a real that was never seen up is absent: it never gets its full weight before a check passed;
- the fallback is present exactly while no real of the virtual is up (checktype=off excepted:
  nothing is activated there);
- a drained real (`lvsmon drain`) that is up stays in the kernel at weight 0, whatever
  `quiescent` says, so that its connections go on; it does not count as up for the fallback. A
  drained real that is down follows the down rule; maintenance wins over drain.
- the depool threshold (`depoolthreshold`, lvsmon's own, off by default): of the N reals of a
  virtual that checks decide (N leaves out those in maintenance and the drained ones: an
  operator's choice is neither limited nor counted), checks take out at most floor(t * N);
  so at least N - floor(t * N) = ceil((1 - t) * N) stay in, computed exactly on the decimal
  value (PyBal's rule for its `depool-threshold` of 1 - t). When more are down, the surplus
  stays in at its configured weight, as if up: the reals whose checks took them down last
  (ties: the first in the config). Only a real checks took down (`RealHealth.down_at`) can be
  kept: one down since start or adoption was never seen up, and never gets its weight before a
  check passed; it counts among the down ones all the same.
- weight caps (`caps`, engine/steering.py: the agent check, slow start): a real that is up, not
  drained and not in maintenance, whose cap is below its configured weight, gets the cap as its
  kernel weight (never more than the configured weight). A cap of 0 keeps it in at weight 0, as
  a drain does, and it does not count as up for the fallback. The down, maintenance, drain and
  depool rules win: a real the threshold keeps in (down) has its configured weight.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType

from lvsmon.config.model import CheckType, Config, DeadConns, Virtual
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import RealRef, refs_of
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    kernel_dest_port,
)


def fallback_dest(v: Virtual) -> DestKey | None:
    """The virtual's fallback server as the kernel stores it (gate/ipip: the virtual's port)."""
    if v.fallback is None:
        return None
    fb = v.fallback
    return kernel_dest_port(v.key, DestKey(fb.address, fb.port), fb.forward)


# The last config's fallback destinations by virtual. Built once per config, not per op: a
# start-up at 10,000 reals applies 10,000 ops, and rebuilding the map (each key parses an
# address) made that quadratic.
_by_key: tuple[Config, dict[ServiceKey, DestKey | None]] | None = None


def fallbacks_of(config: Config) -> dict[ServiceKey, DestKey | None]:
    """Each virtual's fallback destination as the kernel stores it (None: it has none)."""
    global _by_key
    # read once: `lvsmon plan` describes another config's ops in a thread, and the global may
    # change under this function between its test and its return
    cached = _by_key
    if cached is None or cached[0] is not config:
        cached = _by_key = (config, {v.key: fallback_dest(v) for v in config.virtuals})
    return cached[1]


def is_up(
    ref: RealRef, health: Mapping[RealRef, RealHealth], maintained: Collection[RealRef]
) -> bool:
    state = health.get(ref)
    return state is not None and state.up and ref not in maintained


@dataclass(frozen=True, slots=True)
class RealSlot:
    """One real of a VirtualLayout as one object: built on demand (VirtualLayout.reals) for
    tools and tests; the layout itself keeps its reals in parallel tuples."""

    ref: RealRef
    dest: DestKey  # the key the kernel stores (gate/ipip force the virtual's port)
    conf: DestConf  # up: configured weight, thresholds, forwarding
    quiesced: DestConf  # down with quiescent=yes, or drained: the same at weight 0


@dataclass(frozen=True, slots=True)
class VirtualLayout:
    """What the desired table needs of one virtual, its addresses parsed once per config.

    Its reals are parallel tuples, not an object per real (a RealSlot was 64 bytes a real,
    issue 22): `refs` is the plan's own tuple (jobs.refs_of), `dests` holds each real's own
    DestKey unless the kernel forces the virtual's port, and the confs are shared objects, the
    quiesced one (the same at weight 0) found through `quiet`, one small dict per layout."""

    key: ServiceKey
    conf: ServiceConf
    quiescent: bool
    refs: tuple[RealRef, ...]
    dests: tuple[DestKey, ...]  # the keys the kernel stores (gate/ipip force the virtual's port)
    confs: tuple[DestConf, ...]  # up: configured weight, thresholds, forwarding
    # each conf of `confs` -> the same at weight 0 (down with quiescent=yes, or drained); one
    # dict for a whole layout, derived from `confs`: not compared
    quiet: Mapping[DestConf, DestConf] = field(compare=False, repr=False)
    fallback: tuple[DestKey, DestConf] | None  # None also for checktype=off
    # depoolthreshold as an exact (numerator, denominator); None: off
    depool: tuple[int, int] | None = None

    @property
    def reals(self) -> tuple[RealSlot, ...]:
        """The reals as objects, made now (tools, tests): the hot paths read the tuples."""
        quiet = self.quiet
        return tuple(
            RealSlot(ref, dest, conf, quiet[conf])
            for ref, dest, conf in zip(self.refs, self.dests, self.confs, strict=True)
        )


def depool_ratio(threshold: float | None) -> tuple[int, int] | None:
    """The config's share (at most 4 decimals) as the exact fraction it was written as: the
    float of 0.29 times 100 is 28.999..., and the rounding must not see that."""
    if threshold is None:
        return None
    exact = Fraction(threshold).limit_denominator(10_000)
    return exact.numerator, exact.denominator


def layout_of(
    config: Config, previous: tuple[Config, tuple[VirtualLayout, ...]] | None = None
) -> tuple[VirtualLayout, ...]:
    """Built once per config: parsing every address each time made a desired table at
    10,000 reals cost a third of a second. `previous`: the running config and its layout (a
    reload): a virtual equal to one of it takes that one's layout, the very object."""
    old: dict[ServiceKey, tuple[Virtual, VirtualLayout]] = {}
    if previous is not None:
        old = {v.key: (v, lv) for v, lv in zip(previous[0].virtuals, previous[1], strict=True)}
    out: list[VirtualLayout] = []
    # equal confs are one object: most reals of a pool share their forwarding and weight
    confs: dict[tuple[Forward, int, int, int], DestConf] = {}
    quiet: dict[DestConf, DestConf] = {}
    # equal service confs too: most virtuals have the same scheduler and persistence
    sconfs: dict[ServiceConf, ServiceConf] = {}
    for v in config.virtuals:
        key = v.key
        hit = old.get(key)
        if hit is not None and (hit[0] is v or hit[0] == v):
            out.append(hit[1])
            continue
        dests = []
        v_confs = []
        for r in v.reals:
            conf = _shared_conf(confs, r.forward, r.weight, r.upper, r.lower)
            if conf not in quiet:
                quiet[conf] = _shared_conf(confs, r.forward, 0, r.upper, r.lower)
            v_confs.append(conf)
            dests.append(kernel_dest_port(key, r.dest, r.forward))
        sconf = v.service_conf
        fdest = fallback_dest(v)
        fallback = None
        if fdest is not None and v.fallback and v.checktype is not CheckType.OFF:
            fallback = (fdest, _shared_conf(confs, v.fallback.forward, 1, 0, 0))
        out.append(
            VirtualLayout(
                key,
                sconfs.setdefault(sconf, sconf),
                # deadconns=expire: a down real is deleted, quiescent or not, so that the
                # kernel's expire_nodest_conn moves its connections (config/removalconf.py)
                v.quiescent and v.deadconns is DeadConns.KEEP,
                refs_of(config, v),
                tuple(dests),
                tuple(v_confs),
                quiet,
                fallback,
                depool_ratio(v.depoolthreshold),
            )
        )
    return tuple(out)


def _shared_conf(
    confs: dict[tuple[Forward, int, int, int], DestConf],
    forward: Forward,
    weight: int,
    upper: int,
    lower: int,
) -> DestConf:
    key = (forward, weight, upper, lower)
    conf = confs.get(key)
    if conf is None:
        conf = confs[key] = DestConf(forward, weight, upper, lower)
    return conf


def max_depooled(depool: tuple[int, int], n: int) -> int:
    """How many of `n` reals checks may take out: floor(t * n), exactly."""
    numerator, denominator = depool
    return n * numerator // denominator


def kept_by_threshold(
    v: VirtualLayout,
    health: Mapping[RealRef, RealHealth],
    maintained: Collection[RealRef],
    drained: Collection[RealRef] = (),
) -> tuple[RealRef, ...]:
    """The reals of `v` that its depool threshold keeps in service although checks took them
    down, in config order; () when it has none or nothing is limited."""
    if v.depool is None:
        return ()
    n = 0
    down = 0
    candidates: list[tuple[float, int, RealRef]] = []
    for i, ref in enumerate(v.refs):
        if ref in maintained or (drained and ref in drained):
            continue
        n += 1
        state = health.get(ref)
        if state is not None and state.up:
            continue
        down += 1
        if state is not None and state.down_at is not None:
            candidates.append((state.down_at, i, ref))
    surplus = down - max_depooled(v.depool, n)
    if surplus <= 0 or not candidates:
        return ()
    # the latest failures first, then config order
    candidates.sort(key=lambda c: (-c[0], c[1]))
    chosen = sorted(candidates[:surplus], key=lambda c: c[1])
    return tuple(c[2] for c in chosen)


def capped_out(ref: RealRef, conf: DestConf, caps: Mapping[RealRef, int]) -> bool:
    """A cap of 0 holds this real (configured above 0) at weight 0: not up for the fallback."""
    return bool(caps) and caps.get(ref, 1) <= 0 < conf.weight


def steered(
    ref: RealRef, conf: DestConf, quiesced: DestConf, caps: Mapping[RealRef, int]
) -> DestConf:
    """An up real's conf under the caps: its configured one, or the same at the cap's weight
    when the cap is lower."""
    cap = caps.get(ref) if caps else None
    if cap is None or cap >= conf.weight:
        return conf
    if cap <= 0:
        return quiesced
    return DestConf(conf.forward, cap, conf.upper, conf.lower)


def desired_service(
    v: VirtualLayout,
    health: Mapping[RealRef, RealHealth],
    maintained: Collection[RealRef],
    present: Collection[DestKey],
    readdquiescent: bool,
    drained: Collection[RealRef] = (),
    caps: Mapping[RealRef, int] = MappingProxyType({}),
) -> Service:
    dests: dict[DestKey, DestConf] = {}
    any_up = False
    kept: Collection[RealRef] = ()
    if v.depool is not None:
        kept = frozenset(kept_by_threshold(v, health, maintained, drained))
    quiet = v.quiet
    for ref, dest, conf in zip(v.refs, v.dests, v.confs, strict=True):
        up = is_up(ref, health, maintained)
        if up or (kept and ref in kept):
            if drained and ref in drained:
                # kept (not deleted, even with quiescent=no): its connections go on
                if dest not in dests:
                    dests[dest] = quiet[conf]
                continue
            if up and caps and ref in caps:
                if capped_out(ref, conf, caps):
                    if dest not in dests:
                        dests[dest] = quiet[conf]
                    continue
                any_up = True
                dests[dest] = steered(ref, conf, quiet[conf], caps)
                continue
            any_up = True
            dests[dest] = conf
        elif v.quiescent and (dest in present or readdquiescent) and dest not in dests:
            dests[dest] = quiet[conf]
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
    caps: Mapping[RealRef, int] = MappingProxyType({}),
) -> Table:
    """`layout`: layout_of(config), when the caller keeps it across calls; `caps`: weight
    caps per pair (engine/steering.py)."""
    table: Table = {}
    readdquiescent = config.settings.readdquiescent
    for v in layout if layout is not None else layout_of(config):
        present = actual[v.key].dests.keys() if v.key in actual else ()
        table[v.key] = desired_service(
            v, health, maintained, present, readdquiescent, drained, caps
        )
    return table


def managed_services(config: Config) -> set[ServiceKey]:
    return {v.key for v in config.virtuals}


def adopt_health(
    config: Config,
    actual: Table,
    drained: Collection[RealRef] = (),
    skip: Collection[RealRef] = (),
) -> dict[RealRef, RealHealth]:
    """Health as the kernel table shows it, before any check ran: a real that is there and
    serving is taken as up, anything else as down (a drained real that is there at all is taken
    as up: its weight 0 is the drain's). With unchanged health, desired_table() then reproduces
    the table exactly, so a restart makes no kernel change. `skip`: reals left out (a reload
    carries their health over)."""
    from lvsmon.engine.health import ADOPTED_UP, DOWN

    health: dict[RealRef, RealHealth] = {}
    for v in config.virtuals:
        key = v.key
        service = actual.get(key)
        dests = service.dests if service is not None else {}
        for ref, r in zip(refs_of(config, v), v.reals, strict=True):
            if skip and ref in skip:
                continue
            conf = dests.get(kernel_dest_port(key, r.dest, r.forward))
            serving = conf is not None and (conf.weight > 0 or r.weight == 0 or ref in drained)
            health[ref] = ADOPTED_UP if serving else DOWN
    return health
