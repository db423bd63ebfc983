"""The IPVS table as lvsmon sees it: value keys, per-service and per-destination settings.

Identity (keys) and configuration (conf) are separate frozen values, so two tables compare equal
exactly when the kernel would behave the same; connection counters never enter equality.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from lvsmon.addr import host_port


class Family(enum.StrEnum):
    INET = "inet"
    INET6 = "inet6"


class Proto(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Forward(enum.StrEnum):
    GATE = "gate"  # direct routing, ipvsadm -g
    MASQ = "masq"  # NAT, ipvsadm -m
    IPIP = "ipip"  # tunnel, ipvsadm -i


def canonical_address(address: str) -> str:
    """The one spelling of an address used in keys (no brackets, compressed IPv6)."""
    if _plain_ipv4(address):
        return address  # the common case, already canonical: no ipaddress object (issue 22)
    return str(ipaddress.ip_address(address.strip("[]")))


def _plain_ipv4(address: str) -> bool:
    """A dotted quad as ipaddress spells it: four decimal numbers up to 255, no leading zero."""
    parts = address.split(".")
    if len(parts) != 4:
        return False
    for part in parts:
        if not (0 < len(part) <= 3 and part.isascii() and part.isdigit()):
            return False
        if (part[0] == "0" and len(part) > 1) or int(part) > 255:
            return False
    return True


def family_of(address: str) -> Family:
    """The family of a canonical address (keys hold nothing else)."""
    return Family.INET6 if ":" in address else Family.INET


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """A virtual service: (family, protocol, address, port) or (family, fwmark)."""

    family: Family
    protocol: Proto | None = None  # None for an fwmark service
    address: str | None = None
    port: int = 0
    fwmark: int = 0

    def __post_init__(self) -> None:
        if self.fwmark:
            if self.protocol is not None or self.address is not None or self.port:
                raise ValueError("an fwmark service has no protocol, address or port")
        else:
            if self.protocol is None or self.address is None:
                raise ValueError("a service needs a protocol and an address, or an fwmark")
            if canonical_address(self.address) != self.address:
                raise ValueError(f"address not canonical: {self.address!r}")
            if family_of(self.address) != self.family:
                raise ValueError(f"address {self.address} is not {self.family}")
            if not 0 <= self.port <= 65535:
                raise ValueError(f"port out of range: {self.port}")

    @classmethod
    def inet(cls, protocol: Proto | str, address: str, port: int) -> ServiceKey:
        addr = canonical_address(address)
        return cls(family_of(addr), Proto(protocol), addr, port)

    @classmethod
    def fwm(cls, fwmark: int, family: Family | str = Family.INET) -> ServiceKey:
        return cls(Family(family), None, None, 0, fwmark)

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwm:{self.fwmark}" + ("/inet6" if self.family is Family.INET6 else "")
        assert self.address is not None and self.protocol is not None
        return f"{self.protocol}:{host_port(self.address, self.port)}"


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    """A destination (real server) inside one service."""

    address: str
    port: int

    def __post_init__(self) -> None:
        if canonical_address(self.address) != self.address:
            raise ValueError(f"address not canonical: {self.address!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")

    @classmethod
    def of(cls, address: str, port: int) -> DestKey:
        return cls(canonical_address(address), port)

    @property
    def family(self) -> Family:
        return family_of(self.address)

    def __str__(self) -> str:
        return host_port(self.address, self.port)


@dataclass(frozen=True, slots=True)
class ServiceConf:
    """What can be changed on a service in place (ipvsadm -E)."""

    scheduler: str = "wlc"
    sched_flags: frozenset[str] = frozenset()  # e.g. {"sh-port", "sh-fallback"}
    persistent: int | None = None  # persistence timeout in seconds; None = not persistent
    netmask: str | None = None  # persistence netmask: dotted quad (inet) or prefix length (inet6)
    ops: bool = False  # one-packet scheduling (UDP)


@dataclass(frozen=True, slots=True)
class DestConf:
    """What can be changed on a destination in place (ipvsadm -e)."""

    forward: Forward = Forward.GATE
    weight: int = 1
    upper: int = 0  # upper connection threshold (0 = none)
    lower: int = 0  # lower connection threshold


@dataclass(frozen=True, slots=True)
class DestStats:
    """Read-only counters from a dump; never part of a table's equality."""

    active_conns: int = 0
    inactive_conns: int = 0


# a destination's counters before any dump, or without any in it
NO_STATS = DestStats()


@dataclass(slots=True)
class Service:
    conf: ServiceConf
    dests: dict[DestKey, DestConf] = field(default_factory=dict)
    # the counters a dump gave, per destination; one missing has none (NO_STATS): the memory
    # backend keeps no entry for the destinations it adds (some 90 bytes a real at 37,298)
    stats: dict[DestKey, DestStats] = field(default_factory=dict, compare=False)


Table = dict[ServiceKey, Service]
"""A whole IPVS table (or the part of one that a caller cares about)."""


def kernel_dest_port(service: ServiceKey, dest: DestKey, forward: Forward) -> DestKey:
    """The destination key the kernel will store: for direct routing and tunnelling on a
    non-fwmark service the real port is forced to the virtual port (only NAT can map ports)."""
    if service.is_fwmark or forward is Forward.MASQ or dest.port == service.port:
        return dest
    return DestKey(dest.address, service.port)
