"""Graceful removal and the dead-real policy on the real kernel, in the VM (tests/vm/run -k
removal; issue 25 point 3).

    rm-client 10.60.0.2  ─┐
    rm-dir    10.60.0.11 ─┼─ rm-br (a bridge in the VM's root namespace)   VIP 10.60.0.100 on rm-dir
    rm-rs1    10.60.0.21 ─┤   the reals hold the VIP on lo without answering ARP for it
    rm-rs2    10.60.0.22 ─┤   (direct routing: they answer the client themselves)
    rm-rs3    10.60.0.23 ─┘

The director runs the real lvsmon daemon (netlink backend).

(a) HTTP, VIP:8080 -> three reals, removedrain=30: a client in rm-client sends 200 requests a
second (4 on each keep-alive connection, 50 ms apart, closed by the client after the last) while
a reload removes rs3. No request fails; rs3 goes to weight 0 at the reload and is deleted once
the kernel counts no active connection on it, long before the 30 s. The control, removedrain=0
(ldirectord's immediate delete), prints how many requests the delete broke.

(b) UDP, VIP:5060 -> two reals (a SIP OPTIONS check answered by the same tiny server that
echoes the client), quiescent=yes. A client sends a datagram every 50 ms from one fixed source
port, so all of them are one IPVS connection entry. First with deadconns=keep (ldirectord's
behaviour, the control): the real serving the flow is killed, quiesced, and the flow stays on
it, unanswered. Then deadconns=expire (net.ipv4.vs.expire_nodest_conn=1 in the director): the
real serving it is killed, deleted at the next check, and the flow's next datagram is answered
by the other real: within checkinterval + 1 s.
"""

from __future__ import annotations

import json
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

VIP = "10.60.0.100"
HTTP_PORT = 8080
SIP_PORT = 5060
BRIDGE = "rm-br"
LINK = "rm0"
CLIENT = ("rm-client", "10.60.0.2")
DIRECTOR = ("rm-dir", "10.60.0.11")
REALS = [("rm-rs1", "10.60.0.21"), ("rm-rs2", "10.60.0.22"), ("rm-rs3", "10.60.0.23")]
NAMESPACES = [CLIENT, DIRECTOR, *REALS]
CHECKINTERVAL = 2
REMOVEDRAIN = 30

# answers every GET with the real's name on one asyncio loop (a thread per connection cost too
# much under TCG); keep-alive, so the client closes first (its side holds TIME_WAIT, and no
# source port is reused while the kernel remembers it)
HTTP_SERVER = """
import asyncio, sys
name = sys.argv[2].encode()
answer = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(name), name)
async def serve(r, w):
    try:
        while True:
            await r.readuntil(b"\\r\\n\\r\\n")
            w.write(answer)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()
async def main():
    server = await asyncio.start_server(serve, "0.0.0.0", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
asyncio.run(main())
"""

# RATE requests a second for SECONDS s, PER of them on each connection (keep-alive, GAP s apart,
# as a browser or an API client does; the client closes it after the last); prints one JSON
# line: counts per real, failures with their reasons and client seconds, latency, and per
# second which reals answered
HTTP_CLIENT = """
import asyncio, json, sys, time, collections, resource
vip, port, rate, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
per, gap = int(sys.argv[5]), float(sys.argv[6])
# under TCG a request can take a second: hundreds in flight at once, past the default 1024 fds
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ok = collections.Counter(); failed = collections.Counter(); per_second = {}; took = []
failed_at = collections.Counter()
async def session(t0):
    done = 0
    try:
        async with asyncio.timeout(10 + per * gap):
            r, w = await asyncio.open_connection(vip, port)
            for i in range(per):
                if i:
                    await asyncio.sleep(gap)
                t1 = time.monotonic()
                w.write(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\n\\r\\n")
                head = await r.readuntil(b"\\r\\n\\r\\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
                body = (await r.readexactly(length)).decode()
                if not head.startswith(b"HTTP/1.1 200"):
                    raise ValueError(head[:20])
                done += 1
                ok[body] += 1
                per_second.setdefault(int(t1), set()).add(body)
                took.append(time.monotonic() - t1)
            w.close()
            await w.wait_closed()
    except Exception as exc:
        failed[type(exc).__name__ + ": " + str(exc)[:60]] += per - done
        failed_at[int(t0)] += per - done
async def main():
    start = time.monotonic()
    print(json.dumps({"start": start}), flush=True)
    tasks = []
    n = 0
    while time.monotonic() - start < seconds:
        due = start + n * per / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(session(due)))
        n += 1
    await asyncio.gather(*tasks)
    took.sort()
    q = lambda p: round(took[min(len(took) - 1, int(p * len(took)))] * 1000) if took else None
    print(json.dumps({"sent": n * per, "ok": ok, "failed": failed,
        "seconds": time.monotonic() - start, "failed_at": failed_at,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
        "per_second": {k: sorted(v) for k, v in per_second.items()}}), flush=True)
asyncio.run(main())
"""

# a SIP OPTIONS check gets a 200; anything else is echoed with the real's name. One socket on
# the VIP, one on the real's own address (the check's): a reply from a wildcard socket would
# leave from the real's address, which the client's socket (connected to the VIP) drops
UDP_SERVER = """
import select, socket, sys
name = sys.argv[2].encode()
socks = []
for address in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((address, int(sys.argv[1])))
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(4096)
        if data.startswith(b"OPTIONS "):
            s.sendto(b"SIP/2.0 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n", peer)
        else:
            s.sendto(name + b" " + data, peer)
"""

# one datagram every 50 ms from one source port; prints "MONOTONIC NAME" per answer
UDP_CLIENT = """
import socket, sys, time, select
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[3], 40000))
s.connect((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
n = 0
while True:
    n += 1
    s.send(b"%d" % n)
    end = time.monotonic() + 0.05
    while (left := end - time.monotonic()) > 0:
        if select.select([s], [], [], left)[0]:
            try:
                data = s.recv(4096)
            except OSError:
                continue
            print("%.3f %s" % (time.monotonic(), data.split()[0].decode()), flush=True)
"""


class Director(Lvsmon):
    """The lab's lvsmon, inside the director's namespace."""

    def command(self, word: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LVSMON_RESOLVER": "files"}
        cmd = [
            "ip", "netns", "exec", DIRECTOR[0],
            sys.executable, "-m", "lvsmon", "--backend", self.backend,
            "--pid-file", str(self.pidfile), str(self.config), word,
        ]  # fmt: skip
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"lvsmon {word}: no return within {timeout} s") from exc


def build_network() -> None:
    ip_batch(None, [f"link add {BRIDGE} type bridge", f"link set {BRIDGE} up"])
    for index, (ns, address) in enumerate(NAMESPACES):
        peer = f"rm-p{index}"
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
    # the veth ends in the root namespace first: a namespace's deletion is asynchronous, and
    # its peers could still be there when the next test adds them again ("File exists")
    for index in range(len(NAMESPACES)):
        run("ip", "link", "del", f"rm-p{index}", check=False)
    for ns, _ in NAMESPACES:
        for pid in run("ip", "netns", "pids", ns, check=False).stdout.split():
            run("kill", "-9", pid, check=False)
        run("ip", "netns", "del", ns, check=False)
    run("ip", "link", "del", BRIDGE, check=False)


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


def weights(proto: str, port: int) -> dict[str, int]:
    """`ipvsadm -Ln` in the director: each real's weight in VIP:port."""
    out = run("ipvsadm", "-Ln", f"-{proto}", f"{VIP}:{port}", netns=DIRECTOR[0], check=False)
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"->\s+(\S+):\d+\s+\w+\s+(\d+)", out.stdout)
    }


def weights_are(proto: str, port: int, want: dict[str, int]) -> dict[str, int] | None:
    got = weights(proto, port)
    return got if got == want else None


def start_in(ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def http_config(logfile: Path, reals: list[tuple[str, str]], drain: int) -> str:
    lines = "".join(f"\treal={address}:{HTTP_PORT} gate\n" for _, address in reals)
    return (
        f"checkinterval={CHECKINTERVAL}\n"
        "checktimeout=2\n"
        f"removedrain={drain}\n"
        f'logfile="{logfile}"\n'
        f"virtual={VIP}:{HTTP_PORT}\n"
        f"{lines}"
        "\tchecktype=connect\n"
        "\tscheduler=rr\n"
        "\tprotocol=tcp\n"
    )


@pytest.mark.parametrize("drain", [REMOVEDRAIN, 0], ids=["removedrain", "control"])
def test_a_reload_removes_a_real_without_a_failed_request(network: Path, drain: int) -> None:
    """removedrain=30, and the control: removedrain=0 (ldirectord's immediate delete), whose
    failures are printed, not asserted (how many in-flight requests a delete catches is luck)."""
    servers = [start_in(ns, HTTP_SERVER, str(HTTP_PORT), ns) for ns, _ in REALS]
    d = Director(network, "netlink")
    d.write_config(http_config(d.logfile, REALS, drain))
    client: subprocess.Popen[str] | None = None
    try:
        done = d.command("start")
        assert done.returncode == 0, f"{done.stderr}\n{d.log_tail()}"
        every = {address: 1 for _, address in REALS}
        poll(lambda: weights_are("t", HTTP_PORT, every), 60, "three reals in the table")
        rate, seconds, per, gap = 200, 24.0, 4, 0.05
        client = start_in(
            CLIENT[0], HTTP_CLIENT, VIP, str(HTTP_PORT), str(rate), str(seconds), str(per), str(gap)
        )
        assert client.stdout is not None
        started = json.loads(client.stdout.readline())["start"]
        time.sleep(max(0.0, started + 6 - time.monotonic()))  # traffic on all three first
        leaver = REALS[2][1]
        d.write_config(http_config(d.logfile, REALS[:2], drain))
        reload_at = time.monotonic()
        done = d.command("reload")
        assert done.returncode == 0, done.stderr
        # at weight 0 first (the reload's pass), then gone
        zero, _ = poll(
            lambda: (
                weights_are("t", HTTP_PORT, {**every, leaver: 0})
                or weights_are("t", HTTP_PORT, {REALS[0][1]: 1, REALS[1][1]: 1})
            ),
            30,
            "rs3 at weight 0 or gone",
            every=0.01,
        )
        saw_zero = zero.get(leaver) == 0
        poll(
            lambda: weights_are("t", HTTP_PORT, {REALS[0][1]: 1, REALS[1][1]: 1}),
            REMOVEDRAIN + 10,
            "rs3 deleted",
            every=0.05,
        )
        left_after = time.monotonic() - reload_at
        took = re.search(
            r"10\.60\.0\.23:8080 \(\S+\) stopped leaving after ([\d.]+) s", d.log_tail(50)
        )
        line = client.stdout.readline()
        assert line, client.stderr.read() if client.stderr else ""
        result = json.loads(line)
        print(
            f"\nremovedrain={drain}: {result['sent']} requests ({per} a connection, {gap} s"
            f" apart) in {result['seconds']:.1f} s"
            f" ({result['sent'] / result['seconds']:.0f}/s), answered {dict(result['ok'])},"
            f" failed {dict(result['failed'])} (at client seconds"
            f" {sorted((int(k) - int(started), v) for k, v in result['failed_at'].items())}),"
            f" latency {result['latency_ms']}; reload at client second"
            f" {reload_at - started:.1f}; rs3 at weight 0 seen: {saw_zero}; rs3 left"
            f" {took.group(1) if took else '?'} s after the reload's weight 0 (daemon log),"
            f" {left_after:.2f} s after the reload command was started"
        )
        log = d.log_tail(200)
        print(log[-3000:])
        if not drain:
            assert not saw_zero and "Leaving real server" not in log
            return
        assert result["failed"] == {}, result["failed"]
        assert sum(result["ok"].values()) == result["sent"]
        assert result["ok"].get("rm-rs3", 0) > 0  # it did serve before the reload
        assert left_after < REMOVEDRAIN  # connections ended it, not the time
        assert "Leaving real server: 10.60.0.23:8080" in log
        assert "stopped leaving after" in log and "no active connections" in log
        # no answer from rs3 in any second that started after it left
        late = [
            s for s, names in result["per_second"].items() if int(s) > reload_at + left_after + 1
        ]
        assert all("rm-rs3" not in result["per_second"][s] for s in late)
    finally:
        if client is not None:
            end(client)
        if d.running():
            d.command("stop")
        for server in servers:
            end(server)


def udp_config(logfile: Path, deadconns: str) -> str:
    lines = "".join(f"\treal={address}:{SIP_PORT} gate\n" for _, address in REALS[:2])
    return (
        f"checkinterval={CHECKINTERVAL}\n"
        "checktimeout=1\n"
        "negotiatetimeout=1\n"
        "quiescent=yes\n"
        f"deadconns={deadconns}\n"
        f'logfile="{logfile}"\n'
        f"virtual={VIP}:{SIP_PORT}\n"
        f"{lines}"
        "\tchecktype=negotiate\n"
        "\tservice=sip\n"
        "\tscheduler=rr\n"
        "\tprotocol=udp\n"
    )


class Answers:
    """The UDP client's answers as (monotonic time, real), read by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            at, name = line.split()
            with self.lock:
                self.seen.append((float(at), name))

    def since(self, t: float) -> list[tuple[float, str]]:
        with self.lock:
            return [a for a in self.seen if a[0] >= t]

    def last(self) -> str | None:
        with self.lock:
            return self.seen[-1][1] if self.seen else None


def test_deadconns_expire_moves_a_udp_flow_off_a_dead_real(network: Path) -> None:
    names = [ns for ns, _ in REALS[:2]]

    def udp_server(ns: str) -> subprocess.Popen[str]:
        return start_in(ns, UDP_SERVER, str(SIP_PORT), ns, VIP, dict(REALS)[ns])

    servers = {ns: udp_server(ns) for ns in names}
    # what an operator sets for deadconns=expire (docs/operations.md)
    run("sysctl", "-qw", "net.ipv4.vs.expire_nodest_conn=1", netns=DIRECTOR[0])
    d = Director(network, "netlink")
    d.write_config(udp_config(d.logfile, "keep"))
    client: subprocess.Popen[str] | None = None
    try:
        done = d.command("start")
        assert done.returncode == 0, f"{done.stderr}\n{d.log_tail()}"
        both = {address: 1 for _, address in REALS[:2]}
        poll(lambda: weights_are("u", SIP_PORT, both), 60, "both UDP reals in the table")
        client = start_in(CLIENT[0], UDP_CLIENT, VIP, str(SIP_PORT), CLIENT[1])
        answers = Answers(client)
        serving, _ = poll(answers.last, 30, "the flow answered")
        address = dict(REALS)[serving]

        # the control: deadconns=keep quiesces the dead real, and the flow stays on it
        end(servers.pop(serving))
        killed = time.monotonic()
        poll(lambda: weights_are("u", SIP_PORT, {**both, address: 0}), 30, "quiesced")
        time.sleep(2.0)
        kept = {name for _, name in answers.since(killed + 0.2)}
        print(f"\ndeadconns=keep: answers after the kill from {kept or 'nobody'}")
        assert kept == set(), "the flow moved without expire"
        # back up, and the flow is answered by it again
        servers[serving] = udp_server(serving)
        poll(lambda: weights_are("u", SIP_PORT, both), 30, "restored")
        poll(lambda: (answers.last() == serving and time.monotonic()) or None, 30, "answered again")

        d.write_config(udp_config(d.logfile, "expire"))
        assert d.command("reload").returncode == 0
        time.sleep(2.0)
        assert "expire_nodest_conn" not in d.log_tail(20)  # set to 1: no warning
        serving = answers.last() or serving
        address = dict(REALS)[serving]
        other = next(n for n in names if n != serving)
        end(servers.pop(serving))
        killed = time.monotonic()
        (moved_at, _), _ = poll(
            lambda: next(((t, n) for t, n in answers.since(killed) if n == other), None),
            30,
            "the flow answered by the other real",
            every=0.01,
        )
        moved = moved_at - killed
        print(
            f"deadconns=expire: the flow moved {serving} -> {other} {moved:.2f} s after the kill"
            f" (bound: checkinterval {CHECKINTERVAL} + 1 s)"
        )
        assert weights("u", SIP_PORT) == {a: 1 for n, a in REALS[:2] if n == other}
        print(d.log_tail(20))
        assert moved <= CHECKINTERVAL + 1.0
    finally:
        if client is not None:
            end(client)
        if d.running():
            d.command("stop")
        for server in servers.values():
            end(server)
