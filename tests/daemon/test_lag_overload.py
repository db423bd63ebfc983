"""An overloaded daemon stretches its periods and takes no healthy real down (issue 22: run C of
bench/README.md's versus_keepalived, where on a saturated host lvsmon's lateness became
timeouts and then false downs while keepalived only got slower).

The reals are one server process (tests/daemon/slow_server.py) answering in arrival order at
most ANSWERS_PER_S a second, as a busy nginx on a saturated host: 1,500 checks a second are
within its means, 3,000 at once are not (the last would wait 1.5 s, past the 1 s timeout).

* The first round: 3,000 reals started at once (the runner before admission control: the
  control test) and hundreds of healthy ones time out in the server's queue, so they are not
  put in at start-up. Admitted through the window, none times out.
* Overload, 3,000 checks a second: more than the server answers, and the daemon's loop stalls
  0.6 s of every second (a saturated host's other processes). Without admission every check
  that fell due during a stall starts at once after it, the burst times out in the server's
  queue while the loop is late (unknown at first) and past the bound (shortened here as in
  test_lag.py) they count: healthy reals go down. With it the window shrinks, due checks wait
  in the timetable (deferred), the period stretches and no check fails.
"""

from __future__ import annotations

import asyncio
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsmon.engine import lag
from lvsmon.engine import runner as runnermod
from lvsmon.engine.events import Event, RealChanged
from lvsmon.engine.lag import AdmissionWindow

from .conftest import Running, start

ADDRESSES = 200  # 127.0.9.1-200, each listening on PORTS ports: 3,000 reals
PORTS = 15
ANSWERS_PER_S = 2000  # the server's throughput
TIMEOUT_S = 1.0
STALL_S = 0.6  # of every second, under overload
RUN_S = 6.0


@pytest.fixture
async def servers() -> AsyncIterator[list[int]]:
    """The reals: a process answering ANSWERS_PER_S a second at most."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.daemon.slow_server",
        str(ADDRESSES), str(PORTS), str(1 / ANSWERS_PER_S), stdin=PIPE, stdout=PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        yield [int(p) for p in line.split()]
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def write_config(tmp_path: Path, ports: list[int], interval: float) -> Path:
    lines = [f"checktimeout={TIMEOUT_S:g}", f"checkinterval={interval:g}", "failurecount=1",
             "quiescent=no"]  # fmt: skip
    for i, port in enumerate(ports):
        lines.append(f"virtual=127.0.0.{100 + i}:80")
        lines += [f"\treal=127.0.9.{a}:{port} masq 1" for a in range(1, ADDRESSES + 1)]
        lines += ["\tservice=http", '\trequest="/"', ""]
    cf = tmp_path / "overload.cf"
    cf.write_text("\n".join(lines))
    return cf


def wide_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner before admission control: every due check starts at once."""
    wide = 10**9
    monkeypatch.setattr(runnermod, "AdmissionWindow", lambda: AdmissionWindow(wide, wide, wide))


async def stalls() -> None:
    """The loop gets STALL_SHARE of every second taken from it (time.sleep blocks it all), as
    a saturated host's other processes take the daemon's CPU."""
    while True:
        await asyncio.sleep(1.0 - STALL_S)
        time.sleep(STALL_S)  # noqa: ASYNC251 - the point: the whole daemon stops meanwhile


async def downs_in(r: Running, seconds: float) -> int:
    seen: list[Event] = []
    r.daemon.events.subscribe("test", seen.append, kinds=(RealChanged,))
    await asyncio.sleep(seconds)
    return sum(1 for e in seen if isinstance(e, RealChanged) and not e.up)


async def first_round(tmp_path: Path, ports: list[int], stopper: list[Running]) -> Running:
    """3,000 reals every 2 s, from start-up: the first round and two more."""
    r = await start(write_config(tmp_path, ports, 2.0))
    stopper.append(r)
    await asyncio.sleep(4.0)
    return r


async def test_the_first_round_is_admitted_without_flooding_the_reals(
    servers: list[int], tmp_path: Path, stopper: list[Running]
) -> None:
    r = await first_round(tmp_path, servers, stopper)
    stats = r.daemon.engine.stats
    assert stats.checks_done >= 3000
    assert stats.checks_failed == stats.checks_unknown == 0
    assert all(h.up for h in r.daemon.engine.health.values())


async def test_control_the_first_round_at_once_times_healthy_reals_out(
    servers: list[int], tmp_path: Path, stopper: list[Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    wide_open(monkeypatch)
    r = await first_round(tmp_path, servers, stopper)
    assert r.daemon.engine.stats.checks_failed > 0


@pytest.fixture
def short_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Late timeouts count as failures after one run and 2 s (30 s in production): the test
    sees in seconds what an overloaded daemon did in half a minute."""
    monkeypatch.setattr(lag, "UNKNOWN_MIN_RUNS", 1)
    monkeypatch.setattr(lag, "UNKNOWN_MAX_S", 2.0)


async def overloaded(
    tmp_path: Path, ports: list[int], stopper: list[Running], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, Running]:
    """3,000 reals every second, more than the server answers, on a loop that stalls most of
    every second: the downs in RUN_S."""
    r = await start(write_config(tmp_path, ports, 1.0))
    stopper.append(r)
    stalling = asyncio.get_running_loop().create_task(stalls())
    try:
        return await downs_in(r, RUN_S), r
    finally:
        stalling.cancel()


@pytest.mark.usefixtures("short_bound")
async def test_an_overloaded_daemon_stretches_its_period_and_takes_no_healthy_real_down(
    servers: list[int], tmp_path: Path, stopper: list[Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    downs, r = await overloaded(tmp_path, servers, stopper, monkeypatch)
    runner, stats = r.daemon.engine.runner, r.daemon.engine.stats
    assert downs == 0
    assert stats.checks_untrusted == stats.checks_failed == 0
    # the period stretched: checks started late because the window was full
    assert runner.deferred > 0
    assert max(stats.lateness) > 0.2  # seconds, at 1 s intervals


@pytest.mark.usefixtures("short_bound")
async def test_control_an_overloaded_daemon_without_admission_takes_healthy_reals_down(
    servers: list[int], tmp_path: Path, stopper: list[Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    wide_open(monkeypatch)
    downs, r = await overloaded(tmp_path, servers, stopper, monkeypatch)
    assert downs > 0
    assert r.daemon.engine.stats.checks_untrusted > 0
