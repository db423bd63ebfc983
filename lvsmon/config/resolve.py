"""Hostnames and service names → address literals and port numbers, once per load.

Like ldirectord: getaddrinfo restricted to the virtual's address family, first answer wins;
service names through getservbyname. Unlike ldirectord, a string made only of digits and dots
must be a real dotted quad: getaddrinfo would read "10.1" as 10.0.0.1.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Protocol

from lvsmon.config.values import shorten, small_int
from lvsmon.ipvs.model import Family


class Resolver(Protocol):
    def host(self, name: str, family: Family) -> str | None:
        """A canonical address literal of ``family`` for ``name``, or None."""
        ...

    def port(self, name: str, protocol: str | None) -> int | None:
        """The port for a number or a service name, or None."""
        ...


class NotAnAddress(ValueError):
    pass


# an IPv4 address already in its canonical spelling (no leading zeros): ipaddress would give
# it back unchanged, so the usual real server costs a regex match instead of a parse
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def literal(name: str, family: Family) -> str | None:
    """The canonical form of an address literal, None if ``name`` is not a literal at all.
    Raises NotAnAddress for a literal of the wrong family or a malformed dotted quad."""
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if family is Family.INET and _CANONICAL_V4.fullmatch(bare) is not None:
        return bare
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        if re.fullmatch(r"[\d.]+", bare) or name.startswith("["):
            raise NotAnAddress(f"{shorten(name)} is not a valid IP address") from None
        return None
    want = 6 if family is Family.INET6 else 4
    if addr.version != want:
        raise NotAnAddress(f"{bare} is not an IPv{want} address")
    return str(addr)


HOSTS_FILE = "/etc/hosts"


def files_only() -> bool:
    """LVSMON_RESOLVER=files: names come from /etc/hosts only, never from DNS (air-gapped
    directors; the test suite, whose machines have a resolver off loopback)."""
    return os.environ.get("LVSMON_RESOLVER", "") == "files"


def _hosts_entries() -> list[list[str]]:
    """/etc/hosts as (address, name, ...) lists, comments dropped; none when it is unreadable."""
    try:
        with open(HOSTS_FILE, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return []
    entries = (line.split("#", 1)[0].split() for line in lines)
    return [fields for fields in entries if len(fields) >= 2]


def hosts_file_lookup(name: str, af: int) -> str | None:
    want = 6 if af == socket.AF_INET6 else 4
    for fields in _hosts_entries():
        if name.lower() not in (n.lower() for n in fields[1:]):
            continue
        try:
            addr = ipaddress.ip_address(fields[0].split("%", 1)[0])
        except ValueError:
            continue
        if addr.version == want:
            return str(addr)
    return None


def hosts_file_name(address: str) -> str | None:
    """The first name /etc/hosts gives an address (reverse lookup without DNS)."""
    for fields in _hosts_entries():
        if fields[0] == address:
            return fields[1]
    return None


class SystemResolver:
    """The host's resolver (/etc/hosts, DNS, /etc/services), with a cache per instance."""

    def __init__(self) -> None:
        self._hosts: dict[tuple[str, Family], str | None] = {}
        self._ports: dict[tuple[str, str | None], int | None] = {}

    def host(self, name: str, family: Family) -> str | None:
        key = (name, family)
        if key not in self._hosts:
            self._hosts[key] = self._lookup_host(name, family)
        return self._hosts[key]

    @staticmethod
    def _lookup_host(name: str, family: Family) -> str | None:
        af = socket.AF_INET6 if family is Family.INET6 else socket.AF_INET
        if files_only():
            return hosts_file_lookup(name, af)
        try:
            infos = socket.getaddrinfo(name, None, af, socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            return None
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                continue
        return None

    def port(self, name: str, protocol: str | None) -> int | None:
        key = (name, protocol)
        if key not in self._ports:
            self._ports[key] = self._lookup_port(name, protocol)
        return self._ports[key]

    @staticmethod
    def _lookup_port(name: str, protocol: str | None) -> int | None:
        if name.isdigit():
            number = small_int(name)
            return number if number is not None and number <= 65535 else None
        try:
            if protocol in ("tcp", "udp"):
                return socket.getservbyname(name, protocol)
            return socket.getservbyname(name)
        except (OSError, UnicodeError, ValueError):
            return None
