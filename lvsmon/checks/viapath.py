"""Checks through the VIP (checkpath=vip|both, issue 23): the socket side.

A check of a gate/ipip real with `checkpath=vip` connects to VIP:checkport instead of the
real's own address, from a socket that carries the real's probe mark (SO_MARK) and is bound to
the director's own address toward the real. The mark makes IPVS forward it through the real's
probe service (engine/probepath.py) to exactly that real, the clients' way; the bind makes the
real answer to the director rather than to the VIP, which the real holds itself. Everything
after the connect (every negotiate dialogue, TLS, Host and SNI from virtualhost) is unchanged:
the prober has its plan's `Route` steer the new socket in its one connect (prober.py
`_connect`), and the checks that cannot run there are refused by check-config
(config/checkpathconf.py).

`both` runs the check both ways at once and gives the VIP path's verdict (the path clients
take), with a reason that says what the difference means (`combined`).

The marks are the engine's: it publishes them (`use_marks`) whenever it plans the probe
services, before any check runs; a check of a real without one fails and says so.
"""

from __future__ import annotations

import _socket
import asyncio
import dataclasses
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, describe_error

SO_MARK: Final = getattr(socket, "SO_MARK", 36)
# bind without taking a port yet (Linux >= 4.2): connect picks it by the whole 4-tuple. A bind to
# (address, 0) searches a free port at once, past every TIME_WAIT socket of earlier checks: in the
# VM at 200 checks a second that made a check through the VIP cost 1.75 x one to the real
IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# how long the director's source address toward a real is reused: a route rarely changes, and a
# bind to a source that went away fails and drops it at once; at 10 s every other check at a 5 s
# interval paid a datagram socket's four system calls for the lookup
SOURCE_TTL_S: Final = 300.0

RIP_ONLY: Final = (
    "answers on its own address but not through the VIP: VIP missing on its loopback, "
    "tunnel down, or rp_filter"
)
VIP_ONLY: Final = "answers only through the VIP (service bound to the VIP)"

_marks: dict[tuple[str, str], int] = {}
_sources: dict[str, tuple[str, float]] = {}
# bumped whenever a mark or a source may have changed: a Route computed before is stale
_epoch = 0


def use_marks(marks: Mapping[tuple[str, str], int]) -> None:
    """The probe marks by (real address, forwarding) from now on (the engine's plan)."""
    global _marks, _epoch
    _marks = dict(marks)
    _epoch += 1


def _forget_source(address: str) -> None:
    """A bind to the source toward `address` failed: look it up again at the next check."""
    global _epoch
    _sources.pop(address, None)
    _epoch += 1


def mark_of(address: str, forward: str) -> int | None:
    """The probe mark of the real at `address` with `forward` ("gate", "ipip"), if it has one."""
    return _marks.get((address, forward))


def source_toward(address: str, family: int, avoid: str = "") -> str:
    """The director's own address the kernel would send from toward `address` (`ip route get`):
    a datagram socket's connect picks the route and sends nothing. Never `avoid` (the VIP) where
    another address can be had: IPv6's source selection prefers the VIP, a /128 on the same
    interface, to the director's /64 (Linux caps the prefix match at each address's own prefix
    length), and the real would answer a probe from the VIP to itself."""
    now = time.monotonic()
    hit = _sources.get(address)
    if hit is not None and now - hit[1] < SOURCE_TTL_S:
        return hit[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((address, 9))
        source = str(probe.getsockname()[0])
    if family == socket.AF_INET6 and avoid and _same(source, avoid):
        source = other_source6(address, source) or source
    _sources[address] = (source, now)
    return source


IF_INET6: Final = "/proc/net/if_inet6"
# IFA_F_* that make an address no source: dad failed, deprecated, tentative
_UNUSABLE6: Final = 0x08 | 0x20 | 0x40


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def other_source6(real: str, vip: str, table: str = IF_INET6) -> str | None:
    """Another usable global address on the interface that holds `vip`, one whose own prefix
    holds `real` (the longest such prefix), or else any that is not a /128; None: none."""
    try:
        with open(table, encoding="ascii") as f:
            rows = [line.split() for line in f]
    except OSError:
        return None
    target, avoid = ipaddress.IPv6Address(real), ipaddress.IPv6Address(vip)
    parsed = []
    for row in rows:
        if len(row) != 6:
            continue
        addr = ipaddress.IPv6Address(int(row[0], 16))
        parsed.append((addr, int(row[2], 16), int(row[3], 16), int(row[4], 16), row[5]))
    devices = {dev for addr, _, _, _, dev in parsed if addr == avoid}
    best: tuple[int, ipaddress.IPv6Address] | None = None
    for addr, plen, scope, flags, dev in parsed:
        if dev not in devices or addr == avoid or scope != 0 or flags & _UNUSABLE6:
            continue
        holds = target in ipaddress.IPv6Network((addr, plen), strict=False)
        rank = 256 + plen if holds else (0 if plen == 128 else plen)
        if rank and (best is None or rank > best[0]):
            best = (rank, addr)
    return None if best is None else str(best[1])


_SOL_SOCKET: Final = socket.SOL_SOCKET
_IPPROTO_IP: Final = socket.IPPROTO_IP


class Route:
    """How one check job's sockets are steered: its mark, the address its sockets bind to and
    the one they connect to, computed once and reused until a mark or a source may have
    changed (`_epoch`) or the source's SOURCE_TTL_S ran out. The prober keeps one per plan: a
    check then costs the three system calls and no look-up (issue 23's cost target)."""

    __slots__ = ("addr", "bind", "epoch", "mark", "spec", "until")

    def __init__(self, spec: CheckSpec) -> None:
        self.spec = spec
        self.epoch = -1  # computed at the first check
        self.until = 0.0
        self.mark = 0
        self.bind: tuple[str, int] = ("", 0)
        self.addr: tuple[str, int] = (spec.pathvip, spec.port)

    def steer(self, sock: _socket.socket, now: float) -> tuple[str, int]:
        """Mark and bind a new socket so that its connect goes through the probe service of
        the spec's real; the address to connect to. CheckFailed when it cannot. `now`: the
        time.monotonic() the caller read already (the prober's start of the check): a clock
        read is a system call where the vDSO has no usable clock (the VM's HPET: 6-10 % of
        the daemon's samples at 200 checks a second, some 2 % of a check each)."""
        if self.epoch != _epoch or now >= self.until:
            self._compute(sock.family)
        try:
            sock.setsockopt(_SOL_SOCKET, SO_MARK, self.mark)
            sock.setsockopt(_IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind(self.bind)
        except OSError as exc:
            _forget_source(self.spec.host)  # a stale source: look it up again next time
            raise CheckFailed(f"connect through the VIP: {describe_error(exc)}") from None
        return self.addr

    def _compute(self, family: int) -> None:
        spec = self.spec
        epoch = _epoch  # before the look-ups: a change meanwhile makes the next check redo them
        mark = mark_of(spec.host, spec.pathforward)
        if mark is None:
            raise CheckFailed(f"connect: no probe service for {spec.host} ({spec.pathforward}) yet")
        try:
            source = source_toward(spec.host, family, spec.pathvip)
        except OSError as exc:
            raise CheckFailed(f"connect through the VIP: {describe_error(exc)}") from None
        self.mark = mark
        self.bind = (source, 0)
        self.until = _sources.get(spec.host, (source, time.monotonic()))[1] + SOURCE_TTL_S
        self.epoch = epoch


def on_path(spec: CheckSpec, path: str) -> CheckSpec:
    """`spec` checked one way only ("real" or "vip")."""
    return CheckSpec(
        spec.kind, spec.host, spec.port, spec.timeout,
        settings=dataclasses.replace(spec.settings, checkpath=path),
    )  # fmt: skip


def combined(rip: CheckResult, vip: CheckResult) -> CheckResult:
    """`both`: the VIP path's verdict, the reason saying which way answers."""
    received = max(rip.received, vip.received)
    latency = max(rip.latency_s, vip.latency_s)
    # the same real's certificate either way (sslexpirywarn): whichever path read it
    cert = vip.cert_not_after if vip.cert_not_after is not None else rip.cert_not_after
    if rip.ok == vip.ok:
        reason = vip.reason if vip.ok else f"{rip.reason}; through the VIP: {vip.reason}"
        return CheckResult(vip.ok, reason, latency, vip.timed_out, received, cert_not_after=cert)
    if rip.ok:
        reason = f"{RIP_ONLY} ({vip.reason})"
        return CheckResult(False, reason, latency, vip.timed_out, received, cert_not_after=cert)
    return CheckResult(
        True,
        f"{VIP_ONLY}; on its own address: {rip.reason}",
        latency,
        False,
        received,
        cert_not_after=cert,
    )


async def check_both(
    spec: CheckSpec, run: Callable[[CheckSpec], Awaitable[CheckResult]]
) -> CheckResult:
    """Run `spec` on its real's address and through the VIP at once (`run`: run_check)."""
    rip, vip = await asyncio.gather(run(on_path(spec, "real")), run(on_path(spec, "vip")))
    return combined(rip, vip)
