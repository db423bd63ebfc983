"""`bgp = bird`: one route per announced VIP in a kernel routing table of lvsmon's own.

    VIP/32 (or /128)  type blackhole  table bgptable  proto bgpprotocol  metric MED

BIRD's kernel protocol learns that table (`kernel table 200; learn;`) and its export filter
maps the metric to the MED (`bgp_med = krt_metric;`); the graceful stop's worst MED
(4294967295) is the filter's sign to add GRACEFUL_SHUTDOWN (docs/operations.md has the
snippet, and FRR's `ip import-table`). The table is never used to forward: no rule points at
it, and a blackhole needs no device. lvsmon owns the whole table: it flushes every route of it
at start (stale ones of a crashed run) and at stop, and `lvsmon bgp-flush` does the same for a
supervisor after a crash (systemd ExecStopPost, the OCF agent).

A metric is part of an IPv4 route's key, so a changed MED is a new route added before the old
one is deleted (make before break: BIRD never sees the VIP missing).

pyroute2's IPRoute is blocking; the calls are few (one per change) and run in a thread.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pyroute2 import IPRoute

T = TypeVar("T")


class RouteError(Exception):
    """The kernel refused a route operation (the message says which and why)."""


def _family(vip: str) -> int:
    return socket.AF_INET6 if ":" in vip else socket.AF_INET


def prefix(vip: str) -> str:
    return f"{vip}/{128 if ':' in vip else 32}"


def _with_ipr(fn: Callable[[IPRoute], T]) -> T:
    from pyroute2 import IPRoute  # heavy; only a daemon that announces loads it
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            return fn(ipr)
    except NetlinkError as exc:
        raise RouteError(f"netlink: {exc}") from exc
    except OSError as exc:
        raise RouteError(str(exc)) from exc


def _dump(ipr: IPRoute, table: int) -> list[tuple[str, int, int, int]]:
    """(vip, prefix length, metric, family) of every route in `table`."""
    out: list[tuple[str, int, int, int]] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family, table=table):
            if msg.get("table") != table:
                continue
            dst = msg.get("dst")
            if not isinstance(dst, str):
                continue
            out.append((dst, int(msg["dst_len"]), int(msg.get("priority") or 0), family))
    return out


def routes(table: int) -> dict[str, int]:
    """VIP -> metric of the host routes in `table` (blocking)."""
    return _with_ipr(
        lambda ipr: {
            vip: metric for vip, length, metric, _ in _dump(ipr, table) if length in (32, 128)
        }
    )


def flush(table: int) -> list[str]:
    """Delete every route of `table`; the prefixes deleted (blocking)."""

    def run(ipr: IPRoute) -> list[str]:
        gone = []
        for vip, length, metric, family in _dump(ipr, table):
            ipr.route("del", dst=f"{vip}/{length}", table=table, priority=metric, family=family)
            gone.append(f"{vip}/{length}")
        return gone

    return _with_ipr(run)


def put(table: int, protocol: int, vip: str, metric: int) -> None:
    """The VIP's route with this metric, and no other route of the VIP in `table` (blocking)."""

    def run(ipr: IPRoute) -> None:
        family = _family(vip)
        old = [m for v, _, m, f in _dump(ipr, table) if v == vip and f == family]
        if metric not in old:
            ipr.route(
                "add",
                dst=prefix(vip),
                table=table,
                proto=protocol,
                priority=metric,
                type="blackhole",
                family=family,
            )
        for m in old:
            if m != metric:
                ipr.route("del", dst=prefix(vip), table=table, priority=m, family=family)

    _with_ipr(run)


def delete(table: int, vip: str) -> None:
    """No route of the VIP in `table` (blocking; none there is no error)."""

    def run(ipr: IPRoute) -> None:
        family = _family(vip)
        for v, _, m, f in _dump(ipr, table):
            if v == vip and f == family:
                ipr.route("del", dst=prefix(vip), table=table, priority=m, family=family)

    _with_ipr(run)


class KernelRoutes:
    """The speaker of `bgp = bird`: the routes of one table, changed from the event loop."""

    name = "bird"

    def __init__(self, table: int, protocol: int) -> None:
        self.table = table
        self.protocol = protocol

    async def start(self) -> list[str]:
        """Flush what a previous run left; the prefixes removed."""
        return await asyncio.to_thread(flush, self.table)

    async def announce(self, vip: str, med: int, communities: tuple[str, ...]) -> None:
        # communities are the BIRD export filter's business in this mode
        await asyncio.to_thread(put, self.table, self.protocol, vip, med)

    async def withdraw(self, vip: str) -> None:
        await asyncio.to_thread(delete, self.table, vip)

    async def present(self) -> dict[str, int]:
        """VIP -> MED as the kernel has them (the resync compares them with what it wants)."""
        return await asyncio.to_thread(routes, self.table)

    async def stop(self) -> None:
        await asyncio.to_thread(flush, self.table)
