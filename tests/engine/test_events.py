"""The event stream: typed events reach every subscriber, a slow or failing subscriber delays
nobody, a full queue is counted and logged, and a healthy pool's steady state publishes nothing."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import (
    CheckDone,
    Event,
    EventBus,
    FallbackChanged,
    KernelOp,
    Phase,
    PhaseChanged,
    RealChanged,
    SoftFailure,
    WeightChanged,
)
from lvsmon.engine.reconciler import Desired
from lvsmon.engine.wording import kernel_op_text
from lvsmon.ipvs.memory import MemoryBackend
from tests.helpers import wait_for

from .conftest import cfg


async def test_a_slow_subscriber_delays_neither_publishing_nor_the_others() -> None:
    bus = EventBus()
    fast: list[Event] = []
    release = asyncio.Event()

    async def slow(_event: Event) -> None:
        await release.wait()

    bus.subscribe("fast", fast.append)
    bus.subscribe("slow", slow)
    await bus.start()
    t0 = time.perf_counter()
    for _ in range(1000):
        bus.publish(PhaseChanged(Phase.RUNNING))
    publish_s = time.perf_counter() - t0
    await wait_for(lambda: len(fast) == 1000)
    assert publish_s < 0.5  # only bounds a hung publish: publish never awaits
    release.set()
    await bus.stop()


async def test_a_full_queue_drops_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    release = asyncio.Event()
    got: list[Event] = []

    async def stuck(event: Event) -> None:
        await release.wait()
        got.append(event)

    bus.subscribe("stuck", stuck, maxlen=10)
    await bus.start()
    for _ in range(50):
        bus.publish(PhaseChanged(Phase.RUNNING))
    await asyncio.sleep(0)
    assert bus.dropped >= 39
    assert caplog.text.count("event subscriber stuck is behind") == 1
    release.set()
    await bus.stop()
    assert 10 <= len(got) <= 11


async def test_a_failing_subscriber_is_logged_and_keeps_receiving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    seen: list[Event] = []

    def broken(event: Event) -> None:
        seen.append(event)
        if len(seen) == 1:
            raise ValueError("subscriber bug")

    bus.subscribe("broken", broken)
    await bus.start()
    bus.publish(PhaseChanged(Phase.STARTING))
    bus.publish(PhaseChanged(Phase.RUNNING))
    await bus.stop()
    assert len(seen) == 2
    assert "event subscriber broken failed" in caplog.text and "subscriber bug" in caplog.text


async def test_per_result_events_only_while_asked_for() -> None:
    bus = EventBus()
    everything: list[Event] = []
    bus.subscribe("all", everything.append)
    assert not bus.wants(CheckDone)
    bus.publish(CheckDone.__new__(CheckDone))
    results: list[Event] = []
    bus.subscribe("results", results.append, kinds=(CheckDone,))
    assert bus.wants(CheckDone)
    await bus.start()
    await bus.stop()
    assert everything == [] and len(results) == 0  # published before the subscription


class Scripted:
    def __init__(self) -> None:
        self.up = {8001: True, 8002: True}
        self.calls = 0

    async def check(self, spec: CheckSpec) -> CheckResult:
        self.calls += 1
        ok = self.up[spec.port]
        return CheckResult(ok, "ok" if ok else "refused")


CONFIG = (
    "checkinterval=1\nchecktimeout=1\nfailurecount=2\nquiescent=no\n"
    "virtual=127.0.0.100:80\n\treal=127.0.0.1:8001 masq\n\treal=127.0.0.1:8002 masq 3\n"
    "\tfallback=127.0.0.1:9000 masq\n\tservice=http\n"
)


async def test_health_and_kernel_changes_are_typed_events() -> None:
    pool = Scripted()
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe("test", events.append)
    engine = Engine(cfg(CONFIG), MemoryBackend(), run_check=pool.check, events=bus)
    await bus.start()
    await engine.start()
    await engine.wait_programmed()
    job_of = engine.plan.job_of
    ref1, ref2 = sorted(job_of)
    pool.up[8001] = False
    await engine.run_once(job_of[ref1])  # soft failure 1/2
    await engine.run_once(job_of[ref1])  # down
    pool.up[8002] = False
    for _ in range(2):
        await engine.run_once(job_of[ref2])
    await wait_for(lambda: any(isinstance(e, FallbackChanged) and e.active for e in events))
    await engine.stop(clean=False)
    await bus.stop()
    kinds = [type(e).__name__ for e in events]
    assert "SoftFailure" in kinds
    downs = [e for e in events if isinstance(e, RealChanged) and not e.up]
    assert [(e.ref, e.up) for e in downs] == [(ref1, False), (ref2, False)]
    assert downs[0].reason == "refused"
    soft = next(e for e in events if isinstance(e, SoftFailure))
    assert (soft.ref, soft.failcount, soft.failurecount) == (ref1, 1, 2)
    ops = [e for e in events if isinstance(e, KernelOp)]
    assert any("Deleted real server: 127.0.0.1:8001" in kernel_op_text(e) for e in ops)
    assert any("Added fallback server" in kernel_op_text(e) for e in ops)
    weights = [(e.dest.port, e.old, e.new) for e in events if isinstance(e, WeightChanged)]
    assert (8001, 1, None) in weights and (8002, 3, None) in weights and (9000, None, 1) in weights
    fallbacks = [(e.active) for e in events if isinstance(e, FallbackChanged)]
    assert fallbacks == [False, True]  # the first state seen, then the change


async def test_a_healthy_pool_publishes_nothing_per_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    pool = Scripted()
    bus = EventBus()
    engine = Engine(cfg(CONFIG), MemoryBackend(), run_check=pool.check, events=bus)
    await bus.start()
    await engine.start()
    await engine.wait_programmed()
    await asyncio.sleep(0.1)
    published, calls = bus.published, pool.calls
    job = next(iter(engine.plan.jobs))
    for _ in range(20):
        await engine.run_once(job)
    assert pool.calls == calls + 20 and bus.published == published
    engine.want_every_result(True)  # a monitorfile: now every result is an event
    for _ in range(5):
        await engine.run_once(job)
    assert bus.published == published + 5
    await engine.stop(clean=False)
    await bus.stop()


async def test_a_crashed_loop_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(cfg(CONFIG), MemoryBackend(), run_check=Scripted().check)
    crashes: list[str] = []
    engine.on_crash = lambda name, exc: crashes.append(name)
    await engine.start()
    await engine.wait_programmed()

    def broken(_actual: object) -> Desired:
        raise ZeroDivisionError("a bug in the desired table")

    engine.desired_for = broken  # type: ignore[assignment]
    engine.reconciler.mark_dirty()
    await wait_for(lambda: crashes == ["lvsmon-reconcile"])
    assert engine.crashed is not None
    assert "lvsmon-reconcile crashed" in caplog.text
    assert "Traceback" in caplog.text and "a bug in the desired table" in caplog.text
    await engine.stop(clean=False)


async def test_a_real_down_from_its_first_check_is_logged_once_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real that was never up has no transition to report when its first check fails; the log
    still says why it is out (before, only the status did), once, and nothing else reacts."""
    from lvsmon.engine.eventlog import LOGGED, log_event
    from lvsmon.engine.events import FirstCheckDown

    pool = Scripted()
    pool.up[8002] = False
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe("test", events.append)
    bus.subscribe("log", log_event, kinds=LOGGED)
    engine = Engine(cfg(CONFIG), MemoryBackend(), run_check=pool.check, events=bus)
    caplog.set_level(logging.INFO, logger="lvsmon")
    await bus.start()
    await engine.start()
    await engine.wait_programmed()
    job_of = engine.plan.job_of
    ref1, ref2 = sorted(job_of)
    for _ in range(3):
        await engine.run_once(job_of[ref2])  # down from the start, and staying down
    await wait_for(lambda: sum(isinstance(e, FirstCheckDown) for e in events) >= 1)
    await engine.stop(clean=False)
    await bus.stop()
    firsts = [e for e in events if isinstance(e, FirstCheckDown)]
    assert firsts == [FirstCheckDown(ref2, "refused")]
    assert not any(isinstance(e, RealChanged) and e.ref == ref2 for e in events)
    lines = [r.getMessage() for r in caplog.records if "first check" in r.getMessage()]
    assert lines == [f"Real server {ref2} is down from its first check: refused"]
    assert not any(isinstance(e, FirstCheckDown) and e.ref == ref1 for e in events)
