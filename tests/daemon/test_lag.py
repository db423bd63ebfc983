"""Lag-aware timeouts end to end: an in-process daemon on the memory backend checking HTTP servers
on loopback (in the same event loop: they starve with it) with checktimeout=1 and failurecount=1.
The loop is blocked on purpose, two seconds at a time: every healthy real stays up and the
timeouts are counted as unknown. Controls: a hung server is still taken down when the loop is
on time, and, past the bound, when it is late for good."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from lvsmon.api.metrics import Exporter
from lvsmon.engine import lag
from lvsmon.engine.events import Event, RealChanged
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.status import render_status
from tests.helpers import Web, wait_for

from .conftest import VKEY, Running, start


@pytest.fixture
async def five() -> AsyncIterator[list[Slow]]:
    servers = [Slow(0, delay=0.25) for _ in range(5)]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


@dataclass
class Slow(Web):
    """Healthy, but takes `delay` s to answer (so that checks are in flight when the loop
    stalls), or with `hang` never answers until stopped."""

    delay: float = 0.0
    hang: bool = False
    released: asyncio.Event | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if self.hang:
            self.released = self.released or asyncio.Event()
            await self.released.wait()
        await asyncio.sleep(self.delay)
        return await super()._handle(request)

    async def stop(self) -> None:
        if self.released is not None:
            self.released.set()
        await super().stop()


@pytest.fixture
def hung() -> Iterator[int]:
    """A server that accepts (the kernel does) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def write_config(tmp_path: Path, ports: list[int]) -> Path:
    reals = "".join(f"\treal=127.0.0.1:{p} masq 1\n" for p in ports)
    cf = tmp_path / "lb.cf"
    cf.write_text(
        "checktimeout=1\ncheckinterval=1\nfailurecount=1\nquiescent=no\n"
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
    )
    return cf


def downs(seen: list[Event]) -> list[RealChanged]:
    return [e for e in seen if isinstance(e, RealChanged) and not e.up]


async def starve(times: int, block_s: float = 2.0, gap_s: float = 0.3) -> None:
    for _ in range(times):
        time.sleep(block_s)  # noqa: ASYNC251 - the point: the whole daemon stops meanwhile
        await asyncio.sleep(gap_s)


async def test_a_starved_daemon_takes_no_healthy_real_down(
    five: list[Slow], tmp_path: Path, stopper: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    r = await start(write_config(tmp_path, [w.port for w in five]))
    stopper.append(r)
    seen: list[Event] = []
    r.daemon.events.subscribe("test", seen.append, kinds=(RealChanged,))
    ports = {w.port for w in five}
    await wait_for(lambda: r.weights() == dict.fromkeys(ports, 1), within=15)

    # checks start as the loop comes back and are still waiting for their answer (0.25 s)
    # when it stalls again
    await starve(6, gap_s=0.15)
    await asyncio.sleep(1.5)  # the checks in flight at the last stall report

    assert downs(seen) == []
    assert r.weights() == dict.fromkeys(ports, 1)
    stats = r.daemon.engine.stats
    assert stats.checks_unknown > 0
    assert stats.checks_untrusted == 0
    status = json.loads(r.daemon.status_json(max_age=0.0))
    assert status["stats"]["checks_unknown"] == stats.checks_unknown
    assert status["stats"]["loop_lag_ms"] >= 1500
    assert status["stats"]["admission_window"] >= 256  # the status shows the window
    assert status["stats"]["slots_deferred"] >= 0
    assert "unknown (the daemon was late" in render_status(status)
    body = b"".join(await Exporter(r.daemon).scrape()).decode()
    assert f"lvsmon_checks_unknown_total {stats.checks_unknown}\n" in body
    (lag_line,) = [x for x in body.splitlines() if x.startswith("lvsmon_event_loop_lag_seconds ")]
    assert float(lag_line.split()[1]) >= 1.5
    assert not any("is down" in m or "Quiescent" in m for m in caplog.messages)
    # aggregated: a line per LOG_EVERY_S at most, not one per check
    lines = [m for m in caplog.messages if "counted as unknown" in m]
    assert 1 <= len(lines) <= 2


async def test_a_hung_real_goes_down_when_the_daemon_is_on_time(
    five: list[Slow], hung: int, tmp_path: Path, stopper: list[Running]
) -> None:
    r = await start(write_config(tmp_path, [five[0].port, hung]))
    stopper.append(r)
    ref = RealRef(VKEY, "127.0.0.1", hung)
    await wait_for(lambda: r.daemon.engine.health[ref].checked, within=15)
    await asyncio.sleep(2.5)  # a few more timeouts
    assert not r.daemon.engine.health[ref].up
    assert "timeout after 1s during http" in r.daemon.engine.health[ref].reason
    assert r.weights() == {five[0].port: 1}
    assert r.daemon.engine.stats.checks_unknown == 0


async def test_past_the_bound_a_late_timeout_is_a_failure(
    five: list[Slow],
    tmp_path: Path,
    stopper: list[Running],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lag, "UNKNOWN_MIN_RUNS", 1)
    monkeypatch.setattr(lag, "UNKNOWN_MAX_S", 3.0)
    monkeypatch.setattr(lag, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="lvsmon")
    hanging = Slow(0)
    await hanging.start()
    try:
        r = await start(write_config(tmp_path, [five[0].port, hanging.port]))
        stopper.append(r)
        ref = RealRef(VKEY, "127.0.0.1", hanging.port)
        await wait_for(lambda: r.weights() == {five[0].port: 1, hanging.port: 1}, within=15)
        # it hangs while the daemon is late for good: unknown first, a failure past the bound
        hanging.hang = True
        await starve(6, block_s=1.6)
        await asyncio.sleep(1.5)
        # before the server stops: stopping releases its hung answers
        # (the healthy slow one may go too: under a bound this short, that is the point)
        assert not r.daemon.engine.health[ref].up
    finally:
        await hanging.stop()
    assert r.daemon.engine.stats.checks_untrusted > 0
    assert any("checks cannot be trusted" in m for m in caplog.messages)
