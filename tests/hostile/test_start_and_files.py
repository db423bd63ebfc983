"""Issue 21, classes 5 and 7: a start that cannot bind changes nothing of the table it would
adopt, and the run-time files (drain state, status file) are read like the config: a FIFO never
blocks the loop, a broken file is one error line and the last good state, housekeeping steps do
not skip each other, names from a state file never become paths outside maintenancedir, and
the log file carries tracebacks."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine.drain import DrainState
from lvsmon.engine.status import read_status
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey, Table
from tests import helpers
from tests.helpers import Web, lvsmon, wait_for

webs = helpers.webs  # the fixture (three HTTP reals), found by name

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)
NESTED = "[" * 200_000 + "]" * 200_000  # json raises RecursionError


def cf_text(webs: list[Web], extra: str = "") -> str:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq\n" for w in webs)
    return (
        f"checktimeout=1\ncheckinterval=1\n{extra}virtual=127.0.0.100:80\n{reals}"
        '\tservice=http\n\treceive="alive"\n'
    )


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task[int]) -> None:
        self.daemon, self.task = daemon, task

    def weights(self) -> dict[int, int]:
        table = self.daemon.engine.actual or {}
        return {d.port: c.weight for d, c in table[VKEY].dests.items()} if VKEY in table else {}


@pytest.fixture
async def running() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.daemon.request_stop()
        await asyncio.wait_for(r.task, 30)


async def run(daemon: Daemon) -> tuple[asyncio.Task[int], str | None]:
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    return task, await asyncio.wait_for(ready, 30)


# ---- class 5: a failed start changes nothing ------------------------------------------------


async def adopted_table(cf: Path) -> Table:
    """The table a daemon on `cf` leaves behind (cleanstop=no): what the next start adopts."""
    backend = MemoryBackend()
    daemon = Daemon(load_config(str(cf)), backend)
    task, error = await run(daemon)
    assert error is None
    daemon.request_stop()
    assert await task == 0
    assert VKEY in backend.table and len(backend.table[VKEY].dests) == 2
    return backend.table


def taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("what", ["socket path too long", "listen port taken"])
async def test_a_start_that_cannot_bind_leaves_an_adopted_table_untouched(
    webs: list[Web], tmp_path: Path, what: str
) -> None:
    kept = tmp_path / "kept.cf"
    kept.write_text(cf_text(webs[:2], extra="cleanstop=no\n"))
    table = await adopted_table(kept)
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:2]))  # cleanstop=yes: a stop would purge it
    backend = MemoryBackend(table=table)
    holder = taken_port()
    try:
        if what == "socket path too long":
            deep = tmp_path / ("d" * 120)
            deep.mkdir()
            daemon = Daemon(load_config(str(cf)), backend, control_socket=str(deep / "lb.sock"))
            expected = "cannot bind the control socket"
        else:
            port = holder.getsockname()[1]
            daemon = Daemon(load_config(str(cf)), backend, listen=f"127.0.0.1:{port}")
            expected = f"cannot listen on 127.0.0.1:{port}"
        task, error = await run(daemon)
        assert await asyncio.wait_for(task, 30) == 1
    finally:
        holder.close()
    assert backend.table == table  # not purged, not even re-programmed
    assert backend.applies == 0 and backend.log == []
    assert error is not None and expected in error and "\n" not in error


def test_start_that_cannot_bind_exits_non_zero_with_one_line(
    webs: list[Web], tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:1], extra=f'logfile="{tmp_path / "log"}"\n'))
    done = lvsmon(
        str(cf),
        "start",
        env={"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(deep / "lb.pid")},
    )
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot bind the control socket" in lines[0] and str(deep / "lb.sock") in lines[0]
    assert not (deep / "lb.pid").exists()


@pytest.mark.parametrize("what", ["log file", "pid file"])
def test_start_that_cannot_open_its_files_exits_non_zero_with_one_line(
    webs: list[Web], tmp_path: Path, what: str
) -> None:
    log = tmp_path / "log"
    if what == "log file":
        os.mkfifo(log)  # nobody reads it: it cannot be opened for writing without blocking
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:1], extra=f'logfile="{log}"\n'))
    pid = tmp_path / "lb.pid"
    if what == "pid file":
        pid.mkdir()  # a directory where the pid file goes: it cannot be replaced
    done = lvsmon(str(cf), "start", env={"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)})
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"cannot {'open' if what == 'log file' else 'write'} the {what}" in lines[0]


# ---- class 7: run-time files ------------------------------------------------------------------


async def test_a_fifo_as_drain_state_does_not_block_the_checks(
    webs: list[Web], tmp_path: Path, running: list[Running]
) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:2]))
    state = tmp_path / "lb.drain.json"
    daemon = Daemon(load_config(str(cf)), MemoryBackend(), drain_state=str(state))
    task, error = await run(daemon)
    assert error is None
    r = Running(daemon, task)
    running.append(r)
    await wait_for(lambda: len(r.weights()) == 2)
    os.mkfifo(state)

    def unblock() -> None:  # a loop blocked in open(2) of the FIFO would never end the test
        fd = os.open(state, os.O_WRONLY)
        os.close(fd)

    rescue = threading.Timer(6.0, unblock)
    rescue.daemon = True
    rescue.start()
    try:
        longest, last = 0.0, time.monotonic()
        until = last + 3.0
        while last < until:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            longest, last = max(longest, now - last), now
        assert longest < 1.0, f"the loop stood still for {longest:.1f} s"
        await webs[1].stop()  # the checks still run: the stopped real goes out
        await wait_for(lambda: len(r.weights()) == 1)
    finally:
        rescue.cancel()


async def test_a_nested_drain_state_is_one_error_line_and_autoreload_still_works(
    webs: list[Web], tmp_path: Path, running: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:2], extra="autoreload=yes\n"))
    state = tmp_path / "lb.drain.json"
    good = [{"real": f"127.0.0.1:{webs[0].port}", "virtual": None}]
    state.write_text(json.dumps(good))
    daemon = Daemon(load_config(str(cf)), MemoryBackend(), drain_state=str(state))
    task, error = await run(daemon)
    assert error is None
    r = Running(daemon, task)
    running.append(r)
    await wait_for(lambda: r.weights() == {webs[0].port: 0, webs[1].port: 1})

    state.write_text(NESTED)
    cf.write_text(cf_text(webs, extra="autoreload=yes\n"))  # a third real
    await wait_for(lambda: len(r.weights()) == 3)  # the config poll was not skipped
    await asyncio.sleep(2.5)
    errors = [m for m in caplog.messages if "drain state" in m]
    assert len(errors) == 1, errors
    assert "the last good state is kept" in errors[0]
    assert "housekeeping" not in caplog.text
    assert r.weights()[webs[0].port] == 0  # still drained: the last good state


async def test_a_traversing_name_in_the_drain_state_is_never_written_outside(
    webs: list[Web], tmp_path: Path
) -> None:
    plain = tmp_path / "plain.cf"
    plain.write_text(cf_text(webs[:1]))
    maint = tmp_path / "maint"
    maint.mkdir()
    with_dir = tmp_path / "dir.cf"
    with_dir.write_text(cf_text(webs[:1], extra=f"maintenancedir={maint}\n"))
    state = tmp_path / "lb.drain.json"
    state.write_text(json.dumps([{"real": "../outside", "virtual": None}]))
    drains = DrainState(str(state))
    drains.store(load_config(str(plain))).read()
    drains.store(load_config(str(with_dir)))  # maintenancedir on: the drains move there
    assert not (tmp_path / "outside.drain").exists()
    assert list(maint.iterdir()) == []


def test_the_log_file_carries_tracebacks(tmp_path: Path) -> None:
    log = tmp_path / "lvsmon.log"
    code = (
        "import logging\n"
        "from lvsmon.daemon.logsetup import setup_logging\n"
        f"setup_logging({str(log)!r}, 'lb', debug=False, supervised=False)\n"
        "try:\n"
        "    raise RuntimeError('deliberate')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('lvsmon').exception('housekeeping failed')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    text = log.read_text()
    assert "housekeeping failed" in text
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: deliberate" in text


def test_a_status_file_that_is_a_fifo_or_nested_is_no_status(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.status.json"
    os.mkfifo(fifo)
    nested = tmp_path / "nested.status.json"
    nested.write_text(NESTED)
    rescue = threading.Timer(6.0, lambda: os.close(os.open(fifo, os.O_WRONLY)))
    rescue.daemon = True
    rescue.start()
    try:
        t0 = time.monotonic()
        assert read_status(str(fifo)) is None
        assert time.monotonic() - t0 < 1.0
        assert read_status(str(nested)) is None
    finally:
        rescue.cancel()
