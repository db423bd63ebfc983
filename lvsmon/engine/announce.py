"""Which VIPs this director announces over BGP, and with what: pure (no clock, no I/O).

The unit is the VIP: several virtuals (ports, protocols) may share one address, and a route
carries the address, not a port. A virtual is *able* when at least `bgpminup` of its reals are
healthy (up by their checks, not in maintenance, not drained; the fallback is never counted:
another director may have real capacity) and its depool threshold is not holding failed reals
in (a mass failure is most likely this director's own problem: its links, its routes). A VIP is
*eligible* when all its virtuals are able (`bgprequire = all`, the default) or any of them
(`any`); a tripped depool threshold withdraws the VIP either way.

From eligibility to announcement (`step`):
- nothing is announced before the first full round of checks: before it, "down" only means
  "not checked yet";
- an eligible VIP that was never withdrawn is announced at once (start, or a reload adding it);
- a VIP that stops being eligible is withdrawn at once;
- a withdrawn VIP is announced again only after it has been eligible without a break for
  `bgpholddown` seconds, so that a flapping pool does not flap the route (`step` says when to
  look again: `Decision.wake_at`).

The attributes of a VIP are the worst MED of its virtuals (so a virtual that wants to be the
backup wins) and the union of their communities. The graceful stop (`lvsmon stop`, `lvsmon
drain --director`) re-announces every announced VIP with GRACEFUL_SHUTDOWN (65535:0, RFC 8326)
and the worst MED, then withdraws everything: `graceful` and `withdraw_all`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from lvsmon.config.bgpsettings import WORST_MED, BgpVirtual

GRACEFUL_SHUTDOWN = "65535:0"

FIRST_ROUND = "waiting for the first round of checks"


@dataclass(frozen=True, slots=True)
class VirtualInput:
    """One virtual's part in its VIP's decision, as the engine sees it now."""

    name: str  # ldirectord's id, e.g. tcp:192.0.2.10:80
    vip: str  # the address, IPv6 without brackets
    healthy: int  # reals that count (up, not maintained, not drained; no fallback)
    reals: int  # all its reals
    tripped: bool  # its depool threshold keeps failed reals in
    settings: BgpVirtual


@dataclass(frozen=True, slots=True)
class Route:
    """What the speaker is told for one VIP."""

    vip: str
    med: int
    communities: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return f"{self.vip}/{128 if ':' in self.vip else 32}"


@dataclass(frozen=True, slots=True)
class VipState:
    announced: bool
    reason: str  # why it is announced or withdrawn, for status, log and mail
    since: float  # when `announced` last changed (or the state began)
    eligible_since: float | None = None  # start of the current unbroken eligibility
    withdrawn_once: bool = False  # the hold-down applies from the first withdrawal on
    route: Route | None = None  # the attributes it is announced with


@dataclass(frozen=True, slots=True)
class Decision:
    states: dict[str, VipState]
    announce: tuple[Route, ...]  # new or changed attributes
    withdraw: tuple[str, ...]  # VIPs to withdraw (and VIPs no virtual has any more)
    wake_at: float | None  # the earliest hold-down end: look again then


def group(virtuals: Iterable[VirtualInput]) -> dict[str, list[VirtualInput]]:
    """Virtuals by VIP, in config order."""
    out: dict[str, list[VirtualInput]] = {}
    for v in virtuals:
        out.setdefault(v.vip, []).append(v)
    return out


def able(v: VirtualInput) -> tuple[bool, str]:
    """May this virtual's VIP be announced as far as it is concerned, and why (not)."""
    if v.tripped:
        return False, f"{v.name}: depool threshold tripped (a mass failure: likely this director)"
    needed = v.settings.minup.needed(v.reals)
    if v.healthy < needed:
        return False, f"{v.name}: {v.healthy} of {v.reals} reals healthy, {needed} needed"
    return True, f"{v.name}: {v.healthy} of {v.reals} reals healthy"


def eligible(virtuals: Sequence[VirtualInput], require: str) -> tuple[bool, str]:
    """Is the VIP eligible (the reason names the first virtual that decided it)."""
    verdicts = [able(v) for v in virtuals]
    for v in virtuals:
        if v.tripped:
            return able(v)
    if require == "any":
        ok = [reason for good, reason in verdicts if good]
        if ok:
            return True, ok[0]
        return False, verdicts[0][1]
    bad = [reason for good, reason in verdicts if not good]
    if bad:
        return False, bad[0]
    return True, verdicts[0][1]


def route_of(vip: str, virtuals: Sequence[VirtualInput]) -> Route:
    med = max(v.settings.med for v in virtuals)
    communities: list[str] = []
    for v in virtuals:
        communities.extend(c for c in v.settings.communities if c not in communities)
    return Route(vip, med, tuple(communities))


def graceful(route: Route) -> Route:
    """The route as a graceful stop announces it: worst MED, GRACEFUL_SHUTDOWN added."""
    communities = route.communities
    if GRACEFUL_SHUTDOWN not in communities:
        communities = (*communities, GRACEFUL_SHUTDOWN)
    return Route(route.vip, WORST_MED, communities)


def step(
    states: Mapping[str, VipState],
    virtuals: Iterable[VirtualInput],
    *,
    require: str,
    first_round_done: bool,
    now: float,
) -> Decision:
    """The next states from the last ones and what the engine sees now."""
    new: dict[str, VipState] = {}
    announce: list[Route] = []
    withdraw: list[str] = []
    wake_at: float | None = None
    for vip, members in group(virtuals).items():
        old = states.get(vip) or VipState(False, FIRST_ROUND, now)
        holddown = max(v.settings.holddown for v in members)
        route = route_of(vip, members)
        if not first_round_done:
            new[vip] = dataclasses.replace(old, announced=False, reason=FIRST_ROUND)
            continue
        ok, reason = eligible(members, require)
        if not ok:
            if old.announced:
                withdraw.append(vip)
                new[vip] = VipState(False, reason, now, None, True, None)
            else:
                new[vip] = dataclasses.replace(old, reason=reason, eligible_since=None)
            continue
        since = old.eligible_since if old.eligible_since is not None else now
        if old.announced:
            if old.route != route:
                announce.append(route)
            new[vip] = dataclasses.replace(old, reason=reason, eligible_since=since, route=route)
        elif not old.withdrawn_once or now - since >= holddown:
            announce.append(route)
            new[vip] = VipState(True, reason, now, since, old.withdrawn_once, route)
        else:
            end = since + holddown
            wake_at = end if wake_at is None else min(wake_at, end)
            waited = f"{now - since:.0f} of {holddown} s"
            new[vip] = dataclasses.replace(
                old, reason=f"hold-down: eligible for {waited} ({reason})", eligible_since=since
            )
    for vip, old in states.items():
        if vip not in new and old.announced:
            withdraw.append(vip)  # a reload removed every virtual of it
    return Decision(new, tuple(announce), tuple(withdraw), wake_at)


def withdraw_all(states: Mapping[str, VipState], reason: str, now: float) -> Decision:
    """Everything withdrawn (the end of a graceful stop, a director drained)."""
    new: dict[str, VipState] = {}
    withdraw: list[str] = []
    for vip, old in states.items():
        if old.announced:
            withdraw.append(vip)
            new[vip] = VipState(False, reason, now, None, True, None)
        else:
            new[vip] = dataclasses.replace(old, reason=reason, eligible_since=None)
    return Decision(new, (), tuple(withdraw), None)
