"""The ldirectord command line end to end: a real daemon process, the memory backend, real HTTP
servers on loopback, the exit codes of ldirectord."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lvsmon.daemon import pidfile
from tests.helpers import Web, alive, install_as_ldirectord, lvsmon, wait_for


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
    assert daemon and alive(daemon) and pidfile.holder(str(pid)) == daemon

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
    assert alive(daemon)
    cf.write_text("")  # truncated: refused here as the daemon would refuse it
    rc, _, err = await run(str(cf), "reload", env=env)
    assert rc == 2 and "is empty; configuration not reloaded" in err
    cf.write_text(good)
    assert (await run(str(cf), "reload", env=env))[0] == 0

    await webs[1].stop()
    await wait_for(lambda: f"Deleted real server: 127.0.0.1:{webs[1].port}" in log.read_text())

    assert (await run(str(cf), "stop", env=env))[0] == 0
    # stop returns only after the daemon cleaned up and exited
    assert not alive(daemon)
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


async def test_kill_9_leaves_a_stale_pid_file_in_ldirectord_words(
    webs: list[Web], tmp_path: Path
) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log)
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}
    assert (await run(str(cf), "start", env=env))[0] == 0
    daemon = pidfile.read_pid(str(pid))
    assert daemon
    os.kill(daemon, signal.SIGKILL)
    await wait_for(lambda: not alive(daemon))
    rc, out, err = await run(str(cf), "status", env=env)
    assert (rc, out, err) == (
        1,
        f"lvsmon is stopped for {cf}\n",
        f"lvsmon stale pid file {pid} for {cf}\n",
    )
    # installed under ldirectord's name, it says "ldirectord", as the stock OCF agent expects
    wrapper = install_as_ldirectord(tmp_path / "bin")
    done = await asyncio.to_thread(
        subprocess.run,
        [str(wrapper), str(cf), "status"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert (done.returncode, done.stderr) == (1, f"ldirectord stale pid file {pid} for {cf}\n")
    # start over the stale file
    assert (await run(str(cf), "start", env=env))[0] == 0
    assert pidfile.state(str(pid)).running
    assert (await run(str(cf), "stop", env=env))[0] == 0


async def test_relative_config_and_pid_file_paths(webs: list[Web], tmp_path: Path) -> None:
    """The daemon chdirs to /: it must still read the config (reload) and find its files."""
    log = tmp_path / "lb.log"
    write_cf(tmp_path / "lb.cf", webs, log)
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": "lb.pid"}

    async def here(*args: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "lvsmon", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=tmp_path,
            check=False,
            timeout=60,
        )
        return done.returncode, done.stdout, done.stderr

    assert (await here("lb.cf", "start"))[0] == 0
    try:
        assert (tmp_path / "lb.pid").exists()
        rc, _, err = await here("lb.cf", "status")
        assert rc == 0 and "running" in err
        assert "with /" in log.read_text()  # "Starting ... with /abs/lb.cf"

        def weight_3() -> bool:
            status = tmp_path / "lb.status.json"
            if not status.exists():
                return False
            state = json.loads(status.read_text())
            return {r["kernel_weight"] for v in state["virtuals"] for r in v["reals"]} == {3}

        cf = tmp_path / "lb.cf"
        cf.write_text(cf.read_text().replace(" masq\n", " masq 3\n"))
        assert await here("lb.cf", "reload") == (0, "", "")
        await wait_for(weight_3)
        assert "Error reading file" not in log.read_text()

        # a file that is gone is refused by reload, and nothing is signalled
        cf.rename(tmp_path / "gone.cf")
        rc, _, err = await here("lb.cf", "reload")
        assert rc == 1 and "not found" in err and "not reloaded" in err
    finally:
        assert (await here("lb.cf", "stop"))[0] == 0
    assert not (tmp_path / "lb.pid").exists()


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
    await wait_for(lambda: not alive(daemon))
    assert "Purged virtual server" not in log.read_text()  # cleanstop=no leaves the table
