"""Probe services: the IPVS side of checks through the VIP (checkpath=vip|both, issue 23). Pure.

A check through the VIP connects to VIP:checkport with its socket's mark set (SO_MARK). IPVS
looks up firewall-mark services before address services (`ip_vs_service_find`), so the marked
packet is caught at LOCAL_OUT by a service of its own, whose only destination is the real to be
checked, with the real's forwarding: it reaches that real exactly as the clients' packets do (DR:
addressed to the VIP on the real's segment; TUN: encapsulated), and the real answers only if it
accepts the VIP. Google Seesaw programs the same services (engine/healthcheck.go, markBackend).

One probe service per (real address, forwarding) that needs one (config/checkpathconf.py
`probe_needs`): `-f MARK -s rr`, destination RIP:0 with that forwarding, weight 1, whatever the
real's health (the check must reach a down real to see it recover). Marks come from the block
`checkmarkbase .. checkmarkbase + PROBE_MARKS - 1`. A mark, once given, stays with its real:
`plan_probes` keeps the previous assignment (the running daemon's, or at start the one the kernel
shows: `adopted`) and gives a new real the lowest free mark, so a reload that adds or removes
VIP-path reals adds or removes their probe services only, and a restart changes nothing.

The probe services are lvsmon's like its virtual services: the reconciler owns their keys, diffs
and repairs them at every resync, deletes them at stop and purge; `is_probe` tells them apart for
status and verify-table. A firewall-mark service in the block that is not one lvsmon can adopt
(more than one destination, a port, not a real of this config) is someone else's: never touched,
and its mark is not given out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from lvsmon.config.checkpathconf import PROBE_MARKS, probe_needs
from lvsmon.config.model import Config
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    family_of,
)

Need = tuple[str, Forward]  # (real address, forwarding): what one probe service serves

PROBE_CONF = ServiceConf(scheduler="rr")


@dataclass(frozen=True, slots=True)
class Probes:
    """The probe services of one config: the marks given out and the table they make."""

    base: int
    marks: Mapping[Need, int] = field(default_factory=dict)
    table: Table = field(default_factory=dict, compare=False)

    @property
    def keys(self) -> frozenset[ServiceKey]:
        return frozenset(self.table)

    def mark_of(self, address: str, forward: Forward) -> int | None:
        return self.marks.get((address, forward))


NO_PROBES = Probes(0)


def in_block(mark: int, base: int) -> bool:
    return base <= mark < base + PROBE_MARKS


def is_probe(key: ServiceKey, base: int) -> bool:
    """A firewall-mark service in the block checkmarkbase reserves."""
    return key.is_fwmark and in_block(key.fwmark, base)


def _order(need: Need) -> tuple[int, int, str]:
    addr = ipaddress.ip_address(need[0])
    return (addr.version, int(addr), need[1].value)


def probe_service(address: str, forward: Forward) -> Service:
    return Service(PROBE_CONF, {DestKey(address, 0): DestConf(forward, 1, 0, 0)})


def adopted(actual: Table, base: int) -> dict[Need, int]:
    """The probe services `actual` (a dump) holds in the block, as marks by need: those of a
    daemon that ran before. A need found twice keeps its lowest mark."""
    found: dict[Need, int] = {}
    for key, service in actual.items():
        if not is_probe(key, base) or len(service.dests) != 1:
            continue
        ((dest, conf),) = service.dests.items()
        if dest.port != 0 or conf.forward is Forward.MASQ or family_of(dest.address) != key.family:
            continue
        need = (dest.address, conf.forward)
        if need not in found or key.fwmark < found[need]:
            found[need] = key.fwmark
    return found


def _free(base: int, used: Collection[int]) -> Iterator[int]:
    for mark in range(base, base + PROBE_MARKS):
        if mark not in used:
            yield mark


def allocate(
    needs: Collection[Need],
    previous: Mapping[Need, int],
    base: int,
    taken: Collection[int] = (),
) -> dict[Need, int]:
    """A mark per need: the previous one where it had one in the block (and no other need
    holds it), else the lowest free one, new needs in address order. `taken`: marks of
    services in the kernel that are not lvsmon's probe services (never given out)."""
    marks: dict[Need, int] = {}
    used = set(taken)
    for need in sorted(needs, key=_order):
        mark = previous.get(need)
        if mark is not None and in_block(mark, base) and mark not in used:
            marks[need] = mark
            used.add(mark)
    fresh = _free(base, used)
    for need in sorted(needs, key=_order):
        if need not in marks:
            # checkpathconf refuses more needs than the block holds
            marks[need] = next(fresh)
    return marks


def plan_probes(
    config: Config,
    previous: Mapping[Need, int] | None = None,
    actual: Table | None = None,
) -> Probes:
    """The probe services `config` wants. `previous`: the running daemon's marks (a reload);
    None at start, where the kernel's (`actual`) are adopted. Marks of `actual`'s other
    firewall-mark services are not given out."""
    base = config.settings.checkmarkbase
    needs = probe_needs(config.virtuals)
    if not needs:
        return Probes(base)
    kernel = actual if actual is not None else {}
    if previous is None:
        previous = adopted(kernel, base)
    ours = set(previous.values())
    taken = {k.fwmark for k in kernel if is_probe(k, base) and k.fwmark not in ours}
    marks = allocate(needs, previous, base, taken)
    table: Table = {}
    for (address, forward), mark in marks.items():
        table[ServiceKey.fwm(mark, family_of(address))] = probe_service(address, forward)
    return Probes(base, marks, table)


def changed_probes(old: Probes, new: Probes) -> set[ServiceKey]:
    """The probe services a switch from `old` to `new` adds, removes or changes."""
    keys = old.table.keys() | new.table.keys()
    return {k for k in keys if old.table.get(k) != new.table.get(k)}


def with_probes(table: Table, probes: Probes) -> Table:
    """`table` (the virtual services' desired table) with the probe services added, in place."""
    table.update(probes.table)
    return table


def probe_keys_in(actual: Table, config: Config) -> set[ServiceKey]:
    """The probe services of `config`'s reals that `actual` holds, whoever programmed them (a
    daemon that was killed): what a purge deletes besides the virtual services."""
    base = config.settings.checkmarkbase
    needs = probe_needs(config.virtuals)
    found: set[ServiceKey] = set()
    for key, service in actual.items():
        if is_probe(key, base) and len(service.dests) == 1:
            ((dest, conf),) = service.dests.items()
            if dest.port == 0 and (dest.address, conf.forward) in needs:
                found.add(key)
    return found
