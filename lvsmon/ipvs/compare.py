"""Two directors' IPVS tables side by side, as ECMP needs them (issue 24): behind a router that
spreads flows over several directors, a flow that moves to another director in mid-connection
reaches the same real only if every director schedules alike, that is Maglev hashing (`mh`)
over the same reals with the same weights and flags. Pure: tables in, differences out.

`lvsmon compare-tables A B` (cli/comparetables.py) reads two `ipvsadm -Sn` outputs.
"""

from __future__ import annotations

from lvsmon.ipvs.model import ServiceKey, Table


def _conf_text(flags: frozenset[str]) -> str:
    return ",".join(sorted(flags)) or "none"


def differences(a: Table, b: Table, names: tuple[str, str] = ("A", "B")) -> list[str]:
    """One line per difference that would make the directors choose differently; a service
    both have whose scheduler is not mh is one too (its choice depends on each director's own
    connection counts or on which reals each saw go out)."""
    na, nb = names
    out: list[str] = []
    for key in sorted(a.keys() | b.keys(), key=_order):
        sa, sb = a.get(key), b.get(key)
        if sa is None or sb is None:
            out.append(f"{key}: only on {na if sb is None else nb}")
            continue
        ca, cb = sa.conf, sb.conf
        if ca.scheduler != cb.scheduler:
            out.append(f"{key}: scheduler {ca.scheduler} on {na}, {cb.scheduler} on {nb}")
        elif ca.scheduler != "mh":
            out.append(
                f"{key}: scheduler {ca.scheduler} on both: not consistent across directors (mh is)"
            )
        if ca.sched_flags != cb.sched_flags:
            out.append(
                f"{key}: flags {_conf_text(ca.sched_flags)} on {na},"
                f" {_conf_text(cb.sched_flags)} on {nb}"
            )
        if (ca.persistent, ca.netmask) != (cb.persistent, cb.netmask):
            out.append(
                f"{key}: persistence {ca.persistent}/{ca.netmask} on {na},"
                f" {cb.persistent}/{cb.netmask} on {nb}"
            )
        for dest in sorted(sa.dests.keys() | sb.dests.keys(), key=str):
            da, db = sa.dests.get(dest), sb.dests.get(dest)
            if da is None or db is None:
                out.append(f"{key}: real {dest} only on {na if db is None else nb}")
            elif da.weight != db.weight:
                out.append(f"{key}: real {dest} weight {da.weight} on {na}, {db.weight} on {nb}")
    return out


def _order(key: ServiceKey) -> tuple[int, str, int, int]:
    return (0 if key.fwmark == 0 else 1, str(key.address), key.port, key.fwmark)
