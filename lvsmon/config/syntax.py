"""The shapes of the structured values: ``virtual=``, ``real=`` and ``fallback=`` lines.

Only syntax here; names are resolved later (resolve.py) because a port name can only be looked up
once the virtual's protocol is known, which may be set by a line further down the block.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from lvsmon.config.values import Invalid, Warn, decimal, shorten
from lvsmon.ipvs.model import Forward

FORWARDS = {"gate": Forward.GATE, "masq": Forward.MASQ, "ipip": Forward.IPIP}
MAX_WEIGHT = 65535
MAX_THRESHOLD = 2**32 - 1
MAX_FWMARK = 2**32 - 1

_PORT = r"[A-Za-z0-9_-]+"
_HOST = r"[A-Za-z0-9._-]+"
_V6 = r"\[[0-9A-Fa-f:.]+\]"


@dataclass(frozen=True, slots=True)
class VirtualSpec:
    host: str | None  # None for a firewall mark; IPv6 literals keep their brackets
    port: str | None  # a number or a service name
    fwmark: int | None


@dataclass(frozen=True, slots=True)
class RealSpec:
    host: str
    last_host: str | None  # the end of an a->b range
    port: str | None
    forward: Forward
    weight: int
    request: str | None
    receive: str | None
    lower: int
    upper: int


@dataclass(frozen=True, slots=True)
class FallbackSpec:
    host: str
    port: str | None
    forward: Forward


def _looks_like_bare_ipv6(text: str) -> bool:
    return not text.startswith("[") and text.count(":") >= 2


def _bracket_hint(text: str) -> Invalid:
    return Invalid(
        f"IPv6 addresses must be written in brackets, e.g. [2001:db8::1]:80 (got {text!r})"
    )


_VIRTUAL_V6 = re.compile(rf"({_V6}):({_PORT})(.*)\Z", re.S)
_VIRTUAL_HOST = re.compile(rf"([A-Za-z0-9._+-]+):({_PORT})(.*)\Z", re.S)
_VIRTUAL_FWM = re.compile(r"(\d+)(.*)\Z", re.S)


def parse_virtual(value: str, inet6: bool, warn: Warn) -> VirtualSpec:
    name = "virtual6" if inet6 else "virtual"
    if m := _VIRTUAL_V6.match(value):
        if not inet6:
            raise Invalid('cannot specify an IPv6 address here; please use "virtual6" instead')
        host, port, rest = m.groups()
    elif _looks_like_bare_ipv6(value.split()[0] if value.split() else value):
        raise _bracket_hint(value)
    elif m := _VIRTUAL_HOST.match(value):
        host, port, rest = m.groups()
    elif m := _VIRTUAL_FWM.match(value):
        mark, rest = decimal(m.group(1), "firewall mark"), m.group(2)
        if rest and not rest[0].isspace():
            raise Invalid(f"invalid address for {name}: {value!r}")
        if not 1 <= mark <= MAX_FWMARK:
            raise Invalid(f"firewall mark must be 1..{MAX_FWMARK}, not {mark}")
        if rest.strip():
            warn(f"ignoring trailing text {rest.strip()!r}")
        return VirtualSpec(None, None, mark)
    else:
        raise Invalid(
            f"invalid address for {name}: expected ip:port, "
            + ("[ipv6]:port, " if inet6 else "")
            + f"hostname:port or a firewall mark, not {value!r}"
        )
    if rest.strip():
        warn(f"ignoring trailing text {rest.strip()!r}")
    elif rest:
        pass
    return VirtualSpec(host, port, None)


_REAL_ADDR = rf"{_V6}|{_HOST}"
_REAL = re.compile(
    rf"(?P<a>{_REAL_ADDR})(?:->(?P<b>{_REAL_ADDR}))?(?::(?P<port>{_PORT}))?(?:\s+(?P<rest>.*))?\Z",
    re.S,
)
_WEIGHT = re.compile(r"\s+(\d+)(.*)\Z", re.S)
# Two double-quoted strings separated by a comma or a space, matched greedily as ldirectord does.
_CHECK_STRINGS = re.compile(r'\s+"(.*)"[, ]\s*"(.*)"(.*)\Z', re.S)
_THRESHOLD = re.compile(r"\s+([lu]):(\d+)(.*)\Z", re.S)


def parse_real(value: str, warn: Warn) -> RealSpec:
    first = value.split()[0] if value.split() else value
    if _looks_like_bare_ipv6(first.split("->")[0]):
        raise _bracket_hint(first)
    m = _REAL.match(value)
    if m is None:
        raise Invalid(
            "invalid real server line: expected "
            '<address>[-><address>][:<port>] gate|masq|ipip [<weight>] ["<request>", "<receive>"] '
            "[l:<lower>] [u:<upper>]"
        )
    rest = m.group("rest") or ""
    fm = re.match(r"(\w+)(.*)\Z", rest, re.S)
    if fm is None or fm.group(1) not in FORWARDS:
        got = f" (got {fm.group(1)!r})" if fm is not None else ""
        raise Invalid(f"forward method must be gate, masq or ipip{got}")
    forward = FORWARDS[fm.group(1)]
    rest = fm.group(2)
    weight = 1
    if wm := _WEIGHT.match(rest):
        weight = decimal(wm.group(1), "weight")
        if weight > MAX_WEIGHT:
            raise Invalid(f"weight must be 0..{MAX_WEIGHT}, not {weight}")
        rest = wm.group(2)
    request: str | None = None
    receive: str | None = None
    if cm := _CHECK_STRINGS.match(rest):
        request, receive, rest = cm.group(1), cm.group(2), cm.group(3)
        if re.fullmatch(r"[lu]:\d+", request) and re.fullmatch(r"[lu]:\d+", receive):
            raise Invalid(
                f"thresholds are written bare, not quoted: {request} {receive} (ldirectord also "
                "rejects the quoted form its manual shows)"
            )
        request = normalise_request(request)
    thresholds: dict[str, int] = {}
    while tm := _THRESHOLD.match(rest):
        kind, rest = tm.group(1), tm.group(3)
        number = decimal(tm.group(2), "lower threshold" if kind == "l" else "upper threshold")
        if kind in thresholds:
            raise Invalid(f"{kind}: given twice")
        if number > MAX_THRESHOLD:
            raise Invalid(f"{kind}:{number} is out of range (0..{MAX_THRESHOLD})")
        thresholds[kind] = number
    if rest.strip():
        hint = ""
        if re.search(r'"[lu]:', rest):
            hint = " (connection thresholds are written bare: l:10 u:100, without quotes)"
        raise Invalid(f'invalid real server line, around "{rest.strip()}"{hint}')
    lower, upper = thresholds.get("l", 0), thresholds.get("u", 0)
    if upper and lower > upper:
        raise Invalid(f"lower threshold l:{lower} is above upper threshold u:{upper}")
    return RealSpec(
        m.group("a"), m.group("b"), m.group("port"), forward, weight, request, receive, lower, upper
    )


def normalise_request(request: str) -> str:
    """ldirectord puts a "/" in front of a request that lacks one; an absolute URL is kept as
    written (ldirectord would prefix it too and then strip it again in the check)."""
    if request.startswith("/") or re.match(r"https?://", request):
        return request
    return "/" + request


_FALLBACK_V6 = re.compile(rf"({_V6})(?::({_PORT}))?\Z")
_FALLBACK_HOST = re.compile(rf"({_HOST})(?::({_PORT}))?\Z")


def parse_fallback(value: str) -> FallbackSpec:
    parts = value.split()
    if not parts or len(parts) > 2:
        raise Invalid(
            f"invalid fallback server: expected <address>[:<port>] [gate|masq|ipip], not {value!r}"
        )
    forward = Forward.GATE
    if len(parts) == 2:
        if parts[1] not in FORWARDS:
            raise Invalid(f"forward method must be gate, masq or ipip (got {parts[1]!r})")
        forward = FORWARDS[parts[1]]
    target = parts[0]
    if m := _FALLBACK_V6.match(target):
        return FallbackSpec(m.group(1), m.group(2), forward)
    if _looks_like_bare_ipv6(target):
        try:
            ipaddress.IPv6Address(target)
        except ValueError:
            raise _bracket_hint(target) from None
        return FallbackSpec(target, None, forward)  # a bare literal cannot carry a port
    if m := _FALLBACK_HOST.match(target):
        return FallbackSpec(m.group(1), m.group(2), forward)
    raise Invalid(f"invalid fallback server: {value!r}")


@dataclass(frozen=True, slots=True)
class SmtpSpec:
    host: str  # IPv6 literals without their brackets: what a socket connect takes
    port: int | None  # None: not written (the default, 25, applies)


# ldirectord's own pattern for the host (no IPv6 literal, no port); lvsmon adds ":port" and
# "[v6]:port". A port is a number: a relay's port is not looked up by service name.
_SMTP_HOST = re.compile(r"([0-9A-Za-z._+-]+)(?::(\S*))?(.*)\Z", re.S)
_SMTP_V6 = re.compile(r"\[([^\]]*)\](?::(\S*))?(.*)\Z", re.S)
MAX_PORT = 65535


def parse_smtp(value: str, warn: Warn) -> SmtpSpec:
    """``smtp = host[:port]``, ``[ipv6][:port]`` or a bare IPv6 literal (no port)."""
    first = value.split()[0] if value.split() else value
    if _looks_like_bare_ipv6(first) and not first.startswith("["):
        try:
            ipaddress.IPv6Address(first)
        except ValueError:
            raise _bracket_hint(first) from None
        host, port, rest = first, None, value[len(first) :]
    elif m := _SMTP_V6.match(value):
        host, port, rest = m.groups()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(
                f"invalid SMTP server address: [{shorten(host, 40)}] is not an IPv6 address"
            ) from None
    elif m := _SMTP_HOST.match(value):
        host, port, rest = m.groups()
    else:
        raise Invalid("invalid SMTP server address: expected host, host:port or [ipv6]:port")
    if rest.strip():
        warn(f"ignoring trailing text {rest.strip()!r}")
    if port is None:
        return SmtpSpec(host, None)
    if not port.isdigit() or not port.isascii():
        raise Invalid(f"invalid SMTP port {shorten(port)!r}: a number 1..{MAX_PORT} is required")
    number = decimal(port, "SMTP port")
    if not 1 <= number <= MAX_PORT:
        raise Invalid(f"invalid SMTP port {number}: a number 1..{MAX_PORT} is required")
    return SmtpSpec(host, number)
