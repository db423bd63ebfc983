"""The resource under test: a group of an IPaddr2 VIP and lvsmon through the project's own OCF
agent (packaging/ocf/lvsmon, installed in each node as ocf:lvsmon:lvsmon), and what the tests
read of it on a node: whether the daemon runs (its pid file's lock, through `lvsmon status`) and
what it has programmed (its status file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.cluster.lab import VIP, Cluster

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "packaging" / "ocf" / "lvsmon"
AGENT_TYPE = "lvsmon:lvsmon"  # provider:type under /usr/lib/ocf/resource.d
LVSMON = str(Path(sys.executable).with_name("lvsmon"))  # the venv's console script
REAL_PORTS = [8081, 8082]  # inside each node's own network namespace: no clash with the host
LOG = "/run/lvsmon.log"  # the daemon's log, in the node's private /run


def lvsmon_cf(path: Path, checkinterval: int = 1, checktimeout: int = 2) -> Path:
    """The ldirectord.cf every node runs: the VIP, both reals on the node's own loopback."""
    reals = "".join(f"\treal=127.0.0.1:{port} masq\n" for port in REAL_PORTS)
    path.write_text(
        f"checktimeout={checktimeout}\ncheckinterval={checkinterval}\nautoreload=no\n"
        f'logfile="{LOG}"\nquiescent=no\n'
        f'virtual={VIP}:80\n{reals}\tservice=http\n\trequest="index.html"\n'
        '\treceive="ok"\n\tscheduler=rr\n\tprotocol=tcp\n\tchecktype=negotiate\n'
    )
    return path


def group_xml(
    cf: Path,
    backend: str,
    *,
    monitor: str = "2s",
    deep_monitor: str | None = "5s",
    op_timeout: str = "60s",
    purge_on_stop: bool | None = None,
) -> str:
    """Group `lb`: primitive `vip` (IPaddr2 on lan0) then `lvs` (ocf:lvsmon:lvsmon), with the
    agent's cheap monitor every `monitor` and its deep one (OCF_CHECK_LEVEL=10: the daemon's
    table matches the kernel's) every `deep_monitor` (None: none). `purge_on_stop` None: the
    agent's default."""
    purge = (
        ""
        if purge_on_stop is None
        else f'<nvpair id="lvs-purge" name="purge_on_stop" value="{str(purge_on_stop).lower()}"/>'
    )
    deep = (
        ""
        if deep_monitor is None
        else f"""<op id="lvs-deep" name="monitor" interval="{deep_monitor}" timeout="{op_timeout}">
        <instance_attributes id="lvs-deep-ia">
          <nvpair id="lvs-deep-level" name="OCF_CHECK_LEVEL" value="10"/>
        </instance_attributes>
      </op>"""
    )
    return f"""
<group id="lb">
  <primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2">
    <instance_attributes id="vip-ia">
      <nvpair id="vip-ip" name="ip" value="{VIP}"/>
      <nvpair id="vip-mask" name="cidr_netmask" value="24"/>
      <nvpair id="vip-nic" name="nic" value="lan0"/>
    </instance_attributes>
    <operations>
      <op id="vip-start" name="start" interval="0" timeout="{op_timeout}"/>
      <op id="vip-stop" name="stop" interval="0" timeout="{op_timeout}"/>
      <op id="vip-mon" name="monitor" interval="10s" timeout="{op_timeout}"/>
    </operations>
  </primitive>
  <primitive id="lvs" class="ocf" provider="lvsmon" type="lvsmon">
    <instance_attributes id="lvs-ia">
      <nvpair id="lvs-cf" name="configfile" value="{cf}"/>
      <nvpair id="lvs-bin" name="binary" value="{LVSMON}"/>
      <nvpair id="lvs-backend" name="backend" value="{backend}"/>
      {purge}
    </instance_attributes>
    <operations>
      <op id="lvs-start" name="start" interval="0" timeout="{op_timeout}"/>
      <op id="lvs-stop" name="stop" interval="0" timeout="{op_timeout}"/>
      <op id="lvs-mon" name="monitor" interval="{monitor}" timeout="{op_timeout}"/>
      {deep}
    </operations>
  </primitive>
</group>"""


class LvsmonOnNodes:
    """The lvsmon daemon the agent runs on each node (same config path everywhere)."""

    def __init__(self, cluster: Cluster, cf: Path, backend: str) -> None:
        self.cluster = cluster
        self.cf = cf
        self.backend = backend
        self.pidfile = f"/run/lvsmon.{cf.name}.pid"  # the agent's default, in the node's /run
        self.statusfile = f"/run/lvsmon.{cf.name}.status.json"

    def pid(self, node: str) -> int | None:
        """The daemon's pid (in the node's pid namespace) if one runs: its pid file names a live
        lvsmon process of the node. Read through /proc/<node init>/root, without a fork: under
        TCG a `lvsmon status` per poll would take the CPU the cluster needs."""
        root = self.cluster.node(node).path("")
        try:
            pid = int((root / self.pidfile.lstrip("/")).read_text().split()[0])
            cmdline = (root / f"proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"lvsmon" in cmdline else None

    def stopped(self, node: str) -> bool:
        """`lvsmon status` (the lock, authoritative) says stopped (3), not merely "not running"
        after a crash (1)."""
        out = self.cluster.x(
            node, LVSMON, "--pid-file", self.pidfile, str(self.cf), "status", check=False
        )
        return out.returncode == 3

    def reals(self, node: str) -> dict[str, tuple[str, int | None]] | None:
        """real "ip:port" -> (state, weight in the table) from the daemon's status file."""
        try:
            status = json.loads(self.cluster.node(node).path(self.statusfile).read_text())
        except (OSError, ValueError):
            return None
        return {
            f"{r['address']}:{r['port']}": (r["state"], r["kernel_weight"])
            for v in status["virtuals"]
            for r in v["reals"]
        }

    def serving(self, node: str) -> bool:
        """Every real is up and in the table with its weight, as the daemon last wrote."""
        reals = self.reals(node)
        return bool(reals) and all(
            state == "up" and weight == 1 for state, weight in (reals or {}).values()
        )

    def kill9(self, node: str, pid: int) -> None:
        self.cluster.x(node, "kill", "-KILL", str(pid))
