"""What the kernel accepts and how it stores it: validation and canonical forms.

Every backend must agree on these so that a table written through one backend and dumped
through another compares equal, and so that the diff never asks for a change the kernel
would silently undo (a persistence mask it drops, a gate port it forces, ...).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from lvsmon.ipvs.model import DestConf, DestKey, Family, Proto, ServiceConf, ServiceKey
from lvsmon.ipvs.ops import AddDest, AddService, EditDest, EditService, Op

SCHEDULERS: frozenset[str] = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
)
"""Schedulers Linux ships; whether a given kernel has the module is only known by trying."""

# The kernel has three anonymous scheduler flag bits; ipvsadm accepts names only for the
# schedulers that use them (sh-port on rr is "incompatible scheduler flag").
SCHED_FLAGS: dict[str, dict[str, int]] = {
    "sh": {"sh-fallback": 0x08, "sh-port": 0x10},
    "mh": {"mh-fallback": 0x08, "mh-port": 0x10},
}
_GENERIC_FLAGS: dict[str, int] = {"flag-1": 0x08, "flag-2": 0x10, "flag-3": 0x20}

MAX_PERSISTENT = 86400 * 31  # ipvsadm's limit for -p
MAX_WEIGHT = 2**31 - 1
MAX_THRESHOLD = 2**32 - 1
MAX_FWMARK = 2**32 - 1


class InvalidConf(ValueError):
    """A service or destination setting the kernel (or ipvsadm) would refuse."""


def sched_flag_bits(scheduler: str, flags: frozenset[str]) -> int:
    """The kernel's bit mask for flag names; raises InvalidConf for a name this scheduler
    does not take."""
    known = SCHED_FLAGS.get(scheduler, {})
    bits = 0
    for name in flags:
        if name not in known:
            raise InvalidConf(f"scheduler flag {name!r} does not apply to scheduler {scheduler!r}")
        bits |= known[name]
    return bits


def sched_flag_names(scheduler: str, bits: int) -> frozenset[str]:
    """The names ipvsadm prints for flag bits under this scheduler."""
    names = SCHED_FLAGS.get(scheduler, _GENERIC_FLAGS)
    return frozenset(name for name, bit in names.items() if bits & bit)


def full_netmask(family: Family) -> str:
    return "128" if family is Family.INET6 else "255.255.255.255"


def canonical_netmask(family: Family, netmask: str) -> str:
    """One spelling per mask: a dotted quad for IPv4, a prefix length for IPv6."""
    text = netmask.strip()
    if family is Family.INET6:
        if not text.isdigit() or not 1 <= int(text) <= 128:
            raise InvalidConf(
                f"IPv6 persistence netmask must be a prefix length 1-128: {netmask!r}"
            )
        return str(int(text))
    try:
        if text.isdigit():
            if not 0 <= int(text) <= 32:
                raise ValueError
            return str(ipaddress.IPv4Network(f"0.0.0.0/{int(text)}").netmask)
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidConf(f"invalid IPv4 persistence netmask: {netmask!r}") from None


def check_service(service: ServiceKey, conf: ServiceConf) -> None:
    """Raise InvalidConf for what ipvsadm or the kernel refuses (unknown scheduler names
    included: a scheduler missing from this kernel is only found out by the backend)."""
    if conf.scheduler not in SCHEDULERS:
        raise InvalidConf(f"unknown scheduler {conf.scheduler!r}")
    sched_flag_bits(conf.scheduler, conf.sched_flags)
    if conf.persistent is not None and not 1 <= conf.persistent <= MAX_PERSISTENT:
        raise InvalidConf(f"persistence timeout out of range 1-{MAX_PERSISTENT}: {conf.persistent}")
    if conf.netmask is not None:
        canonical_netmask(service.family, conf.netmask)
    if conf.ops and not service.is_fwmark and service.protocol is not Proto.UDP:
        raise InvalidConf("one-packet scheduling is only for UDP or fwmark services")
    if not service.is_fwmark and service.port == 0 and conf.persistent is None:
        raise InvalidConf("port 0 is only allowed for a persistent service")
    if service.fwmark > MAX_FWMARK:
        raise InvalidConf(f"fwmark out of range: {service.fwmark}")


def check_dest(service: ServiceKey, dest: DestKey, conf: DestConf) -> None:
    if dest.family is not service.family:
        raise InvalidConf(f"destination {dest} is not {service.family} like service {service}")
    if not 0 <= conf.weight <= MAX_WEIGHT:
        raise InvalidConf(f"weight out of range 0-{MAX_WEIGHT}: {conf.weight}")
    for name, value in (("upper", conf.upper), ("lower", conf.lower)):
        if not 0 <= value <= MAX_THRESHOLD:
            raise InvalidConf(f"{name} threshold out of range: {value}")
    if conf.lower > conf.upper:  # the kernel refuses this even when upper is 0 (no limit)
        raise InvalidConf(f"lower threshold {conf.lower} above upper threshold {conf.upper}")


def check_op(op: Op) -> None:
    """Raise InvalidConf for an op whose settings the kernel or ipvsadm would refuse (a delete
    has none to check). The memory and ipvsadm backends check an op with this before it is
    written; netlink checks the key the kernel will store (`kernel_dest_port`) as it encodes."""
    if isinstance(op, AddService | EditService):
        check_service(op.service, op.conf)
    elif isinstance(op, AddDest | EditDest):
        check_dest(op.service, op.dest, op.conf)


def canonical_service_conf(service: ServiceKey, conf: ServiceConf) -> ServiceConf:
    """The conf as a dump reports it back: no mask without persistence, no mask equal to the
    full-length default, one spelling of a mask."""
    netmask = None
    if conf.persistent is not None and conf.netmask is not None:
        netmask = canonical_netmask(service.family, conf.netmask)
        if netmask == full_netmask(service.family):
            netmask = None
    # the very conf when it is canonical already (the usual case): no copy per virtual kept by
    # the memory backend's table and the reconciler's (issue 22)
    return conf if netmask == conf.netmask else replace(conf, netmask=netmask)
