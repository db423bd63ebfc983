"""The reconcile decision: which ops turn the actual table into the desired one. Pure.

Order, chosen so that a service never goes without a usable destination mid-batch
(make before break, which ldirectord does not manage on a fallback swap):
  1. managed services present in desired, sorted by key; for each:
     AddService or EditService, then AddDest, then EditDest (raised weights before
     weights dropped to 0), then DeleteDest;
  2. managed services absent from desired: one DeleteService each (the kernel drops
     their destinations with them).
Only keys in `managed` are looked at, in both tables; everything else in `actual` is someone
else's and is never touched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable

from lvsmon.ipvs.model import DestConf, DestKey, ServiceConf, ServiceKey, Table, kernel_dest_port
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from lvsmon.ipvs.rules import InvalidConf, canonical_service_conf


class DesiredTableError(ValueError):
    """The desired table cannot exist in the kernel (e.g. two destinations that the kernel's
    port forcing for gate/ipip would merge into one)."""


def service_order(key: ServiceKey) -> tuple[str, int, str, int, int]:
    """Sort key for services: family, then address services before fwmarks, by number."""
    if key.is_fwmark:
        return (key.family.value, 1, "", 0, key.fwmark)
    assert key.address is not None and key.protocol is not None
    return (
        key.family.value,
        0,
        key.protocol.value,
        int(ipaddress.ip_address(key.address)),
        key.port,
    )


def dest_order(key: DestKey) -> tuple[int, int, int]:
    addr = ipaddress.ip_address(key.address)
    return (addr.version, int(addr), key.port)


def kernel_dests(service: ServiceKey, dests: dict[DestKey, DestConf]) -> dict[DestKey, DestConf]:
    """Destinations keyed as the kernel will store them (gate/ipip take the service port)."""
    out: dict[DestKey, DestConf] = {}
    for dest, conf in dests.items():
        key = kernel_dest_port(service, dest, conf.forward)
        if key in out and out[key] != conf:
            raise DesiredTableError(
                f"{service}: destinations {dest} and {key} are the same real server to the kernel "
                f"(gate and ipip use the virtual port) but are configured differently"
            )
        out[key] = conf
    return out


def _canonical(service: ServiceKey, conf: ServiceConf) -> ServiceConf:
    try:
        return canonical_service_conf(service, conf)
    except InvalidConf:
        # An invalid conf is passed through as is: the backend reports it per op, which
        # names the service, instead of the whole diff failing.
        return conf


def _dest_ops(
    service: ServiceKey, want: dict[DestKey, DestConf], have: dict[DestKey, DestConf]
) -> Iterable[Op]:
    for dest in sorted(want.keys() - have.keys(), key=dest_order):
        yield AddDest(service, dest, want[dest])
    edits = [dest for dest in want.keys() & have.keys() if want[dest] != have[dest]]
    edits.sort(key=lambda d: (want[d].weight == 0, dest_order(d)))
    for dest in edits:
        yield EditDest(service, dest, want[dest])
    for dest in sorted(have.keys() - want.keys(), key=dest_order):
        yield DeleteDest(service, dest)


def diff(desired: Table, actual: Table, managed: Collection[ServiceKey]) -> list[Op]:
    """The minimal ordered ops that make `actual` equal `desired` on the `managed` services."""
    ops: list[Op] = []
    managed_keys = set(managed)
    keep = sorted((k for k in managed_keys if k in desired), key=service_order)
    drop = sorted((k for k in managed_keys if k in actual and k not in desired), key=service_order)
    for key in keep:
        want = desired[key]
        want_conf = _canonical(key, want.conf)
        want_dests = kernel_dests(key, want.dests)
        have = actual.get(key)
        if have is None:
            ops.append(AddService(key, want_conf))
            have_dests: dict[DestKey, DestConf] = {}
        else:
            if _canonical(key, have.conf) != want_conf:
                ops.append(EditService(key, want_conf))
            have_dests = have.dests
        ops.extend(_dest_ops(key, want_dests, have_dests))
    ops.extend(DeleteService(key) for key in drop)
    return ops
