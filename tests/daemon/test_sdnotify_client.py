"""The sd_notify client (lvsmon/daemon/sdnotify.py) and what the daemon tells systemd when
(lvsmon/daemon/systemd.py), without a daemon: a datagram socket as the receiver, fake engines with a
fake clock."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from lvsmon.daemon.sdnotify import Notifier, monotonic_usec, socket_address, watchdog_usec
from lvsmon.daemon.systemd import EngineProgress, SystemdLink, pool_summary
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import Phase

# ---- the protocol ---------------------------------------------------------------------------


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@/org/freedesktop/systemd1/notify") == (
        b"\0/org/freedesktop/systemd1/notify"
    )
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30_000_000),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30_000_000),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_usec_like_sd_watchdog_enabled(env: dict[str, str], expected: int | None) -> None:
    assert watchdog_usec(env, 4242) == expected


def test_from_environ_takes_the_variables_out_of_the_environment() -> None:
    """fallbackcommand and callback children must not inherit NOTIFY_SOCKET (systemd would
    ignore them under NotifyAccess=main, but another service manager might not)."""
    env = {
        "NOTIFY_SOCKET": "@x",
        "WATCHDOG_USEC": "2000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/bin",
    }
    n = Notifier.from_environ(env)
    assert n.enabled and n.address == b"\0x" and n.watchdog_s == 2.0
    assert env == {"PATH": "/bin"}
    kept = {"NOTIFY_SOCKET": "/s"}
    assert Notifier.from_environ(kept, unset=False).address == "/s" and kept == {
        "NOTIFY_SOCKET": "/s"
    }


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_s is None
    assert not n.ready("x") and not n.watchdog() and not n.stopping()
    assert n.sent == n.failed == 0


class Receiver:
    """A datagram socket standing in for systemd's, at a path or an abstract name."""

    def __init__(self, tmp_path: Path | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if tmp_path is None:
            name = f"lvsmon-unit-{os.getpid()}-{id(self)}"
            self.sock.bind(b"\0" + name.encode())
            self.env = "@" + name
        else:
            self.env = str(tmp_path / "notify")
            self.sock.bind(self.env)
        self.sock.settimeout(5)

    def recv(self) -> list[str]:
        return self.sock.recv(65536).decode().split("\n")


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_messages(abstract: bool, tmp_path: Path) -> None:
    r = Receiver(None if abstract else tmp_path)
    n = Notifier.from_environ({"NOTIFY_SOCKET": r.env})
    try:
        assert n.ready("2 virtuals, 3/4 reals up")
        assert r.recv() == ["READY=1", f"MAINPID={os.getpid()}", "STATUS=2 virtuals, 3/4 reals up"]
        before = monotonic_usec()
        assert n.reloading()
        fields = r.recv()
        assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=")
        assert before <= int(fields[1].split("=")[1]) <= monotonic_usec()
        assert n.status("a\nREADY=1")  # a newline in a value must not forge a field
        assert r.recv() == ["STATUS=a READY=1"]
        assert n.watchdog() and r.recv() == ["WATCHDOG=1"]
        assert n.stopping("stopping: TERM") and r.recv() == ["STOPPING=1", "STATUS=stopping: TERM"]
        assert n.sent == 5 and n.failed == 0
    finally:
        n.close()
        r.sock.close()


def test_a_failing_socket_is_one_log_line_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "notify"
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(path)})
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        for _ in range(5):
            assert not n.watchdog()
        assert n.failed == 5
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "cannot notify systemd" in caplog.records[0].getMessage()
        r = Receiver(tmp_path)  # systemd is back (a daemon-reexec re-creates the socket)
        assert n.watchdog() and r.recv() == ["WATCHDOG=1"]
        assert "works again" in caplog.records[-1].getMessage()
    n.close()
    r.sock.close()


def test_an_unsupported_address_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        n = Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled and not n.ready("x")
    assert [r.getMessage() for r in caplog.records] == [
        "NOTIFY_SOCKET=vsock:2:1234: unsupported address; systemd is not notified"
    ]


# ---- engine progress --------------------------------------------------------------------------


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeEngine:
    """What EngineProgress and pool_summary read of an Engine."""

    intervals: tuple[float, ...] = (5.0, 2.0)
    stats: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(checks_started=0, reconciles=0)
    )
    runner: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(skipped=0))
    reconciler: SimpleNamespace = field(
        default_factory=lambda: SimpleNamespace(lock=asyncio.Lock())
    )
    plan: SimpleNamespace = field(init=False)
    config: SimpleNamespace = field(init=False)
    health: dict[str, SimpleNamespace] = field(
        default_factory=lambda: {r: SimpleNamespace(up=True) for r in ("r1", "r2", "r3", "r4")}
    )
    maintained: frozenset[object] = frozenset()

    def __post_init__(self) -> None:
        self.replan(self.intervals)
        self.config = SimpleNamespace(
            virtuals=[SimpleNamespace(reals=[1, 2, 3]), SimpleNamespace(reals=[4])]
        )

    def replan(self, intervals: tuple[float, ...]) -> None:
        jobs = [SimpleNamespace(interval=i) for i in intervals]  # iterated like the dict
        self.plan = SimpleNamespace(jobs=jobs)


def progress(engine: FakeEngine, clock: FakeClock, bound: float = 10.0) -> EngineProgress:
    return EngineProgress(cast(Engine, engine), bound, clock)


def test_a_moving_engine_is_not_stalled() -> None:
    e, clock = FakeEngine(), FakeClock()
    p = progress(e, clock)
    for _ in range(100):
        clock.now += 1
        e.stats.checks_started += 1
        e.stats.reconciles += 1
        p.sample()
        assert p.stalled() is None


def test_no_check_slot_for_longer_than_the_bound_plus_an_interval_is_a_stall() -> None:
    e, clock = FakeEngine(intervals=(5.0, 2.0)), FakeClock()
    p = progress(e, clock, bound=10.0)
    p.sample()
    clock.now += 10 + 1.5 * 2.0  # the bound and the shortest interval's longest gap
    p.sample()
    assert p.stalled() is None
    clock.now += 0.1
    assert p.stalled() == "no check started or skipped for 13 s"
    e.runner.skipped += 1  # a skipped slot (its check still running) is progress too
    p.sample()
    assert p.stalled() is None


def test_a_reload_restarts_the_scheduler_judgement() -> None:
    e, clock = FakeEngine(intervals=(1.0,)), FakeClock()
    p = progress(e, clock, bound=10.0)
    p.sample()
    clock.now += 11.0
    e.replan((60.0,))  # the new plan's first slots are at once, but give it its interval
    p.sample()
    clock.now += 11.0
    assert p.stalled() is None


def test_an_empty_plan_never_stalls_the_scheduler() -> None:
    e, clock = FakeEngine(intervals=()), FakeClock()
    p = progress(e, clock)
    p.sample()
    clock.now += 1e6
    e.stats.reconciles += 1
    p.sample()
    assert p.stalled() is None
    assert math.isinf(p._shortest)


async def test_a_table_update_that_does_not_finish_is_a_stall() -> None:
    e, clock = FakeEngine(intervals=()), FakeClock()
    p = progress(e, clock, bound=10.0)
    await e.reconciler.lock.acquire()  # a pass has begun
    p.sample()
    for _ in range(10):
        clock.now += 1
        p.sample()
    assert p.stalled() is None
    clock.now += 1
    p.sample()
    assert p.stalled() == "an IPVS table update has not finished for 11 s"
    e.stats.reconciles += 1  # passes that finish, back to back, are progress
    p.sample()
    assert p.stalled() is None
    e.reconciler.lock.release()
    clock.now += 100
    p.sample()
    assert p.stalled() is None  # idle (lock free) is not stuck


# ---- what the daemon tells systemd ----------------------------------------------------------


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__("/nowhere")
        self.messages: list[tuple[str, ...]] = []

    def send(self, *fields: str) -> bool:
        self.messages.append(fields)
        return True


def keys(messages: list[tuple[str, ...]]) -> list[str]:
    return [m[0] for m in messages]


def test_pool_summary() -> None:
    e = FakeEngine()
    assert pool_summary(cast(Engine, e)) == "2 virtuals, 4/4 reals up"
    e.health["r1"].up = False
    e.maintained = frozenset({"r2", "r1"})  # r1 is down anyway: counted once
    assert pool_summary(cast(Engine, e)) == "2 virtuals, 2/4 reals up (2 in maintenance)"
    e.config.virtuals = e.config.virtuals[:1]
    assert pool_summary(cast(Engine, e)).startswith("1 virtual, ")


def test_the_phases_as_systemd_sees_them() -> None:
    rec, e = Recorder(), FakeEngine()
    link = SystemdLink(rec, cast(Engine, e))
    link.phase_changed(Phase.STARTING)
    link.reload_rejected("x.cf:3: bad")  # before READY=1: a reload is not reported
    link.phase_changed(Phase.RUNNING)  # (the first RUNNING is start()'s, before the table)
    assert rec.messages == []
    link.started()
    assert rec.messages[-1][0] == "READY=1" and rec.messages[-1][2] == (
        "STATUS=2 virtuals, 4/4 reals up"
    )
    link.phase_changed(Phase.RELOADING)
    link.phase_changed(Phase.RUNNING)
    assert keys(rec.messages) == ["READY=1", "RELOADING=1", "READY=1"]
    link.reload_rejected("x.cf:3: unknown directive")
    assert keys(rec.messages)[3:] == ["RELOADING=1", "READY=1"]
    assert rec.messages[-1][-1] == (
        "STATUS=2 virtuals, 4/4 reals up; last reload rejected (x.cf:3: unknown directive),"
        " running config kept"
    )
    link.phase_changed(Phase.RELOADING)  # a good reload clears it
    link.phase_changed(Phase.RUNNING)
    assert rec.messages[-1][-1] == "STATUS=2 virtuals, 4/4 reals up"
    link.phase_changed(Phase.STOPPING, "TERM")
    assert rec.messages[-1] == ("STOPPING=1", "STATUS=stopping: TERM")


async def test_the_status_task_sends_changes_only() -> None:
    rec, e = Recorder(), FakeEngine()
    link = SystemdLink(rec, cast(Engine, e))
    link.started()
    task = asyncio.create_task(link.run())
    try:
        e.health["r1"].up = False
        deadline = time.monotonic() + 10
        while not any(m == ("STATUS=2 virtuals, 3/4 reals up",) for m in rec.messages):
            assert time.monotonic() < deadline, rec.messages
            await asyncio.sleep(0.05)
        assert not any(m[0] == "WATCHDOG=1" for m in rec.messages)  # no WATCHDOG_USEC
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    statuses = [m for m in rec.messages if m[0].startswith("STATUS=")]
    assert len(statuses) == 1  # sent when it changed, not each tick
