"""CPU per check through the VIP against the real's own address (issue 23 point 6), in the VM.

    tests/vm/run --exec ".venv/bin/python bench/checkpath_cost.py [--reals 1000] [--concurrent]"

One DR segment (bridge cb-br): the director 10.32.0.1/16 with the VIP; one network namespace
holding every real's address (10.32.1.1 ...) and the VIP on `lo` (arp_ignore=1, arp_announce=2),
a Python server there accepting and closing on *:80. lvsmon (netlink backend) checks every real
with `checktype=connect` (the cheapest check, so the extra cost of the VIP path weighs most)
every --interval s. --pairs pairs of windows of --window s each, in one daemon: checkpath=real,
vip, real, vip ... (a reload between them), each after --settle s on its path (TIME_WAIT
sockets and IPVS connection entries steady); per window the daemon's CPU (user and system time
of /proc/PID/stat) over the checks it finished (its status file's checks_done). Prints one JSON
line (`summary`: a window that fell behind the checks due is left out); nothing outside the VM.

--concurrent: both paths at once, so that the VM's speed, which drifts by up to 1.5 x between
windows of one path under TCG, falls on both alike. Two daemons (configs cb0.cf and cb1.cf: their
own pid file, control socket, status file and log) each check --reals reals of their own address
block (block b: 10.32.{1 + 20 b}.1 ..., its own VIP 10.32.255.{100 + b} on the director and on
the namespace's `lo`, port 80 + b, one accept loop per port) with the same check and interval,
and their own checkmarkbase (0x4C560000 + b * 65536, PROBE_MARKS apart), so that neither
daemon's probe services are in the other's block. --windows windows of --window s; at the start
and end of each, both daemons' CPU and checks_done are read together; per window the ratio
vip / real of the us a check. Fairness: daemon 0 is started first and gets block 0; it checks
through the VIP in the first half of the windows with --first vip, else through the real's
address; halfway both reload with the paths swapped (then --settle s again), so each path runs
the same number of windows in either daemon, start order, address block and port. Every window
also verifies that neither daemon touched the other's services: each block's probe services
number --reals on the VIP path's block and 0 on the other's, and both virtuals keep --reals
destinations (`tables_intact`). Caveat: the kernel charges softirq work (the packets' receive)
to whatever process runs when it happens, so some of one daemon's packets may be billed to the
other; that pulls the ratio towards 1, and the single-daemon mode has no such share. And each
daemon's resync (every 5 s) reads every service in the kernel, the other daemon's too, and the
destinations of every service it does not take as known: the real-path daemon read the other's
1,000 probe services' destinations at every resync, the VIP-path daemon its own at every 12th
only (the 2026-12-07 session 7 run, bench/README.md). --resync 3600 keeps resyncs out of the
windows for both (and with them the VIP path's own share of the resync).

--isolated (with --concurrent): each daemon in its own director network namespace, so that each
has its own IPVS table and pays its own resyncs only, with the default resync too (all-in).
Daemon k runs under `ip netns exec cb-d<k>`; that namespace holds the director's address
10.32.0.{1 + k}/16 and VIP 10.32.255.{100 + k} on its `eth0`, a veth into the same bridge and
reals namespace as the other's (the reals are the same kind; each daemon's packets have their own
director address and VIP), and the sysctls the VIP path needs (accept_local on eth0, rp_filter
0). The neighbour thresholds are raised in the root namespace: the neighbour table is one for
all namespaces. The root namespace has no address on the bridge and no IPVS service. The
daemons' CPU is still read from /proc/PID/stat (one pid namespace), their status files from the
shared work directory. Every window verifies each namespace's table: its own virtual with --reals
destinations, its own probe services (--reals on the VIP path, else none) and no other service,
and the root namespace's table empty (`tables_intact`). The result also names the IPVS and TCP
sysctls whose values differ between a director namespace and the root (`sysctl_diff`): a new
namespace starts from the kernel's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "cb-rs"
BRIDGE = "cb-br"
VIP = "10.32.255.100"
MARKBASE = 0x4C560000  # lvsmon's default checkmarkbase
MARK_BLOCK = 65536  # checkpathconf.PROBE_MARKS: the marks one checkmarkbase reserves
DIRECTOR_NS = "cb-d{}"  # --isolated: daemon k's director namespace (and its veth's bridge end)
# the servers take their port as argv[1]
SERVER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(4096)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n"
)
# --check http: one request read, a fixed answer, closed (a negotiate check's whole exchange)
HTTP_SERVER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(4096)\n"
    "answer = b'HTTP/1.0 200 OK\\r\\nContent-Length: 12\\r\\n\\r\\nstill alive\\n'\n"
    "while True:\n"
    "    c, _ = s.accept(); c.settimeout(2)\n"
    "    try:\n"
    "        c.recv(4096); c.sendall(answer)\n"
    "    except OSError:\n"
    "        pass\n"
    "    c.close()\n"
)


def sh(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise SystemExit(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def rip(i: int, block: int = 0) -> str:
    return f"10.32.{1 + 20 * block + i // 250}.{1 + i % 250}"


def vip(block: int) -> str:
    return f"10.32.255.{100 + block}"


def port(block: int) -> int:
    return 80 + block


def config(
    logfile: Path,
    n: int,
    interval: int,
    path: str,
    check: str = "connect",
    block: int = 0,
    resync: int | None = None,
) -> str:
    reals = "".join(f"\treal={rip(i, block)}:{port(block)} gate\n" for i in range(n))
    how = (
        "\tchecktype=connect\n"
        if check == "connect"
        else '\tchecktype=negotiate\n\tservice=http\n\trequest="/"\n\treceive="still alive"\n'
    )
    return (
        f"checkinterval={interval}\nquiescent=yes\n"
        + (f"resyncinterval={resync}\n" if resync else "")
        + f"checkmarkbase={MARKBASE + block * MARK_BLOCK}\n"
        f'logfile="{logfile}"\n'
        f"virtual={vip(block)}:{port(block)}\n{reals}{how}\tchecktimeout=2\n"
        f"\tnegotiatetimeout=2\n\tcheckpath={path}\n"
    )


def cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) seconds of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def checks_done(status: Path) -> int:
    try:
        return int(json.loads(status.read_text())["stats"]["checks_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


@dataclass(frozen=True)
class Table:
    """What `ipvsadm -Sn` shows: destinations (all, and up: weight 1) per address service, and
    probe services per mark block (block b: MARKBASE + b * MARK_BLOCK ...)."""

    dests: dict[str, int]
    up: dict[str, int]
    probes: dict[int, int]
    services: int = 0  # every service of the table, of any kind

    @classmethod
    def read(cls, netns: str | None = None) -> Table:
        """The table of the root namespace, or of `netns`'s (IPVS tables are per namespace)."""
        text = sh(*netns_exec(netns), "ipvsadm", "-Sn")
        dests: dict[str, int] = {}
        up: dict[str, int] = {}
        for svc, weight in re.findall(r"^-a -t (\S+) -r \S+ -g -w (\d+)$", text, re.M):
            dests[svc] = dests.get(svc, 0) + 1
            up[svc] = up.get(svc, 0) + (weight == "1")
        probes: dict[int, int] = {}
        for mark in re.findall(r"^-A -f (\d+) ", text, re.M):
            b = (int(mark) - MARKBASE) // MARK_BLOCK
            probes[b] = probes.get(b, 0) + 1
        return cls(dests, up, probes, len(re.findall(r"^-A ", text, re.M)))


def netns_exec(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def up_count() -> int:
    return sum(Table.read().up.values())


def probe_count() -> int:
    return sum(Table.read().probes.values())


def syscalls_per_check(pid: int, status: Path, seconds: float) -> dict[str, float]:
    """System calls the daemon makes per check (strace -c over `seconds`): where a path's
    extra cost goes (a wake-up more, a read more)."""
    out = Path(tempfile.mkdtemp(prefix="cb-strace-")) / "summary"
    n0 = checks_done(status)
    subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-o", str(out), "-p",
         str(pid)],
        capture_output=True, check=False,
    )  # fmt: skip
    checks = max(checks_done(status) - n0, 1)
    counts: dict[str, float] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        # "% time seconds usecs/call calls [errors] syscall"
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            counts[f[-1]] = round(int(f[3]) / checks, 2)
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:12])


def top_symbols(pid: int, seconds: float) -> list[str]:
    """The daemon's hottest symbols, kernel and user (perf, cpu-clock: TCG has no PMU), as
    "share% symbol" lines: where a path's extra system time goes."""
    data = Path(tempfile.mkdtemp(prefix="cb-perf-")) / "perf.data"
    subprocess.run(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", "499", "-o", str(data), "-p", str(pid),
         "--", "sleep", str(seconds)],
        capture_output=True, check=False,
    )  # fmt: skip
    report = subprocess.run(
        ["perf", "report", "-q", "--stdio", "-i", str(data), "--sort", "sym"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [" ".join(line.split()) for line in report.stdout.splitlines() if "%" in line]
    return lines[:25]


def us(w: dict[str, object]) -> float:
    return float(str(w["us_per_check"]))


def kept_up(w: dict[str, object], due_per_s: float) -> bool:
    """A window whose checks a second fell 5 % short of those due ran on a starved VM: its CPU
    time is not the checks'."""
    return float(str(w["checks_per_s"])) >= 0.95 * due_per_s


def summary(windows: list[dict[str, object]], due_per_s: float) -> dict[str, object]:
    """The ratio over the windows that kept up, and each pair's."""

    def mean(path: str) -> float | None:
        got = [us(w) for w in windows if w["checkpath"] == path and kept_up(w, due_per_s)]
        return sum(got) / len(got) if got else None

    real, vip_ = mean("real"), mean("vip")
    pairs = [
        round(us(v) / us(r), 3)
        for r, v in zip(windows[::2], windows[1::2], strict=False)
        if kept_up(r, due_per_s) and kept_up(v, due_per_s)
    ]
    return {
        "vip_over_real": None if real is None or vip_ is None else round(vip_ / real, 3),
        "pair_ratios": pairs,
        "windows_behind": sum(1 for w in windows if not kept_up(w, due_per_s)),
    }


def wait(
    pred: Callable[[], bool],
    within: float,
    what: str,
    show: Callable[[], object] = Table.read,
) -> None:
    start = time.monotonic()
    told = start
    while not pred():
        now = time.monotonic()
        if now - told > 60:  # a slow wait says what it waits on: the table(s) as they are
            told = now
            print(f"waiting {now - start:.0f} s for {what}: {show()}", file=sys.stderr)
        if now - start > within:
            raise SystemExit(f"{what}: not within {within} s ({show()})")
        time.sleep(0.5)


@dataclass(frozen=True)
class Sample:
    """A daemon's CPU seconds and finished checks at one instant."""

    user_s: float
    system_s: float
    checks: int
    at: float


def figures(path: str, a: Sample, b: Sample) -> dict[str, object]:
    """One daemon's window between two samples: CPU over the checks it finished."""
    n, t = b.checks - a.checks, b.at - a.at
    user, system = b.user_s - a.user_s, b.system_s - a.system_s
    checks = max(n, 1)
    return {
        "checkpath": path,
        "checks": n,
        "checks_per_s": round(n / t, 1),
        "cpu_share": round((user + system) / t, 4),
        "us_per_check": round((user + system) / checks * 1e6, 1),
        "user_us": round(user / checks * 1e6, 1),
        "system_us": round(system / checks * 1e6, 1),
        "cpu_s": round(user + system, 3),
    }


@dataclass
class Daemon:
    """One lvsmon: its config (named cb<block>.cf, so every run-time file is its own), block
    and current path."""

    work: Path
    block: int
    reals: int
    interval: int
    check: str
    resync: int | None = None
    netns: str | None = None  # --isolated: its own director namespace (and IPVS table)
    path: str = "real"
    pid: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"cb{self.block}"

    @property
    def cf(self) -> Path:
        return self.work / f"{self.name}.cf"

    @property
    def status(self) -> Path:
        return self.work / f"{self.name}.status.json"

    def _cmd(self, verb: str) -> list[str]:
        pidfile = self.work / f"{self.name}.pid"
        return [*netns_exec(self.netns), sys.executable, "-m", "lvsmon", "--backend", "netlink",
                "--pid-file", str(pidfile), str(self.cf), verb]  # fmt: skip

    def _write(self) -> None:
        log = self.work / f"{self.name}.log"
        self.cf.write_text(
            config(log, self.reals, self.interval, self.path, self.check, self.block, self.resync)
        )

    def start(self) -> None:
        self._write()
        sh(*self._cmd("start"))
        self.pid = int((self.work / f"{self.name}.pid").read_text())

    def reload(self, path: str) -> None:
        self.path = path
        self._write()
        os.kill(self.pid, signal.SIGHUP)

    def stop(self) -> None:
        if self.pid:
            subprocess.run(self._cmd("stop"), capture_output=True, check=False)

    def sample(self) -> Sample:
        user, system = cpu_s(self.pid)
        return Sample(user, system, checks_done(self.status), time.monotonic())

    def table(self) -> Table:
        """The table this daemon programs: its namespace's, or the root's shared one."""
        return Table.read(self.netns)

    def probes_settled(self, table: Table) -> bool:
        want = self.reals if self.path == "vip" else 0
        return table.probes.get(self.block, 0) == want

    def all_up(self, table: Table) -> bool:
        return table.up.get(f"{vip(self.block)}:{port(self.block)}", 0) == self.reals

    def intact(self, table: Table) -> bool:
        svc = f"{vip(self.block)}:{port(self.block)}"
        return table.dests.get(svc, 0) == self.reals and self.probes_settled(table)

    def alone(self, table: Table) -> bool:
        """Its own namespace's table holds its services and nothing else: its virtual and its
        probe services (their destinations, `-a -f`, are not in `dests`)."""
        svc = f"{vip(self.block)}:{port(self.block)}"
        return (
            self.intact(table)
            and set(table.dests) == {svc}
            and set(table.probes) <= {self.block}
            and table.services == 1 + table.probes.get(self.block, 0)
        )


def settle(daemons: list[Daemon], seconds: float) -> None:
    """Until every daemon's probe services and reals are as its path wants, then `seconds`
    more: TIME_WAIT sockets and IPVS connection entries steady."""

    def show() -> object:
        return {d.name: d.table() for d in daemons}

    # generous: under TCG on a host loaded by other work (load 9 on 2 cores) a reload's 1,000
    # probe services took over 120 s
    wait(lambda: all(d.probes_settled(d.table()) for d in daemons), 600, "probe services", show)
    wait(lambda: all(d.all_up(d.table()) for d in daemons), 900, "every real up", show)
    time.sleep(seconds)


def diagnose(args: argparse.Namespace, daemons: list[Daemon]) -> dict[str, object]:
    """--syscalls / --perf after a window, on every daemon at once (the same VM state)."""
    got: dict[str, object] = {}
    with ThreadPoolExecutor(max_workers=max(2 * len(daemons), 1)) as pool:
        if args.syscalls:
            calls = [pool.submit(syscalls_per_check, d.pid, d.status, args.syscalls)
                     for d in daemons]  # fmt: skip
        if args.perf:
            perfs = [pool.submit(top_symbols, d.pid, args.perf) for d in daemons]
    for i, d in enumerate(daemons):
        tail = f"_{d.path}" if len(daemons) > 1 else ""
        if args.syscalls:
            got[f"syscalls_per_check{tail}"] = calls[i].result()
        if args.perf:
            got[f"top_symbols{tail}"] = perfs[i].result()
    return got


def run_single(args: argparse.Namespace, work: Path) -> dict[str, object]:
    d = Daemon(work, 0, args.reals, args.interval, args.check, args.resync)
    windows: list[dict[str, object]] = []
    try:
        d.start()
        for path in ("real", "vip") * args.pairs:
            if path != d.path:
                d.reload(path)
            settle([d], args.settle)
            a = d.sample()
            time.sleep(args.window)
            windows.append(figures(path, a, d.sample()))
            windows[-1]["up"] = up_count()
            windows[-1].update(diagnose(args, [d]) if args.syscalls or args.perf else {})
            print(json.dumps(windows[-1]), file=sys.stderr, flush=True)
    finally:
        d.stop()
    return {"windows": windows, **summary(windows, args.reals / args.interval)}


def run_concurrent(args: argparse.Namespace, work: Path) -> dict[str, object]:
    due = args.reals / args.interval
    other = {"real": "vip", "vip": "real"}
    daemons = [
        Daemon(work, b, args.reals, args.interval, args.check, args.resync,
               DIRECTOR_NS.format(b) if args.isolated else None)
        for b in (0, 1)
    ]  # fmt: skip
    daemons[0].path = args.first
    daemons[1].path = other[args.first]
    windows: list[dict[str, object]] = []
    try:
        for d in daemons:  # daemon 0 first
            d.start()
        for i in range(args.windows):
            if i == args.windows // 2 and i:
                # the vip daemon first gives its probe services back, then the other takes its own
                for d in sorted(daemons, key=lambda d: d.path != "vip"):
                    d.reload(other[d.path])
                settle(daemons, args.settle)
            elif i == 0:
                settle(daemons, args.settle)
            a = [d.sample() for d in daemons]
            time.sleep(args.window)
            b = [d.sample() for d in daemons]
            table = Table.read()  # the root's: with --isolated it must stay empty
            if args.isolated:
                own = [d.table() for d in daemons]
                intact = table.services == 0 and all(
                    d.alone(t) for d, t in zip(daemons, own, strict=True)
                )
            else:
                own, intact = [], all(d.intact(table) for d in daemons)
            per = {d.path: {**figures(d.path, x, y), "daemon": d.name}
                   for d, x, y in zip(daemons, a, b, strict=True)}  # fmt: skip
            real, vip_ = per["real"], per["vip"]
            w: dict[str, object] = {
                "window": i + 1,
                "vip_daemon": per["vip"]["daemon"],
                "real": real,
                "vip": vip_,
                "vip_over_real": round(us(vip_) / max(us(real), 1e-9), 3),
                "kept_up": kept_up(real, due) and kept_up(vip_, due),
                "tables_intact": intact,
            }
            if args.isolated:
                w["root_services"] = table.services
                w["tables"] = {
                    d.netns: {"services": t.services, "probes_per_block": t.probes,
                              "dests": t.dests}
                    for d, t in zip(daemons, own, strict=True)
                }  # fmt: skip
            else:
                w["probes_per_block"] = table.probes
                w["dests"] = table.dests
            if args.syscalls or args.perf:
                w.update(diagnose(args, daemons))
            windows.append(w)
            print(json.dumps(w), file=sys.stderr, flush=True)
    finally:
        for d in reversed(daemons):
            d.stop()
    return {"windows": windows, **concurrent_summary(windows)}


def concurrent_summary(windows: list[dict[str, object]]) -> dict[str, object]:
    """Over the windows in which both daemons kept up: (vip CPU / vip checks) over (real CPU /
    real checks), and the median of the windows' ratios."""
    good = [w for w in windows if w["kept_up"]]

    def per_check(path: str) -> float | None:
        sides = [w[path] for w in good]
        cpu = sum(float(str(s["cpu_s"])) for s in sides if isinstance(s, dict))
        checks = sum(int(str(s["checks"])) for s in sides if isinstance(s, dict))
        return cpu / checks * 1e6 if checks else None

    real, vip_ = per_check("real"), per_check("vip")
    ratios = [float(str(w["vip_over_real"])) for w in good]
    return {
        "real_us_per_check": None if real is None else round(real, 1),
        "vip_us_per_check": None if vip_ is None else round(vip_, 1),
        "vip_over_real_run": None if not real or vip_ is None else round(vip_ / real, 3),
        "vip_over_real_median": round(statistics.median(ratios), 3) if ratios else None,
        "window_ratios": ratios,
        "windows_behind": len(windows) - len(good),
        "tables_intact": all(bool(w["tables_intact"]) for w in windows),
    }


# --isolated: what a director namespace starts with from the kernel's defaults and the root may
# have otherwise (tests/vm/run sets none of them; the result says if one differs)
COMPARED_SYSCTLS = r"^net\.ipv4\.(vs\.|tcp_|ip_local_port_range)|^net\.core\.somaxconn"


def sysctls(netns: str | None) -> dict[str, str]:
    out = sh(*netns_exec(netns), "sysctl", "-a", check=False)
    got = {}
    for line in out.splitlines():
        name, _, value = line.partition(" = ")
        if re.match(COMPARED_SYSCTLS, name):
            got[name] = " ".join(value.split())
    return got


def sysctl_diff(namespaces: list[str]) -> dict[str, dict[str, str]]:
    """Per compared sysctl whose value differs between the root and a director namespace, the
    values (root first)."""
    root = sysctls(None)
    diff: dict[str, dict[str, str]] = {}
    for ns in namespaces:
        for name, value in sysctls(ns).items():
            if root.get(name) != value:
                diff.setdefault(name, {"root": root.get(name, "(none)")})[ns] = value
    return diff


def director_namespaces(blocks: int) -> list[str]:
    """--isolated: a namespace per daemon, its `eth0` a veth into the bridge with the director's
    address 10.32.0.{1 + k}/16 and its VIP, and the sysctls the VIP path needs there (lvsmon
    reads them in its own namespace and refuses to start without them)."""
    names = [DIRECTOR_NS.format(b) for b in range(blocks)]
    for k, ns in enumerate(names):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", ns, "master", BRIDGE, "up")
        inner = [
            "link set lo up", f"addr add 10.32.0.{1 + k}/16 dev eth0",
            f"addr add {vip(k)}/32 dev eth0", "link set eth0 up",
        ]  # fmt: skip
        sh("ip", "-n", ns, "-batch", "-", stdin="\n".join(inner) + "\n")
        for name, value in (
            ("net.ipv4.conf.eth0.accept_local", 1),
            ("net.ipv4.conf.all.rp_filter", 0),
            ("net.ipv4.conf.eth0.rp_filter", 0),
        ):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{name}={value}")
    return names


@contextmanager
def lab(reals: int, blocks: int, check: str, isolated: bool = False) -> Iterator[list[str]]:
    """The DR segment: `blocks` address blocks of `reals` reals in one namespace, each block's VIP
    on the director and the namespace's `lo`, one server per block's port. The director is the
    root namespace, or with `isolated` one namespace per block (yielded; the root then has no
    address on the bridge)."""
    spaces = [DIRECTOR_NS.format(b) for b in range(blocks)] if isolated else []
    for ns in spaces:
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("ipvsadm", "-C")
    sh("ip", "netns", "add", NS)
    batch = [f"link add {BRIDGE} type bridge"]
    if not isolated:
        batch += [f"addr add 10.32.0.1/16 dev {BRIDGE}"]
        batch += [f"addr add {vip(b)}/32 dev {BRIDGE}" for b in range(blocks)]
    batch += [
        f"link set {BRIDGE} up",
        f"link add {NS} type veth peer name eth0 netns {NS}", f"link set {NS} master {BRIDGE} up",
    ]  # fmt: skip
    sh("ip", "-batch", "-", stdin="\n".join(batch) + "\n")
    inner = ["link set lo up", "link set eth0 up"]
    inner += [f"addr add {vip(b)}/32 dev lo" for b in range(blocks)]
    inner += [f"addr add {rip(i, b)}/16 dev eth0" for b in range(blocks) for i in range(reals)]
    sh("ip", "-n", NS, "-batch", "-", stdin="\n".join(inner) + "\n")
    for name, value in (("arp_ignore", 1), ("arp_announce", 2)):
        sh("ip", "netns", "exec", NS, "sysctl", "-qw", f"net.ipv4.conf.all.{name}={value}")
    for name, value in (
        # the director holds a neighbour entry for every real it reaches (the real path's
        # connects, the DR transmit): past gc_thresh3 (1,024) the table overflows and
        # checks fail, so 2 x 1,000 reals never came up. The table (and so its thresholds) is
        # one for every namespace: set here, it holds for director namespaces too
        ("net.ipv4.neigh.default.gc_thresh1", 4 * reals * blocks),
        ("net.ipv4.neigh.default.gc_thresh2", 8 * reals * blocks),
        ("net.ipv4.neigh.default.gc_thresh3", 16 * reals * blocks),
    ):
        sh("sysctl", "-qw", f"{name}={value}")
    if isolated:
        director_namespaces(blocks)
    else:
        for name, value in (
            (f"net.ipv4.conf.{BRIDGE}.accept_local", 1),
            ("net.ipv4.conf.all.rp_filter", 0),
            (f"net.ipv4.conf.{BRIDGE}.rp_filter", 0),
        ):
            sh("sysctl", "-qw", f"{name}={value}")
    code = SERVER if check == "connect" else HTTP_SERVER
    # one accept loop per block: one loop for both blocks' 400 checks a second would be the
    # bottleneck, and the same loop for both paths is what the comparison needs anyway
    servers = [
        subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", code, str(port(b))])
        for b in range(blocks)
    ]
    try:
        yield spaces
    finally:
        for s in servers:
            s.kill()
            s.wait()
        for ns in spaces:  # its IPVS table goes with it
            sh("ip", "netns", "del", ns, check=False)
        sh("ip", "netns", "del", NS, check=False)
        sh("ip", "link", "del", BRIDGE, check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--reals", type=int, default=1000, help="reals per daemon")
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--check", choices=("connect", "http"), default="connect")
    # at a host load of 5-9 one window's figure moved by more than the VIP path's whole extra:
    # more pairs average the drift out
    ap.add_argument("--pairs", type=int, default=2, help="real/vip window pairs (one daemon)")
    ap.add_argument(
        "--concurrent", action="store_true", help="two daemons at once, one on either path"
    )
    # each daemon's resync reads every service in the kernel and the destinations of each it
    # does not take as known: in --concurrent mode the real-path daemon read the other's 1,000
    # probe services' destinations at every resync; a long resyncinterval keeps the resyncs
    # (the VIP path's share of them too) out of the windows
    ap.add_argument("--resync", type=int, default=None, help="resyncinterval, s (default 5)")
    ap.add_argument("--windows", type=int, default=8, help="--concurrent: windows")
    ap.add_argument(
        "--isolated", action="store_true",
        help="--concurrent: each daemon in its own director namespace and IPVS table",
    )  # fmt: skip
    ap.add_argument(
        "--first", choices=("real", "vip"), default="real",
        help="--concurrent: daemon 0's path in the first half of the windows",
    )  # fmt: skip
    ap.add_argument("--perf", type=float, default=0.0, help="after each window, perf this long")
    ap.add_argument(
        "--syscalls", type=float, default=0.0, help="after each window, strace -c this long"
    )
    # the kernel's state of the check traffic must be steady before a window: TIME_WAIT sockets
    # (60 s) and IPVS connection entries; a window right after start met fewer and looked cheaper
    ap.add_argument("--settle", type=float, default=75.0)
    args = ap.parse_args()
    if not os.environ.get("LVSMON_IN_VM"):
        raise SystemExit("builds namespaces and programs IPVS: run it in the VM (tests/vm/run)")
    if args.isolated and not args.concurrent:
        raise SystemExit("--isolated: only with --concurrent")
    if args.reals > 20 * 250:
        raise SystemExit("--reals: at most 5000 (an address block is 20 /24s)")
    work = Path(tempfile.mkdtemp(prefix="cb-"))
    result: dict[str, object] = {
        "reals": args.reals, "interval_s": args.interval, "check": args.check,
        "window_s": args.window, "settle_s": args.settle, "resync_s": args.resync,
    }  # fmt: skip
    with lab(args.reals, 2 if args.concurrent else 1, args.check, args.isolated) as spaces:
        if args.concurrent:
            result["first"] = args.first
            result["isolated"] = args.isolated
            if spaces:
                result["sysctl_diff"] = sysctl_diff(spaces)
            result.update(run_concurrent(args, work))
        else:
            result.update(run_single(args, work))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
