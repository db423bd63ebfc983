"""The ARP guard as a part of the daemon: started with it (its task under the daemon's supervisor),
its conflicts on the log and /events, a reload that turns it off ends them, and a guard that
crashes stops the daemon with exit 1 instead of leaving it running unguarded. The network is a
fake here (tests/engine/test_arpguard_netns.py is the real kernel)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from lvsmon.api.metrics import Exporter
from lvsmon.checks.arp import Answer, HostView, Link, Probe, RoundResult, Route
from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine.events import ArpConflict, ArpConflictCleared, Event
from lvsmon.ipvs.memory import MemoryBackend
from tests.helpers import wait_for

from .conftest import Running

VIP = IPv4Address("127.0.0.100")
PEER = bytes.fromhex("0a1b2c3d4e5f")
MAC = bytes.fromhex("020000000001")


class FakeNet:
    def __init__(self) -> None:
        self.answer = True
        self.crash = False
        self.rounds = 0

    async def probe(
        self,
        probes: Sequence[Probe],
        own_macs: frozenset[bytes],
        *,
        wait_s: float,
        max_bytes: int,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> RoundResult:
        self.rounds += 1
        if self.crash:
            raise RuntimeError("a bug in the guard")
        result = RoundResult()
        if self.answer:
            answer = Answer("eth1", VIP, PEER)
            result.answers.add(answer)
            if on_answer is not None:
                on_answer(answer)
        return result

    def lookup(self, reals: Iterable[IPv4Address]) -> HostView:
        return HostView(
            links={3: Link(3, "eth1", MAC, True)},
            routes={r: Route(3, IPv4Address("127.0.0.1")) for r in reals},
            own_macs=frozenset({MAC}),
            addresses={3: (IPv4Address("127.0.0.1"),)},
        )

    def local(self) -> frozenset[IPv4Address]:
        return frozenset({VIP})


def _write(path: Path, guard: str) -> None:
    path.write_text(
        f"arpguard = {guard}\narpguardinterval = 1\ncheckinterval = 1\n"
        "virtual = 127.0.0.100:80\n\treal = 127.0.0.1:1 gate\n\tchecktype = off\n"
    )


async def _start(path: Path, net: FakeNet) -> tuple[Running, list[Event]]:
    daemon = Daemon(load_config(str(path)), MemoryBackend())
    guard = daemon.arpguard
    guard._probe, guard._lookup, guard._local = net.probe, net.lookup, net.local
    seen: list[Event] = []
    daemon.events.subscribe("test", seen.append, kinds=(ArpConflict, ArpConflictCleared))
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    return Running(daemon, task), seen


async def _metrics(r: Running) -> dict[str, float]:
    body = b"".join(await Exporter(r.daemon).scrape()).decode()
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in body.splitlines())
        if name.startswith("lvsmon_arp_")
    }


async def test_the_guard_runs_with_the_daemon_and_a_reload_turns_it_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cf = tmp_path / "lb.cf"
    _write(cf, "yes")
    net = FakeNet()
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        r, seen = await _start(cf, net)
        try:
            await wait_for(lambda: len(seen) == 1, within=5)
            assert isinstance(seen[0], ArpConflict)
            assert seen[0].mac == "0a:1b:2c:3d:4e:5f"
            assert any(b"event: ArpConflict\n" in frame for frame in r.daemon.feed.recent)
            status = json.loads(r.daemon.status_json(max_age=0.0))
            assert [(c["vip"], c["mac"]) for c in status["arp_conflicts"]] == [
                ("127.0.0.100", "0a:1b:2c:3d:4e:5f")
            ]
            scraped = await _metrics(r)
            assert scraped.pop("lvsmon_arp_guard_rounds_total") >= 1
            assert scraped == {
                "lvsmon_arp_conflicts_active": 1.0,
                "lvsmon_arp_conflicts_total": 1.0,
                "lvsmon_arp_guard_failures_total": 0.0,
            }
            _write(cf, "no")
            assert await r.daemon.reload()
            await wait_for(lambda: len(seen) == 2, within=5)
            assert isinstance(seen[1], ArpConflictCleared)
            assert seen[1].reason == "no longer guarded"
            assert (await _metrics(r))["lvsmon_arp_conflicts_active"] == 0
            assert (await _metrics(r))["lvsmon_arp_conflicts_total"] == 1
            rounds = net.rounds
            await asyncio.sleep(1.5)
            assert net.rounds == rounds  # nothing guarded: no round
        finally:
            r.daemon.request_stop()
            assert await r.task == 0
    assert any(
        rec.getMessage().startswith("ARP conflict: 0a:1b:2c:3d:4e:5f answers ARP for VIP")
        for rec in caplog.records
    )


async def test_a_crash_of_the_guard_stops_the_daemon(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    _write(cf, "yes")
    net = FakeNet()
    net.crash = True
    r, _seen = await _start(cf, net)
    assert await asyncio.wait_for(r.task, 10) == 1
