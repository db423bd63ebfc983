"""The BGP announcement directives (lvsmon's own; ldirectord has none and rejects them).

Global only (one routing daemon per director):

    bgp           = no | bird | exabgp      the speaker lvsmon drives (default no)
    bgptable      = 1..4294967295           kernel table of the routes BIRD learns (default 200;
                                            not 253, 254, 255: default, main, local)
    bgpprotocol   = 5..255                  the routes' protocol number (default 201)
    bgpdrain      = 0..20                   seconds of GRACEFUL_SHUTDOWN before the withdrawal
                                            at a graceful stop (default 5)
    bgprequire    = all | any               a VIP shared by several virtuals is announced when
                                            all of them (default) or any of them may announce
    bgpexabgpconf = FILE                    ExaBGP's neighbour blocks (required with exabgp)

Global and per virtual (a virtual's line wins):

    bgp           = no                      (in a virtual) this virtual is never counted
    bgpmed        = 0..4294967294           MED of the VIP (default 100); the worst (highest)
                                            of a VIP's virtuals is used
    bgpminup      = N | SHARE               healthy reals a virtual needs (default 1): a count,
                                            or a share of its reals ("50%", "0.5", at least 1)
    bgpholddown   = 0..86400                seconds a withdrawn VIP must be eligible before it
                                            is announced again (default 10)
    bgpcommunity  = A:B [A:B ...]           communities of the announcement (exabgp mode; with
                                            bird, the export filter sets them)

Value parsers for parser.py and the cross checks for effective.py. The decision itself is
engine/announce.py's.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from lvsmon.config.bgpsettings import (
    DEFAULT_DRAIN,
    DEFAULT_PROTOCOL,
    DEFAULT_TABLE,
    MAX_U32,
    WORST_MED,
    BgpGlobal,
    BgpVirtual,
    MinUp,
)
from lvsmon.config.values import Invalid, Warn, integer, share, shorten, word
from lvsmon.routes import exabgpfamilies

if TYPE_CHECKING:
    from lvsmon.config.raw import Setting

MODES = ("no", "bird", "exabgp")
REQUIRE = ("all", "any")
RESERVED_TABLES = (0, 253, 254, 255)
MAX_HOLDDOWN = 86_400
MAX_DRAIN = 20  # inside the daemon's 30 s stop bound, with the IPVS purge after it
_COMMUNITY = re.compile(r"(\d{1,5}):(\d{1,5})\Z")


# -- value parsers (parser.py) ----------------------------------------------------------------


def parse_mode(value: str, warn: Warn) -> str:
    wanted = "bgp must be no, bird or exabgp"
    mode = word(value, r"\w+", f"{wanted}, not {shorten(value)!r}", warn)
    if mode not in MODES:
        raise Invalid(f"{wanted}, not {shorten(mode)!r}")
    return mode


def parse_require(value: str, warn: Warn) -> str:
    wanted = "bgprequire must be all or any"
    got = word(value, r"\w+", f"{wanted}, not {shorten(value)!r}", warn)
    if got not in REQUIRE:
        raise Invalid(f"{wanted}, not {shorten(got)!r}")
    return got


def parse_table(value: str, warn: Warn) -> int:
    number = integer(value, "bgptable", warn, minimum=1, maximum=MAX_U32)
    if number in RESERVED_TABLES:
        raise Invalid(
            f"bgptable {number} is one of the kernel's own tables (253 default, 254 main,"
            " 255 local): lvsmon flushes its table, so it must be one of its own"
        )
    return number


def parse_protocol(value: str, warn: Warn) -> int:
    # 0-4 are the kernel's (unspec, redirect, kernel, boot, static)
    return integer(value, "bgpprotocol", warn, minimum=5, maximum=255)


def parse_med(value: str, warn: Warn) -> int:
    return integer(value, "bgpmed", warn, minimum=0, maximum=WORST_MED - 1)


def parse_minup(value: str, warn: Warn) -> MinUp:
    text = value.strip()
    if text.endswith("%") or "." in text:
        fraction = share(text, "bgpminup")
        if fraction == 0:
            raise Invalid("invalid bgpminup: a share must be above 0 (at least one real)")
        return MinUp(share=fraction)
    return MinUp(count=integer(value, "bgpminup", warn, minimum=1, maximum=1_000_000))


def parse_holddown(value: str, warn: Warn) -> int:
    return integer(value, "bgpholddown", warn, minimum=0, maximum=MAX_HOLDDOWN)


def parse_drain(value: str, warn: Warn) -> int:
    return integer(value, "bgpdrain", warn, minimum=0, maximum=MAX_DRAIN)


def parse_communities(value: str, warn: Warn) -> tuple[str, ...]:
    words = value.split()
    if not words:
        raise Invalid("bgpcommunity needs at least one community, e.g. 65000:100")
    out: list[str] = []
    for w in words:
        m = _COMMUNITY.match(w)
        if m is None or int(m.group(1)) > 65535 or int(m.group(2)) > 65535:
            raise Invalid(
                f"invalid bgpcommunity {shorten(w)!r}: a community is ASN:VALUE, each 0..65535"
            )
        if w not in out:
            out.append(w)
    return tuple(out)


def parse_path(value: str, warn: Warn) -> str:
    path = word(value, r"\S+", "bgpexabgpconf needs a file name", warn)
    if not path.startswith("/"):
        raise Invalid(f"bgpexabgpconf must be an absolute path, not {shorten(path)!r}")
    return path


# -- cross checks (effective.py) --------------------------------------------------------------

Problems = list[tuple[int, str]]


def _get(s: Mapping[str, Setting], name: str, default: object) -> object:
    st = s.get(name)
    return default if st is None else st.value


def _virtual_values(s: Mapping[str, Setting], base: BgpVirtual) -> BgpVirtual:
    return BgpVirtual(
        med=cast(int, _get(s, "bgpmed", base.med)),
        minup=cast(MinUp, _get(s, "bgpminup", base.minup)),
        holddown=cast(int, _get(s, "bgpholddown", base.holddown)),
        communities=cast(tuple[str, ...], _get(s, "bgpcommunity", base.communities)),
    )


def bgp_global(g: Mapping[str, Setting]) -> tuple[BgpGlobal, Problems, Problems]:
    """The global settings, the errors and the warnings, each (line, message)."""
    errors: Problems = []
    warnings: Problems = []
    mode = cast(str, _get(g, "bgp", "no"))
    result = BgpGlobal(
        mode=mode,
        table=cast(int, _get(g, "bgptable", DEFAULT_TABLE)),
        protocol=cast(int, _get(g, "bgpprotocol", DEFAULT_PROTOCOL)),
        drain=cast(int, _get(g, "bgpdrain", DEFAULT_DRAIN)),
        require=cast(str, _get(g, "bgprequire", "all")),
        exabgpconf=cast("str | None", _get(g, "bgpexabgpconf", None)),
        defaults=_virtual_values(g, BgpVirtual()),
    )
    if mode == "exabgp" and result.exabgpconf is None:
        errors.append((g["bgp"].line, "bgp = exabgp needs bgpexabgpconf (its neighbour blocks)"))
    elif mode == "exabgp" and result.exabgpconf is not None:
        line = g["bgpexabgpconf"].line
        if not os.path.isfile(result.exabgpconf) or not os.access(result.exabgpconf, os.R_OK):
            errors.append((line, f"bgpexabgpconf {result.exabgpconf}: no such readable file"))
        if shutil.which("exabgp") is None:
            warnings.append((line, "bgp = exabgp, but no exabgp command in PATH (Debian: exabgp)"))
    if mode == "bird" and "bgpexabgpconf" in g:
        warnings.append((g["bgpexabgpconf"].line, "bgpexabgpconf has no effect with bgp = bird"))
    if mode == "bird" and "bgpcommunity" in g:
        warnings.append(
            (
                g["bgpcommunity"].line,
                "bgpcommunity has no effect with bgp = bird: BIRD's export filter sets communities",
            )
        )
    if mode == "no":
        for name in sorted(g):
            if name.startswith("bgp") and name != "bgp":
                warnings.append((g[name].line, f"{name} has no effect without bgp = bird|exabgp"))
    return result, errors, warnings


def bgp_virtual(
    s: Mapping[str, Setting],
    glob: BgpGlobal,
    fwmark: bool,
    scheduler: str = "mh",
    line: int = 0,
    inet6: bool = False,
) -> tuple[BgpVirtual | None, Problems, Problems]:
    """A virtual's settings (None: not announced), the errors and the warnings (`scheduler`:
    the virtual's, for the ECMP warning; `line`: its `virtual =` line; `inet6`: a virtual6)."""
    errors: Problems = []
    warnings: Problems = []
    own = s.get("bgp")
    if own is not None and own.value != "no" and own.value != glob.mode:
        errors.append(
            (
                own.line,
                f"bgp = {own.value} in a virtual: the global bgp ({glob.mode}) chooses the speaker;"
                " a virtual can only opt out (bgp = no)",
            )
        )
    if not glob.enabled or (own is not None and own.value == "no"):
        return None, errors, warnings
    if fwmark:
        if own is not None:
            warnings.append((own.line, "a firewall-mark virtual has no address to announce"))
        return None, errors, warnings
    if glob.mode == "bird" and "bgpcommunity" in s:
        warnings.append(
            (
                s["bgpcommunity"].line,
                "bgpcommunity has no effect with bgp = bird: BIRD's export filter sets communities",
            )
        )
    if scheduler != "mh":
        # ECMP may move a flow to another director in mid-connection: only Maglev hashing
        # sends it to the same real there (with the same reals and weights everywhere)
        where = s["scheduler"].line if "scheduler" in s else line
        warnings.append(
            (
                where,
                f"scheduler {scheduler} with bgp: directors behind ECMP pick different reals for"
                " the same flow; use scheduler = mh with the same reals and weights on every"
                " director (operations.md, 'ECMP prerequisites')",
            )
        )
    if glob.mode == "exabgp" and glob.exabgpconf is not None:
        # next-hop self over a session of the other family: the router drops the route
        wrong = exabgpfamilies.file_problem(glob.exabgpconf, inet6)
        if wrong is not None:
            errors.append((line, wrong))
    values = _virtual_values(s, glob.defaults)
    if glob.mode == "bird" and inet6 and values.med == 0:
        # the kernel stores an IPv6 route's metric 0 as 1024 (IP6_RT_PRIO_USER): BIRD would
        # send MED 1024, and every resync would find 1024 where lvsmon wants 0
        where = s["bgpmed"].line if "bgpmed" in s else line
        errors.append(
            (
                where,
                "bgpmed = 0 with an IPv6 VIP and bgp = bird: the kernel keeps an IPv6 route's"
                " metric 0 as 1024, so BIRD would announce MED 1024; use bgpmed = 1 or more"
                " (the best MED among the directors wins either way)",
            )
        )
    return values, errors, warnings
