"""The control server's guard (lvsmon/api/guard.py) sweeps its connections every SWEEP_S while
it has any, and not at all while it has none: an idle control server costs the daemon no
wake-up (issue 22 goal 4, a small pool's fixed costs)."""

from __future__ import annotations

import asyncio

import pytest

from lvsmon.api import guard as guard_module
from lvsmon.api.guard import Guard


class Conn:
    tcp = False


async def test_the_guard_sweeps_only_while_it_has_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(guard_module, "SWEEP_S", 0.02)
    guard = Guard()
    sweeps: list[float] = []
    monkeypatch.setattr(guard, "sweep", sweeps.append)
    guard.start()
    try:
        await asyncio.sleep(0.3)
        assert sweeps == []  # no connection: no sweep, no wake-up
        conn = Conn()
        assert guard.admit(conn)  # type: ignore[arg-type]
        await asyncio.sleep(0.3)
        assert len(sweeps) >= 3
        guard.forget(conn)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)  # the sweep in progress ends, then it waits
        seen = len(sweeps)
        await asyncio.sleep(0.3)
        assert len(sweeps) == seen
    finally:
        await guard.stop()


async def test_a_due_report_keeps_the_sweeper_awake(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal schedules the minute's report, which the sweeper makes: it must not sleep
    through it for want of a connection."""
    monkeypatch.setattr(guard_module, "SWEEP_S", 0.02)
    guard = Guard(max_tcp=0)
    sweeps: list[float] = []
    monkeypatch.setattr(guard, "sweep", sweeps.append)
    guard.start()
    try:
        await asyncio.sleep(0.1)

        class Tcp:
            tcp = True

        assert not guard.admit(Tcp())  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        assert sweeps  # awake: the report is due at the minute
    finally:
        await guard.stop()
