"""Drain on the real kernel, in the VM (tests/vm/run): a drained real keeps a live connection.

    dr-client 10.40.0.2  ─┐
    dr-dir    10.40.0.11 ─┼─ dr-br (a bridge in the VM's root namespace)   VIP 10.40.0.100 on dr-dir
    dr-rs1    10.40.0.21 ─┤   the reals hold the VIP on lo without answering ARP for it
    dr-rs2    10.40.0.22 ─┘   (direct routing: they answer the client themselves)

The director runs the real lvsmon daemon (netlink backend): VIP:7000 -> both reals, gate,
checktype=connect, rr. A client opens one TCP connection through the VIP and keeps it; the test
drains the real that serves it with `lvsmon drain`, then: the kernel shows weight 0 for it
(`ipvsadm -Ln`), the held connection still carries data both ways, and new connections all go to
the other real. `lvsmon undrain` gives the weight back and new connections reach it again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.daemonctl import Lvsmon
from tests.lab.netlab import LabError, ip_batch, poll, remove_namespaces, run

pytestmark = pytest.mark.kernel

VIP = "10.40.0.100"
PORT = 7000
BRIDGE = "dr-br"
LINK = "dr0"
CLIENT = ("dr-client", "10.40.0.2")
DIRECTOR = ("dr-dir", "10.40.0.11")
REALS = [("dr-rs1", "10.40.0.21"), ("dr-rs2", "10.40.0.22")]
NAMESPACES = [CLIENT, DIRECTOR, *REALS]

# answers each line with the real's name: which real served a connection is in every reply
ECHO_SERVER = """
import socket, sys, threading
name = sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(16)
def serve(conn):
    buf = b""
    while True:
        data = conn.recv(4096)
        if not data:
            return
        buf += data
        while b"\\n" in buf:
            line, buf = buf.split(b"\\n", 1)
            conn.sendall(b"%s says %s\\n" % (name.encode(), line))
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# one Python for the whole test (starting one under TCG takes seconds): stdin lines are
# "say TEXT" (over the held connection) or "new TEXT" (over a fresh connection, then closed)
CLIENT_SCRIPT = """
import socket, sys
def exchange(s, text):
    s.sendall(text.encode() + b"\\n")
    reply = b""
    while not reply.endswith(b"\\n"):
        data = s.recv(4096)
        if not data:
            return "closed by peer"
        reply += data
    return reply.decode().strip()
held = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
print("ready", flush=True)
for line in sys.stdin:
    verb, _, text = line.strip().partition(" ")
    if verb == "say":
        print(exchange(held, text), flush=True)
    else:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
            print(exchange(s, text), flush=True)
"""


class Client:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT[0], sys.executable, "-c", CLIENT_SCRIPT, VIP, str(PORT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            assert self.proc.stderr is not None
            raise LabError(f"client ended: {self.proc.wait(10)}: {self.proc.stderr.read()}")
        return line

    def ask(self, verb: str, text: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{verb} {text}\n")
        self.proc.stdin.flush()
        return self._line()

    def server_of(self, verb: str, text: str) -> str:
        reply = self.ask(verb, text)
        name, says, said = reply.partition(" says ")
        assert says and said == text, reply
        return name

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Director(Lvsmon):
    """The lab's lvsmon, inside the director's namespace, with any command line words."""

    def command(self, *words: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:  # type: ignore[override]
        env = {**os.environ, "LVSMON_RESOLVER": "files"}
        cmd = [
            "ip", "netns", "exec", DIRECTOR[0],
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
    reals = "".join(f"\treal={address}:{PORT} gate\n" for _, address in REALS)
    return (
        "checkinterval=2\n"
        "checktimeout=2\n"
        f'logfile="{logfile}"\n'
        f"virtual={VIP}:{PORT}\n"
        f"{reals}"
        "\tchecktype=connect\n"
        "\tscheduler=rr\n"
        "\tprotocol=tcp\n"
    )


def build_network() -> None:
    ip_batch(None, [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"])
    for index, (ns, address) in enumerate(NAMESPACES):
        peer = f"dr-p{index}"
        run("ip", "netns", "add", ns)
        ip_batch(
            None,
            [
                f"link add {peer} type veth peer name {LINK} netns {ns}",
                f"link set {peer} master {BRIDGE} up",
            ],
        )
        ip_batch(ns, [f"addr add {address}/24 dev {LINK}", f"link set {LINK} up", "link set lo up"])
    for ns, _ in REALS:
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            for scope in ("all", LINK):
                run("sysctl", "-qw", f"net.ipv4.conf.{scope}.{key}={value}", netns=ns)
        ip_batch(ns, [f"addr add {VIP}/32 dev lo"])
    ip_batch(DIRECTOR[0], [f"addr add {VIP}/32 dev {LINK}"])


def teardown_network() -> None:
    remove_namespaces([ns for ns, _ in NAMESPACES], (BRIDGE,))


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


def weights() -> dict[str, int]:
    """`ipvsadm -Ln` in the director: each real's weight in the VIP's service."""
    out = run("ipvsadm", "-Ln", netns=DIRECTOR[0]).stdout
    found = {}
    for m in re.finditer(r"->\s+(\S+):\d+\s+\w+\s+(\d+)", out):
        found[m.group(1)] = int(m.group(2))
    return found


def weights_are(want: dict[str, int]) -> dict[str, int] | None:
    got = weights()
    return got if got == want else None


def test_a_drained_real_keeps_its_connection(network: Path) -> None:
    servers = [
        subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", ECHO_SERVER, str(PORT), ns],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for ns, _ in REALS
    ]
    workdir = network / "dir"
    workdir.mkdir()
    d = Director(workdir, "netlink")
    d.write_config(config(d.logfile))
    client: Client | None = None
    try:
        done = d.command("start")
        assert done.returncode == 0, f"{done.stderr}\n{d.log_tail()}"
        both = {address: 1 for _, address in REALS}
        poll(lambda: weights_are(both), 60, "both reals in the table")

        client = Client()
        held = client.server_of("say", "hello")  # the real serving the held connection
        held_ip = dict(REALS)[held]
        other = next(ns for ns, _ in REALS if ns != held)

        done = d.command("drain", f"{held_ip}:{PORT}")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"drained {held_ip}:{PORT} in tcp:{VIP}:{PORT}\n"
        # applied before the command returned: no wait
        assert weights() == {**both, held_ip: 0}
        status = d.status()
        reals = status["virtuals"][0]["reals"]  # type: ignore[index]
        assert {r["address"]: r["drained"] for r in reals}[held_ip] is True

        # the held connection goes on, both ways, over the drained real
        for n in range(3):
            assert client.ask("say", f"after drain {n}") == f"{held} says after drain {n}"
        # new connections all go to the other real
        assert {client.server_of("new", f"new {n}") for n in range(4)} == {other}

        done = d.command("undrain", f"{held_ip}:{PORT}")
        assert done.returncode == 0, done.stderr
        assert weights() == both
        assert {client.server_of("new", f"again {n}") for n in range(4)} == {held, other}
        assert client.ask("say", "still here") == f"{held} says still here"
        assert client.proc.poll() is None  # never reset
    finally:
        if client is not None:
            client.close()
        if d.running():
            d.command("stop")
        print(f"--- lvsmon log:\n{d.log_tail(20)}")
        for server in servers:
            server.kill()
            server.wait(10)
    assert "Drained real server" in d.log_tail(100)
