"""A load-balanced network inside the throwaway VM, for driving the real lvsmon daemon.

Layout (all addresses exist only inside the VM):

    lab-client netns            director = root netns                   lab-rsN netns
    10.10.0.2  --veth--  lab-c 10.10.0.1/24 + VIP 10.10.0.100            10.20.0.1N/24
                         lab-br 10.20.0.1/24 (bridge) --veth lab-rsN--  default via 10.20.0.1

LVS-NAT: the real servers route back through the director. Each real runs `busybox httpd`
serving test.html = "still alive\\nrsN\\n"; the director runs a sorry server on the wildcard
address (a fallback of 127.0.0.1 receives connections still addressed to the VIP).

The kernel table is read two ways, both independent of lvsmon: `ipvsadm -Sn` for assertions, and
/proc/net/ip_vs (no fork, so it can be polled every few ms) for timing and for watching every
intermediate state.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

VIP = "10.10.0.100"
CLIENT = "10.10.0.2"
DIRECTOR_C = "10.10.0.1"
DIRECTOR_R = "10.20.0.1"
OTHER_VIP = "10.10.0.200"  # a virtual service lvsmon does not manage; it must never be touched
CLIENT_NS = "lab-client"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"  # Debian package busybox-static
BRIDGE = "lab-br"
GOOD_BODY = "still alive"
SORRY_BODY = "sorry server"


def real_ip(n: int) -> str:
    return f"10.20.0.{10 + n}"


def rs_ns(n: int) -> str:
    return f"lab-rs{n}"


class LabError(AssertionError):
    """A lab command failed or a wait ran out; the message says which and why."""


def ip_batch(netns: str | None, commands: list[str]) -> None:
    """Several `ip` commands in one process (`ip [-n NS] -batch -`)."""
    cmd = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    done = subprocess.run(
        cmd, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")


def run(
    *args: str, netns: str | None = None, check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(cmd)}: no answer within {timeout} s") from exc
    if check and done.returncode != 0:
        raise LabError(
            f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip() or done.stdout.strip()}"
        )
    return done


T = TypeVar("T")


def remove_namespaces(names: Iterable[str], links: Iterable[str] = ()) -> None:
    """Tear a lab down (also one a crashed run left): every process in each namespace killed,
    the namespaces and then the links (bridges) deleted; what is not there is skipped."""
    have = run("ip", "netns", "list", check=False).stdout.split()
    for name in names:
        if name in have:
            for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run("ip", "netns", "delete", name, check=False)
    for link in links:
        run("ip", "link", "delete", link, check=False)


def poll(
    probe: Callable[[], T | None], within: float, what: str, every: float = 0.02
) -> tuple[T, float]:
    """Call `probe` until it returns something not None; that value and the seconds it took.
    `within` only bounds a hung lab, it is not the assertion on detection time."""
    start = time.monotonic()
    while True:
        value = probe()
        if value is not None:
            return value, time.monotonic() - start
        if time.monotonic() - start > within:
            raise LabError(f"{what}: not reached within {within} s")
        time.sleep(every)


# ---- the kernel table ---------------------------------------------------------------------------

# (virtual "ip:port", real "ip:port") -> weight, for every destination of every TCP service
Weights = dict[tuple[str, str], int]


def _hexaddr(text: str) -> str:
    ip_hex, port_hex = text.split(":")
    ip = socket.inet_ntoa(bytes.fromhex(ip_hex))
    return f"{ip}:{int(port_hex, 16)}"


def parse_proc_ip_vs(text: str) -> tuple[frozenset[str], Weights]:
    """IPv4 TCP services and destination weights from /proc/net/ip_vs's format (hex addresses;
    anything else, IPv6 or fwmark services included, is skipped)."""
    services: set[str] = set()
    weights: Weights = {}
    current: str | None = None
    for line in text.splitlines()[3:]:
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "->":
            if current is not None and not fields[1].startswith("["):
                weights[(current, _hexaddr(fields[1]))] = int(fields[3])
        elif fields[0] == "TCP" and not fields[1].startswith("["):
            current = _hexaddr(fields[1])
            services.add(current)
        else:
            current = None
    return frozenset(services), weights


def proc_weights() -> tuple[frozenset[str], Weights]:
    with open("/proc/net/ip_vs", encoding="ascii") as f:
        return parse_proc_ip_vs(f.read())


def ipvsadm_save() -> list[str]:
    """`ipvsadm -Sn`, one rule per line, as the real tool prints them (sorted by ipvsadm)."""
    return [line for line in run("ipvsadm", "-Sn").stdout.splitlines() if line.strip()]


_DEST_RULE = re.compile(r"^-a -t (\S+) -r (\S+) -[gmi] -w (\d+)")


def save_weights(lines: Iterable[str]) -> Weights:
    weights: Weights = {}
    for line in lines:
        m = _DEST_RULE.match(line)
        if m:
            weights[(m.group(1), m.group(2))] = int(m.group(3))
    return weights


def save_services(lines: Iterable[str]) -> set[str]:
    return {line.split()[2] for line in lines if line.startswith("-A -t ")}


def dest_stats() -> dict[tuple[str, str], int]:
    """Per destination: connections scheduled to it since it was created (`ipvsadm -Ln --stats`)."""
    out = run("ipvsadm", "-Ln", "--stats", "--exact").stdout.splitlines()
    stats: dict[tuple[str, str], int] = {}
    current = ""
    for line in out:
        fields = line.split()
        if fields[:1] == ["TCP"]:
            current = fields[1]
        elif fields[:1] == ["->"] and current and fields[1][0].isdigit():
            stats[(current, fields[1])] = int(fields[2])
    return stats


def add_other_service() -> None:
    """The lab's service lvsmon does not manage, as an operator made it by hand."""
    run("ipvsadm", "-A", "-t", f"{OTHER_VIP}:80", "-s", "rr")
    run("ipvsadm", "-a", "-t", f"{OTHER_VIP}:80", "-r", f"{real_ip(1)}:80", "-m", "-w", "2")


def lab_part(weights: Weights, services: Iterable[str]) -> Weights:
    wanted = set(services)
    return {k: w for k, w in weights.items() if k[0] in wanted}


class TableWatch:
    """Every distinct state of some services' destinations, polled from /proc/net/ip_vs in a
    thread from construction on; `wait_for` then finds when a state first held."""

    def __init__(self, services: Iterable[str], every: float = 0.02) -> None:
        self.services = frozenset(services)
        self.every = every
        self.start = time.monotonic()
        self.states: list[tuple[float, Weights]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.record()
        self._thread = threading.Thread(target=self._loop, name="lab-table-watch", daemon=True)
        self._thread.start()

    def record(self) -> float:
        """Read the table now (the poller may be up to `every` late); returns the watch's clock.
        A test calls it right after changing the kernel itself, so that the change is seen
        before anyone can undo it."""
        weights = lab_part(proc_weights()[1], self.services)
        with self._lock:
            now = time.monotonic() - self.start
            if not self.states or self.states[-1][1] != weights:
                self.states.append((now, weights))
            return now

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.record()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.record()

    def __enter__(self) -> TableWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def first(self, pred: Callable[[Weights], bool], after: float = 0.0) -> float | None:
        with self._lock:
            return next((t for t, w in self.states if t >= after and pred(w)), None)

    def wait_for(
        self, pred: Callable[[Weights], bool], within: float, what: str, after: float = 0.0
    ) -> float:
        """Seconds from the watch's start to the first state satisfying `pred` that was first
        seen at or after `after` (a time on the watch's clock)."""
        found, _ = poll(lambda: self.first(pred, after), within, what, every=self.every)
        return found

    def current(self) -> Weights:
        with self._lock:
            return dict(self.states[-1][1])


# ---- processes ----------------------------------------------------------------------------------


def _wait_port(host: str, port: int, within: float = 60) -> None:
    def probe() -> bool | None:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return None

    poll(probe, within, f"a server listening on {host}:{port}", every=0.1)


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=30)


@dataclass
class WebServer:
    """busybox httpd (starts in milliseconds even under TCG; a Python server takes seconds) in a
    network namespace, serving one directory. It forks per connection and reads the file per
    request, so a test changes the answer by rewriting the file."""

    name: str
    netns: str | None
    bind: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    def set_body(self, body: str) -> None:
        tmp = self.root / "test.html.tmp"
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(self.root / "test.html")

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        cmd = [BUSYBOX, "httpd", "-f", "-p", f"{self.bind}:80", "-h", str(self.root)]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_listening(self) -> None:
        _wait_port("127.0.0.1" if self.bind == "0.0.0.0" else self.bind, 80)

    def kill(self) -> None:
        """SIGKILL and reap: from then on the port answers new connections with a RST."""
        _end(self.proc)
        self.proc = None


# ---- the lab ------------------------------------------------------------------------------------


@dataclass
class Lab:
    workdir: Path
    nreals: int = 4
    reals: dict[int, WebServer] = field(default_factory=dict)
    sorry: WebServer | None = None
    held: subprocess.Popen[str] | None = None

    def up(self) -> None:
        self.down()  # leftovers of an interrupted run in the same VM
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n", encoding="ascii")
        # one `ip -batch` per namespace: under TCG every fork of ip costs a noticeable fraction
        # of a second, and there would be dozens
        spaces = {CLIENT_NS: (f"{CLIENT}/24", DIRECTOR_C)}
        spaces |= {rs_ns(n): (f"{real_ip(n)}/24", DIRECTOR_R) for n in range(1, self.nreals + 1)}
        for ns in spaces:
            run("ip", "netns", "add", ns)
        director = [
            f"link add lab-c type veth peer name eth0 netns {CLIENT_NS}",
            f"addr add {DIRECTOR_C}/24 dev lab-c",
            f"addr add {VIP}/32 dev lab-c",
            "link set lab-c up",
            f"link add {BRIDGE} type bridge",
            f"addr add {DIRECTOR_R}/24 dev {BRIDGE}",
            f"link set {BRIDGE} up",
        ]
        for n in range(1, self.nreals + 1):
            director += [
                f"link add {rs_ns(n)} type veth peer name eth0 netns {rs_ns(n)}",
                f"link set {rs_ns(n)} master {BRIDGE} up",
            ]
        ip_batch(None, director)
        for ns, (cidr, gateway) in spaces.items():
            ip_batch(
                ns,
                [
                    "link set lo up",
                    f"addr add {cidr} dev eth0",
                    "link set eth0 up",
                    f"route add default via {gateway}",
                ],
            )
        for n in range(1, self.nreals + 1):
            root = self.workdir / f"rs{n}"
            root.mkdir(parents=True, exist_ok=True)
            self.reals[n] = WebServer(f"rs{n}", rs_ns(n), real_ip(n), root)
            self.reals[n].set_body(f"{GOOD_BODY}\nrs{n}\n")
        sorry_root = self.workdir / "sorry"
        sorry_root.mkdir(parents=True, exist_ok=True)
        # the wildcard address: IPVS hands the local node connections still addressed to the VIP
        self.sorry = WebServer("sorry", None, "0.0.0.0", sorry_root)
        self.sorry.set_body(f"{SORRY_BODY}\n")
        servers = [*self.reals.values(), self.sorry]
        for s in servers:  # start them all, then wait
            s.start()
        for s in servers:
            s.wait_listening()

    def down(self) -> None:
        self.release_held()
        for s in [*self.reals.values(), *([self.sorry] if self.sorry else [])]:
            s.kill()
        names = [CLIENT_NS, *(rs_ns(n) for n in range(1, self.nreals + 1))]
        remove_namespaces(names, ("lab-c", BRIDGE))

    # ---- servers --------------------------------------------------------------------------------

    def heal(self, ns: Iterable[int] = (1, 2, 3)) -> None:
        """Every named real server running with the right content."""
        started = []
        for n in ns:
            s = self.reals[n]
            s.set_body(f"{GOOD_BODY}\nrs{n}\n")
            if s.proc is None or s.proc.poll() is not None:
                s.start()
                started.append(s)
        for s in started:
            s.wait_listening()

    # ---- the client -----------------------------------------------------------------------------

    def curl(self, count: int, port: int = 80) -> list[str]:
        """`count` new connections from the client through the VIP: per request the real that
        answered ("rs2"), "sorry" for the sorry server, "wrong" for a body without the expected
        text, or "failed HTTP-CODE"."""
        marker = "~~lab~~"  # not "@...": curl reads a -w starting with @ from a file
        done = run(
            "curl", "-sS", "--max-time", "10", "-H", "Connection: close",
            "-w", f"{marker}%{{http_code}}\\n",
            f"http://{VIP}:{port}/test.html?[1-{count}]",
            netns=CLIENT_NS, check=False, timeout=120,
        )  # fmt: skip
        answers: list[str] = []
        body = ""
        for line in done.stdout.splitlines(keepends=True):
            if marker not in line:
                body += line
                continue
            head, code = line.split(marker, 1)
            body += head
            answers.append(classify(body, code.strip()))
            body = ""
        if len(answers) != count:
            raise LabError(
                f"curl: {count} requests, {len(answers)} answers (exit {done.returncode}):"
                f" {done.stderr.strip()} {done.stdout[-300:]!r}"
            )
        return answers

    def hold_connections(self, count: int) -> None:
        """Open `count` TCP connections through the VIP and keep them idle: wlc counts each as an
        active connection, so they land on different reals. `finish_held` then sends a request on
        each: an answer proves the connection (and its IPVS entry) survived what happened
        meanwhile."""
        code = (
            "import json,socket,sys\n"
            f"conns=[socket.create_connection(({VIP!r},80),timeout=30) for _ in range({count})]\n"
            "print('open',flush=True)\n"
            "sys.stdin.readline()\n"
            "for c in conns:\n"
            "    c.sendall(b'GET /test.html HTTP/1.0\\r\\n\\r\\n')\n"
            "    data=b''\n"
            "    while (chunk:=c.recv(4096)):\n"
            "        data+=chunk\n"
            "    print(json.dumps(data.decode(errors='replace')),flush=True)\n"
        )
        self.held = subprocess.Popen(
            ["ip", "netns", "exec", CLIENT_NS, sys.executable, "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.held.stdout is not None
        if self.held.stdout.readline().strip() != "open":
            raise LabError(f"held connections: {self.held.communicate(timeout=30)[1]}")

    def finish_held(self) -> list[str]:
        held, self.held = self.held, None
        assert held is not None
        out, err = held.communicate("go\n", timeout=60)
        if held.returncode != 0:
            raise LabError(f"held connections failed: {err.strip()}")
        bodies: list[str] = [json.loads(line) for line in out.splitlines()]
        return [classify(b.split("\r\n\r\n", 1)[-1], b.split()[1]) for b in bodies]

    def release_held(self) -> None:
        if self.held is not None:
            self.held.kill()
            self.held.communicate(timeout=30)
            self.held = None


def classify(body: str, code: str) -> str:
    if code != "200":
        return f"failed {code}"
    if SORRY_BODY in body:
        return "sorry"
    m = re.search(r"\brs(\d)\b", body)
    if GOOD_BODY not in body or m is None:
        return "wrong"
    return f"rs{m.group(1)}"
