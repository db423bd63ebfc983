"""What the director's kernel must allow for checks through the VIP (issue 23): checked by
check-config and at start, not assumed.

The answer to a check through the VIP comes from the VIP (the real answers as it answers
clients) to the director's own address, on the interface toward the real. The VIP is a local
address of the director, so the kernel drops that packet as a martian source unless
`accept_local` is on for the interface (`net.ipv4.conf.all.accept_local` or the interface's:
the kernel ORs them), and strict reverse-path filtering drops it too (`rp_filter` 1; the
kernel uses the larger of `all` and the interface's value, so both must be 0 or 2). Seesaw sets
the same two (ncc/sysctl.go). IPv6 has neither check, so only IPv4 reals are looked at.

The interface toward a real is the kernel's route to it (`ip route get`). Both the /proc root
and the route lookup are parameters, so that the host tests can stand in for any director.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from lvsmon.config.checkpathconf import path_of
from lvsmon.config.errors import ConfigError, Diagnostic
from lvsmon.config.model import CheckPath, Config

DevToward = Callable[[str], str | None]

PROC: Final = "/proc"


def route_dev(address: str) -> str | None:
    """The interface the kernel routes `address` through; None when it has no route."""
    from pyroute2 import IPRoute  # heavy: loaded only when a config checks through the VIP

    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=address)
        except Exception:  # NetlinkError: no route; an unreachable real is the check's to say
            return None
        if not routes:
            return None
        index = routes[0].get_attr("RTA_OIF")
        if index is None:
            return None
        links = ipr.get_links(index)
        return str(links[0].get_attr("IFLA_IFNAME")) if links else None


def _sysctl(proc: str, dev: str, name: str) -> int | None:
    try:
        with open(os.path.join(proc, "sys/net/ipv4/conf", dev, name), encoding="ascii") as f:
            return int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None


def problems(
    config: Config, *, proc: str | None = None, dev_toward: DevToward | None = None
) -> list[tuple[int, str]]:
    """(line, message) for each sysctl that keeps the answers through the VIP from arriving,
    once per interface and setting, at the first virtual that needs it."""
    proc = PROC if proc is None else proc
    dev_toward = route_dev if dev_toward is None else dev_toward
    out: list[tuple[int, str]] = []
    told: set[tuple[str, str]] = set()
    devs: dict[str, str | None] = {}
    for v in config.virtuals:
        if v.checkpath is CheckPath.REAL:
            continue
        for r in v.reals:
            if path_of(v, r) is CheckPath.REAL or ":" in r.address:
                continue
            if r.address not in devs:
                devs[r.address] = dev_toward(r.address)
            dev = devs[r.address]
            if dev is None:
                continue
            for key, message in _dev_problems(proc, dev, r.address):
                if key not in told:
                    told.add(key)
                    out.append((v.line, f"checkpath={v.checkpath} needs {message}"))
    return out


def diagnostics(config: Config) -> list[str]:
    """problems() as check-config and start print them: FILE:LINE: message."""
    return [f"{config.path}:{line}: {message}" for line, message in problems(config)]


def parse_ready(
    parse: Callable[[bytes, str], Config],
    *,
    proc: str | None = None,
    dev_toward: DevToward | None = None,
) -> Callable[[bytes, str], Config]:
    """`parse` that also refuses a config whose checks through the VIP the kernel would drop
    (ConfigError, file:line each): what start refuses, a reload refuses too, and the running
    config stays. The sysctls are the machine's, not the file's: once fixed, a reload (or a
    change of the file) applies it."""

    def parse_checked(data: bytes, path: str) -> Config:
        config = parse(data, path)
        if found := problems(config, proc=proc, dev_toward=dev_toward):
            raise ConfigError(Diagnostic(config.path, line, message) for line, message in found)
        return config

    return parse_checked


def _dev_problems(proc: str, dev: str, real: str) -> list[tuple[tuple[str, str], str]]:
    found: list[tuple[tuple[str, str], str]] = []
    every = _sysctl(proc, "all", "accept_local")
    own = _sysctl(proc, dev, "accept_local")
    if every is None and own is None:
        return found  # no IPv4 configuration to read (not Linux, no /proc): nothing to say
    if not (every or own):
        name = f"net.ipv4.conf.{dev}.accept_local"
        found.append(
            (
                (dev, "accept_local"),
                f"{name}=1 (it is 0): the answer through the VIP comes from the VIP, a local "
                f"address, and is dropped as a martian on {dev} toward {real}; "
                f"fix: sysctl -w {name}=1",
            )
        )
    for scope in ("all", dev):
        if _sysctl(proc, scope, "rp_filter") == 1:
            name = f"net.ipv4.conf.{scope}.rp_filter"
            found.append(
                (
                    (scope, "rp_filter"),
                    f"rp_filter 0 or 2 on {dev} toward {real} ({name} is 1, strict: the "
                    f"answer from the VIP fails the reverse-path check); fix: sysctl -w {name}=2",
                )
            )
    return found
