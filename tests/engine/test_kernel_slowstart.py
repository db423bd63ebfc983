"""Slow start on the real kernel, in the VM (tests/vm/run -k slowstart): the weights IPVS holds
while a real ramps.

    ss-dir (a namespace in the VM): a dummy link with 10.41.0.11/24 and the real's 10.41.0.21;
    a TCP listener on 10.41.0.21:7000 is the real; VIP 10.41.0.100:7000, gate, wrr

The real lvsmon daemon (netlink backend) runs in ss-dir with `slowstart = 18` and the real at
weight 10: it comes up at its first check and ramps 1, 2, ... 10, a step every 2 s. The test
reads `ipvsadm -Ln` in a loop and prints every weight it saw with its time since the first;
`lvsmon status` shows the ramp. Then the listener stops (the real is deleted: quiescent=no), and
when it listens again the real ramps from 1 again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.daemonctl import Lvsmon
from tests.lab.netlab import LabError, ip_batch, poll, run

pytestmark = pytest.mark.kernel

NS = "ss-dir"
LINK = "ss0"
VIP = "10.41.0.100"
REAL = "10.41.0.21"
PORT = 7000
SLOWSTART = 18
WEIGHT = 10

LISTENER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(64)
while True:
    conn, _ = srv.accept()
    conn.close()
"""


class Director(Lvsmon):
    """The lab's lvsmon inside the namespace, with any command line words."""

    def command(self, *words: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:  # type: ignore[override]
        env = {**os.environ, "LVSMON_RESOLVER": "files"}
        cmd = [
            "ip", "netns", "exec", NS,
            sys.executable, "-m", "lvsmon", "--backend", self.backend,
            "--pid-file", str(self.pidfile), str(self.config), *words,
        ]  # fmt: skip
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"lvsmon {' '.join(words)}: no return within {timeout} s") from exc


def config(logfile: Path) -> str:
    return (
        "checkinterval=1\n"
        "checktimeout=2\n"
        f"slowstart={SLOWSTART}\n"
        f'logfile="{logfile}"\n'
        f"virtual={VIP}:{PORT}\n"
        f"\treal={REAL}:{PORT} gate {WEIGHT}\n"
        "\tchecktype=connect\n"
        "\tscheduler=wrr\n"
        "\tprotocol=tcp\n"
    )


def teardown() -> None:
    for pid in run("ip", "netns", "pids", NS, check=False).stdout.split():
        run("kill", "-9", pid, check=False)
    run("ip", "netns", "del", NS, check=False)


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Path]:
    if not os.environ.get("LVSMON_IN_VM"):
        pytest.fail("this test runs IPVS in a namespace: run it with tests/vm/run")
    teardown()
    run("ip", "netns", "add", NS)
    ip_batch(
        NS,
        [
            f"link add {LINK} type dummy",
            f"addr add 10.41.0.11/24 dev {LINK}",
            f"addr add {REAL}/32 dev {LINK}",
            f"addr add {VIP}/32 dev {LINK}",
            f"link set {LINK} up",
            "link set lo up",
        ],
    )
    try:
        yield tmp_path
    finally:
        teardown()


def weight() -> int | None:
    """`ipvsadm -Ln` in the namespace: the real's weight (None: not in the table)."""
    out = run("ipvsadm", "-Ln", netns=NS).stdout
    m = re.search(rf"->\s+{re.escape(REAL)}:{PORT}\s+\w+\s+(\d+)", out)
    return None if m is None else int(m.group(1))


def listen() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", NS, sys.executable, "-c", LISTENER, REAL, str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def record_ramp(within: float) -> list[tuple[float, int | None]]:
    """Each weight change seen until the weight is WEIGHT: (seconds since the first, weight)."""
    seen: list[tuple[float, int | None]] = []
    start = time.monotonic()
    while time.monotonic() - start < within:
        w = weight()
        if not seen or seen[-1][1] != w:
            seen.append((round(time.monotonic() - start, 2), w))
        if w == WEIGHT:
            return seen
        time.sleep(0.1)
    raise LabError(f"no full weight within {within} s: {seen}")


def test_the_kernel_weight_ramps_in_ten_steps(network: Path) -> None:
    server = listen()
    d = Director(network / "dir", "netlink")
    (network / "dir").mkdir()
    d.write_config(config(d.logfile))
    try:
        done = d.command("start")
        assert done.returncode == 0, f"{done.stderr}\n{d.log_tail()}"
        # start returns once the first checks are in the table: the first step. The weights
        # are read in a thread from here on: `lvsmon status` takes seconds under TCG
        recorded: list[list[tuple[float, int | None]]] = []
        sampler = threading.Thread(target=lambda: recorded.append(record_ramp(SLOWSTART + 30)))
        sampler.start()
        status = d.command("status")
        print("lvsmon status during the ramp:\n" + status.stdout)
        sampler.join()
        assert recorded, "the sampler found no full weight (see its error above)"
        assert re.search(r"ramping \d+/10 \(slow start, \d+ s left\)", status.stdout)
        seen = recorded[0]
        print("kernel weights seen during the ramp (s, weight):", seen)
        assert all(w is not None for _, w in seen), seen
        weights = [w for _, w in seen if w is not None]
        assert weights[0] == 1 and weights[-1] == WEIGHT
        assert weights == sorted(weights) and len(set(weights)) == len(weights)
        assert weights == list(range(1, WEIGHT + 1)), weights  # every step seen in the kernel
        # the real dies: out as usual; back: it ramps from 1 again
        server.kill()
        server.wait(10)
        poll(lambda: True if weight() is None else None, 30, "the dead real deleted")
        server = listen()
        again, took = poll(weight, 30, "the real back in the table")
        print(f"back after {took:.1f} s at weight {again}")
        assert again == 1
        log = d.log_tail(200)
        # the first ramp ended at its weight; the real died after it, and ramps again
        assert "done: weight 10" in log
        assert log.count("ramping to weight 10 over 18 s in 10 steps") == 2
    finally:
        if d.running():
            d.command("stop")
        print(f"--- lvsmon log:\n{d.log_tail(40)}")
        server.kill()
        server.wait(10)
