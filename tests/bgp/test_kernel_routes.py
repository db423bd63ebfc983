"""routes/kernel.py against the real kernel, in a throwaway network namespace (`unshare -n`):
the routes of lvsmon's table only, a changed MED made before broken, flush at start and stop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)

CHILD = """
import asyncio, json, subprocess
from lvsmon.routes.kernel import KernelRoutes, routes

def ip(*args):
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout

async def main():
    out = {}
    # a stale route of a crashed run, and a route of someone else's table
    ip("route", "add", "blackhole", "192.0.2.99/32", "table", "200", "proto", "201", "metric", "7")
    ip("route", "add", "blackhole", "192.0.2.98/32", "table", "300")
    k = KernelRoutes(200, 201)
    out["flushed"] = await k.start()
    await k.announce("192.0.2.10", 100, ())
    await k.announce("2001:db8::10", 100, ())
    out["after_announce"] = await k.present()
    await k.announce("192.0.2.10", 4294967295, ("65535:0",))
    out["after_med"] = await k.present()
    out["shown"] = ip("-4", "route", "show", "table", "200")
    await k.withdraw("192.0.2.10")
    await k.withdraw("192.0.2.10")  # twice: not an error
    out["after_withdraw"] = await k.present()
    await k.stop()
    out["after_stop"] = await asyncio.to_thread(routes, 200)
    out["other_table"] = ip("route", "show", "table", "300")
    print(json.dumps(out))

asyncio.run(main())
"""


def run_child() -> dict[str, Any]:
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" -c "$1"',
            sys.executable,
            CHILD,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 and "unshare" in proc.stderr:
        pytest.skip(f"cannot create a network namespace: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_the_table_is_lvsmons_and_only_it() -> None:
    out = run_child()
    assert out["flushed"] == ["192.0.2.99/32"]
    assert out["after_announce"] == {"192.0.2.10": 100, "2001:db8::10": 100}
    assert out["after_med"] == {"192.0.2.10": 4294967295, "2001:db8::10": 100}
    assert out["shown"].strip() == "blackhole 192.0.2.10 proto 201 metric 4294967295"
    assert out["after_withdraw"] == {"2001:db8::10": 100}
    assert out["after_stop"] == {}
    assert "192.0.2.98" in out["other_table"]


FLUSH = """
set -e
ip route add blackhole 192.0.2.10/32 table 200 proto 201 metric 100
ip route add blackhole 192.0.2.11/32 table 200 proto 201 metric 100
ip route add blackhole 192.0.2.12/32 table 300
"$0" -m lvsmon bgp-flush "$1"
echo "left: $(ip route show table 200 | wc -l) $(ip route show table 300 | wc -l)"
"$0" -m lvsmon bgp-flush --table 300
echo "left: $(ip route show table 300 | wc -l)"
"""


def test_bgp_flush_empties_the_configured_table(tmp_path: Path) -> None:
    cf = tmp_path / "bgp.cf"
    cf.write_text("bgp=bird\nvirtual=192.0.2.10:80\n\treal=192.0.2.2:80 gate\n")
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", FLUSH, sys.executable, str(cf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "lvsmon bgp-flush: table 200: 2 route(s) removed: 192.0.2.10/32, 192.0.2.11/32",
        "left: 0 1",
        "lvsmon bgp-flush: table 300: 1 route(s) removed: 192.0.2.12/32",
        "left: 0",
    ]


def test_bgp_flush_without_bgp_and_with_a_bad_table(tmp_path: Path) -> None:
    cf = tmp_path / "plain.cf"
    cf.write_text("virtual=192.0.2.10:80\n\treal=192.0.2.2:80 gate\n")
    run = [sys.executable, "-m", "lvsmon", "bgp-flush"]
    proc = subprocess.run([*run, str(cf)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "bgp = no" in proc.stdout
    proc = subprocess.run([*run, "--table", "254"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "not one lvsmon may own" in proc.stderr
