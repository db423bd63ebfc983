"""The OCF agent on the real kernel (run in the VM by tests/vm/run): the netlink backend, the
deep monitor (OCF_CHECK_LEVEL=10) against the kernel's own table, with every kind of service
whose kernel form could differ from lvsmon's (persistence with a netmask, a direct-routing real
whose port the kernel forces, an fwmark service), and stop (purge_on_stop=always) purging what a
killed daemon left, checked with the real ipvsadm. A foreign service is never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.daemon import pidfile
from tests.packaging.test_ocf_agent import (
    OCF_ERR_GENERIC,
    OCF_NOT_RUNNING,
    OCF_SUCCESS,
    Agent,
    lvsmon_bin,
    reason,
    web,
)

pytestmark = pytest.mark.kernel
__all__ = ["lvsmon_bin", "web"]  # fixtures used here


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


def saved() -> set[str]:
    return {line.strip() for line in ipvsadm("-Sn").splitlines() if line.strip()}


@pytest.fixture
def kernel_agent(tmp_path: Path, web: int, lvsmon_bin: Path) -> Iterator[Agent]:
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        pytest.fail("kernel tests need root and IPVS: run them with tests/vm/run")
    ipvsadm("-C")
    ipvsadm("-A", "-t", "10.9.9.9:80", "-s", "rr")  # foreign: not in the config
    cf = tmp_path / "lb.cf"
    cf.write_text(
        f'resyncinterval=3600\ncheckinterval=1\nchecktimeout=3\nlogfile="{tmp_path}/lb.log"\n'
        "virtual=127.0.0.10:80\n"
        f"\treal=127.0.0.1:{web} masq\n"
        '\tservice=http\n\trequest="index.html"\n\treceive="ok"\n\tscheduler=rr\n'
        "\tchecktype=negotiate\n"
        "virtual=127.0.0.11:80\n"
        f"\treal=127.0.0.1:{web} gate 2\n"
        "\tchecktype=connect\n\tscheduler=wlc\n\tpersistent=300\n\tnetmask=255.255.255.0\n"
        "virtual=5\n"
        f"\treal=127.0.0.1:{web} masq\n"
        "\tchecktype=connect\n\tscheduler=sh\n"
    )
    (tmp_path / "run").mkdir()
    agent = Agent(
        tmp_path,
        {
            "configfile": str(cf),
            "binary": str(lvsmon_bin),
            "backend": "netlink",
            "pidfile": str(tmp_path / "run" / "lvsmon.lb.pid"),
        },
        web,
        timeout=900,  # under TCG one lvsmon process takes seconds, a start ~40 s or more
    )
    yield agent
    agent.kill_left()
    print("agent actions:", "; ".join(agent.log))
    ipvsadm("-C")


def wait_dead(agent: Agent) -> None:
    deadline = time.monotonic() + 20
    while pidfile.holder(agent.pid_path) is not None:
        assert time.monotonic() < deadline, "the killed daemon still holds its lock"
        time.sleep(0.05)


def test_agent_on_the_kernel(kernel_agent: Agent) -> None:
    agent = kernel_agent
    port = agent.port
    rc, err = agent.run("start")
    assert rc == OCF_SUCCESS, err
    programmed = saved()
    assert f"-a -t 127.0.0.10:80 -r 127.0.0.1:{port} -m -w 1" in programmed
    assert "-a -t 127.0.0.11:80 -r 127.0.0.1:80 -g -w 2" in programmed  # port forced by -g
    assert any(line.startswith("-A -f 5 -s sh") for line in programmed)
    assert "-A -t 10.9.9.9:80 -s rr" in programmed

    # the digests the daemon wrote match the kernel's own view of every service
    rc, err = agent.run("monitor", check_level=10)
    assert rc == OCF_SUCCESS, err

    # a weight edited by hand, which the daemon does not repair in time (resyncinterval=3600)
    ipvsadm("-e", "-t", "127.0.0.10:80", "-r", f"127.0.0.1:{port}", "-m", "-w", "7")
    rc, err = agent.run("monitor", check_level=10, CRM_meta_timeout="10000")
    assert rc == OCF_ERR_GENERIC and "tcp:127.0.0.10:80" in reason(err), err
    ipvsadm("-e", "-t", "127.0.0.10:80", "-r", f"127.0.0.1:{port}", "-m", "-w", "1")

    # killed: a failure; stopped with purge_on_stop=always: the agent purges what the dead
    # daemon left, nothing else (the default keeps it for a recovery's start to adopt: the
    # cluster tests and tests/packaging/test_ocf_agent.py show that)
    agent.params["purge_on_stop"] = "always"
    os.kill(agent.daemon_pid(), signal.SIGKILL)
    wait_dead(agent)
    assert agent.rc("monitor") == OCF_ERR_GENERIC
    assert saved() == programmed
    assert agent.rc("stop") == OCF_SUCCESS
    assert saved() == {"-A -t 10.9.9.9:80 -s rr"}
    assert agent.rc("monitor") == OCF_NOT_RUNNING
