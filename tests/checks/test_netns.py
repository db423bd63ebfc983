"""Checks whose failure needs an address that does not answer: run in a throwaway network
namespace (`unshare -n`) that the test creates, where 10.99.0.0/24 and 2001:db8::/64 are routed
into lo and silently dropped, and 192.0.2.0/24 has no route at all. Also covers both ICMP socket
kinds, by switching `net.ipv4.ping_group_range` inside that namespace only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)

CHILD = """
import asyncio, json, sys
from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks.ping import _open_socket

async def main():
    out = {"raw": _open_socket(False)[1]}
    cases = {
        "ping_local4": dict(kind="ping", host="127.0.0.1", checkcount=2),
        "ping_local6": dict(kind="ping", host="::1", checkcount=2),
        "ping_dropped4": dict(kind="ping", host="10.99.0.2", checkcount=2),
        "ping_dropped6": dict(kind="ping", host="2001:db8::2", checkcount=2),
        "ping_unreachable": dict(kind="ping", host="192.0.2.1"),
        "connect_dropped": dict(kind="connect", host="10.99.0.2", port=80),
        "http_dropped6": dict(kind="negotiate", service="http", host="2001:db8::2", port=80),
    }
    for name, fields in cases.items():
        fields.setdefault("port", 0)
        result = await run_check(CheckSpec(timeout=0.2, **fields))
        out[name] = [result.ok, result.reason]
    print(json.dumps(out))

asyncio.run(main())
"""

SETUP = (
    "ip link set lo up && ip route add 10.99.0.0/24 dev lo && "
    "ip -6 route add 2001:db8::/64 dev lo && sysctl -qw net.ipv4.ping_group_range='{range}' && "
    'exec "$0" -c "$1"'
)


def run_in_netns(ping_group_range: str) -> dict[str, Any]:
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", SETUP.format(range=ping_group_range), sys.executable, CHILD],
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


@pytest.mark.parametrize(("group_range", "raw"), [("0 2147483647", False), ("1 0", True)])
def test_failures_that_need_a_silent_address(group_range: str, raw: bool) -> None:
    out = run_in_netns(group_range)
    assert out["raw"] is raw  # kernel ping socket when allowed, raw socket otherwise
    assert out["ping_local4"][0] and out["ping_local6"][0]
    timeout = "timeout after 0.2s during"
    assert out["ping_dropped4"] == [False, f"{timeout} ping (echo request 2 of 2)"]
    assert out["ping_dropped6"] == [False, f"{timeout} ping (echo request 2 of 2)"]
    assert out["ping_unreachable"] == [
        False,
        "ping (echo request 1 of 1): network is unreachable",
    ]
    assert out["connect_dropped"] == [False, f"{timeout} connect"]
    assert out["http_dropped6"] == [False, f"{timeout} connect"]
