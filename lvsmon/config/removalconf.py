"""How reals leave (issue 25 point 3): lvsmon's `removedrain` and `deadconns` directives.

    removedrain = SECONDS        (global and per virtual; default 0: deleted at once, as
                                  ldirectord does)
    deadconns   = keep | expire  (global and per virtual; default keep, ldirectord's behaviour)

`removedrain`: a real a reload removes (or every real of a virtual a reload removes) is first
set to weight 0 and deleted once the kernel counts no active connection to it or the seconds
are up (engine/leaving.py). `deadconns = expire`: a real that is down is deleted even with
`quiescent = yes` (engine/desired.py), so that with the kernel's
`net.ipv4.vs.expire_nodest_conn = 1` the next packet of each of its connections expires the
entry and is scheduled to a live real; `expire_nodest_conn_warning` says when that sysctl is not
set (lvsmon reads sysctls, it never sets one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from lvsmon.config.model import DeadConns, Virtual
from lvsmon.config.values import Invalid, Warn, integer, shorten, word

MAX_REMOVEDRAIN = 86400  # a day: a longer wait is a forgotten real, not a drain

EXPIRE_NODEST_CONN = "/proc/sys/net/ipv4/vs/expire_nodest_conn"


def parse_removedrain(value: str, warn: Warn) -> int:
    return integer(value, "remove drain", warn, minimum=0, maximum=MAX_REMOVEDRAIN)


def parse_deadconns(value: str, warn: Warn) -> DeadConns:
    wanted = "deadconns must be keep or expire"
    mode = word(value, r"\w+", f"{wanted}, not {shorten(value)!r}", warn).lower()
    try:
        return DeadConns(mode)
    except ValueError:
        raise Invalid(f"{wanted}, not {shorten(mode)!r}") from None


def read_expire_nodest_conn(path: str = EXPIRE_NODEST_CONN) -> int | None:
    """The sysctl's value in this network namespace; None when it cannot be read (no ip_vs
    module loaded yet, no /proc)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read(32).strip())
    except (OSError, ValueError):
        return None


def expire_nodest_conn_warning(
    expiring: list[str], value: int | None, path: str = EXPIRE_NODEST_CONN
) -> str | None:
    """The warning for virtuals with deadconns=expire (`expiring`: their names) when the
    kernel will keep the connections of a deleted real anyway; None when all is well."""
    if not expiring or value == 1:
        return None
    seen = "cannot be read" if value is None else f"is {value}"
    more = f" and {len(expiring) - 3} more" if len(expiring) > 3 else ""
    names = ", ".join(expiring[:3]) + more
    return (
        f"deadconns=expire ({names}) needs net.ipv4.vs.expire_nodest_conn=1, and {path} {seen}: "
        "the connections of a dead real stay on it until they time out; "
        "fix: sysctl -w net.ipv4.vs.expire_nodest_conn=1"
    )


def deadconns_problem(
    virtuals: Iterable[Virtual], read: Callable[[], int | None]
) -> tuple[Virtual, str] | None:
    """The first virtual with deadconns=expire and the warning, when the kernel will keep the
    connections of a deleted real anyway (`read`: the sysctl, read only when some virtual
    expires); None when all is well. Said at start and reload (engine/leaving.py) and by
    check-config (config/checkconf.py)."""
    expiring = [v for v in virtuals if v.deadconns is DeadConns.EXPIRE]
    if not expiring:
        return None
    text = expire_nodest_conn_warning([v.name for v in expiring], read())
    return None if text is None else (expiring[0], text)
