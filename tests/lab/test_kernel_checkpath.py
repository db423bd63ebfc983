"""Checks through the VIP on the real kernel (issue 23 point 5): direct-routing reals with the VIP
on their loopback, a tunnelled real, the real lvsmon daemon with the netlink backend.

Layout (inside the VM only): one bridge `cp-br`, the director (root netns) 10.30.0.1 with the VIP
10.30.0.100/32; client netns cp-client 10.30.0.2; DR reals cp-rs1..3 10.30.0.11..13 with the VIP
on `lo`, arp_ignore=1, arp_announce=2; a TUN real cp-rs4 10.30.0.14 with `tunl0` up and the VIP
on `lo`, rp_filter 0. Each real runs busybox httpd on *:80 serving "still alive rsN".

The cases, each with its control: (a) the VIP removed from a DR real's loopback: checkpath=real
keeps it in while the clients it gets fail; vip quiesces it within failurecount x checkinterval
+ checktimeout + 1 s, after which clients see no error; (b) a real whose service listens on the
VIP only: real takes it out, vip keeps it; (c) the TUN real's tunnel down: vip takes it out;
(e) the production service counts no probe connection, stop and purge leave no probe service;
(f) a reload that changes checkpath adds or removes the probe services, no production real
flaps. The measured times go to the terminal summary (tests/lab/conftest.py).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.daemonctl import Lvsmon
from tests.lab.labrun import MEASURED
from tests.lab.netlab import WebServer, ip_batch, poll, remove_namespaces, run

pytestmark = pytest.mark.kernel

BRIDGE = "cp-br"
CLIENT_NS = "cp-client"
DIRECTOR = "10.30.0.1"
CLIENT = "10.30.0.2"
VIP = "10.30.0.100"
SERVICE = f"{VIP}:80"
MARKBASE = 0x4C560000
REALS = {1: "gate", 2: "gate", 3: "gate", 4: "ipip"}
CHECKINTERVAL = 2
CHECKTIMEOUT = 1
FAILURECOUNT = 2
BOUND = FAILURECOUNT * CHECKINTERVAL + CHECKTIMEOUT + 1.0
SETTLE = FAILURECOUNT * CHECKINTERVAL + CHECKTIMEOUT + 2.0  # a real that would go has gone


def rip(n: int) -> str:
    return f"10.30.0.{10 + n}"


def ns(n: int) -> str:
    return f"cp-rs{n}"


def sysctl(name: str, value: int, netns: str | None = None) -> None:
    path = "/proc/sys/" + name.replace(".", "/")
    if netns is None:
        Path(path).write_text(f"{value}\n", encoding="ascii")
    else:
        run("sh", "-c", f"echo {value} > {path}", netns=netns)


def config(logfile: Path, path: str) -> str:
    reals = "".join(f"\treal={rip(n)}:80 {fwd} 1\n" for n, fwd in REALS.items())
    return (
        f"checkinterval={CHECKINTERVAL}\n"
        f"checktimeout={CHECKTIMEOUT}\n"
        f"negotiatetimeout={CHECKTIMEOUT}\n"
        f"failurecount={FAILURECOUNT}\n"
        "quiescent=yes\n"
        f'logfile="{logfile}"\n'
        f"virtual={SERVICE}\n"
        f"{reals}"
        "\tservice=http\n"
        '\trequest="test.html"\n'
        '\treceive="still alive"\n'
        "\tscheduler=rr\n"
        f"\tcheckpath={path}\n"
    )


# ---- the kernel table -----------------------------------------------------------------------


def table() -> list[str]:
    return [line for line in run("ipvsadm", "-Sn").stdout.splitlines() if line.strip()]


def weights() -> dict[int, int]:
    """Per real number, its weight in the production service (absent: not there)."""
    out: dict[int, int] = {}
    for line in table():
        m = re.match(rf"^-a -t {re.escape(SERVICE)} -r 10\.30\.0\.1(\d):80 -[gim] -w (\d+)", line)
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def probe_services() -> dict[int, str]:
    """Probe services (fwmark services in the block): mark -> "RIP:0 -g|-i"."""
    found: dict[int, str] = {}
    for line in table():
        m = re.match(r"^-a -f (\d+) -r (\S+) (-[gim]) -w (\d+)", line)
        if m and MARKBASE <= int(m.group(1)) < MARKBASE + 65536:
            found[int(m.group(1))] = f"{m.group(2)} {m.group(3)} w{m.group(4)}"
    for line in table():
        m = re.match(r"^-A -f (\d+)", line)
        if m and MARKBASE <= int(m.group(1)) < MARKBASE + 65536:
            found.setdefault(int(m.group(1)), "no destination")
    return found


def stats() -> dict[str, int]:
    """Connections per service and destination since created ("TCP VIP:80", "FWM mark",
    "TCP VIP:80 -> RIP:80")."""
    out: dict[str, int] = {}
    current = ""
    for line in run("ipvsadm", "-Ln", "--stats", "--exact").stdout.splitlines():
        f = line.split()
        if f[:1] in (["TCP"], ["FWM"]):
            current = f"{f[0]} {f[1]}"
            out[current] = int(f[2])
        elif f[:1] == ["->"] and current and f[1][0].isdigit():
            out[f"{current} -> {f[1]}"] = int(f[2])
    return out


# ---- the lab --------------------------------------------------------------------------------


@dataclass
class CheckpathLab:
    workdir: Path
    daemon: Lvsmon
    servers: dict[int, WebServer]

    def write(self, path: str) -> None:
        self.daemon.write_config(config(self.daemon.logfile, path))

    def reload(self, path: str) -> None:
        self.write(path)
        pid = self.daemon.pid()
        assert pid is not None
        os.kill(pid, signal.SIGHUP)

    def wait(self, pred: object, what: str, within: float = 60.0) -> float:
        assert callable(pred)
        return poll(lambda: True if pred() else None, within, what, every=0.05)[1]

    def all_up(self) -> None:
        self.wait(lambda: weights() == dict.fromkeys(REALS, 1), "every real at weight 1", 90)

    def curl(self, count: int) -> list[str]:
        """`count` connections from the client through the VIP: "rsN" or "failed"."""
        out: list[str] = []
        for _ in range(count):
            done = run(
                "curl", "-s", "--max-time", "2", "-H", "Connection: close",
                f"http://{VIP}/test.html", netns=CLIENT_NS, check=False, timeout=30,
            )  # fmt: skip
            m = re.search(r"\brs(\d)\b", done.stdout)
            out.append(f"rs{m.group(1)}" if done.returncode == 0 and m else "failed")
        return out

    def bind_httpd(self, n: int, address: str) -> None:
        """Restart real n's web server listening on `address` only ("0.0.0.0": everywhere)."""
        s = self.servers[n]
        s.kill()
        s.bind = address
        s.start()
        poll(
            lambda: True if run("ss", "-ltn", netns=ns(n)).stdout.count(":80 ") else None,
            30,
            f"rs{n} listening",
            every=0.1,
        )


def _down(names: list[str]) -> None:
    remove_namespaces(names, (BRIDGE,))


def _purge_kernel() -> None:
    run("ipvsadm", "-D", "-t", SERVICE, check=False)
    for mark in probe_services():
        run("ipvsadm", "-D", "-f", str(mark), check=False)


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckpathLab]:
    if not os.environ.get("LVSMON_IN_VM"):
        pytest.fail("builds namespaces and changes IPVS: run it with tests/vm/run -k checkpath")
    workdir = tmp_path_factory.mktemp("checkpath")
    names = [CLIENT_NS, *(ns(n) for n in REALS)]
    _down(names)
    _purge_kernel()
    run("modprobe", "ipip")
    for name in names:
        run("ip", "netns", "add", name)
    director = [
        f"link add {BRIDGE} type bridge",
        f"addr add {DIRECTOR}/24 dev {BRIDGE}",
        f"addr add {VIP}/32 dev {BRIDGE}",
        f"link set {BRIDGE} up",
    ]
    for name in names:
        director += [
            f"link add {name} type veth peer name eth0 netns {name}",
            f"link set {name} master {BRIDGE} up",
        ]
    ip_batch(None, director)
    ip_batch(CLIENT_NS, ["link set lo up", f"addr add {CLIENT}/24 dev eth0", "link set eth0 up"])
    for n, fwd in REALS.items():
        commands = [
            "link set lo up",
            f"addr add {rip(n)}/24 dev eth0",
            "link set eth0 up",
            f"addr add {VIP}/32 dev lo",
        ]
        if fwd == "ipip":
            commands.append("link set tunl0 up")
        ip_batch(ns(n), commands)
        sysctl("net.ipv4.conf.all.arp_ignore", 1, ns(n))
        sysctl("net.ipv4.conf.all.arp_announce", 2, ns(n))
        if fwd == "ipip":
            sysctl("net.ipv4.conf.all.rp_filter", 0, ns(n))
            sysctl("net.ipv4.conf.tunl0.rp_filter", 0, ns(n))
    servers: dict[int, WebServer] = {}
    for n in REALS:
        root = workdir / f"rs{n}"
        root.mkdir()
        servers[n] = WebServer(f"rs{n}", ns(n), "0.0.0.0", root)
        servers[n].set_body(f"still alive\nrs{n}\n")
        servers[n].start()
    daemon = Lvsmon(workdir, "netlink")
    lab = CheckpathLab(workdir, daemon, servers)
    try:
        yield lab
    finally:
        try:
            if daemon.running():
                daemon.stop()
        finally:
            for s in servers.values():
                s.kill()
            _down(names)
            _purge_kernel()


def test_prerequisites_are_checked(cp: CheckpathLab) -> None:
    """Without accept_local on the interface toward the reals, start refuses with the fix."""
    sysctl("net.ipv4.conf.all.rp_filter", 0)
    sysctl(f"net.ipv4.conf.{BRIDGE}.rp_filter", 0)
    sysctl("net.ipv4.conf.all.accept_local", 0)
    sysctl(f"net.ipv4.conf.{BRIDGE}.accept_local", 0)
    cp.write("vip")
    done = cp.daemon.command("start")
    assert done.returncode == 2, done.stderr
    assert f"net.ipv4.conf.{BRIDGE}.accept_local=1" in done.stderr
    assert f"sysctl -w net.ipv4.conf.{BRIDGE}.accept_local=1" in done.stderr
    assert not cp.daemon.running()
    checked = run(
        sys.executable, "-m", "lvsmon", "check-config", str(cp.daemon.config), check=False
    )
    assert checked.returncode == 2 and "accept_local=1" in checked.stderr, checked.stderr
    sysctl(f"net.ipv4.conf.{BRIDGE}.accept_local", 1)
    checked = run(
        sys.executable, "-m", "lvsmon", "check-config", str(cp.daemon.config), check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_a_real_path_keeps_a_real_without_the_vip(cp: CheckpathLab) -> None:
    """(a), the bug shown: the RIP check passes, the clients sent to rs2 fail."""
    cp.write("real")
    cp.daemon.start()
    cp.all_up()
    assert probe_services() == {}
    run("ip", "addr", "del", f"{VIP}/32", "dev", "lo", netns=ns(2))
    try:
        time.sleep(SETTLE)
        assert weights()[2] == 1  # still in
        answers = cp.curl(8)
        assert "failed" in answers, answers
        failed = float(answers.count("failed"))
        MEASURED.append(
            ("checkpath=real: of 8 client requests with rs2's VIP gone, failed", failed)
        )
    finally:
        run("ip", "addr", "add", f"{VIP}/32", "dev", "lo", netns=ns(2))


def test_a_reload_to_vip_adds_probe_services_without_a_flap(cp: CheckpathLab) -> None:
    """(f): the reload programs one probe service per real, no production weight moves."""
    before = weights()
    assert before == dict.fromkeys(REALS, 1)
    seen: list[dict[int, int]] = []
    cp.reload("vip")

    def probes_there() -> bool:
        seen.append(weights())
        return len(probe_services()) == len(REALS)

    took = cp.wait(probes_there, "four probe services")
    MEASURED.append(("reload real -> vip: probe services programmed after", took))
    assert sorted(probe_services().values()) == sorted(
        f"{rip(n)}:0 {'-g' if fwd == 'gate' else '-i'} w1" for n, fwd in REALS.items()
    )
    time.sleep(SETTLE)  # the first checks through the VIP have reported
    seen.append(weights())
    assert all(w == before for w in seen), seen


def test_a_vip_path_quiesces_a_real_without_the_vip(cp: CheckpathLab) -> None:
    """(a): through the VIP the missing VIP is seen; after that, no client error."""
    cp.all_up()
    run("ip", "addr", "del", f"{VIP}/32", "dev", "lo", netns=ns(2))
    try:
        took = cp.wait(lambda: weights().get(2) == 0, "rs2 quiesced", 60)
        MEASURED.append(("checkpath=vip: VIP removed from rs2's lo -> quiesced", took))
        assert took <= BOUND, f"{took:.2f} s > {BOUND} s"
        answers = cp.curl(12)
        assert "failed" not in answers and "rs2" not in answers, answers
    finally:
        run("ip", "addr", "add", f"{VIP}/32", "dev", "lo", netns=ns(2))
    cp.all_up()


def test_a_service_bound_to_the_vip_only(cp: CheckpathLab) -> None:
    """(b): vip keeps rs3 whose service listens on the VIP only; real wrongly takes it out."""
    cp.bind_httpd(3, VIP)
    try:
        time.sleep(SETTLE)
        assert weights()[3] == 1
        assert "failed" not in cp.curl(8)
        cp.reload("real")
        took = cp.wait(lambda: weights().get(3) == 0, "rs3 taken out by its RIP check", 60)
        MEASURED.append(("checkpath=real: service on the VIP only -> taken out", took))
        cp.reload("vip")
        cp.wait(lambda: weights().get(3) == 1, "rs3 back through the VIP", 60)
    finally:
        cp.bind_httpd(3, "0.0.0.0")
    cp.all_up()


def test_a_tunnel_down_is_seen_through_the_vip(cp: CheckpathLab) -> None:
    """(c): the TUN real's tunl0 down: its clients are lost, and vip takes it out."""
    run("ip", "link", "set", "tunl0", "down", netns=ns(4))
    try:
        took = cp.wait(lambda: weights().get(4) == 0, "rs4 quiesced", 60)
        MEASURED.append(("checkpath=vip: rs4's tunl0 down -> quiesced", took))
        assert took <= BOUND, f"{took:.2f} s > {BOUND} s"
    finally:
        run("ip", "link", "set", "tunl0", "up", netns=ns(4))
    cp.wait(lambda: weights().get(4) == 1, "rs4 back", 60)


def test_production_counters_count_no_probe(cp: CheckpathLab) -> None:
    """(e): checks run through the probe services, none lands in the production service."""
    cp.all_up()
    before = stats()
    time.sleep(3 * CHECKINTERVAL)
    after = stats()
    production = {k: v for k, v in after.items() if k.startswith(f"TCP {SERVICE}")}
    assert production == {k: before[k] for k in production}, (before, after)
    probes = [k for k in after if k.startswith("FWM ") and "->" not in k]
    assert len(probes) == len(REALS)
    assert all(after[k] > before.get(k, 0) for k in probes), (before, after)


def test_a_reload_to_real_removes_probe_services_without_a_flap(cp: CheckpathLab) -> None:
    """(f), back: the probe services go, no production weight moves."""
    before = weights()
    seen: list[dict[int, int]] = []
    cp.reload("real")

    def gone() -> bool:
        seen.append(weights())
        return not probe_services()

    cp.wait(gone, "probe services removed")
    time.sleep(SETTLE)
    seen.append(weights())
    assert all(w == before for w in seen), seen


def test_stop_and_purge_leave_no_probe_service(cp: CheckpathLab) -> None:
    """(e): a stop removes them; after a kill -9, purge does."""
    cp.reload("vip")
    cp.wait(lambda: len(probe_services()) == len(REALS), "probe services back")
    cp.daemon.stop()
    assert probe_services() == {}
    cp.daemon.start()
    cp.wait(lambda: len(probe_services()) == len(REALS), "probe services at start")
    cp.daemon.kill9()
    assert len(probe_services()) == len(REALS)  # a crash leaves them, for a restart to adopt
    done = cp.daemon.command("purge")
    assert done.returncode == 0, done.stderr
    assert probe_services() == {}
    assert SERVICE not in "\n".join(table())
