"""The ldirectord command line end to end: a real daemon process, the memory backend, real HTTP
servers on loopback, the exit codes of ldirectord."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from lvsmon import pidfile

from .conftest import Web, lvsmon, wait_for


def write_cf(path: Path, webs: list[Web], log: Path, extra: str = "") -> None:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq\n" for w in webs)
    path.write_text(
        f'checktimeout=2\ncheckinterval=1\nlogfile="{log}"\n{extra}'
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
    )


async def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.to_thread(lvsmon, *args, env=env)
    return proc.returncode, proc.stdout, proc.stderr


async def test_start_status_reload_stop(webs: list[Web], tmp_path: Path) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log)
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}

    assert await run(str(cf), "status", env=env) == (3, f"lvsmon is stopped for {cf}\n", "")
    rc, _, err = await run(str(cf), "start", env=env)
    assert (rc, err) == (0, "")
    # start returns once the table is programmed: every healthy real is already in
    text = log.read_text()
    assert all(f"Added real server: 127.0.0.1:{w.port} (127.0.0.100:80)" in text for w in webs)
    daemon = pidfile.read_pid(str(pid))
    assert daemon and pidfile.is_lvsmon(daemon)

    rc, _, err = await run(str(cf), "status", env=env)
    assert rc == 0 and f"running with pid: {daemon}" in err
    # the daemon's own view: every real, its state and kernel weight, check figures
    await wait_for(lambda: (tmp_path / "lb.status.json").exists())
    rc, out, _ = await run(str(cf), "status", env=env)
    assert f"127.0.0.1:{webs[0].port}" in out and " up " in out and "weight 1" in out
    assert "start lateness p50" in out
    assert (await run(str(cf), "start", env=env))[0] == 0  # already running: a no-op

    # a broken config is refused by reload, and the daemon keeps running the old one
    good = cf.read_text()
    cf.write_text(good + "\tbogus=1\n")
    rc, _, err = await run(str(cf), "reload", env=env)
    assert rc == 2 and f"{cf}:" in err
    assert pidfile.is_lvsmon(daemon)
    cf.write_text(good)
    assert (await run(str(cf), "reload", env=env))[0] == 0

    await webs[1].stop()
    await wait_for(lambda: f"Deleted real server: 127.0.0.1:{webs[1].port}" in log.read_text())

    assert (await run(str(cf), "stop", env=env))[0] == 0
    # stop returns only after the daemon cleaned up and exited
    assert not pidfile.is_lvsmon(daemon)
    assert not pid.exists()
    assert "Purged virtual server (stop): 127.0.0.100:80" in log.read_text()
    assert "terminated on signal: TERM" in log.read_text()
    assert (await run(str(cf), "status", env=env))[0] == 3
    assert (await run(str(cf), "stop", env=env))[0] == 0
    assert (await run(str(cf), "reload", env=env))[0] == 1


async def test_stale_pid_file_is_status_1(tmp_path: Path) -> None:
    pid = tmp_path / "x.pid"
    pid.write_text("999999\n")
    rc, out, err = await run(str(tmp_path / "x.cf"), "status", env={"LVSMON_PIDFILE": str(pid)})
    assert rc == 1 and "stale pid file" in err and "stopped" in out


async def test_config_errors_and_missing_config(tmp_path: Path) -> None:
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(tmp_path / "p.pid")}
    rc, _, err = await run(str(tmp_path / "nope.cf"), "start", env=env)
    assert rc == 1 and "not found" in err
    bad = tmp_path / "bad.cf"
    bad.write_text("checktimeout=3\nvirtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq\n\tfrob=1\n")
    rc, _, err = await run(str(bad), "start", env=env)
    assert rc == 2 and err.startswith(f"{bad}:4: ") and "Traceback" not in err
    # stop and status never parse the config (ldirectord exited 2 here)
    assert (await run(str(bad), "stop", env=env))[0] == 0
    assert (await run(str(bad), "status", env=env))[0] == 3


async def test_usage_errors_are_255(tmp_path: Path) -> None:
    assert (await run("frobnicate", env={}))[0] == 255
    assert (await run("--bogus", "start", env={}))[0] == 255


async def test_sigterm_cleans_up_like_stop(webs: list[Web], tmp_path: Path) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log, extra="cleanstop=no\n")
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}
    assert (await run(str(cf), "start", env=env))[0] == 0
    daemon = pidfile.read_pid(str(pid))
    assert daemon
    os.kill(daemon, signal.SIGTERM)
    await wait_for(lambda: not pidfile.is_lvsmon(daemon))
    assert "Purged virtual server" not in log.read_text()  # cleanstop=no leaves the table
