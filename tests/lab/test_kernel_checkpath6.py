"""Checks through the VIP for IPv6 direct-routing reals, on the real kernel (issue 23 point 3:
"IPv6 where the kernel allows"): the probe services are IPv6 firewall-mark services, the probe
socket carries the mark and binds the director's own IPv6 address, and the answer from the VIP
(a local address of the director) is accepted: IPv6 has neither accept_local nor rp_filter.

Layout (inside the VM only): one bridge `c6-br`, the director (root netns) fd30::1 with the VIP
fd30::100/128; client netns c6-client fd30::2; DR reals c6-rs1, c6-rs2 at fd30::11, fd30::12
with the VIP on `lo` (Linux answers neighbour solicitations only for the receiving interface's
addresses, so the VIP on `lo` is not announced: IPv6 needs no arp_ignore). Each real runs
busybox httpd on port 80 (every address) serving "still alive rsN".

Shown: both reals up through their probe services; the VIP removed from rs2's `lo` quiesces it
within failurecount x checkinterval + checktimeout + 1 s, and clients then see no error; a stop
leaves no probe service.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.daemonctl import Lvsmon
from tests.lab.labrun import MEASURED
from tests.lab.netlab import BUSYBOX, LabError, ip_batch, poll, remove_namespaces, run

pytestmark = pytest.mark.kernel

BRIDGE = "c6-br"
CLIENT_NS = "c6-client"
DIRECTOR = "fd30::1"
CLIENT = "fd30::2"
VIP = "fd30::100"
SERVICE = f"[{VIP}]:80"
MARKBASE = 0x4C560000
REALS = (1, 2)
CHECKINTERVAL = 2
CHECKTIMEOUT = 1
FAILURECOUNT = 2
BOUND = FAILURECOUNT * CHECKINTERVAL + CHECKTIMEOUT + 1.0


def rip(n: int) -> str:
    return f"fd30::{10 + n}"


def ns(n: int) -> str:
    return f"c6-rs{n}"


def config(logfile: Path) -> str:
    reals = "".join(f"\treal6=[{rip(n)}]:80 gate 1\n" for n in REALS)
    return (
        f"checkinterval={CHECKINTERVAL}\n"
        f"checktimeout={CHECKTIMEOUT}\n"
        f"negotiatetimeout={CHECKTIMEOUT}\n"
        f"failurecount={FAILURECOUNT}\n"
        "quiescent=yes\n"
        f'logfile="{logfile}"\n'
        f"virtual6={SERVICE}\n"
        f"{reals}"
        "\tservice=http\n"
        '\trequest="test.html"\n'
        '\treceive="still alive"\n'
        "\tscheduler=rr\n"
        "\tcheckpath=vip\n"
    )


def table() -> list[str]:
    return [line for line in run("ipvsadm", "-Sn").stdout.splitlines() if line.strip()]


def weights() -> dict[int, int]:
    """Per real number, its weight in the production service (absent: not there)."""
    out: dict[int, int] = {}
    for line in table():
        m = re.match(rf"^-a -t {re.escape(SERVICE)} -r \[fd30::1(\d)\]:80 -g -w (\d+)", line)
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def probe_services() -> dict[int, list[str]]:
    """IPv6 probe services in the block: mark -> the lines naming it."""
    found: dict[int, list[str]] = {}
    for line in table():
        m = re.match(r"^-[Aa] -f (\d+)\b", line)
        if m and MARKBASE <= int(m.group(1)) < MARKBASE + 65536:
            found.setdefault(int(m.group(1)), []).append(line)
    return found


@dataclass
class Lab6:
    workdir: Path
    daemon: Lvsmon
    servers: dict[int, subprocess.Popen[bytes]]

    def wait(self, pred: object, what: str, within: float = 60.0) -> float:
        assert callable(pred)
        return poll(lambda: True if pred() else None, within, what, every=0.05)[1]

    def all_up(self) -> None:
        try:
            self.wait(lambda: weights() == dict.fromkeys(REALS, 1), "every real at weight 1", 90)
        except LabError as exc:
            status = self.daemon.command("status")
            listening = run("ss", "-ltn", netns=ns(1), check=False).stdout
            raise LabError(
                f"{exc}\n{status.stdout}\n{status.stderr}\n"
                + "\n".join(table())
                + f"\nrs1 listening:\n{listening}\n{self.daemon.log_tail()}\n{_packets()}"
            ) from None

    def curl(self, count: int) -> list[str]:
        out: list[str] = []
        for _ in range(count):
            done = run(
                "curl", "-6", "-s", "--max-time", "2", "-H", "Connection: close",
                f"http://[{VIP}]/test.html", netns=CLIENT_NS, check=False, timeout=30,
            )  # fmt: skip
            m = re.search(r"\brs(\d)\b", done.stdout)
            out.append(f"rs{m.group(1)}" if done.returncode == 0 and m else "failed")
        return out


def _packets() -> str:
    """Where the checks' packets go (for a failure's message): the director's and rs1's
    counters over a few check intervals, the IPVS connection entries, the neighbours."""

    def counters(netns: str | None) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in run("nstat", "-az", netns=netns, check=False).stdout.splitlines():
            f = line.split()
            if len(f) >= 2 and f[1].isdigit() and f[0].startswith(("Ip6", "Icmp6", "Tcp")):
                out[f[0]] = int(f[1])
        return out

    before = {"director": counters(None), "rs1": counters(ns(1))}
    time.sleep(2 * CHECKINTERVAL)
    after = {"director": counters(None), "rs1": counters(ns(1))}
    lines = []
    for where in before:
        moved = {k: v - before[where].get(k, 0) for k, v in after[where].items()}
        lines.append(f"{where}: " + ", ".join(f"{k}+{d}" for k, d in moved.items() if d))
    conns = Path("/proc/net/ip_vs_conn").read_text(encoding="ascii").splitlines()[:8]
    neigh = run("ip", "-6", "neigh", netns=ns(1), check=False).stdout
    return "\n".join([*lines, *conns, f"rs1 neighbours: {neigh}"])


def _down(names: list[str]) -> None:
    remove_namespaces(names, (BRIDGE,))


def _purge_kernel() -> None:
    run("ipvsadm", "-D", "-t", SERVICE, check=False)
    for mark in probe_services():
        run("ipvsadm", "-D", "-f", str(mark), "-6", check=False)


@pytest.fixture(scope="module")
def lab6(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab6]:
    if not os.environ.get("LVSMON_IN_VM"):
        pytest.fail("builds namespaces and changes IPVS: run it with tests/vm/run -k checkpath6")
    workdir = tmp_path_factory.mktemp("checkpath6")
    names = [CLIENT_NS, *(ns(n) for n in REALS)]
    _down(names)
    _purge_kernel()
    for name in names:
        run("ip", "netns", "add", name)
    director = [
        f"link add {BRIDGE} type bridge",
        f"addr add {DIRECTOR}/64 dev {BRIDGE} nodad",
        f"addr add {VIP}/128 dev {BRIDGE} nodad",
        f"link set {BRIDGE} up",
    ]
    for name in names:
        director += [
            f"link add {name} type veth peer name eth0 netns {name}",
            f"link set {name} master {BRIDGE} up",
        ]
    ip_batch(None, director)
    ip_batch(
        CLIENT_NS,
        ["link set lo up", f"addr add {CLIENT}/64 dev eth0 nodad", "link set eth0 up"],
    )
    for n in REALS:
        ip_batch(
            ns(n),
            [
                "link set lo up",
                f"addr add {rip(n)}/64 dev eth0 nodad",
                "link set eth0 up",
                f"addr add {VIP}/128 dev lo",
            ],
        )
    servers: dict[int, subprocess.Popen[bytes]] = {}
    for n in REALS:
        root = workdir / f"rs{n}"
        root.mkdir()
        (root / "test.html").write_text(f"still alive\nrs{n}\n", encoding="utf-8")
        servers[n] = subprocess.Popen(
            ["ip", "netns", "exec", ns(n), BUSYBOX, "httpd", "-f", "-p", "80", "-h", str(root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    daemon = Lvsmon(workdir, "netlink")
    daemon.write_config(config(daemon.logfile))
    lab = Lab6(workdir, daemon, servers)
    try:
        yield lab
    finally:
        try:
            if daemon.running():
                daemon.stop()
        finally:
            for proc in servers.values():
                proc.kill()
                proc.wait()
            _down(names)
            _purge_kernel()


def test_ipv6_reals_are_checked_through_ipv6_probe_services(lab6: Lab6) -> None:
    lab6.daemon.start()
    lab6.all_up()
    probes = probe_services()
    assert len(probes) == len(REALS), table()
    lines = "\n".join(line for found in probes.values() for line in found)
    for n in REALS:
        assert f"[{rip(n)}]:0 -g -w 1" in lines, lines
    answers = lab6.curl(6)
    assert "failed" not in answers, answers


def test_an_ipv6_real_without_the_vip_is_quiesced(lab6: Lab6) -> None:
    lab6.all_up()
    run("ip", "addr", "del", f"{VIP}/128", "dev", "lo", netns=ns(2))
    try:
        took = lab6.wait(lambda: weights().get(2) == 0, "rs2 quiesced", 60)
        MEASURED.append(("checkpath=vip, IPv6: VIP removed from rs2's lo -> quiesced", took))
        assert took <= BOUND, f"{took:.2f} s > {BOUND} s"
        answers = lab6.curl(8)
        assert "failed" not in answers and "rs2" not in answers, answers
    finally:
        run("ip", "addr", "add", f"{VIP}/128", "dev", "lo", netns=ns(2))
    lab6.all_up()
    time.sleep(CHECKINTERVAL)


def test_an_ipv6_stop_leaves_no_probe_service(lab6: Lab6) -> None:
    assert probe_services()
    lab6.daemon.stop()
    assert probe_services() == {}
