"""lvsmon under Pacemaker against the real kernel IPVS table (in the VM: tests/vm/run).

One node (corosync + Pacemaker in its own namespaces), the group IPaddr2 VIP + lvsmon through the
project's OCF agent with the netlink backend: the cluster's start programs the node's kernel
table; a `kill -9` of the daemon and the cluster's recovery of it (stop + start) leave every
healthy real in the table with its weight the whole time (the table is sampled every 50 ms from
/proc/<node>/net/ip_vs, without a fork); a clean stop leaves the table empty.

The agent runs with its defaults: purge_on_stop=true leaves a dead daemon's services for the
recovery's start to adopt, and purges at the clean stop.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.lab import VIP, Cluster
from tests.cluster.lbgroup import (
    AGENT,
    AGENT_TYPE,
    LOG,
    REAL_PORTS,
    LvsmonOnNodes,
    group_xml,
    lvsmon_cf,
)
from tests.cluster.timeline import Timeline
from tests.lab.netlab import Weights, parse_proc_ip_vs

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("pacemaker_installed")]

SERVICE = f"{VIP}:80"
REALS = {(SERVICE, f"127.0.0.1:{port}") for port in REAL_PORTS}


@dataclass
class TableWatch:
    """Samples the node's kernel table every 50 ms; every sample where a healthy real is
    missing or has lost its weight is a flap."""

    node_pid: int
    samples: int = 0
    flaps: list[tuple[float, Weights]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def table(self) -> tuple[frozenset[str], Weights]:
        """The node's services and destination weights (its own network namespace)."""
        with open(f"/proc/{self.node_pid}/net/ip_vs", encoding="ascii") as f:
            return parse_proc_ip_vs(f.read())

    def read(self) -> Weights:
        return self.table()[1]

    def start(self) -> None:
        started = time.monotonic()

        def loop() -> None:
            while not self._stop.wait(0.05):
                weights = self.read()
                self.samples += 1
                if any(weights.get(real) != 1 for real in REALS):
                    self.flaps.append((time.monotonic() - started, weights))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@pytest.fixture
def cluster(cluster_dir: Path) -> Iterator[Cluster]:
    if not os.environ.get("LVSMON_IN_VM"):
        pytest.fail("needs the kernel's IPVS: run it with tests/vm/run tests/cluster")
    agents = {AGENT_TYPE: str(AGENT)}
    c = Cluster(cluster_dir, 1, token_ms=1000, agents=agents, real_ports=REAL_PORTS)
    try:
        yield c
    finally:
        # what each agent call cost under TCG (Pacemaker's own measure), for the record
        print("\n".join(["resource operations:", *c.op_times()]))
        c.down()


def test_one_node_netlink_crash_without_flap(cluster: Cluster, cluster_dir: Path) -> None:
    tl = Timeline("VM, 1 node, netlink", on_timeout=lambda: cluster.logs(inside=(LOG,)))
    # under TCG every step is slow (an agent call is a Python start-up or two): long deadlines
    tl.record("cluster up (DC elected)", cluster.up(within=240), 240)
    node = cluster.nodes[0]
    assert node.pid is not None
    watch = TableWatch(node.pid)
    assert watch.table() == (frozenset(), {}), "a fresh network namespace has an empty table"

    cf = lvsmon_cf(cluster_dir / "lb.cf", checkinterval=2, checktimeout=5)
    lvs = LvsmonOnNodes(cluster, cf, "netlink")
    # each monitor is a Python start-up of lvsmon, seconds of CPU under TCG: every 15 s, and no
    # deep monitor here (tests/packaging/test_kernel_ocf_agent.py runs it on the real kernel)
    cluster.create(
        group_xml(cf, "netlink", monitor="15s", deep_monitor=None, op_timeout="240s")
    )  # fmt: skip

    def programmed() -> bool:
        return all(watch.read().get(real) == 1 for real in REALS)

    tl.wait("start: kernel table programmed (both reals, weight 1)", programmed, 300, 0.05)

    def started() -> bool:
        s = cluster.state()
        return bool(s and s.where("vip") == "node1" and s.where("lvs") == "node1")

    tl.wait("start: group Started", started, 300, 2)
    assert cluster.has_vip("node1")
    first = lvs.pid("node1")
    assert first is not None

    # crash: the table stays; Pacemaker notices (monitor), stops and starts lvsmon again, and
    # the new daemon adopts the table: no healthy real ever leaves it
    watch.start()
    try:
        lvs.kill9("node1", first)
        killed = time.monotonic()

        def noticed() -> bool:
            s = cluster.state()
            return bool(s and s.fail_counts.get(("node1", "lvs"), 0) >= 1)

        tl.wait("kill -9: failure noticed by the cluster", noticed, 300, 1)

        def recovered() -> bool:
            # the cheap file reads first: crm_mon costs CPU the recovery needs under TCG
            pid = lvs.pid("node1")
            return pid is not None and pid != first and lvs.serving("node1") and started()

        tl.wait("kill -9: daemon restarted, serving", recovered, 300, 1)
        tl.record("kill -9: total until restarted", time.monotonic() - killed, 600)
        time.sleep(3)  # a few more samples with the new daemon checking
    finally:
        watch.stop()
    print(f"table sampled {watch.samples} times during the crash and recovery")
    assert watch.samples >= 20
    assert not watch.flaps, f"healthy reals left the table or lost their weight: {watch.flaps[:5]}"

    # clean stop: the daemon removes its services (cleanstop), the VIP goes
    cluster.crm_resource("-r", "lb", "--meta", "-p", "target-role", "-v", "Stopped")

    def gone() -> bool:
        s = cluster.state()
        return bool(s and s.stopped("vip") and s.stopped("lvs"))

    tl.wait("stop: group Stopped", gone, 300, 2)
    assert watch.table() == (frozenset(), {}), "the table is empty after the stop"
    assert not cluster.has_vip("node1")
    assert lvs.stopped("node1")
