"""Checks through the VIP (issue 23): lvsmon's `checkpath` and `checkmarkbase` directives.

    checkpath     = real | vip | both      (global and per virtual; default real)
    checkmarkbase = N                      (global; default 0x4C560000 = 1280704512)

With `gate` (direct routing) and `ipip` (tunnel) forwarding a check of the real's own address
proves nothing about the path clients take: IPVS sends them packets addressed to the VIP, which
the real accepts only with the VIP on its loopback (or its tunnel up). `vip` sends the check to
VIP:checkport through a firewall-mark service of the real's own (a "probe service",
engine/probepath.py), so IPVS forwards it to exactly that real, the clients' way; `both` checks
both ways and says which one answers. Google Seesaw checks DSR/TUN backends the same way.

`path_of` is the one rule of which real gets which path: `masq` reals, ping and external checks,
UDP connect checks (a ping) and firewall-mark virtuals (no VIP to connect to) keep the real's
address. The probe services take marks from `checkmarkbase` up (PROBE_MARKS of them, reserved);
`problems` is the cross check of the built virtuals, FILE:LINE errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from lvsmon.config.model import CheckPath, CheckType, GlobalSettings, Real, Virtual, VirtualProtocol
from lvsmon.config.values import Invalid, Warn, integer, shorten, word
from lvsmon.ipvs.model import Forward, family_of

PROBE_MARKS: Final = 65536
"""Firewall marks reserved from checkmarkbase on: at most this many (real, forwarding) probe
services (Seesaw's block is 16,000; the largest published IPVS pool has 37,298 reals)."""

MAX_MARK: Final = 0xFFFFFFFF
MAX_BASE: Final = MAX_MARK - PROBE_MARKS + 1

# services whose check runs on lvsmon's own sockets (the prober: plain TCP, or TLS over it), so
# their connection can be steered; the library ones (smtp, ldap, sql, ftp) and UDP open their own
STEERABLE: Final = frozenset(
    {"http", "https", "http_proxy", "pop", "pops", "imap", "imaps", "nntp", "simpletcp"}
)

_VIA: Final = (Forward.GATE, Forward.IPIP)
_CONNECTING: Final = (CheckType.CONNECT, CheckType.NEGOTIATE, CheckType.COMBINED)


def parse_checkpath(value: str, warn: Warn) -> CheckPath:
    wanted = "checkpath must be real, vip or both"
    path = word(value, r"\w+", f"{wanted}, not {shorten(value)!r}", warn).lower()
    try:
        return CheckPath(path)
    except ValueError:
        raise Invalid(f"{wanted}, not {shorten(path)!r}") from None


def parse_markbase(value: str, warn: Warn) -> int:
    return integer(value, "checkmarkbase", warn, minimum=1, maximum=MAX_BASE)


def path_of(v: Virtual, r: Real) -> CheckPath:
    """Where the check of `r` in `v` goes: the virtual's checkpath where it can apply, else
    the real's own address."""
    path = v.checkpath
    if path is CheckPath.REAL or r.forward not in _VIA or v.address is None:
        return CheckPath.REAL
    ct = v.checktype
    if ct not in _CONNECTING or (ct is CheckType.CONNECT and v.protocol is VirtualProtocol.UDP):
        return CheckPath.REAL  # ping, external, on/off: not a connection to the service
    if family_of(r.address) != v.family:
        return CheckPath.REAL  # a 6-in-4 tunnel: not forwarded the clients' way here
    return path


def probe_needs(virtuals: Iterable[Virtual]) -> set[tuple[str, Forward]]:
    """The (real address, forwarding) pairs that need a probe service."""
    return {
        (r.address, r.forward)
        for v in virtuals
        if v.checkpath is not CheckPath.REAL
        for r in v.reals
        if path_of(v, r) is not CheckPath.REAL
    }


def _unsteerable(v: Virtual) -> str | None:
    """Why `v`'s checks cannot go through the VIP, or None."""
    if v.checktype is CheckType.CONNECT:
        return None
    if v.protocol is VirtualProtocol.UDP:
        return f"service={v.service} over UDP"
    if str(v.service) not in STEERABLE and str(v.service) != "none":
        return f"service={v.service} (its library opens its own connection)"
    return None


def problems(g: GlobalSettings, virtuals: Sequence[Virtual]) -> list[tuple[int, str]]:
    """(line, message) for each checkpath that cannot be done as written."""
    out: list[tuple[int, str]] = []
    using = False
    for v in virtuals:
        if v.checkpath is CheckPath.REAL:
            continue
        if v.protocol is VirtualProtocol.FWM:
            out.append(
                (
                    v.line,
                    f"checkpath={v.checkpath} needs the virtual's address to connect to; "
                    f"{v.name} is a firewall mark: set checkpath=real in it",
                )
            )
            continue
        if not any(path_of(v, r) is not CheckPath.REAL for r in v.reals):
            continue
        using = True
        why = _unsteerable(v)
        if why is not None:
            out.append(
                (
                    v.line,
                    f"checkpath={v.checkpath}: {why} cannot be checked through the VIP; "
                    "set checkpath=real in this virtual",
                )
            )
    if not using:
        return out
    base = g.checkmarkbase
    last = base + PROBE_MARKS - 1
    for v in virtuals:
        if v.protocol is VirtualProtocol.FWM and base <= v.fwmark <= last:
            out.append(
                (
                    v.line,
                    f"firewall mark {v.fwmark} lies in the marks reserved for probe services "
                    f"(checkmarkbase {base}..{last}): move checkmarkbase or this virtual",
                )
            )
    count = len(probe_needs(virtuals))
    if count > PROBE_MARKS:
        out.append(
            (
                0,
                f"checkpath: {count} reals need a probe service, more than the {PROBE_MARKS} "
                "marks checkmarkbase reserves",
            )
        )
    return out
