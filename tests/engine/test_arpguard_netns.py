"""The ARP guard on a real kernel, on this host: two network namespaces the test creates and
removes (a director and a direct-routing real joined by a veth pair; 10.77.x addresses exist only
inside them). The real holds the VIP on lo. With arp_ignore=1/arp_announce=2 it keeps quiet and
the guard reports nothing; switched to arp_ignore=0 it answers ARP for the VIP and the guard,
running in the director's namespace (a child process under `ip netns exec`, with the daemon's
ArpGuard task), reports the real's MAC within one interval; switched back, the conflict clears.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and ip to create network namespaces",
)

ROOT = Path(__file__).resolve().parents[2]
VIP = "10.77.0.100"
DIRECTOR = "10.77.0.1"
REAL = "10.77.0.2"
INTERVAL = 2

CHILD = r"""
import asyncio, json, subprocess, sys, time
from lvsmon.config import parse_config
from lvsmon.engine.arpguard import ArpGuard
from lvsmon.engine.events import ArpConflict, ArpConflictCleared, EventBus

real_ns, vip, real, interval = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
CONFIG = (
    f"arpguard = yes\narpguardinterval = {interval}\n"
    f"virtual = {vip}:80\n\treal = {real}:80 gate\n"
    f"virtual = {vip}:443\n\treal = {real}:443 gate\n\tarpguard = no\n"
)

def arp_ignore(value):
    subprocess.run(
        ["ip", "netns", "exec", real_ns, "sysctl", "-qw", f"net.ipv4.conf.all.arp_ignore={value}"],
        check=True,
    )

async def main():
    seen = []
    t0 = time.monotonic()
    bus = EventBus()
    bus.subscribe("test", lambda e: seen.append((time.monotonic() - t0, e)),
                  kinds=(ArpConflict, ArpConflictCleared))
    await bus.start()
    guard = ArpGuard(bus)
    guard.use(parse_config(CONFIG, "a.cf", check_support=False))
    await guard.start()
    out = {}
    for _ in range(1200):  # the first round imports pyroute2: seconds in a VM without KVM
        if guard.rounds:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(2.2 * interval)  # quiet real: two more rounds
    out["quiet_rounds"] = guard.rounds
    out["quiet_events"] = len(seen)
    arp_ignore(0)
    flipped = time.monotonic() - t0
    for _ in range(int(interval * 30)):
        if seen:
            break
        await asyncio.sleep(0.1)
    out["detected_after"] = seen[0][0] - flipped if seen else None
    arp_ignore(1)
    quiet_again = time.monotonic() - t0
    for _ in range(int(interval * 30)):
        if len(seen) > 1:
            break
        await asyncio.sleep(0.1)
    out["cleared_after"] = seen[1][0] - quiet_again if len(seen) > 1 else None
    out["events"] = [
        {"kind": type(e).__name__, "vip": e.vip, "mac": e.mac, "interface": e.interface,
         "services": [str(s) for s in e.services]}
        for _, e in seen
    ]
    out["conflicts_now"] = len(guard.conflicts)
    out["detected"] = guard.detected
    out["failures"] = guard.failures
    await guard.stop()
    await bus.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@pytest.fixture
def lab() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    director, real = f"lvag-d-{tag}", f"lvag-r-{tag}"
    made: list[str] = []
    try:
        for ns in (director, real):
            added = subprocess.run(
                ["ip", "netns", "add", ns], capture_output=True, text=True, timeout=30, check=False
            )
            if added.returncode != 0 and not made:
                pytest.skip(f"cannot create a network namespace: {added.stderr.strip()}")
            assert added.returncode == 0, added.stderr
            made.append(ns)
        # link names live inside the namespaces: short and unique all the same
        _ip("link", "add", f"agd{tag}", "netns", director, "type", "veth",
            "peer", "name", f"agr{tag}", "netns", real)  # fmt: skip
        for ns, dev, addr in ((director, f"agd{tag}", DIRECTOR), (real, f"agr{tag}", REAL)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        # the director holds the VIP on its interface toward the real, as IPaddr2 puts it
        _ip("-n", director, "addr", "add", f"{VIP}/32", "dev", f"agd{tag}")
        # the real: VIP on lo, ARP for it switched off (the DR recipe)
        _ip("-n", real, "addr", "add", f"{VIP}/32", "dev", "lo")
        for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
            subprocess.run(
                ["ip", "netns", "exec", real, "sysctl", "-qw", f"net.ipv4.conf.all.{key}={value}"],
                check=True,
                timeout=30,
            )
        mac = json.loads(
            subprocess.run(
                ["ip", "-j", "-n", real, "link", "show", f"agr{tag}"],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout
        )[0]["address"]
        yield {"director": director, "real": real, "real_mac": mac, "dev": f"agd{tag}"}
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def test_guard_reports_a_real_answering_arp_and_nothing_for_a_quiet_one(
    lab: dict[str, str],
) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", lab["director"], sys.executable, "-c", CHILD,
         lab["real"], VIP, REAL, str(INTERVAL)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    # arp_ignore=1, arp_announce=2, VIP on lo: rounds, nothing reported
    assert out["quiet_rounds"] >= 3, out
    assert out["quiet_events"] == 0
    # arp_ignore=0: reported within one interval (the answer is published as it arrives)
    assert out["detected_after"] is not None
    assert out["detected_after"] <= INTERVAL + 0.2, out
    # quiet again: cleared by the next round, once it has listened to its end (1 s)
    assert out["cleared_after"] is not None
    assert out["cleared_after"] <= INTERVAL + 1.2, out
    conflict = {
        "vip": VIP,
        "mac": lab["real_mac"],
        "interface": lab["dev"],
        "services": [f"tcp:{VIP}:80"],  # the :443 virtual has the guard off
    }
    assert out["events"] == [
        {"kind": "ArpConflict", **conflict},
        {"kind": "ArpConflictCleared", **conflict},
    ]
    assert out["conflicts_now"] == 0
    assert out["detected"] == 1
    assert out["failures"] == 0
    for ns in (lab["director"], lab["real"]):
        assert subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=False).stdout.strip() == ""  # fmt: skip


HOST_VIEW = r"""
import json
from ipaddress import IPv4Address
from lvsmon.checks.arp import host_view
view = host_view([IPv4Address(a) for a in ("10.78.0.9", "10.79.1.1", "10.80.0.1")])
names = {i: l.name for i, l in view.links.items()}
print(json.dumps({
    "routes": {str(r): [names[x.link], str(x.source)] for r, x in view.routes.items()},
    "failed": {str(r): why for r, why in view.failed.items()},
    "arp": {l.name: l.arp for l in view.links.values()},
    "own": len(view.own_macs),
}))
"""

HOST_SETUP = (
    "ip link set lo up && ip link add hv0 type veth peer name hv1 && ip link set hv0 up && "
    "ip link set hv1 up && ip addr add 10.78.0.1/24 dev hv0 && ip addr add 10.78.0.100/32 dev hv0"
    " && ip route add 10.79.0.0/16 via 10.78.0.254 src 10.78.0.1 && "
    'exec "$0" -c "$1"'
)


def test_host_view_finds_the_interface_and_source_toward_each_real() -> None:
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", HOST_SETUP, sys.executable, HOST_VIEW],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["routes"] == {
        "10.78.0.9": ["hv0", "10.78.0.1"],  # on the connected /24 (not the /32 VIP)
        "10.79.1.1": ["hv0", "10.78.0.1"],  # through a gateway: the kernel's route lookup
    }
    assert list(out["failed"]) == ["10.80.0.1"]  # no route: the kernel's words kept
    assert out["arp"] == {"lo": False, "hv0": True, "hv1": True}
    assert out["own"] == 3  # lo's zero MAC and both veth ends


def _wait_for_line(log: Path, text: str, within: float) -> float:
    """Seconds until `text` appears in the log (AssertionError after `within`)."""
    t0 = time.monotonic()
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        assert time.monotonic() - t0 < within, f"not logged within {within} s: {text}"
        time.sleep(0.05)
    return time.monotonic() - t0


def _sysctl(ns: str, setting: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", setting], check=True, timeout=30)


def test_the_daemon_in_the_directors_namespace_logs_the_conflict(
    lab: dict[str, str], tmp_path: Path
) -> None:
    """The whole daemon (memory backend), started as an operator starts it in the director's
    namespace: the guard is one of its parts, runs as root with CAP_NET_RAW, and logs."""
    cf, log = tmp_path / "lb.cf", tmp_path / "lvsmon.log"
    cf.write_text(
        f"supervised = yes\narpguard = yes\narpguardinterval = {INTERVAL}\n"
        f"virtual = {VIP}:80\n\treal = {REAL}:80 gate\n\tchecktype = on\n"
    )
    env = {**os.environ, "LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(tmp_path / "lb.pid")}
    with log.open("w") as out:  # supervised: in the foreground, the log on stdout
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab["director"], sys.executable, "-m", "lvsmon", str(cf),
             "start"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        _wait_for_line(log, "Starting Linux Director Daemon", 60)
        _wait_for_line(log, f"ARP guard: asking who has {VIP} on {lab['dev']} every 2 s", 60)
        time.sleep(INTERVAL + 1.5)  # a quiet real: rounds pass, nothing logged
        assert "ARP conflict" not in log.read_text()
        _sysctl(lab["real"], "net.ipv4.conf.all.arp_ignore=0")
        took = _wait_for_line(
            log,
            f"ARP conflict: {lab['real_mac']} answers ARP for VIP {VIP} on {lab['dev']}",
            INTERVAL + 5,
        )
        assert took <= INTERVAL + 0.5, took
        _sysctl(lab["real"], "net.ipv4.conf.all.arp_ignore=1")
        _wait_for_line(log, f"ARP conflict over: {lab['real_mac']} for VIP {VIP}", INTERVAL + 5)
        assert [line for line in log.read_text().splitlines() if "ARP guard:" in line] == [
            line for line in log.read_text().splitlines() if "ARP guard: asking" in line
        ]  # no round failed
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0, log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


SPRAYER = r"""
import socket, struct, sys, time
dev, director_mac, vip = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3]
def arp(sha, spa, htype=1, ptype=0x0800, hlen=6, plen=4, oper=2):
    return struct.pack("!HHBBH6s4s6s4s", htype, ptype, hlen, plen, oper, sha,
                       socket.inet_aton(spa), director_mac, socket.inet_aton("10.77.0.1"))
evil = lambda n: bytes([0x0a, 0, 0, 0, 0, n])
frames = [
    arp(evil(1), vip)[:12],  # short (Ethernet pads it with zeros)
    arp(evil(2), vip, oper=1),  # a request claiming the VIP, not an answer
    arp(evil(3), vip, oper=3),  # RARP
    arp(evil(4), vip, ptype=0x86DD),  # another protocol
    arp(evil(5), vip, htype=6),  # other hardware
    arp(evil(6), "10.77.0.55"),  # an answer for another address
    arp(director_mac, vip),  # the director's own MAC
    arp(evil(7), vip) + b"\x1b[2J\r\n" * 3,  # the one conflict, with junk after it
]
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
end = time.monotonic() + float(sys.argv[4])
while time.monotonic() < end:
    for frame in frames:
        s.sendto(frame, (dev, 0x0806, 0, 1, director_mac))
    time.sleep(0.01)
"""

COLLECTOR = r"""
import asyncio, json, sys
from ipaddress import IPv4Address
from lvsmon.checks.arp import Probe, host_view, mac_text, probe_round
dev, vip, real = sys.argv[1], IPv4Address(sys.argv[2]), IPv4Address(sys.argv[3])
view = host_view([real])
link = next(l for l in view.links.values() if l.name == dev)
async def main():
    out = []
    for max_bytes in (65536, 200):
        r = await probe_round([Probe(link, IPv4Address("10.77.0.1"), (vip,))], view.own_macs,
                              wait_s=1.0, max_bytes=max_bytes)
        answers = sorted([a.interface, str(a.vip), mac_text(a.mac)] for a in r.answers)
        out.append({"answers": answers, "errors": r.errors, "read": r.read,
                    "cut_short": r.cut_short})
    print(json.dumps(out))
asyncio.run(main())
"""


def test_hostile_replies_on_the_wire(lab: dict[str, str]) -> None:
    """A peer sprays malformed and misleading ARP at the director while it listens: only the
    well-formed reply for the VIP from a foreign MAC counts, and the byte bound holds."""
    director_mac = json.loads(
        subprocess.run(
            ["ip", "-j", "-n", lab["director"], "link", "show", lab["dev"]],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    )[0]["address"]  # fmt: skip
    real_dev = lab["dev"].replace("agd", "agr")
    sprayer = subprocess.Popen(
        ["ip", "netns", "exec", lab["real"], sys.executable, "-c", SPRAYER, real_dev,
         director_mac, VIP, "600"],  # until killed
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", lab["director"], sys.executable, "-c", COLLECTOR,
             lab["dev"], VIP, REAL],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        sprayer.kill()
        sprayer.wait()
    full, bounded = json.loads(done.stdout.splitlines()[-1])
    assert full["answers"] == [[lab["dev"], VIP, "0a:00:00:00:00:07"]]
    assert full["errors"] == {} and not full["cut_short"]
    assert full["read"] > 0
    assert bounded["cut_short"] and bounded["read"] <= 200 + 64


ROUND_ERRORS = r"""
import asyncio, json, sys
from ipaddress import IPv4Address
from lvsmon.checks.arp import Probe, host_view, probe_round
view = host_view([IPv4Address("10.78.0.9")])
link = next(l for l in view.links.values() if l.name == "hv0")
r = asyncio.run(probe_round([Probe(link, IPv4Address("10.78.0.1"), (IPv4Address("10.78.0.100"),))],
                            view.own_macs, wait_s=0.2))
print(json.dumps({"errors": r.errors, "answers": len(r.answers)}))
"""

DOWN_SETUP = (
    "ip link set lo up && ip link add hv0 type veth peer name hv1 && "
    "ip addr add 10.78.0.1/24 dev hv0 && ip link set hv0 down && "
    'exec "$0" "$@"'
)


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        ([], "send: network is down"),
        # without CAP_NET_RAW (a daemon that dropped it): no packet socket
        (["setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"], "packet socket: "),
    ],
    ids=["interface down", "no CAP_NET_RAW"],
)
def test_a_round_that_cannot_ask_says_why(prefix: list[str], error: str) -> None:
    if prefix and shutil.which(prefix[0]) is None:
        pytest.skip(f"needs {prefix[0]}")
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", DOWN_SETUP, *prefix, sys.executable, "-c", ROUND_ERRORS],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["answers"] == 0
    assert list(out["errors"]) == ["hv0"]
    assert out["errors"]["hv0"].startswith(error), out
