"""Real Pacemaker 2.1 + corosync 3 clusters on one machine, without systemd.

Each node is a sandbox: its own network namespace (named, created by this module, so that it
outlives a power cut of the node), and inside it fresh mount, pid, uts and ipc namespaces whose
PID 1 is `node_init.py`. Two nodes are joined by one veth pair named `lan0` at both ends
(10.77.0.1/24 <-> 10.77.0.2/24, addresses that exist only inside the namespaces); a single node
gets a veth pair with both ends inside (some kernels have no `dummy` link type) so that IPaddr2
has an interface for its VIP, and runs corosync on 127.0.0.1.

The seeded CIB disables stonith (a lab has no fencing devices), shortens dc-deadtime to 2 s (the
default 20 s idles a new cluster that long) and sets resource-stickiness=100 (a recovered node
does not pull resources back). corosync's token is 1000 ms: a lost node is noticed after about
token + consensus = 2.2 s.

Nothing here uses systemd; commands run inside a node through `nsenter` into all its namespaces,
and files of a node are read through /proc/<init pid>/root (its mount namespace) and its kernel
tables through /proc/<init pid>/net (its network namespace), without a fork.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

NODE_INIT = Path(__file__).with_name("node_init.py")
LAN_PREFIX = "10.77.0"
VIP = f"{LAN_PREFIX}.100"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# what the lab runs; each is a Debian package in tests/debian-packages.txt
NEEDED = {
    "corosync": "corosync",
    "pacemakerd": "pacemaker",
    "crm_resource": "pacemaker-cli-utils",
    "crm_mon": "pacemaker-cli-utils",
    "cibadmin": "pacemaker-cli-utils",
}
IPADDR2 = Path("/usr/lib/ocf/resource.d/heartbeat/IPaddr2")  # Debian: resource-agents


def missing_packages() -> list[str]:
    """Debian packages the lab needs that are not installed (empty when it can run)."""
    missing = {pkg for cmd, pkg in NEEDED.items() if not shutil.which(cmd, path=SBIN_PATH)}
    if not IPADDR2.is_file():
        missing.add("resource-agents")
    return sorted(missing)


class ClusterError(AssertionError):
    """A lab command failed or a wait ran out; the message says which and why."""


T = TypeVar("T")


def poll(probe: Callable[[], T | None], within: float, what: str, every: float = 0.1) -> float:
    """Call `probe` until it returns something truthy; the seconds it took. `within` is the
    step's deadline: it bounds a hung cluster, the measured time is what the test reports."""
    start = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise ClusterError(f"{what}: not reached within {within} s")
        time.sleep(every)


def seed_cib(path: Path) -> None:
    path.write_text(
        """<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0"
     admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="opt-stonith-enabled" name="stonith-enabled" value="false"/>
        <nvpair id="opt-dc-deadtime" name="dc-deadtime" value="2s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
    <rsc_defaults>
      <meta_attributes id="rsc-options">
        <nvpair id="rsc-stickiness" name="resource-stickiness" value="100"/>
      </meta_attributes>
    </rsc_defaults>
  </configuration>
  <status/>
</cib>
"""
    )


def corosync_conf(path: Path, token_ms: int, ring: list[tuple[str, int, str]]) -> None:
    nodes = "".join(
        f"    node {{\n        name: {name}\n        nodeid: {nodeid}\n"
        f"        ring0_addr: {addr}\n    }}\n"
        for name, nodeid, addr in ring
    )
    # two_node (implies wait_for_all): the survivor of a two-node cluster stays quorate
    two_node = "    two_node: 1\n" if len(ring) == 2 else ""
    path.write_text(
        "totem {\n    version: 2\n    cluster_name: lvsmonlab\n    transport: knet\n"
        f"    crypto_cipher: none\n    crypto_hash: none\n    token: {token_ms}\n}}\n"
        "logging {\n    to_stderr: no\n    to_syslog: no\n    to_logfile: yes\n"
        "    logfile: /var/log/corosync/corosync.log\n    timestamp: hires\n}\n"
        f"quorum {{\n    provider: corosync_votequorum\n{two_node}}}\n"
        f"nodelist {{\n{nodes}}}\n"
    )


@dataclass
class Node:
    name: str
    nodeid: int
    netns: str
    state: Path
    lan_addr: str
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None  # host pid of the node's PID 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def path(self, inside: str) -> Path:
        """A file of the node's own mount namespace (its private /run, ...), seen from here."""
        return Path(f"/proc/{self.pid}/root{inside}")

    def proc_net(self, name: str) -> str:
        """/proc/net/NAME of the node's network namespace (e.g. ip_vs), read without a fork."""
        return Path(f"/proc/{self.pid}/net/{name}").read_text()


@dataclass
class Resource:
    """One primitive as crm_mon shows it."""

    id: str
    role: str
    active: bool
    failed: bool
    nodes: list[str]


@dataclass
class ClusterState:
    dc: str | None
    online: list[str]
    resources: dict[str, Resource]
    fail_counts: dict[tuple[str, str], int]  # (node, resource) -> fail-count
    ops: list[dict[str, str]] = field(default_factory=list)  # operation history, every node

    def where(self, rsc: str) -> str | None:
        """The node a resource is started (and not failed) on, if exactly one."""
        r = self.resources.get(rsc)
        if r and r.role == "Started" and r.active and not r.failed and len(r.nodes) == 1:
            return r.nodes[0]
        return None

    def stopped(self, rsc: str) -> bool:
        r = self.resources.get(rsc)
        return r is not None and r.role == "Stopped" and not r.active and not r.nodes


def parse_crm_mon(text: str) -> ClusterState:
    root = ET.fromstring(text)
    dc_el = root.find("./summary/current_dc")
    dc = dc_el.get("name") if dc_el is not None and dc_el.get("present") == "true" else None
    online = [
        n.get("name", "")
        for n in root.iterfind("./nodes/node")
        if n.get("online") == "true" and n.get("pending") != "true"
    ]
    resources: dict[str, Resource] = {}
    for r in root.iter("resource"):
        rid = r.get("id", "")
        resources[rid] = Resource(
            rid,
            r.get("role", ""),
            r.get("active") == "true",
            r.get("failed") == "true",
            [n.get("name", "") for n in r.iterfind("node")],
        )
    fails: dict[tuple[str, str], int] = {}
    ops: list[dict[str, str]] = []
    for node in root.iterfind("./node_history/node"):
        for rh in node.iterfind("resource_history"):
            count = rh.get("fail-count")
            if count is not None:
                fails[(node.get("name", ""), rh.get("id", ""))] = (
                    1_000_000 if count == "INFINITY" else int(count)
                )
            for op in rh.iterfind("operation_history"):
                ops.append({"node": node.get("name", ""), "rsc": rh.get("id", ""), **op.attrib})
    return ClusterState(dc, online, resources, fails, ops)


class Cluster:
    """One or two nodes. `agents`: {"provider:type": path} installed in every node's OCF root;
    `real_ports`: HTTP servers on each node's 127.0.0.1; `env`: extra environment of the cluster
    daemons, which pacemaker-execd passes on to the resource agents."""

    def __init__(
        self,
        workdir: Path,
        nodes: int,
        *,
        token_ms: int = 1000,
        agents: dict[str, str] | None = None,
        real_ports: list[int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if nodes not in (1, 2):
            raise ValueError("one or two nodes")
        self.workdir = workdir
        self.token_ms = token_ms
        # a snapshot of each agent: the nodes bind-mount it, and an edit of the source tree
        # during the run (a rename replaces the inode) must not change it under the cluster
        self.agents: dict[str, str] = {}
        for spec, source in (agents or {}).items():
            copy = workdir / "agents" / spec.replace(":", "-")
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
            self.agents[spec] = str(copy)
        self.real_ports = real_ports or []
        self.env = env or {}
        # named after this process: concurrent runs (other test sessions) never collide
        tag = f"lvpm{os.getpid()}"
        self.nodes = [
            Node(f"node{i}", i, f"{tag}-n{i}", workdir / f"node{i}", f"{LAN_PREFIX}.{i}")
            for i in range(1, nodes + 1)
        ]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # ---- life cycle ---------------------------------------------------------------------------

    def up(self, within: float) -> float:
        """Create the namespaces and the link, boot every node, wait until all are online and a
        DC is elected; the seconds from booting the first node to that."""
        for n in self.nodes:
            run("ip", "netns", "add", n.netns)
        lan = [f"{n.lan_addr}/24" for n in self.nodes]
        if len(self.nodes) == 2:
            a, b = self.nodes
            run("ip", "link", "add", "lan0", "netns", a.netns, "type", "veth",
                "peer", "name", "lan0", "netns", b.netns)  # fmt: skip
            ring = [(n.name, n.nodeid, n.lan_addr) for n in self.nodes]
        else:
            (a,) = self.nodes
            run("ip", "-n", a.netns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
            run("ip", "-n", a.netns, "link", "set", "lan0p", "up")
            ring = [(a.name, a.nodeid, "127.0.0.1")]
        for n, addr in zip(self.nodes, lan, strict=True):
            run("ip", "-n", n.netns, "addr", "add", addr, "dev", "lan0")
            run("ip", "-n", n.netns, "link", "set", "lan0", "up")
            (n.state / "log").mkdir(parents=True, exist_ok=True)
            corosync_conf(n.state / "corosync.conf", self.token_ms, ring)
            seed_cib(n.state / "cib.xml")
        started = time.monotonic()
        for n in self.nodes:
            self.boot(n)
        names = sorted(n.name for n in self.nodes)

        def ready() -> bool:
            s = self.state()
            return s is not None and s.dc is not None and sorted(s.online) == names

        poll(ready, within - (time.monotonic() - started), "every node online, DC elected", 0.2)
        return time.monotonic() - started

    def boot(self, n: Node) -> None:
        spec = n.state / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "node": n.name,
                    "state": str(n.state),
                    "agents": self.agents,
                    "real_ports": self.real_ports,
                    "env": self.env,
                }
            )
        )
        with open(n.state / "log" / "unshare.out", "ab") as out:
            n.proc = subprocess.Popen(
                ["ip", "netns", "exec", n.netns,
                 "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "--mount-proc",
                 "--propagation", "private", sys.executable, str(NODE_INIT), str(spec)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        # `ip netns exec` execs unshare (same pid); unshare --fork has exactly one child, the
        # node's PID 1
        proc = n.proc

        def child() -> int | None:
            try:
                text = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            except OSError:
                return None
            return int(text[0]) if text else None

        poll(child, 10, f"{n.name}: PID 1 started", 0.02)
        n.pid = child()

    def power_cut(self, name: str) -> None:
        """SIGKILL of the node's PID 1: every process of the node dies at once. The network
        namespace stays (it is named), so what a real reboot loses goes by hand: the addresses
        on lan0 other than the node's own (a VIP IPaddr2 had added)."""
        n = self.node(name)
        assert n.pid is not None and n.proc is not None
        os.kill(n.pid, signal.SIGKILL)
        n.proc.wait(timeout=30)
        run("ip", "-n", n.netns, "addr", "flush", "dev", "lan0", "to", f"{VIP}/32", check=False)

    def down(self) -> None:
        for n in self.nodes:
            if n.pid is not None and n.alive:
                os.kill(n.pid, signal.SIGKILL)
            if n.proc is not None:
                try:
                    n.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
            run("ip", "netns", "del", n.netns, check=False)

    # ---- inside a node ------------------------------------------------------------------------

    def x(
        self, name: str, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """CMD inside the node, in all its namespaces."""
        n = self.node(name)
        return run("nsenter", "-t", str(n.pid), "-m", "-u", "-n", "-p", "-i", "--", *cmd,
                   check=check, timeout=timeout)  # fmt: skip

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.alive]

    def state(self) -> ClusterState | None:
        """crm_mon's view from the first live node, or None while it cannot answer."""
        for n in self.live():
            out = self.x(n.name, "crm_mon", "-1", "--output-as=xml", check=False, timeout=30)
            if out.returncode == 0:
                return parse_crm_mon(out.stdout)
        return None

    def create(self, xml: str, section: str = "resources") -> None:
        self.x(self.live()[0].name, "cibadmin", "--create", "-o", section, "--xml-text", xml)

    def crm_resource(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.x(self.live()[0].name, "crm_resource", *args)

    def idle(self) -> bool:
        """No transition in progress (`crm_resource --wait` returns at once)."""
        out = self.x(self.live()[0].name, "crm_resource", "--wait", "--timeout", "1s", check=False)
        return out.returncode == 0

    def has_vip(self, name: str) -> bool:
        out = self.x(name, "ip", "-4", "-o", "addr", "show", "dev", "lan0", check=False)
        return f" {VIP}/" in out.stdout

    def logs(self, lines: int = 60, inside: tuple[str, ...] = ()) -> str:
        """For a failure message: per node, the tail of its init log, of what Pacemaker did
        (notices, warnings, errors, the agents' own lines and every finished operation with its
        execution time; not the CIB chatter), of corosync's log, and of files `inside` it."""
        keep = re.compile(r"notice:|warning:|error:|log_finished|\w+\(\w+\)\[\d+\]:")
        skip = re.compile(r"cib_perform_op|cib_process_request|throttle_")
        parts = []
        for n in self.nodes:
            files = [
                (rel, n.state / "log" / rel)
                for rel in ("init.log", "pacemaker/pacemaker.log", "corosync/corosync.log")
            ]
            files += [(path, n.path(path)) for path in inside if n.pid is not None]
            for name, path in files:
                try:
                    text = path.read_text(errors="replace").splitlines()
                except OSError:
                    continue
                if name.endswith("pacemaker.log"):
                    text = [t for t in text if keep.search(t) and not skip.search(t)]
                parts.append(f"--- {n.name} {name}\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def op_times(self) -> list[str]:
        """Every finished resource operation with its execution time, from each node's log."""
        found = []
        for n in self.nodes:
            path = n.state / "log" / "pacemaker" / "pacemaker.log"
            if path.is_file():
                for line in path.read_text(errors="replace").splitlines():
                    if "log_finished" in line:
                        found.append(f"{n.name}: {line.split('info: ', 1)[-1]}")
        return found


def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "PATH": f"{SBIN_PATH}:{os.environ.get('PATH', '')}"},
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{' '.join(args)}: no answer within {timeout} s") from exc
    if check and done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip()
        raise ClusterError(f"{' '.join(args)}: exit {done.returncode}: {said}")
    return done
