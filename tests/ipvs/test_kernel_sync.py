"""Connection synchronisation between two directors, end to end, in the VM (tests/vm/run).

    sy-client 10.30.0.2 ─┐
    sy-dira   10.30.0.11 ┼─ sy-br (a bridge in the VM's root namespace: one L2 link)
    sy-dirb   10.30.0.12 ┤
    sy-real   10.30.0.20 ┘  VIP 10.30.0.100 on lo (direct routing: it answers the client itself)

Both directors run the real lvsmon daemon (netlink backend) with the same config: the virtual
service VIP:7000 -> real (gate), `syncdaemon = both` on their link, the same syncid. The VIP
starts on director A. A client opens one TCP connection through the VIP and keeps it; the
test then checks that B's connection table (`ipvsadm -Lnc` in B's namespace) holds it, stops
lvsmon on A (as Pacemaker would at a failover), moves the VIP to B, points the client at B's
MAC address, and exchanges data both ways over the SAME connection.

The sync daemons are per network namespace: each director's lvsmon starts its own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.lab.daemonctl import Lvsmon
from tests.lab.netlab import LabError, ip_batch, poll, remove_namespaces, run

pytestmark = pytest.mark.kernel

VIP = "10.30.0.100"
PORT = 7000
CLIENT = ("sy-client", "10.30.0.2")
DIR_A = ("sy-dira", "10.30.0.11")
DIR_B = ("sy-dirb", "10.30.0.12")
REAL = ("sy-real", "10.30.0.20")
BRIDGE = "sy-br"
LINK = "sy0"  # each namespace's interface on the bridge
SYNCID = 42
TIMES: list[tuple[str, float]] = []

ECHO_SERVER = """
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
def serve(conn, peer):
    buf = b""
    while True:
        data = conn.recv(4096)
        if not data:
            return
        buf += data
        while b"\\n" in buf:
            line, buf = buf.split(b"\\n", 1)
            conn.sendall(b"real saw %s:%d say %s\\n" % (peer[0].encode(), peer[1], line))
while True:
    conn, peer = srv.accept()
    threading.Thread(target=serve, args=(conn, peer), daemon=True).start()
"""

# One connection for the whole test, driven line by line over stdin/stdout.
CLIENT_SCRIPT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
print("local %d" % s.getsockname()[1], flush=True)
for line in sys.stdin:
    s.sendall(line.encode())
    reply = b""
    while not reply.endswith(b"\\n"):
        data = s.recv(4096)
        if not data:
            print("closed by peer", flush=True)
            sys.exit(1)
        reply += data
    print(reply.decode().strip(), flush=True)
"""


def director_config(logfile: Path) -> str:
    return (
        "checkinterval=2\n"
        "checktimeout=2\n"
        f'logfile="{logfile}"\n'
        "syncdaemon = both\n"
        f"syncinterface = {LINK}\n"
        f"syncid = {SYNCID}\n"
        f"virtual={VIP}:{PORT}\n"
        f"\treal={REAL[1]}:{PORT} gate\n"
        "\tchecktype=connect\n"
        "\tscheduler=rr\n"
        "\tprotocol=tcp\n"
    )


class NetnsLvsmon(Lvsmon):
    """The lab's lvsmon, run inside a director's network namespace."""

    netns: str = ""

    def command(self, word: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LVSMON_RESOLVER": "files"}
        cmd = [
            "ip", "netns", "exec", self.netns,
            sys.executable, "-m", "lvsmon", "--backend", self.backend,
            "--pid-file", str(self.pidfile), str(self.config), word,
        ]  # fmt: skip
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"lvsmon {word} in {self.netns}: no return within {timeout} s") from exc


def director(workdir: Path, netns: str) -> NetnsLvsmon:
    d = NetnsLvsmon(workdir / netns, "netlink")
    d.netns = netns
    d.workdir.mkdir()
    d.write_config(director_config(d.logfile))
    return d


def mac_of(netns: str) -> str:
    out = run("ip", "-o", "link", "show", LINK, netns=netns).stdout
    m = re.search(r"link/ether (\S+)", out)
    assert m, out
    return m.group(1)


def build_network() -> None:
    ip_batch(None, [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"])
    for index, (ns, address) in enumerate((CLIENT, DIR_A, DIR_B, REAL)):
        peer = f"sy-p{index}"
        run("ip", "netns", "add", ns)
        ip_batch(
            None,
            [
                f"link add {peer} type veth peer name {LINK} netns {ns}",
                f"link set {peer} master {BRIDGE} up",
            ],
        )
        ip_batch(
            ns,
            [
                f"addr add {address}/24 dev {LINK}",
                f"link set {LINK} up",
                "link set lo up",
            ],
        )
    # the real server holds the VIP without answering ARP for it (direct routing)
    for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
        for scope in ("all", LINK):
            run("sysctl", "-qw", f"net.ipv4.conf.{scope}.{key}={value}", netns=REAL[0])
    ip_batch(REAL[0], [f"addr add {VIP}/32 dev lo"])
    ip_batch(DIR_A[0], [f"addr add {VIP}/32 dev {LINK}"])


def teardown_network() -> None:
    remove_namespaces([ns for ns, _ in (CLIENT, DIR_A, DIR_B, REAL)], (BRIDGE,))


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Path]:
    if not os.environ.get("LVSMON_IN_VM"):
        pytest.fail("this test builds namespaces and runs IPVS: run it with tests/vm/run")
    teardown_network()
    build_network()
    try:
        yield tmp_path
    finally:
        teardown_network()


class Client:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT[0], sys.executable, "-c", CLIENT_SCRIPT, VIP, str(PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self._line()
        assert first.startswith("local "), first
        self.port = int(first.split()[1])

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            assert self.proc.stderr is not None
            raise LabError(f"client ended: {self.proc.wait(10)}: {self.proc.stderr.read()}")
        return line

    def say(self, text: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def connections(netns: str) -> list[str]:
    """`ipvsadm -Lnc` in a namespace: one line per connection entry."""
    out = run("ipvsadm", "-Lnc", netns=netns).stdout.splitlines()
    return [line for line in out if line.startswith(("TCP", "UDP"))]


def synced(netns: str, client_port: int) -> str | None:
    for line in connections(netns):
        fields = line.split()
        if fields[3:6] == [f"{CLIENT[1]}:{client_port}", f"{VIP}:{PORT}", f"{REAL[1]}:{PORT}"]:
            return line
    return None


def in_packets(netns: str) -> int:
    """Packets the virtual service has received (`ipvsadm -Ln --stats --exact`)."""
    for line in run("ipvsadm", "-Ln", "--stats", "--exact", netns=netns).stdout.splitlines():
        fields = line.split()
        if fields[:2] == ["TCP", f"{VIP}:{PORT}"]:
            return int(fields[3])
    raise LabError(f"{netns}: no virtual service {VIP}:{PORT}")


def terminate(d: Lvsmon) -> None:
    """SIGTERM to the daemon, then wait until it is gone (its stop bound is 30 s)."""
    pid = d.pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    poll(lambda: None if d.running() else True, 60, f"{d.workdir.name}: lvsmon gone")


def sync_status(d: Lvsmon) -> object | None:
    return d.status().get("sync") or None


def has_real(netns: str) -> bool | None:
    return "-a -t" in run("ipvsadm", "-Sn", netns=netns).stdout or None


def counted(netns: str, at_least: int) -> int | None:
    packets = in_packets(netns)
    return packets if packets >= at_least else None


def timed(what: str, started: float) -> None:
    took = time.monotonic() - started
    TIMES.append((what, took))
    print(f"{what}: {took:.2f} s")


def test_a_connection_survives_a_director_failover(network: Path) -> None:
    t0 = time.monotonic()
    server = subprocess.Popen(
        ["ip", "netns", "exec", REAL[0], sys.executable, "-c", ECHO_SERVER, str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    a, b = director(network, DIR_A[0]), director(network, DIR_B[0])
    client: Client | None = None
    try:
        started = time.monotonic()
        both = [threading.Thread(target=d.start, name=f"start {d.netns}") for d in (a, b)]
        for thread in both:
            thread.start()
        for thread in both:
            thread.join()
        assert a.running() and b.running(), f"{a.log_tail()}\n{b.log_tail()}"
        timed("both directors' lvsmon started (in parallel)", started)
        for d in (a, b):
            daemons = run("ipvsadm", "-L", "--daemon", netns=d.netns).stdout
            assert f"master sync daemon (mcast={LINK}, syncid={SYNCID}" in daemons, daemons
            assert f"backup sync daemon (mcast={LINK}, syncid={SYNCID}" in daemons, daemons
            status, _ = poll(partial(sync_status, d), 30, f"{d.netns}: sync status")
            assert isinstance(status, list) and len(status) == 2, status
            assert all(s["running"] and not s["error"] for s in status), status
        # both have the table; only A has the VIP
        for d in (a, b):
            poll(partial(has_real, d.netns), 60, f"{d.netns}: the real in the table")

        client = Client()
        where = f"{CLIENT[1]}:{client.port}"
        for n in range(5):  # the master syncs a connection after a few packets
            assert client.say(f"hello {n}") == f"real saw {where} say hello {n}"
        assert synced(DIR_A[0], client.port), connections(DIR_A[0])
        started = time.monotonic()
        line, _ = poll(lambda: synced(DIR_B[0], client.port), 30, "the connection on B", 0.2)
        timed("connection seen in B's table (ipvsadm -Lnc)", started)
        print(f"B: {line}")
        assert "ESTABLISHED" in line

        # failover: lvsmon stops on A (its table and sync daemons go), the VIP moves to B
        started = time.monotonic()
        terminate(a)  # what `lvsmon stop` does, without starting a Python under emulation
        assert run("ipvsadm", "-L", "--daemon", netns=DIR_A[0]).stdout.strip() == ""
        ip_batch(DIR_A[0], [f"addr del {VIP}/32 dev {LINK}"])
        ip_batch(DIR_B[0], [f"addr add {VIP}/32 dev {LINK}"])
        ip_batch(
            CLIENT[0], [f"neigh replace {VIP} lladdr {mac_of(DIR_B[0])} dev {LINK} nud permanent"]
        )
        timed("failover (lvsmon stop on A, VIP moved, client rerouted)", started)

        before = in_packets(DIR_B[0])
        started = time.monotonic()
        for n in range(3):
            assert client.say(f"after {n}") == f"real saw {where} say after {n}"
        timed("3 exchanges over the same connection through B", started)
        # B forwarded them (the client's packets; the real answers the client directly). The
        # kernel adds up its counters every 2 s: poll
        after, _ = poll(partial(counted, DIR_B[0], before + 3), 20, "B's packet counter", 0.5)
        print(f"B's service: {before} packets in before the failover, {after} after")
        assert synced(DIR_B[0], client.port) is not None
        assert client.proc.poll() is None  # never reset, never reconnected
        print(f"total: {time.monotonic() - t0:.1f} s")
    finally:
        if client is not None:
            client.close()
        for d in (a, b):
            if d.running():
                terminate(d)
            print(f"--- {d.netns} log:\n{d.log_tail(15)}")
        server.kill()
        server.wait(10)
    assert run("ipvsadm", "-L", "--daemon", netns=DIR_B[0]).stdout.strip() == ""
