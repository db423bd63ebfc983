"""What a supervisor runs after lvsmon died withdraws its BGP routes (bgp = bird): the OCF
agent's stop of a crashed daemon, and the systemd units' ExecStopPost. In a throwaway network
namespace (`unshare -n`): the routes are in its kernel table 200 only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.test_sdnotify import FORKING_UNIT, UNIT, UNIT_BINARY, UNIT_CONFIG, unit_settings

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)

CHILD = """
import sys
from pathlib import Path
from tests.packaging.test_ocf_agent import Agent, console_script
tmp = Path(sys.argv[1])
lvsmon = console_script(tmp / "sbin" / "lvsmon", "lvsmon.cli", "main")
agent = Agent(
    tmp,
    {"configfile": sys.argv[2], "binary": str(lvsmon), "backend": "memory",
     "pidfile": str(tmp / "run" / "lvsmon.lb.pid")},
    0,
)
rc, err = agent.run("stop")
print("rc", rc)
"""

SETUP = """
set -e
ip link set lo up
ip route add blackhole 192.0.2.10/32 table 200 proto 201 metric 100
"$0" -c "$1" "$2" "$3"
echo "left: $(ip route show table 200 | wc -l)"
"""


def test_the_ocf_stop_of_a_dead_daemon_flushes_its_table(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text(
        f'logfile="{tmp_path / "lb.log"}"\nbgp=bird\n'
        "virtual=192.0.2.10:80\n\treal=127.0.0.1:8081 masq\n\tchecktype=connect\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    # a pid file no process holds: the daemon died (status 1)
    (run / "lvsmon.lb.pid").write_text("999999\n")
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", SETUP, sys.executable, CHILD, str(tmp_path), str(cf)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["rc 0", "left: 0"], proc.stdout
    log = (tmp_path / "agent.log").read_text()
    assert "table 200: 1 route(s) removed: 192.0.2.10/32" in log


def test_the_units_flush_after_every_end() -> None:
    flush = f"-{UNIT_BINARY} bgp-flush {UNIT_CONFIG}"
    assert unit_settings(UNIT)["ExecStopPost"] == [flush]
    assert unit_settings(FORKING_UNIT)["ExecStopPost"] == [flush]
