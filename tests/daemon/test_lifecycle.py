"""The daemon's life: TERM is acted on at once during start-up, a crashed engine loop stops the
daemon with a non-zero exit, and the phases are events."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine.events import Event, PhaseChanged
from lvsmon.ipvs.memory import MemoryBackend
from tests.helpers import Web, wait_for


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections (the kernel completes the handshake) and never answers: every
    check against it runs to its deadline."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock.getsockname()[1]
    sock.close()


def hanging_cf(path: Path, port: int, log: Path) -> None:
    path.write_text(
        f'checktimeout=40\ncheckinterval=60\nlogfile="{log}"\n'
        f"virtual=127.0.0.100:80\n\treal=127.0.0.1:{port} masq\n\tservice=http\n"
    )


async def test_stop_during_start_up_returns_at_once(silent_server: int, tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    hanging_cf(cf, silent_server, tmp_path / "log")
    backend = MemoryBackend()
    daemon = Daemon(load_config(str(cf)), backend)
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    await wait_for(lambda: backend.table != {})  # started: the service is programmed
    await asyncio.sleep(0.3)
    assert not ready.done()  # still waiting for the first round of checks (40 s)
    t0 = time.monotonic()
    daemon.request_stop()
    code = await asyncio.wait_for(task, 10)
    took = time.monotonic() - t0
    assert took < 2.0, f"stop during start-up took {took:.1f} s"
    assert code == 0
    assert ready.result() is not None and "stopped during start-up" in str(ready.result())
    assert backend.table == {}  # cleanstop still ran


def test_stop_command_during_start_up(silent_server: int, tmp_path: Path) -> None:
    """As an operator sees it: `start` is waiting for the first checks, `stop` ends it."""
    cf = tmp_path / "lb.cf"
    log = tmp_path / "log"
    hanging_cf(cf, silent_server, log)
    env = {
        **os.environ,
        "LVSMON_BACKEND": "memory",
        "LVSMON_PIDFILE": str(tmp_path / "lb.pid"),
    }
    starter = subprocess.Popen(
        [sys.executable, "-m", "lvsmon", str(cf), "start"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while "Starting Linux Director Daemon" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "daemon never started"
            time.sleep(0.05)
        t0 = time.monotonic()
        stop = subprocess.run(
            [sys.executable, "-m", "lvsmon", str(cf), "stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        took = time.monotonic() - t0
        assert stop.returncode == 0, stop.stderr
        assert took < 3.0, f"stop during start-up took {took:.1f} s"  # 2 s + process start
        _, err = starter.communicate(timeout=10)
        assert starter.returncode == 1  # start never reached "programmed": says so
        assert "stopped during start-up" in err
        print(f"stop during start-up: {took:.2f} s")
    finally:
        if starter.poll() is None:
            starter.send_signal(signal.SIGKILL)
            starter.wait()


async def test_a_crashed_engine_loop_stops_the_daemon_non_zero(
    webs: list[Web], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text(
        "checktimeout=1\ncheckinterval=1\nvirtual=127.0.0.100:80\n"
        f"\treal=127.0.0.1:{webs[0].port} masq\n\tservice=http\n"
    )
    backend = MemoryBackend()
    daemon = Daemon(load_config(str(cf)), backend)
    phases: list[str] = []

    def phase(event: Event) -> None:
        if isinstance(event, PhaseChanged):
            phases.append(event.phase)

    daemon.events.subscribe("phases", phase, kinds=(PhaseChanged,))
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None

    def broken(_actual: object) -> object:
        raise ZeroDivisionError("a bug")

    daemon.engine.desired_for = broken  # type: ignore[assignment]
    daemon.engine.reconciler.mark_dirty()
    code = await asyncio.wait_for(task, 30)
    assert code == 1
    assert "lvsmon-reconcile crashed" in caplog.text and "ZeroDivisionError" in caplog.text
    assert phases == ["starting", "running", "stopping"]


async def test_a_backend_that_raises_at_start_up_is_reported_not_hung(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ..engine.faulty import FaultyBackend

    cf = tmp_path / "lb.cf"
    cf.write_text("virtual=127.0.0.100:80\n\treal=127.0.0.1:1 masq\n\tchecktype=on\n")
    backend = FaultyBackend()
    backend.raise_share = 1.0
    daemon = Daemon(load_config(str(cf)), backend)
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    code = await asyncio.wait_for(daemon.run(ready.set_result), 10)
    assert code == 1
    assert "injected backend crash" in str(ready.result())
    assert "start-up failed" in caplog.text and "Traceback" in caplog.text
