"""The ARP guard (`arpguard = yes`): every `arpguardinterval` seconds, ask who has each guarded
VIP on the interfaces toward its virtuals' gate (direct routing) reals; a MAC that is not the
director's answering is a conflict, published as `ArpConflict` (log, e-mail alerts, /events,
metrics), and `ArpConflictCleared` once a round on that interface hears it no more.

Why: a DR real must hold the VIP without answering ARP for it (arp_ignore=1, arp_announce=2).
One rebuilt without those settings answers, the router's ARP cache may point the VIP at it, and
it takes the traffic of every client from then on, while every health check, through the VIP or
not, still passes.

The packets, the socket and the route lookups are lvsmon/checks/arp.py; this module decides what
to ask and when (pure: `guarded`, `plan_probes`), keeps the conflicts and publishes their edges.
Its one task runs under the daemon's supervisor: a failure of a round (no CAP_NET_RAW, an
interface gone, no route to a real) is data, logged once per streak; an exception that escapes
is a bug and stops the daemon. The routes toward the reals are looked up in a thread, again
after a reload and every `HOST_REFRESH_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from lvsmon.checks.arp import (
    Answer,
    HostView,
    Probe,
    RoundResult,
    Route,
    host_view,
    ipv4,
    local_addresses,
    mac_text,
    probe_round,
    source_for,
)
from lvsmon.config.model import Config
from lvsmon.engine.events import ArpConflict, ArpConflictCleared, EventBus
from lvsmon.engine.status import ArpConflictStatus
from lvsmon.ipvs.model import Family, Forward, ServiceKey
from lvsmon.text import clean

log = logging.getLogger("lvsmon")

WAIT_MAX_S = 1.0  # how long a round listens for answers (less for intervals under 2 s)
HOST_REFRESH_S = 60.0  # routes toward the reals are looked up again this often
MAX_BYTES = 65_536  # read per round at most (a reply is 28 bytes: ~2,300 answers)

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]
ProbeRound = Callable[..., Awaitable[RoundResult]]
HostLookup = Callable[[Iterable[IPv4Address]], HostView]


@dataclass(frozen=True, slots=True)
class Guarded:
    """One VIP to guard: the shortest interval of its guarded virtuals, those virtuals, and the
    addresses of their gate reals."""

    vip: IPv4Address
    interval: float
    services: tuple[ServiceKey, ...]
    reals: tuple[IPv4Address, ...]


def guarded(config: Config) -> dict[IPv4Address, Guarded]:
    """The VIPs of the virtuals with arpguard on and at least one gate real (IPv4 virtuals with
    an address: a fwmark service has no VIP to ask for, IPv6 has neighbour discovery)."""
    found: dict[IPv4Address, Guarded] = {}
    for v in config.virtuals:
        if not v.arpguard or v.family is not Family.INET or v.address is None:
            continue
        vip = ipv4(v.address)
        gates = [a for r in v.reals if r.forward is Forward.GATE and (a := ipv4(r.address))]
        if vip is None or not gates:
            continue
        seen = found.get(vip)
        if seen is None:
            found[vip] = Guarded(
                vip, float(v.arpguardinterval), (v.key,), tuple(dict.fromkeys(gates))
            )
        else:
            found[vip] = Guarded(
                vip,
                min(seen.interval, float(v.arpguardinterval)),
                (*seen.services, v.key),
                tuple(dict.fromkeys((*seen.reals, *gates))),
            )
    return found


def plan_probes(
    targets: Iterable[Guarded], view: HostView, all_vips: frozenset[IPv4Address]
) -> tuple[list[Probe], dict[IPv4Address, frozenset[str]], list[str]]:
    """One probe per interface the kernel routes a gate real through (those that speak ARP),
    asking for every VIP with a real behind it; also each VIP's interfaces, and what could not
    be planned (a real without a route, one behind a link without ARP)."""
    vips_on: dict[int, list[IPv4Address]] = {}
    sources: dict[int, IPv4Address] = {}
    interfaces: dict[IPv4Address, set[str]] = {}
    problems: list[str] = []
    routes, links = view.routes, view.links
    for g in targets:
        on: dict[int, Route] = {}  # this VIP's links, each with the first route through it
        for real in g.reals:
            route = routes.get(real)
            if route is None:
                why = view.failed.get(real)
                problems.append(
                    f"no route to the real server {real}" + (f": {clean(why)}" if why else "")
                )
            elif route.link not in on:
                on[route.link] = route
        interfaces[g.vip] = set()
        for index, route in on.items():
            link = links.get(index)
            if link is None or not link.arp:
                continue  # a real on this host, behind a tunnel or a link without ARP
            vips_on.setdefault(index, []).append(g.vip)
            if index not in sources:
                sources[index] = source_for(view, route, all_vips)
            interfaces[g.vip].add(link.name)
    probes = [
        Probe(view.links[index], sources[index], tuple(vips)) for index, vips in vips_on.items()
    ]
    probes.sort(key=lambda p: p.link.name)
    return probes, {vip: frozenset(names) for vip, names in interfaces.items()}, problems


Key = tuple[IPv4Address, str, bytes]  # (VIP, interface, MAC)


class ArpGuard:
    """The guard of one daemon: `use` a config (start and every reload), `start` its task,
    `stop` it. `conflicts` and the counters are what /metrics reads."""

    def __init__(
        self,
        events: EventBus,
        *,
        spawn: Spawn | None = None,
        probe: ProbeRound = probe_round,
        lookup: HostLookup = host_view,
        local: Callable[[], frozenset[IPv4Address]] = local_addresses,
        clock: Callable[[], float] = time.monotonic,
        wait_max_s: float = WAIT_MAX_S,
        refresh_s: float = HOST_REFRESH_S,
    ) -> None:
        self.events = events
        self._spawn = spawn or _create_task
        self._probe = probe
        self._lookup = lookup
        self._local = local
        self._idle: set[IPv4Address] = set()  # guarded VIPs this director does not hold now
        self._asked: dict[IPv4Address, frozenset[str]] = {}  # where each VIP was asked last
        self._clock = clock
        self.wait_max_s = wait_max_s
        self.refresh_s = refresh_s
        self._guarded: dict[IPv4Address, Guarded] = {}
        self._due: dict[IPv4Address, float] = {}
        self._view: HostView | None = None
        self._view_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # what is wrong now, and which scopes (the routes, the addresses, a round's VIPs) say so:
        # logged when the first starts to, and as resolved when the last stops
        self._told: dict[str, set[str]] = {}
        self.conflicts: dict[Key, float] = {}  # each conflict seen now, and since when (Unix time)
        self.detected = 0  # ArpConflict events, in all
        self.rounds = 0
        self.failures = 0  # rounds with an interface that could not be asked, or no routes

    @property
    def vips(self) -> tuple[IPv4Address, ...]:
        return tuple(self._guarded)

    def status(self) -> list[ArpConflictStatus]:
        """The conflicts now, for the status file and `lvsmon status`."""
        return [
            {"vip": str(vip), "mac": mac_text(mac), "interface": clean(name), "since": since}
            for (vip, name, mac), since in sorted(self.conflicts.items())
        ]

    def use(self, config: Config) -> None:
        """Guard the VIPs of `config` (start, reload): a VIP new to the guard is asked at once,
        the routes are looked up again, conflicts of VIPs no longer guarded end."""
        new = guarded(config)
        now = self._clock()
        for key in [k for k in self.conflicts if k[0] not in new]:
            self._clear(key, self._guarded[key[0]].services, "no longer guarded")
        self._due = {vip: min(self._due.get(vip, now), now + g.interval) for vip, g in new.items()}
        for vip in new.keys() - self._guarded.keys():
            self._due[vip] = now
        self._guarded = new
        self._view = None
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = self._spawn(self.run(), "lvsmon-arpguard")

    async def stop(self, _left: float = 0.0) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            wait: float | None = None
            if self._guarded:
                now = self._clock()
                due = [g for vip, g in self._guarded.items() if self._due[vip] <= now]
                if due:
                    await self.round(due)
                wait = max(0.0, min(self._due.values()) - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def round(self, due: Sequence[Guarded]) -> RoundResult | None:
        """Ask for the `due` VIPs once; None when the routes could not be looked up."""
        start = self._clock()
        for g in due:
            self._due[g.vip] = start + g.interval
        view = await self._host()
        if view is None:
            self.failures += 1
            return None
        try:
            held = await asyncio.to_thread(self._local)
        except OSError as exc:
            self._report([f"cannot read the director's addresses: {clean(str(exc))}"], "addresses")
            self.failures += 1
            return None
        self._report([], "addresses")
        due = self._held(due, held)
        if not due:
            return RoundResult()
        probes, interfaces, problems = plan_probes(due, view, frozenset(self._guarded))
        if not probes:
            vips = ", ".join(str(g.vip) for g in due)
            problems.append(f"no interface with ARP toward the gate reals of {vips}")
        for g in due:
            where = interfaces.get(g.vip, frozenset())
            if where and self._asked.get(g.vip) != where:
                log.info(
                    "ARP guard: asking who has %s on %s every %g s",
                    g.vip,
                    ", ".join(sorted(clean(i) for i in where)),
                    g.interval,
                )
            self._asked[g.vip] = where
        wait = min(self.wait_max_s, min(g.interval for g in due) / 2)
        by_vip = {g.vip: g for g in due}
        result = await self._probe(
            probes,
            view.own_macs,
            wait_s=wait,
            max_bytes=MAX_BYTES,
            on_answer=lambda answer: self._heard(answer, by_vip),
        )
        self.rounds += 1
        if result.cut_short:
            problems.append(
                f"more than {MAX_BYTES} bytes of ARP replies in one round: the rest unread"
            )
        problems.extend(f"{clean(i)}: {clean(e)}" for i, e in sorted(result.errors.items()))
        if result.errors or problems:
            self.failures += 1
        self._report(problems, ",".join(sorted(str(g.vip) for g in due)))
        self._settle(due, interfaces, result)
        return result

    def _held(self, due: Sequence[Guarded], held: frozenset[IPv4Address]) -> list[Guarded]:
        """The due VIPs this director holds. Another host answering for a VIP this one does not
        hold is expected (the active director, seen from the standby): not asked, and what was
        seen while it was held is over."""
        asked = [g for g in due if g.vip in held]
        due_vips = {g.vip for g in due}
        idle = due_vips - held
        for vip in sorted(idle - self._idle):
            log.info("ARP guard: VIP %s is not on this director: not asked until it is", vip)
        for vip in sorted((self._idle & due_vips) - idle):
            log.info("ARP guard: VIP %s is on this director again: asked", vip)
        self._idle = (self._idle - due_vips) | idle
        for key in [k for k in self.conflicts if k[0] in idle]:
            self._clear(key, self._guarded[key[0]].services, "the director no longer holds the VIP")
        return asked

    async def _host(self) -> HostView | None:
        now = self._clock()
        if self._view is not None and now - self._view_at < self.refresh_s:
            return self._view
        reals = list(dict.fromkeys(r for g in self._guarded.values() for r in g.reals))
        try:
            view = await asyncio.to_thread(self._lookup, reals)
        except OSError as exc:  # NetlinkError is one
            self._report([f"cannot read the routes toward the reals: {clean(str(exc))}"], "routes")
            return None
        self._report([], "routes")
        self._view, self._view_at = view, now
        return view

    def _settle(
        self,
        due: Sequence[Guarded],
        interfaces: dict[IPv4Address, frozenset[str]],
        result: RoundResult,
    ) -> None:
        by_vip = {g.vip: g for g in due}
        for answer in sorted(result.answers, key=lambda a: (a.vip, a.interface, a.mac)):
            self._heard(answer, by_vip)  # a probe that did not say each answer at once
        if result.cut_short:
            return  # answers went unread: silence proves nothing this round
        heard = {(a.vip, a.interface, a.mac) for a in result.answers}
        for key in [k for k in self.conflicts if k[0] in by_vip and k not in heard]:
            vip, interface, _mac = key
            if interface in result.errors:
                continue  # not asked there: nothing heard proves nothing
            if interface in interfaces.get(vip, frozenset()):
                reason = "no answer in the last round"
            else:
                reason = "the interface no longer leads to a gate real"
            self._clear(key, by_vip[vip].services, reason)

    def _heard(self, answer: Answer, by_vip: dict[IPv4Address, Guarded]) -> None:
        """A foreign MAC answered for a VIP: a new conflict is published at once, not at the
        end of the round."""
        key = (answer.vip, answer.interface, answer.mac)
        g = by_vip.get(answer.vip)
        if g is None or key in self.conflicts:
            return
        self.conflicts[key] = time.time()
        self.detected += 1
        mac, interface = mac_text(answer.mac), clean(answer.interface)
        self.events.publish(ArpConflict(str(answer.vip), mac, interface, g.services))

    def _clear(self, key: Key, services: tuple[ServiceKey, ...], reason: str) -> None:
        del self.conflicts[key]
        vip, interface, mac = key
        self.events.publish(
            ArpConflictCleared(str(vip), mac_text(mac), clean(interface), services, reason)
        )

    def _report(self, problems: list[str], scope: str) -> None:
        """What `scope` finds wrong now: each problem logged when it starts, and once more when
        it is over (rounds of VIPs with other intervals neither repeat nor end it)."""
        for text in problems:
            if text not in self._told:
                log.warning("ARP guard: %s", text)
            self._told.setdefault(text, set()).add(scope)
        for text, scopes in list(self._told.items()):
            if scope in scopes and text not in problems:
                scopes.discard(scope)
                if not scopes:
                    del self._told[text]
                    log.info("ARP guard: resolved: %s", text)


def _create_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)
