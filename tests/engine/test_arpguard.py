"""The ARP guard's decisions (lvsmon/engine/arpguard.py) without a network: which VIPs it asks
for and where, the conflicts it publishes (once, as heard) and clears (only after a round that
asked there and read everything), what a reload and a failing lookup do, and the log's wording.
The real kernel is tests/engine/test_arpguard_netns.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address

import pytest

from lvsmon.checks.arp import Answer, HostView, Link, Probe, RoundResult, Route
from lvsmon.config import parse_config
from lvsmon.config.model import Config
from lvsmon.engine.arpguard import ArpGuard, Guarded, guarded, plan_probes
from lvsmon.engine.eventlog import log_event
from lvsmon.engine.events import ArpConflict, ArpConflictCleared, Event, EventBus
from lvsmon.ipvs.model import ServiceKey

VIP = IPv4Address("192.0.2.100")
MAC = bytes.fromhex("020000000001")
PEER = bytes.fromhex("0a1b2c3d4e5f")
R1, R2, R3 = (IPv4Address(f"192.0.2.{n}") for n in (11, 12, 13))
ETH1 = Link(3, "eth1", MAC, True)
TUN = Link(4, "tunl0", bytes(6), False)


def _config(text: str) -> Config:
    return parse_config(text, "a.cf", check_support=False)


GUARDED_TEXT = (
    "arpguard = yes\narpguardinterval = 5\n"
    "virtual = 192.0.2.100:80\n\treal = 192.0.2.11:80 gate\n\treal = 192.0.2.12:80 gate\n"
)
GUARDED = _config(GUARDED_TEXT)


def test_which_vips_are_guarded() -> None:
    config = _config(
        "arpguard = yes\narpguardinterval = 30\n"
        "virtual = 192.0.2.100:80\n\treal = 192.0.2.11:80 gate\n\treal = 192.0.2.12:80 masq\n"
        # the same VIP, another port, a shorter interval: one VIP, the shorter interval
        "virtual = 192.0.2.100:443\n\treal = 192.0.2.13:443 gate\n\tarpguardinterval = 7\n"
        # the guard off here
        "virtual = 192.0.2.101:80\n\treal = 192.0.2.11:80 gate\n\tarpguard = no\n"
        # masquerading only: IPVS rewrites the address, the reals never hold the VIP
        "virtual = 192.0.2.102:80\n\treal = 192.0.2.11:80 masq\n"
        # a firewall mark has no VIP to ask for; IPv6 has neighbour discovery
        "virtual = 7\n\treal = 192.0.2.11 gate\n"
        "virtual6 = [2001:db8::100]:80\n\treal6 = [2001:db8::11]:80 gate\n"
    )
    assert guarded(config) == {
        VIP: Guarded(
            VIP,
            7.0,
            (ServiceKey.inet("tcp", "192.0.2.100", 80), ServiceKey.inet("tcp", "192.0.2.100", 443)),
            (R1, R3),
        )
    }
    assert guarded(_config("virtual = 192.0.2.100:80\n\treal = 192.0.2.11:80 gate\n")) == {}


def _view(
    routes: dict[IPv4Address, Route], failed: dict[IPv4Address, str] | None = None
) -> HostView:
    return HostView(
        links={3: ETH1, 4: TUN},
        routes=routes,
        own_macs=frozenset({MAC}),
        addresses={3: (IPv4Address("192.0.2.1"),)},
        failed=failed or {},
    )


def test_plan_asks_on_the_interfaces_toward_the_gate_reals() -> None:
    view = _view({R1: Route(3, IPv4Address("192.0.2.1")), R2: Route(4, None)})
    g = Guarded(VIP, 5.0, (), (R1, R2, R3))
    probes, interfaces, problems = plan_probes([g], view, frozenset({VIP}))
    assert probes == [Probe(ETH1, IPv4Address("192.0.2.1"), (VIP,))]
    assert interfaces == {VIP: frozenset({"eth1"})}  # not the tunnel: it has no ARP
    assert problems == [f"no route to the real server {R3}"]
    view = _view({R1: Route(3, None)}, failed={R3: "network is unreachable"})
    assert plan_probes([g], view, frozenset({VIP}))[2] == [
        f"no route to the real server {R2}",
        f"no route to the real server {R3}: network is unreachable",
    ]


class FakeNet:
    """Stands in for probe_round and host_view: each round answers what `answers` holds."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.errors: dict[str, str] = {}
        self.cut_short = False
        self.rounds: list[tuple[list[Probe], float]] = []
        self.lookups = 0
        self.lookup_error: OSError | None = None
        self.routes = {R1: Route(3, IPv4Address("192.0.2.1")), R2: Route(3, None)}
        self.held = frozenset({IPv4Address("192.0.2.1"), VIP})  # the director's addresses

    def local(self) -> frozenset[IPv4Address]:
        return self.held

    async def probe(
        self,
        probes: Sequence[Probe],
        own_macs: frozenset[bytes],
        *,
        wait_s: float,
        max_bytes: int,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> RoundResult:
        self.rounds.append((list(probes), wait_s))
        result = RoundResult(errors=dict(self.errors), cut_short=self.cut_short)
        for answer in self.answers:
            if answer.mac not in own_macs:
                result.answers.add(answer)
                if on_answer is not None:
                    on_answer(answer)
        return result

    def lookup(self, reals: Iterable[IPv4Address]) -> HostView:
        self.lookups += 1
        if self.lookup_error is not None:
            raise self.lookup_error
        return _view({r: self.routes[r] for r in reals if r in self.routes})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _guard(
    net: FakeNet, clock: Clock, config: Config = GUARDED
) -> tuple[ArpGuard, list[Event]]:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe("test", seen.append, kinds=(ArpConflict, ArpConflictCleared))
    await bus.start()
    guard = ArpGuard(bus, probe=net.probe, lookup=net.lookup, local=net.local, clock=clock)
    guard.use(config)
    return guard, seen


async def _round(guard: ArpGuard) -> RoundResult | None:
    result = await guard.round(list(guarded(GUARDED).values()))
    await asyncio.sleep(0)  # the subscriber's task delivers
    await asyncio.sleep(0)
    return result


async def test_a_conflict_is_published_once_and_cleared_by_a_quiet_round() -> None:
    net, clock = FakeNet(), Clock()
    guard, seen = await _guard(net, clock)
    assert await _round(guard) is not None
    assert seen == []
    net.answers = [Answer("eth1", VIP, PEER), Answer("eth1", VIP, MAC)]  # our own MAC: no
    await _round(guard)
    await _round(guard)  # still answering: no second event
    service = ServiceKey.inet("tcp", "192.0.2.100", 80)
    assert [(type(e), e.vip, e.mac, e.interface, e.services) for e in seen] == [  # type: ignore[union-attr]
        (ArpConflict, "192.0.2.100", "0a:1b:2c:3d:4e:5f", "eth1", (service,))
    ]
    assert guard.detected == 1 and len(guard.conflicts) == 1
    net.answers = []
    await _round(guard)
    assert isinstance(seen[-1], ArpConflictCleared)
    assert seen[-1].reason == "no answer in the last round"
    assert guard.conflicts == {} and guard.detected == 1
    # asked on eth1, from the route's source, for the VIP; listening 1 s (interval 5 s)
    probes, wait = net.rounds[-1]
    assert probes == [Probe(ETH1, IPv4Address("192.0.2.1"), (VIP,))]
    assert wait == 1.0


@pytest.mark.parametrize("how", ["interface error", "cut short"])
async def test_silence_that_proves_nothing_clears_nothing(how: str) -> None:
    net, clock = FakeNet(), Clock()
    guard, seen = await _guard(net, clock)
    net.answers = [Answer("eth1", VIP, PEER)]
    await _round(guard)
    net.answers = []
    if how == "interface error":
        net.errors = {"eth1": "send: network is down"}
    else:
        net.cut_short = True
    await _round(guard)
    assert [type(e) for e in seen] == [ArpConflict]
    assert len(guard.conflicts) == 1
    assert guard.failures == 1


async def test_a_reload_without_the_guard_clears_its_conflicts() -> None:
    net, clock = FakeNet(), Clock()
    guard, seen = await _guard(net, clock)
    net.answers = [Answer("eth1", VIP, PEER)]
    await _round(guard)
    guard.use(_config("virtual = 192.0.2.100:80\n\treal = 192.0.2.11:80 gate\n"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [type(e) for e in seen] == [ArpConflict, ArpConflictCleared]
    assert seen[-1].reason == "no longer guarded"  # type: ignore[union-attr]
    assert guard.vips == ()


async def test_a_vip_the_director_does_not_hold_is_not_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the standby director: the active one answers for the VIP, and that is no conflict
    net, clock = FakeNet(), Clock()
    guard, seen = await _guard(net, clock)
    net.answers = [Answer("eth1", VIP, PEER)]
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        await _round(guard)  # held: the conflict
        net.held = frozenset({IPv4Address("192.0.2.1")})
        await _round(guard)  # failed over: over, and not asked
        await _round(guard)
        net.held = frozenset({IPv4Address("192.0.2.1"), VIP})
        await _round(guard)  # back: asked, and it still answers
    assert [type(e) for e in seen] == [ArpConflict, ArpConflictCleared, ArpConflict]
    assert seen[1].reason == "the director no longer holds the VIP"  # type: ignore[union-attr]
    assert len(net.rounds) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "ARP guard: asking who has 192.0.2.100 on eth1 every 5 s",  # once: where did not change
        "ARP guard: VIP 192.0.2.100 is not on this director: not asked until it is",
        "ARP guard: VIP 192.0.2.100 is on this director again: asked",
    ]


async def test_routes_are_looked_up_again_after_a_reload_and_after_a_while() -> None:
    net, clock = FakeNet(), Clock()
    guard, _seen = await _guard(net, clock)
    await _round(guard)
    await _round(guard)
    assert net.lookups == 1
    clock.now += guard.refresh_s
    await _round(guard)
    assert net.lookups == 2
    guard.use(GUARDED)
    await _round(guard)
    assert net.lookups == 3


async def test_a_failing_lookup_is_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net, clock = FakeNet(), Clock()
    guard, _seen = await _guard(net, clock)
    net.lookup_error = OSError(1, "Operation not permitted")
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        assert await _round(guard) is None
        assert await _round(guard) is None
        net.lookup_error = None
        assert await _round(guard) is not None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "ARP guard: cannot read the routes toward the reals: [Errno 1] Operation not permitted",
        "ARP guard: resolved: cannot read the routes toward the reals: [Errno 1] Operation not"
        " permitted",
        "ARP guard: asking who has 192.0.2.100 on eth1 every 5 s",
    ]
    assert guard.failures == 2 and net.rounds  # the third round asked


async def test_the_task_asks_again_each_interval() -> None:
    net = FakeNet()
    bus = EventBus()
    guard = ArpGuard(bus, probe=net.probe, lookup=net.lookup, local=net.local, wait_max_s=0.01)
    guard.use(_config(GUARDED_TEXT.replace("arpguardinterval = 5", "arpguardinterval = 1")))
    await guard.start()
    await asyncio.sleep(1.5)
    await guard.stop()
    assert len(net.rounds) == 2  # at once, then after 1 s
    assert net.rounds[0][1] == 0.01


def test_the_log_says_what_and_where(caplog: pytest.LogCaptureFixture) -> None:
    service = ServiceKey.inet("tcp", "192.0.2.100", 80)
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        log_event(ArpConflict("192.0.2.100", "0a:1b:2c:3d:4e:5f", "eth1", (service,)))
        log_event(
            ArpConflictCleared(
                "192.0.2.100",
                "0a:1b:2c:3d:4e:5f",
                "eth1",
                (service,),
                "no answer in the last round",
            )
        )
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            "ARP conflict: 0a:1b:2c:3d:4e:5f answers ARP for VIP 192.0.2.100 on eth1 (a real"
            " server without arp_ignore=1/arp_announce=2 takes the VIP's traffic)",
        ),
        (
            "WARNING",
            "ARP conflict over: 0a:1b:2c:3d:4e:5f for VIP 192.0.2.100 on eth1 (no answer in the"
            " last round)",
        ),
    ]


def test_events_json_of_a_conflict() -> None:
    from lvsmon.api.eventfeed import event_json

    service = ServiceKey.inet("tcp", "192.0.2.100", 80)
    body = event_json(ArpConflict("192.0.2.100", "0a:1b:2c:3d:4e:5f", "eth1", (service,)), 7, 1.5)
    assert body == {
        "type": "ArpConflict",
        "seq": 7,
        "at": 1.5,
        "vip": "192.0.2.100",
        "mac": "0a:1b:2c:3d:4e:5f",
        "interface": "eth1",
        "services": ["tcp:192.0.2.100:80"],
    }
    cleared = ArpConflictCleared("192.0.2.100", "0a:1b:2c:3d:4e:5f", "eth1", (service,), "why")
    assert event_json(cleared, 8, 2.0)["reason"] == "why"


async def test_a_problem_ends_only_when_the_rounds_that_saw_it_stop_seeing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # two VIPs asked at different intervals: B's clean rounds do not end A's problem
    config = _config(
        "arpguard = yes\n"
        "virtual = 192.0.2.100:80\n\treal = 192.0.2.11:80 gate\n\tarpguardinterval = 5\n"
        "virtual = 192.0.2.101:80\n\treal = 192.0.2.12:80 gate\n\tarpguardinterval = 7\n"
    )
    net, clock = FakeNet(), Clock()
    net.held = frozenset({VIP, IPv4Address("192.0.2.101")})
    guard, _seen = await _guard(net, clock, config)
    a, b = guarded(config).values()
    with caplog.at_level(logging.WARNING, logger="lvsmon"):
        net.errors = {"eth1": "send: no buffer space available"}
        await guard.round([a])
        net.errors = {}
        await guard.round([b])
        await guard.round([b])
        assert [r.getMessage() for r in caplog.records] == [
            "ARP guard: eth1: send: no buffer space available"
        ]
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        await guard.round([a])
    assert caplog.records[-1].getMessage() == (
        "ARP guard: resolved: eth1: send: no buffer space available"
    )


async def test_status_lists_the_conflicts_and_lvsmon_status_shows_them() -> None:
    from lvsmon.engine.status import MalformedStatus, Status, check_status, render_status

    net, clock = FakeNet(), Clock()
    guard, _seen = await _guard(net, clock)
    net.answers = [Answer("eth1", VIP, PEER)]
    await _round(guard)
    (entry,) = guard.status()
    assert {k: v for k, v in entry.items() if k != "since"} == {
        "vip": "192.0.2.100",
        "mac": "0a:1b:2c:3d:4e:5f",
        "interface": "eth1",
    }
    status: Status = {"arp_conflicts": guard.status()}
    (line,) = render_status(status).splitlines()
    assert line.startswith(
        "ARP conflict: 0a:1b:2c:3d:4e:5f answers ARP for VIP 192.0.2.100 on eth1"
    )
    # an edited status file: checked, and nothing raw reaches the terminal
    hostile: dict[str, object] = {
        "arp_conflicts": [{"vip": "x", "mac": "\x1b[2J", "interface": "e", "since": 0}]
    }
    assert "\x1b" not in render_status(check_status(hostile))
    for bad in ({"since": "now"}, {"since": 1e300}, {"mac": None}):
        broken = {**dict(entry), **bad}
        with pytest.raises(MalformedStatus):
            check_status({"arp_conflicts": [broken]})
