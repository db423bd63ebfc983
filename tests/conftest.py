"""Suite-wide guard: tests resolve names only through /etc/hosts.

The machines this runs on have a non-loopback nameserver in /etc/resolv.conf, and tests may talk
to loopback only; so a lookup of a name /etc/hosts does not have (a fuzzed config, a typo) must
fail here instead of sending a DNS query. Subprocesses get the same rule via LVSMON_RESOLVER.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

os.environ["LVSMON_RESOLVER"] = "files"

if os.environ.get("LVSMON_IN_VM"):
    # the VM sees the repository read-only: hypothesis must not try to keep its example database
    from hypothesis import settings

    settings.register_profile("vm", database=None)
    settings.load_profile("vm")

_real_getaddrinfo = socket.getaddrinfo
_real_getnameinfo = socket.getnameinfo


def _hosts() -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    try:
        with open("/etc/hosts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                for name in fields[1:]:
                    names.setdefault(name.lower(), []).append(fields[0])
    except OSError:
        pass
    return names


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or _is_literal(host) or host.lower() in _hosts():
        return _real_getaddrinfo(host, *args, **kwargs)
    raise socket.gaierror(socket.EAI_NONAME, f"{host}: not in /etc/hosts (tests never use DNS)")


def _guarded_getnameinfo(sockaddr: Any, flags: int) -> Any:
    address = sockaddr[0]
    if any(address in addrs for addrs in _hosts().values()) or not flags & socket.NI_NAMEREQD:
        if any(address in addrs for addrs in _hosts().values()):
            return _real_getnameinfo(sockaddr, flags)
        return (address, str(sockaddr[1]))
    raise socket.gaierror(socket.EAI_NONAME, f"{address}: not in /etc/hosts (tests never use DNS)")


@pytest.fixture(autouse=True, scope="session")
def _no_dns() -> Iterator[None]:
    socket.getaddrinfo = _guarded_getaddrinfo
    socket.getnameinfo = _guarded_getnameinfo
    try:
        yield
    finally:
        socket.getaddrinfo = _real_getaddrinfo
        socket.getnameinfo = _real_getnameinfo
