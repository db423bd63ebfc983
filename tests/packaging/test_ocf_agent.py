"""The OCF resource agent packaging/ocf/lvsmon, run as Pacemaker runs it (a process per action,
parameters in OCF_RESKEY_*), against the real daemon: `ocf-tester` from Debian's resource-agents,
then every exit code the OCF standard asks for (not installed, not configured, invalid, running,
stopped, died), recovery after kill -9, a hung daemon at stop, purge at stop, and the deep monitor
(OCF_CHECK_LEVEL=10) seeing a kernel table that differs from what lvsmon programmed, through a
recording fake ipvsadm (this host has no IPVS; the real kernel is test_kernel_ocf_agent.py's).
Real servers: python's http.server on loopback, on a free port."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lvsmon.daemon import pidfile
from lvsmon.engine.status import read_status
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Proto, Service, ServiceConf, ServiceKey
from tests.helpers import alive
from tests.packaging.fake_ipvsadm import load, save

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "packaging" / "ocf" / "lvsmon"
OCF_ROOT = Path("/usr/lib/ocf")
SHELLFUNCS = OCF_ROOT / "lib" / "heartbeat" / "ocf-shellfuncs"
DTD_DIR = Path("/usr/share/resource-agents")
OCF_TESTER = shutil.which("ocf-tester", path="/usr/sbin:/usr/bin")

pytestmark = pytest.mark.skipif(
    not SHELLFUNCS.is_file(),
    reason=f"{SHELLFUNCS} missing: install the Debian package resource-agents "
    "(tests/debian-packages.txt)",
)

# heartbeat/ocf-returncodes
OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7

VIP = ServiceKey.inet(Proto.TCP, "127.0.0.10", 80)
FOREIGN = ServiceKey.inet(Proto.TCP, "127.0.0.20", 80)


# ---- fixtures ---------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def web(tmp_path: Path) -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 (free port) serving index.html = "ok"."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("ok\n")
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def write_cf(path: Path, port: int, extra: str = "") -> None:
    path.write_text(
        f'checktimeout=3\ncheckinterval=1\nlogfile="{path.with_suffix(".log")}"\n{extra}'
        "virtual=127.0.0.10:80\n"
        f"\treal=127.0.0.1:{port} masq\n"
        '\tservice=http\n\trequest="index.html"\n\treceive="ok"\n\tscheduler=rr\n'
        "\tprotocol=tcp\n\tchecktype=negotiate\n"
    )


def console_script(path: Path, module: str, call: str) -> Path:
    """An executable as pip installs one: a Python script of that name running `call`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
        f"from {module} import {call}\nsys.exit({call}())\n"
    )
    path.chmod(0o755)
    return path


@dataclass
class Agent:
    """The agent with one resource's parameters; `run` is one action, as the executor runs it."""

    tmp: Path
    params: dict[str, str]
    port: int  # the real server's
    timeout: float = 120.0  # per action: bounds a hung test (the VM is far slower)
    env: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    @property
    def pid_path(self) -> str:
        return self.params["pidfile"]

    def run(
        self, action: str, *, check_level: int | None = None, probe: bool = False, **extra: str
    ) -> tuple[int, str]:
        env = {
            **os.environ,
            "OCF_ROOT": str(OCF_ROOT),
            "OCF_RESOURCE_INSTANCE": "lb",
            "OCF_RESOURCE_TYPE": "lvsmon",
            "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "1",
            "OCF_RESKEY_CRM_meta_interval": "0" if probe else "10000",
            "OCF_RESKEY_CRM_meta_timeout": "60000",
            "HA_LOGFILE": str(self.tmp / "agent.log"),  # ocf_log: a file, not syslog
            "HA_DEBUGLOG": str(self.tmp / "agent.log"),
            **self.env,
            **{f"OCF_RESKEY_{k}": v for k, v in {**self.params, **extra}.items()},
        }
        if check_level is not None:
            env["OCF_CHECK_LEVEL"] = str(check_level)
        started = time.monotonic()
        done = subprocess.run(
            [str(AGENT), action],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=self.timeout,
        )
        took = time.monotonic() - started
        self.log.append(f"{action}{'' if check_level is None else check_level}: {took:.2f} s")
        return done.returncode, done.stderr

    def rc(self, action: str, **kw: object) -> int:
        return self.run(action, **kw)[0]  # type: ignore[arg-type]

    def daemon_pid(self) -> int:
        pid = pidfile.holder(self.pid_path)
        assert pid, "no daemon holds the lock"
        return pid

    def kill_left(self) -> None:
        left = pidfile.holder(self.pid_path)
        if left:
            os.kill(left, signal.SIGCONT)
            os.kill(left, signal.SIGKILL)


@pytest.fixture
def lvsmon_bin(tmp_path: Path) -> Path:
    return console_script(tmp_path / "sbin" / "lvsmon", "lvsmon.cli", "main")


@pytest.fixture
def agent(tmp_path: Path, web: int, lvsmon_bin: Path) -> Iterator[Agent]:
    cf = tmp_path / "lb.cf"
    write_cf(cf, web)
    a = Agent(
        tmp_path,
        {
            "configfile": str(cf),
            "binary": str(lvsmon_bin),
            "backend": "memory",
            "pidfile": str(tmp_path / "run" / "lvsmon.lb.pid"),
        },
        web,
    )
    (tmp_path / "run").mkdir()
    yield a
    a.kill_left()
    print("agent actions:", "; ".join(a.log))


@pytest.fixture
def fake_agent(agent: Agent, tmp_path: Path) -> Agent:
    """The agent on the ipvsadm backend, against the recording fake; a foreign service in the
    table that nothing may touch; resyncs rare, so that a difference stays until looked at."""
    state, calls = tmp_path / "ipvs.state", tmp_path / "ipvsadm.calls"
    save(str(state), {FOREIGN: Service(ServiceConf("wlc"))})
    fake = console_script(tmp_path / "fake" / "ipvsadm", "tests.packaging.fake_ipvsadm", "main")
    agent.env.update({"FAKE_IPVSADM_STATE": str(state), "FAKE_IPVSADM_LOG": str(calls)})
    agent.params.update({"backend": "ipvsadm", "options": f"--ipvsadm {fake}"})
    cf = Path(agent.params["configfile"])
    cf.write_text("resyncinterval=3600\n" + cf.read_text())
    return agent


def table(agent: Agent) -> dict[ServiceKey, Service]:
    return load(agent.env["FAKE_IPVSADM_STATE"])


def reason(stderr: str) -> str:
    return " ".join(line for line in stderr.splitlines() if "ocf-exit-reason:" in line)


# ---- ocf-tester --------------------------------------------------------------------------------


@pytest.mark.skipif(OCF_TESTER is None, reason="no ocf-tester: install resource-agents")
@pytest.mark.skipif(shutil.which("xmllint") is None, reason="no xmllint: install libxml2-utils")
def test_ocf_tester_passes(agent: Agent, public_agent: Path) -> None:
    args = [word for k, v in agent.params.items() for word in ("-o", f"{k}={v}")]
    started = time.monotonic()
    done = subprocess.run(
        [str(OCF_TESTER), "-n", "lb", *args, str(public_agent)],
        capture_output=True,
        text=True,
        env={**os.environ, "OCF_ROOT": str(OCF_ROOT), "HA_LOGFILE": str(agent.tmp / "t.log")},
        check=False,
        timeout=300,
    )
    print(f"ocf-tester: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{public_agent} passed all tests" in done.stdout


@pytest.fixture
def public_agent() -> Iterator[Path]:
    """A copy of the agent that user nobody can run: ocf-tester runs meta-data as nobody, and a
    checkout may sit below a directory only root can enter (a CI's mkdtemp, mode 0700)."""
    where = Path(tempfile.mkdtemp(prefix="lvsmon-ocf-", dir="/var/tmp"))
    try:
        where.chmod(0o755)
        copy = where / "lvsmon"
        shutil.copy(AGENT, copy)
        copy.chmod(0o755)
        yield copy
    finally:
        shutil.rmtree(where, ignore_errors=True)


# ---- meta-data ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="no xmllint: install libxml2-utils")
def test_meta_data_is_valid_ocf_1_1(agent: Agent) -> None:
    done = subprocess.run(
        [str(AGENT), "meta-data"],
        capture_output=True,
        text=True,
        env={"OCF_ROOT": str(OCF_ROOT), "PATH": "/usr/bin:/bin"},  # nothing else is needed
        check=True,
    )
    xml = done.stdout
    lint = subprocess.run(
        ["xmllint", "--noout", "--valid", "-"],
        input=xml,
        cwd=DTD_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stderr
    assert "<version>1.1</version>" in xml
    for name in ("configfile", "binary", "backend", "options", "pidfile", "purge_on_stop"):
        assert f'<parameter name="{name}"' in xml
    for action in ("start", "stop", "status", "reload", "validate-all", "meta-data"):
        assert f'<action name="{action}"' in xml
    assert 'depth="0"' in xml and 'depth="10"' in xml


def test_unimplemented_actions(agent: Agent) -> None:
    for action in ("notify", "promote", "demote", "migrate_to", "bogus"):
        assert agent.rc(action) == OCF_ERR_UNIMPLEMENTED


# ---- not installed, not configured -------------------------------------------------------------


def test_not_installed(agent: Agent, tmp_path: Path) -> None:
    agent.params["binary"] = str(tmp_path / "nowhere" / "lvsmon")
    assert agent.rc("validate-all") == OCF_ERR_INSTALLED
    rc, err = agent.run("start")
    assert rc == OCF_ERR_INSTALLED and "not installed" in reason(err)
    assert agent.rc("monitor") == OCF_ERR_INSTALLED
    # a probe on a node without lvsmon: it cannot run there
    assert agent.rc("monitor", probe=True) == OCF_NOT_RUNNING
    # nothing from a missing program can be running; a failed stop would mean fencing
    assert agent.rc("stop") == OCF_SUCCESS
    # found through PATH (and /usr/sbin) when given as a name
    agent.params["binary"] = "lvsmon-not-there"
    assert agent.rc("validate-all") == OCF_ERR_INSTALLED


def test_binary_by_name_in_path(agent: Agent, lvsmon_bin: Path) -> None:
    agent.params["binary"] = "lvsmon"
    agent.env["PATH"] = f"{lvsmon_bin.parent}:/usr/bin:/bin"
    assert agent.rc("validate-all") == OCF_SUCCESS


def test_config_missing_is_not_installed_here(agent: Agent, tmp_path: Path) -> None:
    # node-local: another node may have the file
    agent.params["configfile"] = str(tmp_path / "absent.cf")
    rc, err = agent.run("validate-all")
    assert rc == OCF_ERR_INSTALLED and "absent.cf" in reason(err)
    assert agent.rc("start") == OCF_ERR_INSTALLED
    assert agent.rc("monitor") == OCF_NOT_RUNNING  # monitor and stop never need the file
    assert agent.rc("stop") == OCF_SUCCESS


@pytest.mark.parametrize(
    ("param", "value", "words"),
    [
        ("configfile", "", "configfile parameter is empty"),
        ("backend", "iptables", "backend must be"),
        ("purge_on_stop", "maybe", "purge_on_stop must be"),
    ],
)
def test_bad_parameters_are_not_configured(
    agent: Agent, param: str, value: str, words: str
) -> None:
    agent.params[param] = value
    for action in ("validate-all", "start"):
        rc, err = agent.run(action)
        assert rc == OCF_ERR_CONFIGURED and words in reason(err)


def test_invalid_config_is_not_configured(agent: Agent) -> None:
    cf = Path(agent.params["configfile"])
    cf.write_text(cf.read_text() + "\tscheduler=rr\nbogus=1\n")
    rc, err = agent.run("validate-all")
    assert rc == OCF_ERR_CONFIGURED
    assert f"{cf}:" in reason(err), err  # check-config's FILE:LINE: message
    rc, err = agent.run("start")
    assert rc == OCF_ERR_CONFIGURED and f"{cf}:" in reason(err)
    assert agent.rc("monitor") == OCF_NOT_RUNNING


def test_supervised_config_is_refused(agent: Agent) -> None:
    # lvsmon start would stay in the foreground: the start action would never return
    cf = Path(agent.params["configfile"])
    cf.write_text("supervised=yes\n" + cf.read_text())
    rc, err = agent.run("start")
    assert rc == OCF_ERR_CONFIGURED and "supervised" in reason(err)
    assert pidfile.holder(agent.pid_path) is None


# ---- running, stopped, died ---------------------------------------------------------------------


def test_start_monitor_crash_recovery_stop(agent: Agent) -> None:
    assert agent.rc("monitor") == OCF_NOT_RUNNING
    assert agent.rc("monitor", probe=True) == OCF_NOT_RUNNING
    assert agent.rc("start") == OCF_SUCCESS
    # start returned: the table is programmed, and the status file says so
    status = read_status(agent.pid_path.removesuffix(".pid") + ".status.json")
    assert status is not None and status["virtuals"][0]["reals"][0]["kernel_weight"] == 1
    assert agent.rc("monitor") == OCF_SUCCESS
    assert agent.rc("status") == OCF_SUCCESS
    assert agent.rc("monitor", probe=True) == OCF_SUCCESS
    rc, err = agent.run("monitor", check_level=10)
    assert rc == OCF_SUCCESS, err
    assert agent.rc("start") == OCF_SUCCESS  # idempotent
    first = agent.daemon_pid()

    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pidfile.holder(agent.pid_path) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # died: a failure (not "stopped"), so that Pacemaker stops (purges) and starts it again
    rc, err = agent.run("monitor")
    assert rc == OCF_ERR_GENERIC and "stale pid file" in reason(err)
    assert agent.rc("monitor", probe=True) == OCF_ERR_GENERIC
    assert agent.rc("monitor", check_level=10) == OCF_ERR_GENERIC
    # start works over the stale pid file
    assert agent.rc("start") == OCF_SUCCESS
    second = agent.daemon_pid()
    assert second != first
    assert agent.rc("monitor") == OCF_SUCCESS

    # and so does stop: afterwards the resource is cleanly stopped, not failed
    os.kill(second, signal.SIGKILL)
    while pidfile.holder(agent.pid_path) is not None:
        assert time.monotonic() < deadline + 10
        time.sleep(0.02)
    assert agent.rc("stop") == OCF_SUCCESS
    assert agent.rc("monitor") == OCF_NOT_RUNNING
    assert not Path(agent.pid_path).exists()

    assert agent.rc("start") == OCF_SUCCESS
    third = agent.daemon_pid()
    assert agent.rc("stop") == OCF_SUCCESS
    assert not alive(third) and pidfile.holder(agent.pid_path) is None
    assert agent.rc("monitor") == OCF_NOT_RUNNING
    assert agent.rc("stop") == OCF_SUCCESS  # stopping a stopped resource succeeds
    assert agent.rc("monitor") == OCF_NOT_RUNNING


def test_stop_kills_a_hung_daemon(agent: Agent) -> None:
    assert agent.rc("start") == OCF_SUCCESS
    pid = agent.daemon_pid()
    os.kill(pid, signal.SIGSTOP)  # TERM stays pending: lvsmon stop waits in vain
    # the action's timeout (20 s) leaves lvsmon stop 5 s, then the agent kills it
    rc, err = agent.run("stop", CRM_meta_timeout="20000")
    assert rc == OCF_SUCCESS, err
    assert not alive(pid)
    assert agent.rc("monitor") == OCF_NOT_RUNNING
    assert "did not stop" in (agent.tmp / "agent.log").read_text()


def test_deep_monitor_sees_a_hung_daemon(agent: Agent) -> None:
    assert agent.rc("start") == OCF_SUCCESS
    pid = agent.daemon_pid()
    status = agent.pid_path.removesuffix(".pid") + ".status.json"
    os.kill(pid, signal.SIGSTOP)
    try:
        old = time.time() - 60
        os.utime(status, (old, old))  # a minute without a status write: the loop is stuck
        assert agent.rc("monitor") == OCF_SUCCESS  # the lock is still held
        rc, err = agent.run("monitor", check_level=10)
        assert rc == OCF_ERR_GENERIC and "hung" in reason(err), err
    finally:
        os.kill(pid, signal.SIGCONT)
    # resumed: the next status write (every second) makes it fresh again
    deadline = time.monotonic() + 10
    while os.stat(status).st_mtime < time.time() - 5:
        assert time.monotonic() < deadline, "the resumed daemon wrote no status file"
        time.sleep(0.05)
    assert agent.rc("monitor", check_level=10) == OCF_SUCCESS
    assert agent.rc("stop") == OCF_SUCCESS


def test_reload(agent: Agent) -> None:
    assert agent.rc("reload") == OCF_ERR_GENERIC  # not running
    assert agent.rc("start") == OCF_SUCCESS
    assert agent.rc("reload") == OCF_SUCCESS
    cf = Path(agent.params["configfile"])
    good = cf.read_text()
    cf.write_text(good + "bogus=1\n")
    rc, err = agent.run("reload")
    assert rc == OCF_ERR_CONFIGURED and f"{cf}:" in reason(err)
    assert agent.rc("monitor") == OCF_SUCCESS  # the daemon keeps the running config
    cf.write_text(good)
    assert agent.rc("stop") == OCF_SUCCESS


# ---- the kernel table: deep monitor and purge (fake ipvsadm) ------------------------------------


def calls_not_from(agent: Agent, pid: int) -> list[str]:
    path = Path(agent.env["FAKE_IPVSADM_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.split()[0] != str(pid)]


def test_deep_monitor_compares_the_kernel_table(fake_agent: Agent) -> None:
    agent = fake_agent
    assert agent.rc("start") == OCF_SUCCESS
    pid = agent.daemon_pid()
    real = DestKey.of("127.0.0.1", agent.port)
    assert table(agent)[VIP].dests[real].weight == 1
    Path(agent.env["FAKE_IPVSADM_LOG"]).unlink()

    # the cheap monitor reads no table: no ipvsadm run but the daemon's own
    for _ in range(3):
        assert agent.rc("monitor") == OCF_SUCCESS
    assert calls_not_from(agent, pid) == []
    rc, err = agent.run("monitor", check_level=10)
    assert rc == OCF_SUCCESS, err
    assert any(" -S" in line or line.endswith("-S -n") for line in calls_not_from(agent, pid))

    # a weight changed behind lvsmon's back (resyncinterval=3600: it stays)
    t = table(agent)
    t[VIP].dests[real] = DestConf(Forward.MASQ, weight=5)
    save(agent.env["FAKE_IPVSADM_STATE"], t)
    # resyncinterval=3600: the daemon does not repair it within the monitor's 10 s timeout
    rc, err = agent.run("monitor", check_level=10, CRM_meta_timeout="10000")
    assert rc == OCF_ERR_GENERIC, err
    assert "tcp:127.0.0.10:80" in reason(err) and "differ" in reason(err)
    assert agent.rc("monitor") == OCF_SUCCESS  # the light check only asks for liveness

    # the service deleted (ipvsadm -C of the managed part)
    del t[VIP]
    save(agent.env["FAKE_IPVSADM_STATE"], t)
    rc, err = agent.run("monitor", check_level=20, CRM_meta_timeout="10000")
    assert rc == OCF_ERR_GENERIC and "missing from the kernel" in reason(err), err

    # put back as programmed: in line again
    t[VIP] = Service(ServiceConf("rr"), {real: DestConf(Forward.MASQ, weight=1)})
    save(agent.env["FAKE_IPVSADM_STATE"], t)
    rc, err = agent.run("monitor", check_level=10)
    assert rc == OCF_SUCCESS, err

    assert agent.rc("stop") == OCF_SUCCESS
    assert set(table(agent)) == {FOREIGN}  # purged; the foreign service untouched


def writes(agent: Agent) -> list[str]:
    """The fake ipvsadm's table writes so far (lvsmon's ipvsadm backend writes with -R)."""
    path = Path(agent.env["FAKE_IPVSADM_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if line.split()[1:2] == ["-R"]]


def crash(agent: Agent) -> None:
    os.kill(agent.daemon_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pidfile.holder(agent.pid_path) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_recovery_after_a_crash_keeps_the_table(fake_agent: Agent) -> None:
    """Pacemaker recovers a dead daemon by stop, then start: the stop leaves the dead daemon's
    services (purge_on_stop=true, the default), the start adopts them. Without that, every real
    would be out of the kernel until the new daemon's first round of checks."""
    agent = fake_agent
    assert agent.rc("start") == OCF_SUCCESS
    programmed = table(agent)[VIP]
    crash(agent)
    assert agent.rc("monitor") == OCF_ERR_GENERIC
    assert agent.rc("stop") == OCF_SUCCESS
    assert table(agent)[VIP] == programmed  # nothing taken out
    assert agent.rc("monitor") == OCF_NOT_RUNNING
    before = len(writes(agent))
    assert agent.rc("start") == OCF_SUCCESS
    assert table(agent)[VIP] == programmed
    assert writes(agent)[before:] == []  # the start adopted the table: nothing written
    assert agent.rc("stop") == OCF_SUCCESS  # a clean stop still purges
    assert set(table(agent)) == {FOREIGN}


def test_purge_on_stop_always_purges_what_a_crashed_daemon_left(fake_agent: Agent) -> None:
    agent = fake_agent
    agent.params["purge_on_stop"] = "always"
    assert agent.rc("start") == OCF_SUCCESS
    crash(agent)
    assert VIP in table(agent)  # lvsmon stop alone would leave it
    assert agent.rc("monitor") == OCF_ERR_GENERIC
    assert agent.rc("stop") == OCF_SUCCESS
    assert set(table(agent)) == {FOREIGN}
    assert agent.rc("monitor") == OCF_NOT_RUNNING


def test_purge_on_stop_overrides_cleanstop(fake_agent: Agent) -> None:
    agent = fake_agent
    cf = Path(agent.params["configfile"])
    cf.write_text("cleanstop=no\n" + cf.read_text())
    assert agent.rc("start") == OCF_SUCCESS
    assert agent.rc("stop") == OCF_SUCCESS
    assert set(table(agent)) == {FOREIGN}


def test_without_purge_on_stop_the_table_stays(fake_agent: Agent) -> None:
    agent = fake_agent
    agent.params["purge_on_stop"] = "false"
    cf = Path(agent.params["configfile"])
    cf.write_text("cleanstop=no\n" + cf.read_text())
    assert agent.rc("start") == OCF_SUCCESS
    assert agent.rc("stop") == OCF_SUCCESS
    assert set(table(agent)) == {VIP, FOREIGN}  # cleanstop=no: lvsmon stop leaves it
    # after a crash too
    assert agent.rc("start") == OCF_SUCCESS  # adopts the table it finds
    os.kill(agent.daemon_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pidfile.holder(agent.pid_path) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert agent.rc("stop") == OCF_SUCCESS
    assert set(table(agent)) == {VIP, FOREIGN}
    assert agent.rc("monitor") == OCF_NOT_RUNNING


def test_deep_monitor_lets_the_daemon_repair_drift(fake_agent: Agent) -> None:
    """A hand edit the daemon repairs at its next resync is not a failure: what the deep
    monitor catches is a daemon that no longer keeps its table."""
    agent = fake_agent
    cf = Path(agent.params["configfile"])
    cf.write_text(cf.read_text().replace("resyncinterval=3600", "resyncinterval=1"))
    assert agent.rc("start") == OCF_SUCCESS
    real = DestKey.of("127.0.0.1", agent.port)
    t = table(agent)
    t[VIP].dests[real] = DestConf(Forward.MASQ, weight=5)
    save(agent.env["FAKE_IPVSADM_STATE"], t)
    rc, err = agent.run("monitor", check_level=10)
    assert rc == OCF_SUCCESS, err
    # repaired by the daemon (the check may also have passed on the status written between the
    # resync's dump and its repair, which agreed with the kernel)
    deadline = time.monotonic() + 20
    while table(agent)[VIP].dests[real].weight != 1:
        assert time.monotonic() < deadline, "drift not repaired"
        time.sleep(0.1)
    assert "Repaired drift" in cf.with_suffix(".log").read_text()
    assert agent.rc("stop") == OCF_SUCCESS


@pytest.mark.skipif(Path("/proc/net/ip_vs").exists(), reason="only where the kernel has no IPVS")
def test_no_ipvs_in_the_kernel_is_not_installed_here(agent: Agent) -> None:
    # another node may have IPVS: a hard error for this node only
    agent.params["backend"] = "netlink"
    rc, err = agent.run("start")
    assert rc == OCF_ERR_INSTALLED and "no-ipvs" in reason(err), err
    assert agent.rc("monitor") == OCF_NOT_RUNNING
