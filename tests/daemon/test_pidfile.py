"""Liveness by lock: a pid file counts only while the daemon that wrote it holds its lock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.daemon import pidfile
from tests.helpers import alive, lvsmon, wait_for

HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time
    from lvsmon.daemon import pidfile
    fd = pidfile.acquire(sys.argv[1])
    pidfile.write_pid(sys.argv[1], __import__("os").getpid())
    # a child that would keep an inherited lock alive (flock, OFD locks) after we die
    child = subprocess.Popen(["sleep", "1000"], close_fds=False)
    print(child.pid, flush=True)
    time.sleep(1000)
    """
)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


def hold(path: Path, procs: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], int]:
    """A process holding the lock of `path`, as the daemon does; returns it and its child."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    procs.append(p)
    assert p.stdout is not None
    child = int(p.stdout.readline())
    return p, child


def test_state_follows_the_lock_not_the_file(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "x.pid"
    assert pidfile.state(str(path)) == pidfile.PidState(None, False)
    p, child = hold(path, procs)
    try:
        assert pidfile.state(str(path)) == pidfile.PidState(p.pid, True)
        assert pidfile.holder(str(path)) == p.pid
        # the kernel names the holder even when the file says otherwise
        path.write_text(f"{os.getpid()}\n")
        assert pidfile.state(str(path)) == pidfile.PidState(p.pid, True)
        # a second daemon for the same pid file learns who runs, and gets nothing
        with pytest.raises(pidfile.AlreadyRunning) as exc:
            pidfile.acquire(str(path))
        assert exc.value.pid == p.pid
        path.write_text(f"{p.pid}\n")
        p.kill()
        p.wait()
        # SIGKILL: the file stays, the lock goes, though the child inherited every descriptor
        assert alive(child)
        assert pidfile.state(str(path)) == pidfile.PidState(p.pid, False)
        assert pidfile.state(str(path)).stale
    finally:
        os.kill(child, signal.SIGKILL)


def test_the_lock_descriptor_is_not_inherited(tmp_path: Path) -> None:
    fd = pidfile.acquire(str(tmp_path / "x.pid"))
    try:
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)
    # released on close: taken again at once
    os.close(pidfile.acquire(str(tmp_path / "x.pid")))


def test_a_symlink_at_the_lock_name_is_refused(tmp_path: Path) -> None:
    precious = tmp_path / "victim"
    precious.write_text("precious\n")
    Path(f"{tmp_path / 'x.pid'}.lock").symlink_to(precious)
    with pytest.raises(OSError):
        pidfile.acquire(str(tmp_path / "x.pid"))
    assert precious.read_text() == "precious\n"
    assert pidfile.state(str(tmp_path / "x.pid")) == pidfile.PidState(None, False)


def cf_on(path: Path, log: Path, weight: int = 1) -> None:
    """No check at all (checktype=on): a real that is always up, nothing on the network."""
    path.write_text(
        f'checkinterval=1\nlogfile="{log}"\n'
        f"virtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq {weight}\n\tchecktype=on\n"
    )


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.to_thread(lvsmon, *args, env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def foreign(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """A process whose command line says "lvsmon": ldirectord's test, and lvsmon's until now."""
    bindir = tmp_path / "lvsmon"
    bindir.mkdir()
    (bindir / "sleep").symlink_to("/bin/sleep")
    p = subprocess.Popen([str(bindir / "sleep"), "1000"], text=True)
    procs.append(p)
    return p


async def test_a_foreign_process_named_in_the_pid_file_is_not_the_daemon(
    tmp_path: Path, foreign: subprocess.Popen[str]
) -> None:
    await wait_for(lambda: b"/lvsmon/sleep" in Path(f"/proc/{foreign.pid}/cmdline").read_bytes())
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    cf_on(cf, log)
    pid.write_text(f"{foreign.pid}\n")
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}

    rc, out, err = await run(str(cf), "status", env=env)
    assert (rc, out) == (1, f"lvsmon is stopped for {cf}\n")
    assert err == f"lvsmon stale pid file {pid} for {cf}\n"
    assert await run(str(cf), "stop", env=env) == (0, "", "")
    assert foreign.poll() is None  # not signalled
    assert (await run(str(cf), "reload", env=env))[0] == 1

    rc, _, err = await run(str(cf), "start", env=env)
    assert (rc, err) == (0, "")
    daemon = pidfile.read_pid(str(pid))
    assert daemon and daemon != foreign.pid and pidfile.holder(str(pid)) == daemon
    rc, _, err = await run(str(cf), "status", env=env)
    assert rc == 0 and f"running with pid: {daemon}\n" in err
    assert (await run(str(cf), "stop", env=env))[0] == 0
    assert not alive(daemon) and not pid.exists()
    assert foreign.poll() is None
    assert (await run(str(cf), "status", env=env))[0] == 3


async def test_two_racing_starts_run_one_daemon(tmp_path: Path) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    cf_on(cf, log)
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}
    results = await asyncio.gather(*(run(str(cf), "start", env=env) for _ in range(3)))
    try:
        assert [rc for rc, _, _ in results] == [0, 0, 0]
        daemon = pidfile.holder(str(pid))
        assert daemon and pidfile.read_pid(str(pid)) == daemon
        # the losers wrote nothing: one daemon started, one pid file, one programmed table
        await wait_for(lambda: log.read_text().count("Added real server") >= 1)
        text = log.read_text()
        assert text.count("Starting Linux Director Daemon") == 1, text
        assert text.count("Added real server: 127.0.0.1:80") == 1, text
        losers = [err for _, _, err in results if err]
        assert all(e == f"lvsmon for {cf} is running with pid: {daemon}\n" for e in losers)
    finally:
        assert (await run(str(cf), "stop", env=env))[0] == 0
    assert pidfile.state(str(pid)) == pidfile.PidState(None, False)
