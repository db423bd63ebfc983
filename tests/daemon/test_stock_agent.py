"""Pacemaker's stock ldirectord resource agent (Debian's resource-agents) driving lvsmon installed
under the name ldirectord: start, monitor, recovery after kill -9, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from lvsmon.daemon import pidfile
from tests.helpers import alive, install_as_ldirectord, wait_for

from .test_pidfile import cf_on

AGENT = Path("/usr/lib/ocf/resource.d/heartbeat/ldirectord")

pytestmark = pytest.mark.skipif(
    not AGENT.is_file(),
    reason=f"{AGENT} missing: install the Debian package resource-agents "
    "(tests/debian-packages.txt)",
)

# OCF return codes (heartbeat/ocf-returncodes)
OCF_SUCCESS, OCF_NOT_RUNNING = 0, 7


async def test_stock_agent_start_monitor_recover_from_kill_9_stop(tmp_path: Path) -> None:
    cf, log, pid = tmp_path / "lb.cf", tmp_path / "lb.log", tmp_path / "lb.pid"
    cf_on(cf, log)
    wrapper = install_as_ldirectord(tmp_path / "sbin")
    env = {
        **os.environ,
        "LVSMON_BACKEND": "memory",
        "LVSMON_PIDFILE": str(pid),
        "OCF_ROOT": "/usr/lib/ocf",
        "OCF_RESOURCE_INSTANCE": "lvs",
        "OCF_RESKEY_configfile": str(cf),
        "OCF_RESKEY_ldirectord": str(wrapper),
        "HA_LOGFILE": str(tmp_path / "agent.log"),  # ocf_log: a file, not syslog
    }

    async def agent(action: str) -> int:
        done = await asyncio.to_thread(
            subprocess.run,
            [str(AGENT), action],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )
        return done.returncode

    try:
        assert await agent("monitor") == OCF_NOT_RUNNING
        assert await agent("start") == OCF_SUCCESS
        assert await agent("monitor") == OCF_SUCCESS
        first = pidfile.read_pid(str(pid))
        assert first and alive(first)

        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: not alive(first))
        # a stale pid file is "not running" (7), which Pacemaker recovers by a start; with any
        # other wording the agent answers "failed" (1)
        assert await agent("monitor") == OCF_NOT_RUNNING
        assert await agent("start") == OCF_SUCCESS
        second = pidfile.read_pid(str(pid))
        assert second and second != first and alive(second)
        assert await agent("monitor") == OCF_SUCCESS
        assert await agent("stop") == OCF_SUCCESS
        assert not alive(second) and not pid.exists()
        assert await agent("monitor") == OCF_NOT_RUNNING
        assert await agent("stop") == OCF_SUCCESS  # stopping a stopped resource succeeds
    finally:
        left = pidfile.holder(str(pid))
        if left:
            os.kill(left, signal.SIGKILL)
