"""lvsmon as a Pacemaker resource in a real two-node cluster (corosync 3 + Pacemaker 2.1, each node
in its own namespaces on this host): a group of an IPaddr2 VIP and lvsmon through the project's
OCF agent, memory backend (the host kernel has no IPVS; the kernel side is
test_kernel_cluster.py, in the VM).

One scenario, step by step, each with a deadline and its measured time printed: start, the
recurring monitor, restart after `crm_resource --fail`, recovery after `kill -9` of the daemon,
`crm_resource --move` to the other node, failover when the active node loses power (SIGKILL of its
PID 1, whole cluster stack with it), clean stop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.lab import Cluster, ClusterState, poll
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

pytestmark = pytest.mark.usefixtures("pacemaker_installed")

BACKEND = "memory"


@pytest.fixture
def cluster(cluster_dir: Path) -> Iterator[Cluster]:
    assert AGENT.is_file(), f"{AGENT}: the agent under test is missing"
    c = Cluster(
        cluster_dir, 2, token_ms=1000, agents={AGENT_TYPE: str(AGENT)}, real_ports=REAL_PORTS
    )
    try:
        yield c
    finally:
        c.down()


def test_two_nodes_start_fail_kill_move_power_cut_stop(cluster: Cluster, cluster_dir: Path) -> None:
    tl = Timeline("host, 2 nodes", on_timeout=lambda: cluster.logs(inside=(LOG,)))
    tl.record("cluster up (both online, DC elected)", cluster.up(within=60), 60)
    cf = lvsmon_cf(cluster_dir / "lb.cf")
    lvs = LvsmonOnNodes(cluster, cf, BACKEND)
    state: ClusterState | None = None

    def where(rsc: str) -> str | None:
        nonlocal state
        state = cluster.state()
        return state.where(rsc) if state else None

    def group_on(node: str) -> bool:
        return where("vip") == node and where("lvs") == node

    def serving_on(node: str) -> bool:
        return group_on(node) and cluster.has_vip(node) and lvs.serving(node)

    # start: the group comes up on one node, its daemon has programmed both reals
    cluster.create(group_xml(cf, BACKEND, monitor="2s", deep_monitor="5s"))
    tl.wait("start: group Started, VIP up, reals programmed", lambda: where("lvs"), 60)
    a = where("lvs")
    assert a is not None
    b = next(n.name for n in cluster.nodes if n.name != a)
    tl.wait(f"start: serving on {a}", lambda: serving_on(a), 30)
    first = lvs.pid(a)
    assert first is not None
    assert not cluster.has_vip(b) and lvs.stopped(b)

    # monitor: both recurring monitors (cheap, and deep at OCF_CHECK_LEVEL=10) report OK
    def monitored(interval: str) -> bool:
        s = cluster.state()
        return s is not None and any(
            op["rsc"] == "lvs" and op["task"] == "monitor" and op.get("rc") == "0"
            and op.get("interval") == interval
            for op in s.ops
        )  # fmt: skip

    tl.wait("monitor: 2 s monitor returned OK", lambda: monitored("2000ms"), 30)
    tl.wait("monitor: 5 s deep monitor (level 10) returned OK", lambda: monitored("5000ms"), 30)

    # crm_resource --fail: a simulated monitor failure; Pacemaker restarts lvsmon in place
    cluster.crm_resource("--fail", "-r", "lvs", "-N", a)

    def restarted(old: int) -> bool:
        if where("lvs") != a:
            return False
        pid = lvs.pid(a)
        return pid is not None and pid != old and lvs.serving(a)

    def failed_once() -> bool:
        return state is not None and state.fail_counts.get((a, "lvs"), 0) >= 1

    def cleanup() -> None:
        """Forget the failure, so that the next step starts clean. Only once the recovery's
        transition is complete (its first monitors included): a cleanup racing an in-flight
        monitor stalls Pacemaker 2.1 until that action's timeout."""
        started = time.monotonic()
        poll(cluster.idle, 60, "recovery transition complete", 0.2)
        cluster.crm_resource("--cleanup", "-r", "lvs")
        poll(
            lambda: cluster.idle() and (s := cluster.state()) and not s.fail_counts.get((a, "lvs")),
            60,
            "fail-count cleared",
            0.2,
        )
        tl.record("cleanup: settled, fail-count cleared", time.monotonic() - started, 120)

    tl.wait("crm_resource --fail: restarted in place", lambda: restarted(first), 60)
    assert failed_once()
    second = lvs.pid(a)
    assert second is not None and second != first
    cleanup()

    # kill -9 of the daemon: the next monitor notices, Pacemaker recovers it on the same node
    lvs.kill9(a, second)
    tl.wait("kill -9: restarted by the cluster", lambda: restarted(second), 60)
    assert failed_once()
    assert group_on(a) and cluster.has_vip(a)
    cleanup()

    # move: the whole group to the other node; the old one keeps neither VIP nor daemon
    cluster.crm_resource("-r", "lb", "--move", "-N", b)
    tl.wait(f"--move: serving on {b}", lambda: serving_on(b), 60)
    tl.wait(f"--move: nothing left on {a}", lambda: not cluster.has_vip(a) and lvs.stopped(a), 30)
    cluster.crm_resource("-r", "lb", "--clear")  # stickiness keeps it on b

    # power cut of the active node: the survivor takes over within the token timeout
    cluster.power_cut(b)
    tl.wait(f"power cut of {b}: serving on {a}", lambda: serving_on(a), 60)
    assert state is not None and b not in state.online

    # clean stop: VIP gone, daemon gone (its lock released, pid file removed)
    cluster.crm_resource("-r", "lb", "--meta", "-p", "target-role", "-v", "Stopped")

    def stopped() -> bool:
        s = cluster.state()
        return bool(s and s.stopped("vip") and s.stopped("lvs"))

    tl.wait("stop: group Stopped", stopped, 60)
    assert not cluster.has_vip(a)
    assert lvs.stopped(a)
    assert not cluster.node(a).path(lvs.pidfile).exists()
