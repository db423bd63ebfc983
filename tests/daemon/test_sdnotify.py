"""systemd integration without systemd (booting it as PID 1 would wipe this machine's /tmp): a
notification-socket listener plays PID 1's part for the unit's own commands, run as real
processes on the memory backend with real HTTP servers on loopback.

What systemd would do with a notification depends on who sent it (NotifyAccess=main): the
listener gets the sender's pid from the kernel (SO_PASSCRED) and the tests compare it with the
main process's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvsmon.cli.control import Control
from lvsmon.cli.dispatch import COMMANDS
from lvsmon.cli.paths import DEFAULT_CONFIG, config_name
from lvsmon.daemon import pidfile
from lvsmon.daemon.sdnotify import monotonic_usec
from tests.helpers import Web, alive, lvsmon, wait_for

from .sdlistener import Note, NotifyListener

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "lvsmon.service"
FORKING_UNIT = REPO / "packaging" / "lvsmon-forking.service"
UNIT_BINARY = "/usr/sbin/lvsmon"
UNIT_CONFIG = "/etc/ha.d/ldirectord.cf"
LVSMON = [sys.executable, "-m", "lvsmon"]


def write_cf(path: Path, webs: list[Web], log: Path, weight: int = 1) -> None:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq {weight}\n" for w in webs)
    path.write_text(
        f'checktimeout=2\ncheckinterval=1\nlogfile="{log}"\n'
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
    )


def unit_settings(path: Path) -> dict[str, list[str]]:
    """KEY -> values of a unit file's [Service] section."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def unit_command(value: str, cf: Path) -> list[str]:
    """A unit's Exec line as this test runs it: lvsmon from this checkout, the test's config
    (named before the command word where the unit relies on the default one)."""
    words = value.split()
    assert words[0] == UNIT_BINARY, value
    args = [str(cf) if w == UNIT_CONFIG else w for w in words[1:]]
    if args[-1] in COMMANDS and str(cf) not in args:
        args.insert(len(args) - 1, str(cf))
    return LVSMON + args


class Daemon:
    """A foreground lvsmon: the unit's main process."""

    def __init__(self, argv: list[str], env: dict[str, str], out: Path) -> None:
        self.out = out
        with out.open("w") as f:
            self.proc = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=f, stderr=subprocess.STDOUT
            )
        self.pid = self.proc.pid

    async def exited(self, within: float = 60.0) -> int:
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the daemon did not exit")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    n = NotifyListener()
    yield n
    n.close()


def from_main(pid: int, key: str, value: str = "1") -> Callable[[Note], bool]:
    return lambda n: n.pid == pid and n.has(key, value)


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(lvsmon, *args, env=env)


def read_status(path: Path) -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state


def kernel_weights(state: object) -> dict[int, int | None]:
    """real port -> its weight in the (memory) kernel table, from a status file."""
    assert isinstance(state, dict), "no status file"
    virtuals = state["virtuals"]
    assert isinstance(virtuals, list)
    return {r["port"]: r["kernel_weight"] for v in virtuals for r in v["reals"]}


async def test_the_units_commands_under_a_stand_in_for_systemd(
    webs: list[Web], tmp_path: Path, daemons: list[Daemon]
) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    status = tmp_path / "lb.status.json"
    await webs[2].stop()  # one real is down from the start
    write_cf(cf, webs, log)
    unit = unit_settings(UNIT)
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}

    pre = await cli(*unit_command(unit["ExecStartPre"][0], cf)[3:], env=env)
    assert pre.returncode == 0, pre.stderr
    # the table as the listener sees it the instant READY=1 arrives
    listener = NotifyListener(at_ready=lambda: read_status(status))
    try:
        t0 = time.monotonic()
        d = Daemon(
            unit_command(unit["ExecStart"][0], cf),
            {**env, "NOTIFY_SOCKET": listener.address},
            tmp_path / "out",
        )
        daemons.append(d)
        _, ready = await listener.wait(lambda n: n.has("READY"))
        print(f"READY=1 {ready.at - t0:.3f} s after ExecStart")
        # from the main process (NotifyAccess=main), which stayed in the foreground
        assert ready.pid == d.pid and ready.get("MAINPID") == str(d.pid)
        assert d.proc.poll() is None and pidfile.read_pid(str(pid)) == d.pid
        # the table was programmed when READY=1 was sent: the healthy reals were in, the dead
        # one not (the status file is written before READY=1, from the daemon's kernel view)
        assert kernel_weights(listener.ready_result) == {
            webs[0].port: 1,
            webs[1].port: 1,
            webs[2].port: None,
        }
        assert ready.get("STATUS") == "1 virtual, 2/3 reals up"
        # nothing but the main process spoke, and nothing before READY=1
        assert {n.pid for n in listener.snapshot()} == {d.pid}
        assert listener.snapshot()[0] == ready

        # ExecReload with a good config: validated, signalled, RELOADING=1 then READY=1
        write_cf(cf, webs, log, weight=2)
        before = monotonic_usec()
        mark = len(listener.snapshot())
        reload = await cli(*unit_command(unit["ExecReload"][0], cf)[3:], env=env)
        assert reload.returncode == 0, reload.stderr
        i, reloading = await listener.wait(from_main(d.pid, "RELOADING"), after=mark)
        assert before <= int(reloading.get("MONOTONIC_USEC") or 0) <= monotonic_usec()
        _, done = await listener.wait(from_main(d.pid, "READY"), after=i + 1)
        print(f"reload: RELOADING=1 -> READY=1 in {done.at - reloading.at:.3f} s")
        await wait_for(lambda: kernel_weights(read_status(status))[webs[0].port] == 2)

        # ExecReload with a bad config: refused before any signal, the daemon keeps the old one
        good = cf.read_text()
        cf.write_text(good + "\tbogus=1\n")
        reload = await cli(*unit_command(unit["ExecReload"][0], cf)[3:], env=env)
        assert reload.returncode == 2 and f"{cf}:" in reload.stderr
        assert d.proc.poll() is None

        # a HUP that finds a bad file (kill -HUP, or the file changed after validation): still
        # RELOADING=1 then READY=1, and STATUS says the reload was rejected
        mark = len(listener.snapshot())
        os.kill(d.pid, signal.SIGHUP)
        i, _ = await listener.wait(from_main(d.pid, "RELOADING"), after=mark)
        _, done = await listener.wait(from_main(d.pid, "READY"), after=i + 1)
        text = done.get("STATUS") or ""
        assert text.startswith("1 virtual, 2/3 reals up; last reload rejected (")
        assert f"{cf}:" in text and "running config kept" in text
        cf.write_text(good)

        # STATUS= follows the pool
        mark = len(listener.snapshot())
        await webs[1].stop()
        _, changed = await listener.wait(
            lambda n: (n.get("STATUS") or "").startswith("1 virtual, 1/3 reals up"), after=mark
        )
        assert changed.pid == d.pid

        # systemctl stop: TERM to the main process (KillMode=mixed), STOPPING=1, clean exit
        assert unit["KillMode"] == ["mixed"]
        mark = len(listener.snapshot())
        stop_at = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        _, stopping = await listener.wait(from_main(d.pid, "STOPPING"), after=mark)
        assert await d.exited() == 0
        print(
            f"stop: STOPPING=1 after {stopping.at - stop_at:.3f} s, exit after "
            f"{time.monotonic() - stop_at:.3f} s"
        )
        assert not pid.exists()
        assert "Purged virtual server (stop): 127.0.0.100:80" in log.read_text()
        assert "Traceback" not in d.out.read_text()
    finally:
        listener.close()


async def test_watchdog_pings_at_half_the_timeout_on_an_abstract_socket(
    webs: list[Web], tmp_path: Path, daemons: list[Daemon]
) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log)
    listener = NotifyListener(abstract=True)
    try:
        assert listener.address.startswith("@")
        env = {
            "LVSMON_BACKEND": "memory",
            "LVSMON_PIDFILE": str(pid),
            "NOTIFY_SOCKET": listener.address,
            "WATCHDOG_USEC": "1000000",
        }
        # systemd sets WATCHDOG_PID to the main pid: the shell's pid is python's after exec
        argv = [
            "sh",
            "-c",
            'WATCHDOG_PID=$$ exec "$@"',
            "sh",
            *LVSMON,
            "--foreground",
            str(cf),
            "start",
        ]
        d = Daemon(argv, env, tmp_path / "out")
        daemons.append(d)
        i, _ = await listener.wait(from_main(d.pid, "READY"))
        await listener.wait(from_main(d.pid, "WATCHDOG"), after=i + 7)
        pings = [n.at for n in listener.with_key("WATCHDOG", "1") if n.pid == d.pid]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        print("watchdog gaps (s):", " ".join(f"{g:.3f}" for g in gaps))
        # WATCHDOG_USEC/2 = 0.5 s; generous bounds for a loaded machine
        assert 0.3 <= statistics.median(gaps) <= 0.8
        d.proc.send_signal(signal.SIGTERM)
        await listener.wait(from_main(d.pid, "STOPPING"))
        assert await d.exited() == 0
    finally:
        listener.close()


async def test_no_watchdog_pings_for_another_pid(
    webs: list[Web], tmp_path: Path, daemons: list[Daemon], listener: NotifyListener
) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log)
    env = {
        "LVSMON_BACKEND": "memory",
        "LVSMON_PIDFILE": str(pid),
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": "200000",
        "WATCHDOG_PID": "1",  # meant for another process (sd_watchdog_enabled says no)
    }
    d = Daemon([*LVSMON, "--foreground", str(cf), "start"], env, tmp_path / "out")
    daemons.append(d)
    await listener.wait(from_main(d.pid, "READY"))
    await asyncio.sleep(1.5)  # 15 periods of 0.1 s
    assert not listener.with_key("WATCHDOG")
    d.proc.send_signal(signal.SIGTERM)
    assert await d.exited() == 0


@pytest.mark.parametrize("mode", ["call", "loop"])
async def test_watchdog_pings_stop_while_the_engine_is_wedged(
    mode: str, webs: list[Web], tmp_path: Path, daemons: list[Daemon], listener: NotifyListener
) -> None:
    """A table write that never returns ("call": the loop runs on, the reconciler is stuck;
    "loop": the whole event loop is blocked): the pings stop, so systemd would restart lvsmon;
    when the write returns they resume."""
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    flag = tmp_path / "hang"
    write_cf(cf, webs, log)
    env = {
        "LVSMON_BACKEND": "memory",
        "LVSMON_PIDFILE": str(pid),
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": "1000000",
    }
    launcher = str(Path(__file__).with_name("wedge_launcher.py"))
    argv = [sys.executable, launcher, str(flag), mode, "--foreground", str(cf), "start"]
    d = Daemon(argv, env, tmp_path / "out")
    daemons.append(d)
    i, _ = await listener.wait(from_main(d.pid, "READY"))
    await listener.wait(from_main(d.pid, "WATCHDOG"), after=i + 2)

    flag.touch()
    wedged_at = time.monotonic()
    await webs[1].stop()  # its removal is a table write, which now hangs

    def last_ping() -> float:
        return max(n.at for n in listener.with_key("WATCHDOG", "1"))

    # pings stop: no ping for 2.5 s, five periods (a bound on a hung test, not a measurement)
    deadline = time.monotonic() + 30
    while time.monotonic() - last_ping() < 2.5:
        assert time.monotonic() < deadline, "the pings went on"
        await asyncio.sleep(0.05)
    print(f"{mode}: last ping {last_ping() - wedged_at:.3f} s after the wedge")
    assert d.proc.poll() is None  # killing it is systemd's part
    if mode == "call":
        stalled = [
            n for n in listener.with_key("STATUS") if "engine stalled" in str(n.get("STATUS"))
        ]
        assert stalled and "IPVS table update has not finished" in str(stalled[0].get("STATUS"))
        assert "watchdog: an IPVS table update has not finished" in log.read_text()

    mark = len(listener.snapshot())
    flag.unlink()
    unwedged_at = time.monotonic()
    _, resumed = await listener.wait(from_main(d.pid, "WATCHDOG"), after=mark)
    print(f"{mode}: pings resumed {resumed.at - unwedged_at:.3f} s after the unwedge")
    await wait_for(lambda: f"Deleted real server: 127.0.0.1:{webs[1].port}" in log.read_text())
    d.proc.send_signal(signal.SIGTERM)
    assert await d.exited() == 0


@pytest.mark.parametrize("where", ["missing", "not-a-socket", "vsock"])
async def test_a_broken_notify_socket_does_not_break_the_daemon(
    where: str, webs: list[Web], tmp_path: Path, daemons: list[Daemon]
) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log)
    address = {
        "missing": str(tmp_path / "no" / "such" / "socket"),
        "not-a-socket": str(cf),
        "vsock": "vsock:2:1234",
    }[where]
    env = {
        "LVSMON_BACKEND": "memory",
        "LVSMON_PIDFILE": str(pid),
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "200000",  # a failing ping every 0.1 s: still one log line
    }
    d = Daemon([*LVSMON, "--foreground", str(cf), "start"], env, tmp_path / "out")
    daemons.append(d)
    await wait_for(lambda: (tmp_path / "lb.status.json").exists(), within=30)
    status = await cli(str(cf), "status", env=env)
    assert status.returncode == 0 and f"127.0.0.1:{webs[0].port}" in status.stdout
    await asyncio.sleep(1.0)
    d.proc.send_signal(signal.SIGTERM)
    assert await d.exited() == 0
    text = log.read_text()
    if where == "vsock":
        assert text.count("unsupported address; systemd is not notified") == 1
    else:
        assert text.count("cannot notify systemd") == 1, text
    assert "terminated on signal: TERM" in text
    assert "Traceback" not in d.out.read_text()


async def test_the_forking_form_still_works(
    webs: list[Web], tmp_path: Path, listener: NotifyListener
) -> None:
    """`lvsmon CFG start` as init scripts run it: forks, returns once the table is programmed
    (its status already on disk), `stop` returns once the daemon is gone. Under a
    NOTIFY_SOCKET (a Type=notify unit with NotifyAccess=all) the daemon announces itself with
    MAINPID= before `start` returns."""
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    write_cf(cf, webs, log)
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(pid)}
    started = await cli(str(cf), "start", env=env)
    assert (started.returncode, started.stderr) == (0, "")
    daemon = pidfile.read_pid(str(pid))
    assert daemon and alive(daemon)
    assert set(kernel_weights(read_status(tmp_path / "lb.status.json")).values()) == {1}
    assert (await cli(str(cf), "stop", env=env)).returncode == 0
    assert not alive(daemon)

    env["NOTIFY_SOCKET"] = listener.address
    started = await cli(str(cf), "start", env=env)
    assert started.returncode == 0
    daemon = pidfile.read_pid(str(pid))
    ready = listener.readies()
    assert ready and ready[0].pid == daemon and ready[0].get("MAINPID") == str(daemon)
    assert (await cli(str(cf), "stop", env=env)).returncode == 0
    await listener.wait(lambda n: n.pid == daemon and n.has("STOPPING"))


@pytest.mark.parametrize("unit", [UNIT, FORKING_UNIT], ids=lambda p: p.name)
def test_the_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    """Offline: systemd-analyze parses the unit like PID 1 would (and checks that every Exec
    binary exists, so the copy names the lvsmon of this checkout)."""
    analyze = "/usr/bin/systemd-analyze"
    if not os.access(analyze, os.X_OK):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    binary = Path(sys.executable).with_name("lvsmon")
    assert binary.exists(), binary
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(UNIT_BINARY, str(binary)))
    t0 = time.monotonic()
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, check=False
    )
    print(f"systemd-analyze verify {unit.name}: {time.monotonic() - t0:.3f} s")
    # it also judges the host's other units (Debian's ldirectord.service uses KillMode=none):
    # only lines about ours count; a directive it cannot parse is a warning with rc 0
    ours = [line for line in out.stderr.splitlines() if unit.name in line]
    assert out.returncode == 0 and not ours, out.stderr
    # a typo in a directive is caught by the same check (the test would see it)
    broken = tmp_path / f"broken-{unit.name}"
    broken.write_text(copy.read_text().replace("Type=", "Type=bogus-"))
    out = subprocess.run(
        [analyze, "verify", "--man=no", str(broken)], capture_output=True, text=True, check=False
    )
    assert any(broken.name in line for line in out.stderr.splitlines()), out.stderr


def test_the_unit_matches_the_command_line() -> None:
    unit = unit_settings(UNIT)
    assert unit["ExecStart"] == [f"{UNIT_BINARY} --foreground start"]
    assert unit["ExecReload"] == [f"{UNIT_BINARY} reload"]
    assert unit["ExecStartPre"] == [f"{UNIT_BINARY} check-config {UNIT_CONFIG}"]
    assert unit_command(unit["ExecStart"][0], Path("x.cf"))[3:] == ["--foreground", "x.cf", "start"]
    # the default config is the one check-config checks, and its pid file is the forking
    # unit's PIDFile= (and what a plain `lvsmon status` looks at)
    assert f"/etc/ha.d/{DEFAULT_CONFIG}" == UNIT_CONFIG
    default = Control(config_arg=DEFAULT_CONFIG, cfgname=config_name(None))
    assert unit_settings(FORKING_UNIT)["PIDFile"] == [default.pid_path]
    assert unit_settings(FORKING_UNIT)["ExecStart"] == [f"{UNIT_BINARY} start"]
    assert "PIDFile" not in unit  # the main process is the daemon
    watchdog = re.fullmatch(r"(\d+)s?", unit["WatchdogSec"][0])
    assert watchdog and int(watchdog.group(1)) >= 30  # above ipvsadm's 30 s cut-off per call
    assert unit["Restart"] == ["on-failure"]
