"""lvsmon under hostile real servers and hostile control clients (issue 21): memory, time to
down, and the healthy reals' lateness, per attack; and the stop with stuck clients.

Host only, loopback only:   .venv/bin/python bench/hostile.py [--reals 1000] [--window 20]

* Healthy pool: one Debian nginx on the wildcard address (bench/scale.py's RealServers; or
  `--servers python`, bench/many_http.py, the default when nginx is not installed), the
  reals 127.77.x.y:PORT in virtuals of 200, http negotiate checks, checkinterval=1,
  checktimeout=negotiatetimeout=2, failurecount=1. lvsmon runs `--backend memory` as a daemon
  (`start`, a pid file in the work folder, `--listen 127.0.0.1:PORT`).
* Warm-up reals: one virtual per library-driven service (mysql, pgsql, oracle, ldap, ftp, smtp,
  imap) whose one real accepts and closes at once, in every phase: each library is imported
  and its connect path run before the baseline, so that an attack's RSS growth is the peer's
  doing, not a first import.
* Attacks, one after the other in one daemon: per attack a fake hostile server process
  (bench/hostile_servers.py) with `--hostile` (5) reals on 127.0.0.1 in a virtual of their own,
  added by writing the config and a SIGHUP, kept `--window` s, then removed the same way.
  Measured per attack: the daemon's peak RSS (VmHWM, reset through /proc/PID/clear_refs before
  each attack) and its growth over the RSS just before; time from the HUP (and from the log's
  "Configuration ... loaded" line) until each hostile real is down (its log line, and the
  status file, which is rewritten every second); the status file's start lateness p99 at the
  window's end (the ring of the last 20,000 check starts: with 1,000 reals at interval 1, the
  last 20 s, the window) and the worst p99 read during the window; healthy reals declared down
  (log lines, and any status read not showing them up); the daemon's CPU; the healthy reals'
  check period from nginx's log. `refused` (nothing listening) is the reference: the time a
  reload and a first check take when the peer costs nothing. `all` runs every hostile kind at
  once (one process each), last.
* Control server: `--events-clients` (8) `/events` clients with a 4 KiB receive buffer that
  never read, and `--idle-clients` (200) TCP connections to the listener that send nothing,
  held (reconnected whenever the daemon closes them) for a window, then while `lvsmon stop`
  runs: its wall time, the time until the process is gone, and the same stop of a fresh daemon
  with no clients as the reference.

The figures are noisy on a shared machine: the load average is printed. The last line is one
JSON object. `--rev REV` runs lvsmon from a git worktree at REV (e.g. HEAD, away from edits in
progress in the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from procs import (
    Cleanup,
    alive,
    cpu_seconds,
    fd_count,
    free_port,
    kill_pid,
    loadavg,
    log,
    lvsmon_command,
    memory_mib,
    read_pid,
    start_run,
)
from scale import LogTail, PythonServers, RealServers, periods, real_address

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "hostile_servers.py")
PER_VIRTUAL = 200
LATENESS_RING = 20000  # lvsmon/engine/status.py Stats.lateness
INTERVAL, TIMEOUT = 1, 2

SQL = ['login="lvsmon"', 'passwd="secret"', 'database="lvsmon"', 'request="SELECT 1"']
HTTP = ['request="/"', 'receive="still alive"']
LOGIN = ['login="lvsmon"', 'passwd="secret"']


@dataclass(frozen=True)
class Kind:
    """One hostile server kind and the check settings of the virtual it serves."""

    service: str
    settings: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    "refused": Kind("http", tuple(HTTP)),  # the reference: nothing listens
    "http-chunks": Kind("http", tuple(HTTP)),
    "http-1xx": Kind("http", tuple(HTTP)),
    "http-trickle": Kind("http", tuple(HTTP)),
    "imap-login": Kind("imap", tuple(LOGIN)),
    "ftp-lines": Kind("ftp", tuple(LOGIN)),
    "smtp-continuations": Kind("smtp"),
    "smtp-ehlo-flood": Kind("smtp"),
    "mysql-packets": Kind("mysql", tuple(SQL)),
    "pgsql-error": Kind("pgsql", tuple(SQL)),
    "ldap-ber": Kind("ldap", ('request="/dc=example,dc=test"',)),
    "oracle-markers": Kind(
        "oracle",
        ('login="lvsmon"', 'passwd="secret"', 'database="LVSMON"', 'request="SELECT 1 FROM dual"'),
    ),
    "tcp-garbage": Kind("simpletcp", ('request="hello"', 'receive="ok"')),
}
WARM = {  # service -> the settings its warm-up real is checked with
    "mysql": KINDS["mysql-packets"],
    "pgsql": KINDS["pgsql-error"],
    "oracle": KINDS["oracle-markers"],
    "ldap": KINDS["ldap-ber"],
    "ftp": KINDS["ftp-lines"],
    "smtp": KINDS["smtp-continuations"],
    "imap": KINDS["imap-login"],
}


def virtual_lines(address: str, reals: list[int], kind: Kind) -> list[str]:
    return [
        f"virtual={address}:80",
        *(f"\treal=127.0.0.1:{p} masq" for p in reals),
        f"\tservice={kind.service}",
        "\tchecktype=negotiate",
        *(f"\t{s}" for s in kind.settings),
        "",
    ]


# ---------------------------------------------------------------- hostile server processes


class Hostile:
    """One bench/hostile_servers.py process: `n` ports of one kind (or, for `refused`, `n`
    free ports with nothing listening)."""

    def __init__(self, kind: str, n: int, cleanup: Cleanup) -> None:
        self.kind = kind
        self.served = -1
        self.proc: subprocess.Popen[str] | None = None
        if kind == "refused":
            self.ports = [free_port() for _ in range(n)]
            return
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", SERVERS, kind, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        cleanup.add(f"hostile {kind}", self.stop)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"hostile_servers.py {kind} did not start")
        self.ports = [int(p) for p in line.split()]

    def cpu(self) -> float:
        if self.proc is None:
            return 0.0
        with contextlib.suppress(OSError):
            return cpu_seconds(self.proc.pid)[0]
        return 0.0

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for line in proc.stdout.read().splitlines():
            if line.startswith("served "):
                self.served = int(line.split()[1])
        proc.stdout.close()


# ---------------------------------------------------------------- the daemon


class Daemon:
    def __init__(self, workdir: str, listen: str, src: str | None, cleanup: Cleanup) -> None:
        self.cfg = os.path.join(workdir, "hostile.cf")
        self.logfile = os.path.join(workdir, "lvsmon.log")
        self.pidfile = os.path.join(workdir, "l.pid")
        self.status_path = os.path.join(workdir, "l.status.json")
        self.listen = listen
        self.env = {**os.environ, "LVSMON_RESOLVER": "files"}
        if src is not None:
            self.env["PYTHONPATH"] = src
        self.cmd = [
            *lvsmon_command(src),
            "--backend",
            "memory",
            "--pid-file",
            self.pidfile,
            "--listen",
            listen,
            self.cfg,
        ]
        self.pid: int | None = None
        cleanup.add("daemon", self._leftover)

    def write(self, lines: list[str]) -> None:
        tmp = self.cfg + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.cfg)

    def start(self) -> int:
        proc = subprocess.run([*self.cmd, "start"], env=self.env, timeout=120, check=False)
        self.pid = read_pid(self.pidfile)
        if proc.returncode != 0 or self.pid is None:
            raise RuntimeError(f"lvsmon start failed ({proc.returncode}); see {self.logfile}")
        return self.pid

    def stop(self) -> tuple[float, float]:
        """(seconds until `lvsmon stop` returned, until the process was gone)."""
        pid = self.pid
        t0 = time.monotonic()
        subprocess.run(
            [*self.cmd, "stop"], env=self.env, timeout=150, check=False, stdout=subprocess.DEVNULL
        )
        returned = time.monotonic() - t0
        while pid is not None and alive(pid) and time.monotonic() - t0 < 60:
            time.sleep(0.01)
        return returned, time.monotonic() - t0

    def hup(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, 1)

    def _leftover(self) -> None:
        if self.pid is not None and alive(self.pid):
            subprocess.run([*self.cmd, "stop"], env=self.env, timeout=150, check=False)
            kill_pid(self.pid, "lvsmon")

    def reset_peak(self) -> None:
        """VmHWM back to the current RSS (Linux >= 4.0; the process's owner may do it)."""
        with open(f"/proc/{self.pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")

    def status(self) -> dict[str, Any] | None:
        try:
            with open(self.status_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def real_states(status: dict[str, Any]) -> dict[str, str]:
    """address:port -> state ("up", "down", or "unchecked" before its first check)."""
    out: dict[str, str] = {}
    for v in status.get("virtuals") or ():
        for r in v.get("reals") or ():
            state = str(r.get("state")) if r.get("checked") else "unchecked"
            out[f"{r['address']}:{r['port']}"] = state
    return out


def wait_pool_up(daemon: Daemon, healthy: set[str], timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = daemon.status()
        if st is not None and st.get("phase") == "running":
            states = real_states(st)
            if all(states.get(r) == "up" for r in healthy):
                return time.monotonic() - t0
        time.sleep(0.2)
    return None


class RssSampler:
    """VmRSS of a process every 50 ms in a thread: the most seen between marks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.most = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError, KeyError):
                self.most = max(self.most, memory_mib(self.pid)["VmRSS"])

    def mark(self) -> None:
        self.most = 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- one attack


@dataclass
class Phase:
    name: str
    hostile: int = 0
    rss_before_mib: float = float("nan")
    peak_rss_mib: float = float("nan")  # VmHWM over the phase
    rss_growth_mib: float = float("nan")  # peak minus RSS before
    down_s: list[float] = field(default_factory=list)  # HUP -> each hostile real's down line
    down_after_load_s: list[float] = field(default_factory=list)
    down_status_s: list[float] = field(default_factory=list)  # HUP -> status shows it down
    not_down: int = 0
    reason: str = ""
    p99_late_ms: float = float("nan")
    worst_p99_late_ms: float = float("nan")
    loop_lag_ms: float = float("nan")
    false_downs: int = 0
    checks_unknown: int = 0
    slots_skipped: int = 0
    cpu_pct: float = float("nan")
    period_p95_s: float = float("nan")
    period_max_s: float = float("nan")
    served: int = 0  # connections the hostile servers took
    load: float = float("nan")
    fds_max: int = 0
    window: tuple[float, float] = (0.0, 0.0)
    host_busy_pct: float = float("nan")  # all CPUs of the host, from /proc/stat
    attacker_cpu_pct: float = float("nan")  # the hostile server processes
    down_by_real: dict[str, float] = field(default_factory=dict)  # HUP -> its down line
    by_kind: dict[str, str] = field(default_factory=dict)  # `all`: down times per kind


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def stat_int(st: dict[str, Any] | None, key: str) -> int:
    stats = (st or {}).get("stats") or {}
    value = stats.get(key, 0)
    return int(value) if isinstance(value, int | float) else 0


def measure(
    phase: Phase,
    daemon: Daemon,
    tail: LogTail,
    healthy: set[str],
    sampler: RssSampler,
    window: float,
    hostile_reals: set[str],
    during: threading.Event | None = None,
) -> None:
    """The window of one phase: the config with its virtual(s) already written, HUP now."""
    pid = daemon.pid
    assert pid is not None
    phase.load = loadavg()
    host0 = host_cpu()
    time.sleep(0.3)  # the previous phase's last connections closed
    phase.rss_before_mib = memory_mib(pid)["VmRSS"]
    daemon.reset_peak()
    sampler.mark()
    st0 = daemon.status()
    cpu0, _ = cpu_seconds(pid)
    mark = len(tail.lines)
    t0 = time.time()
    if hostile_reals:
        daemon.hup()
    if during is not None:
        during.set()
    loaded_at: float | None = None
    down_at: dict[str, float] = {}
    status_down_at: dict[str, float] = {}
    seen_not_up: set[str] = set()
    worst = 0.0
    end = t0 + window
    i = mark
    while True:
        now = time.time()
        with contextlib.suppress(OSError):
            phase.fds_max = max(phase.fds_max, fd_count(pid))
        st = daemon.status()
        if st is not None:
            states = real_states(st)
            seen_not_up |= {r for r in healthy if states.get(r) not in ("up", None)}
            for r in hostile_reals:
                if states.get(r) == "down" and r not in status_down_at:
                    status_down_at[r] = now - t0
            late = (st.get("stats") or {}).get("lateness_ms") or {}
            if "p99" in late:
                worst = max(worst, float(late["p99"]))
        while i < len(tail.lines):
            seen, line = tail.lines[i]
            i += 1
            if "Configuration " in line and " loaded" in line and loaded_at is None:
                loaded_at = seen
            if "Real server " in line and " is down" in line:
                dest = line.split("Real server ", 1)[1].split(" ", 1)[0]
                if dest in hostile_reals and dest not in down_at:
                    down_at[dest] = seen
                    if not phase.reason:
                        phase.reason = line.split(": ", 1)[-1] if "check: " in line else line
                elif dest in healthy:
                    seen_not_up.add(dest)
        if now >= end:
            break
        time.sleep(min(0.25, max(end - time.time(), 0.01)))
    t1 = time.time()
    cpu1, _ = cpu_seconds(pid)
    host1 = host_cpu()
    phase.host_busy_pct = 100 * (host1[0] - host0[0]) / max(host1[1] - host0[1], 1)
    phase.down_by_real = {r: t - t0 for r, t in down_at.items()}
    st1 = daemon.status()
    mem = memory_mib(pid)
    phase.peak_rss_mib = max(mem["VmHWM"], sampler.most)
    phase.rss_growth_mib = phase.peak_rss_mib - phase.rss_before_mib
    phase.cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
    phase.down_s = sorted(t - t0 for t in down_at.values())
    if loaded_at is not None:
        phase.down_after_load_s = sorted(t - loaded_at for t in down_at.values())
    phase.down_status_s = sorted(status_down_at.values())
    phase.not_down = len(hostile_reals) - len(down_at)
    phase.false_downs = len(seen_not_up)
    phase.worst_p99_late_ms = worst
    if st1 is not None:
        stats = st1.get("stats") or {}
        late = stats.get("lateness_ms") or {}
        phase.p99_late_ms = float(late.get("p99", float("nan")))
        phase.loop_lag_ms = float(stats.get("loop_lag_ms", float("nan")))
    phase.checks_unknown = stat_int(st1, "checks_unknown") - stat_int(st0, "checks_unknown")
    phase.slots_skipped = stat_int(st1, "slots_skipped") - stat_int(st0, "slots_skipped")
    phase.window = (t0, t1)


def add_periods(phases: list[Phase], access_log: str, healthy: set[str]) -> None:
    """The healthy reals' check periods per phase window, from nginx's access log (read once at
    the end: nginx flushes it every second)."""
    time.sleep(1.5)
    addresses = {r.rsplit(":", 1)[0] for r in healthy}
    seen: list[tuple[float, str]] = []
    with open(access_log, "rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                seen.append((float(parts[0]), parts[1].decode()))
    for phase in phases:
        t0, t1 = phase.window
        times: dict[str, list[float]] = {a: [] for a in addresses}
        for t, address in seen:
            if t0 <= t <= t1 and address in times:
                times[address].append(t)
        gaps = periods(times, t1 - t0)
        phase.period_p95_s, phase.period_max_s = gaps.p95_s, gaps.max_s


# ---------------------------------------------------------------- control-server clients

TCP_ESTABLISHED = 1


def tcp_state(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    state: int = info[0]
    return state


class ControlClients:
    """`events` /events clients that never read (4 KiB receive buffer) and `idle` connections
    that send nothing, to the daemon's --listen address; a thread reconnects each one the
    daemon closed, every 100 ms, while running."""

    def __init__(self, port: int, events: int, idle: int) -> None:
        self.port = port
        self.want = {"events": events, "idle": idle}
        self.socks: dict[str, list[socket.socket]] = {"events": [], "idle": []}
        self.opened = {"events": 0, "idle": 0}
        self.closed_by_daemon = {"events": 0, "idle": 0}
        self.refused_503 = 0
        self.connect_errors = 0
        self.held_max = {"events": 0, "idle": 0}
        self.running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, what: str) -> socket.socket | None:
        s = socket.socket()
        try:
            if what == "events":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(2)
            s.connect(("127.0.0.1", self.port))
            if what == "events":
                s.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
        except OSError:
            s.close()
            self.connect_errors += 1
            return None
        self.opened[what] += 1
        return s

    def _gone(self, s: socket.socket) -> bool:
        try:
            if tcp_state(s) == TCP_ESTABLISHED:
                return False
            head = s.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return True
        if head.startswith(b"HTTP/1.1 503") or head.startswith(b"HTTP/1.0 503"):
            self.refused_503 += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if not self.running.is_set():
                continue
            for what, socks in self.socks.items():
                for s in [s for s in socks if self._gone(s)]:
                    socks.remove(s)
                    s.close()
                    self.closed_by_daemon[what] += 1
                while len(socks) < self.want[what]:
                    fresh = self._open(what)
                    if fresh is None:
                        break
                    socks.append(fresh)
                self.held_max[what] = max(self.held_max[what], len(socks))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for socks in self.socks.values():
            for s in socks:
                s.close()


class Flapper:
    """Some healthy reals turned 503 and back every second (their server's down/ files): events
    flow, so that an /events client that does not read has a backlog."""

    def __init__(self, servers: RealServers, addresses: list[str]) -> None:
        self.servers = servers
        self.addresses = addresses
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.addresses:
            self._thread.start()

    def _run(self) -> None:
        down = False
        while not self._stop.wait(1.0):
            down = not down
            for address in self.addresses:
                self.servers.set_down(address, down)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for address in self.addresses:
            self.servers.set_down(address, False)


# ---------------------------------------------------------------- the run


def base_config(logfile: str, reals: int, port: int, warm: dict[str, list[int]]) -> list[str]:
    lines = [
        f"checkinterval={INTERVAL}",
        f"checktimeout={TIMEOUT}",
        f"negotiatetimeout={TIMEOUT}",
        "failurecount=1",
        f'logfile="{logfile}"',
        "",
    ]
    for v in range((reals + PER_VIRTUAL - 1) // PER_VIRTUAL):
        lines.append(f"virtual=127.100.0.{v + 1}:80")
        for i in range(v * PER_VIRTUAL, min(reals, (v + 1) * PER_VIRTUAL)):
            lines.append(f"\treal={real_address(i)}:{port} masq")
        lines += [
            "\tservice=http",
            '\trequest="/"',
            '\treceive="still alive"',
            "\tchecktype=negotiate",
            "",
        ]
    for n, (service, ports) in enumerate(sorted(warm.items())):
        lines += virtual_lines(f"127.102.0.{n + 1}", ports, WARM[service])
    return lines


def run_attack(
    names: list[str],
    label: str,
    args: argparse.Namespace,
    daemon: Daemon,
    base: list[str],
    tail: LogTail,
    nginx: RealServers,
    healthy: set[str],
    sampler: RssSampler,
    cleanup: Cleanup,
) -> Phase:
    log(f"attack {label}: {args.hostile} reals per kind")
    servers = [Hostile(n, args.hostile, cleanup) for n in names]
    lines = list(base)
    reals: set[str] = set()
    for k, srv in enumerate(servers):
        lines += virtual_lines(f"127.101.0.{k + 1}", srv.ports, KINDS[srv.kind])
        reals |= {f"127.0.0.1:{p}" for p in srv.ports}
    daemon.write(lines)
    phase = Phase(label, len(reals))
    cpu0 = sum(srv.cpu() for srv in servers)
    measure(phase, daemon, tail, healthy, sampler, args.window, reals)
    phase.attacker_cpu_pct = 100 * (sum(srv.cpu() for srv in servers) - cpu0) / args.window
    if len(servers) > 1:
        for srv in servers:
            times = [phase.down_by_real.get(f"127.0.0.1:{p}") for p in srv.ports]
            downs = [t for t in times if t is not None]
            phase.by_kind[srv.kind] = (f"max {max(downs):.2f} s" if downs else "none") + (
                f", {len(times) - len(downs)} never down" if len(downs) < len(times) else ""
            )
    daemon.write(base)
    mark = len(tail.lines)
    daemon.hup()
    tail.wait_for(lambda line: "Configuration " in line and " loaded" in line, mark, 10)
    for srv in servers:
        srv.stop()
    phase.served = sum(max(srv.served, 0) for srv in servers)
    log(
        f"attack {label}: down in {fmt_list(phase.down_s)} s, peak {phase.peak_rss_mib:.1f} MiB"
        f" (+{phase.rss_growth_mib:.1f}), p99 late {phase.p99_late_ms} ms, false downs"
        f" {phase.false_downs}; {phase.reason}"
    )
    time.sleep(args.settle)
    return phase


def fmt_list(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values) or "-"


@dataclass
class StopFigures:
    stop_s: float = float("nan")
    gone_s: float = float("nan")
    stop_s_no_clients: float = float("nan")
    gone_s_no_clients: float = float("nan")
    events_held: int = 0  # the most held at once
    idle_held: int = 0
    events_at_stop: int = 0
    idle_at_stop: int = 0
    events_cut: int = 0
    idle_closed: int = 0
    refused_503: int = 0


def run(args: argparse.Namespace, workdir: str, cleanup: Cleanup) -> dict[str, Any]:
    src = None
    if args.rev:
        src = os.path.join(workdir, "lvsmon-src")
        top = os.path.dirname(HERE)
        subprocess.run(
            ["git", "-C", top, "worktree", "add", "--detach", "-q", src, args.rev], check=True
        )

        def remove_worktree() -> None:
            subprocess.run(["git", "-C", top, "worktree", "remove", "--force", src], check=False)

        cleanup.add("worktree", remove_worktree)
    where = src or os.path.dirname(HERE)
    rev = subprocess.run(
        ["git", "-C", where, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    nginx: RealServers
    if args.servers == "nginx":
        nginx = RealServers(workdir, free_port(), cleanup)
    else:
        nginx = PythonServers(workdir, free_port(), args.reals, 0, cleanup)
    eof = Hostile("eof", len(WARM), cleanup).ports
    warm = {s: [port] for s, port in zip(WARM, eof, strict=True)}
    listen_port = free_port()
    daemon = Daemon(workdir, f"127.0.0.1:{listen_port}", src, cleanup)
    base = base_config(daemon.logfile, args.reals, nginx.port, warm)
    daemon.write(base)
    healthy = {f"{real_address(i)}:{nginx.port}" for i in range(args.reals)}
    tail = LogTail(daemon.logfile)
    cleanup.add("log tail", tail.close)
    log(f"lvsmon {rev}: start, {args.reals} healthy reals, load {loadavg():.2f}")
    pid = daemon.start()
    up = wait_pool_up(daemon, healthy, 120)
    if up is None:
        raise RuntimeError(f"the healthy reals were not all up within 120 s; see {daemon.logfile}")
    log(f"pool up {up:.1f} s after start; warm-up {args.warmup:g} s")
    time.sleep(args.warmup)
    sampler = RssSampler(pid)
    cleanup.add("rss sampler", sampler.close)
    phases: list[Phase] = []
    log("baseline: no attacker")
    none = Phase("none")
    measure(none, daemon, tail, healthy, sampler, args.window, set())
    phases.append(none)
    time.sleep(args.settle)
    for name in args.attacks:
        if not alive(pid):
            raise RuntimeError(f"the daemon died; see {daemon.logfile}")
        phases.append(
            run_attack([name], name, args, daemon, base, tail, nginx, healthy, sampler, cleanup)
        )
    if args.all:
        kinds = [k for k in args.attacks if k != "refused"]
        phases.append(
            run_attack(kinds, "all", args, daemon, base, tail, nginx, healthy, sampler, cleanup)
        )
    stop = StopFigures()
    if args.events_clients or args.idle_clients:
        log(
            f"control: {args.events_clients} stuck /events clients, {args.idle_clients} idle"
            " connections"
        )
        clients = ControlClients(listen_port, args.events_clients, args.idle_clients)
        flapping = sorted(healthy)[: min(args.control_flap, len(healthy) // 10)]
        flapper = Flapper(nginx, [r.rsplit(":", 1)[0] for r in flapping])
        cleanup.add("flapper", flapper.stop)
        cleanup.add("control clients", clients.close)
        control = Phase("control")
        flapper.start()
        measure(
            control,
            daemon,
            tail,
            healthy - set(flapping),
            sampler,
            args.window,
            set(),
            during=clients.running,
        )
        phases.append(control)
        time.sleep(1.0)  # the replay fills the /events clients' buffers
        stop.events_at_stop = len(clients.socks["events"])
        stop.idle_at_stop = len(clients.socks["idle"])
        log(
            f"control: stop with {stop.events_at_stop} /events clients and {stop.idle_at_stop}"
            " idle connections held"
        )
        # what the daemon did to them before the stop
        stop.events_held, stop.idle_held = clients.held_max["events"], clients.held_max["idle"]
        stop.events_cut = clients.closed_by_daemon["events"]
        stop.idle_closed = clients.closed_by_daemon["idle"]
        stop.refused_503 = clients.refused_503
        stop.stop_s, stop.gone_s = daemon.stop()
        clients.close()
        flapper.stop()
    else:
        daemon.stop()
    sampler.close()
    add_periods(phases, nginx.access_log, healthy)
    if not alive(pid) and (args.events_clients or args.idle_clients):
        log("control: the same stop of a fresh daemon with no client")
        daemon.write(base)
        daemon.start()
        if wait_pool_up(daemon, healthy, 120) is None:
            log("the fresh daemon's pool was not all up; stopping it anyway")
        time.sleep(2)
        stop.stop_s_no_clients, stop.gone_s_no_clients = daemon.stop()
    tracebacks = sum(1 for _, line in tail.lines if "Traceback" in line)
    return {"phases": phases, "stop": stop, "rev": rev, "tracebacks": tracebacks}


# ---------------------------------------------------------------- output


def r(x: float, digits: int = 2) -> float | None:
    return None if x != x else round(x, digits)


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    phases: list[Phase] = result["phases"]
    head = [
        "attack",
        "reals",
        "down after HUP (s) max",
        "after load max",
        "status max",
        "peak RSS MiB",
        "growth MiB",
        "p99 late ms",
        "worst p99",
        "lag ms",
        "false downs",
        "unknown",
        "CPU %",
        "attackers CPU %",
        "host busy %",
        "period p95/max s",
        "load",
    ]
    rows = [head]
    for p in phases:
        rows.append(
            [
                p.name,
                str(p.hostile),
                f"{max(p.down_s):.2f}" if p.down_s else ("-" if not p.hostile else "never"),
                f"{max(p.down_after_load_s):.2f}" if p.down_after_load_s else "-",
                f"{max(p.down_status_s):.2f}" if p.down_status_s else "-",
                f"{p.peak_rss_mib:.1f}",
                f"{p.rss_growth_mib:+.1f}",
                f"{p.p99_late_ms:.1f}",
                f"{p.worst_p99_late_ms:.1f}",
                f"{p.loop_lag_ms:.1f}",
                str(p.false_downs),
                str(p.checks_unknown),
                f"{p.cpu_pct:.0f}",
                f"{p.attacker_cpu_pct:.0f}" if p.hostile else "-",
                f"{p.host_busy_pct:.0f}",
                f"{p.period_p95_s:.3f}/{p.period_max_s:.3f}",
                f"{p.load:.2f}",
            ]
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    for row in rows:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print()
    for p in phases:
        if p.hostile:
            for kind, text in p.by_kind.items():
                print(f"  {p.name} / {kind}: down after HUP {text}")
            print(
                f"{p.name}: down after HUP {fmt_list(p.down_s)} s;"
                f" {p.not_down} never down; {p.served} connections served; reason: {p.reason}"
            )
    stop: StopFigures = result["stop"]
    if args.events_clients or args.idle_clients:
        print(
            f"stop with {stop.events_at_stop} stuck /events clients and {stop.idle_at_stop}"
            f" idle connections: returned in {stop.stop_s:.2f} s, process gone in"
            f" {stop.gone_s:.2f} s; a fresh daemon without clients: {stop.stop_s_no_clients:.2f}"
            f" / {stop.gone_s_no_clients:.2f} s. During the window: held at most"
            f" {stop.events_held} /events and {stop.idle_held} idle; the daemon cut"
            f" {stop.events_cut} /events clients and closed {stop.idle_closed} idle ones"
            f" ({stop.refused_503} answered 503)"
        )


def figures(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lvsmon_rev": result["rev"],
        "reals": args.reals,
        "servers": args.servers,
        "hostile_per_kind": args.hostile,
        "window_s": args.window,
        "checkinterval_s": INTERVAL,
        "checktimeout_s": TIMEOUT,
        "lateness_ring_s": r(LATENESS_RING / (args.reals / INTERVAL), 1),
        "tracebacks": result["tracebacks"],
    }
    for p in result["phases"]:
        k = p.name.replace("-", "_")
        out[f"{k}_peak_rss_mib"] = r(p.peak_rss_mib, 1)
        out[f"{k}_rss_growth_mib"] = r(p.rss_growth_mib, 1)
        out[f"{k}_p99_late_ms"] = r(p.p99_late_ms, 1)
        out[f"{k}_worst_p99_late_ms"] = r(p.worst_p99_late_ms, 1)
        out[f"{k}_false_downs"] = p.false_downs
        out[f"{k}_cpu_pct"] = r(p.cpu_pct, 1)
        out[f"{k}_host_busy_pct"] = r(p.host_busy_pct, 1)
        out[f"{k}_unknown_checks"] = p.checks_unknown
        if p.hostile:
            out[f"{k}_down_s_max"] = r(max(p.down_s), 2) if p.down_s else None
            out[f"{k}_down_after_load_s_max"] = (
                r(max(p.down_after_load_s), 2) if p.down_after_load_s else None
            )
            out[f"{k}_never_down"] = p.not_down
            out[f"{k}_reason"] = p.reason
            out[f"{k}_attackers_cpu_pct"] = r(p.attacker_cpu_pct, 1)
            for kind, text in p.by_kind.items():
                out[f"{k}_{kind.replace('-', '_')}_down"] = text
    stop: StopFigures = result["stop"]
    if args.events_clients or args.idle_clients:
        out["control_events_clients"] = args.events_clients
        out["control_idle_clients"] = args.idle_clients
        out["control_stop_s"] = r(stop.stop_s)
        out["control_stop_gone_s"] = r(stop.gone_s)
        out["control_stop_s_no_clients"] = r(stop.stop_s_no_clients)
        out["control_events_cut"] = stop.events_cut
        out["control_idle_closed"] = stop.idle_closed
        out["control_refused_503"] = stop.refused_503
    worst = max((p.rss_growth_mib for p in result["phases"] if p.hostile), default=float("nan"))
    out["max_rss_growth_mib"] = r(worst, 1)
    out["max_down_s"] = r(
        max((max(p.down_s) for p in result["phases"] if p.down_s), default=float("nan"))
    )
    out["false_downs"] = sum(p.false_downs for p in result["phases"])
    out["never_down"] = sum(p.not_down for p in result["phases"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reals", type=int, default=1000, help="healthy reals (default 1000)")
    ap.add_argument("--hostile", type=int, default=5, help="hostile reals per kind (default 5)")
    ap.add_argument("--window", type=float, default=20.0, help="seconds per attack (default 20)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after the pool is up")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between attacks")
    ap.add_argument(
        "--attacks",
        default=",".join(KINDS),
        help=f"comma-separated, in order (default all: {','.join(KINDS)})",
    )
    ap.add_argument(
        "--no-all", dest="all", action="store_false", help="skip the attack with every kind at once"
    )
    ap.add_argument("--events-clients", type=int, default=8, help="stuck /events clients")
    ap.add_argument("--idle-clients", type=int, default=200, help="idle TCP connections")
    ap.add_argument(
        "--control-flap",
        type=int,
        default=20,
        help="healthy reals turned 503 and back every second during the control phase, so"
        " that events flow (default 20; not counted as false downs)",
    )
    ap.add_argument(
        "--servers",
        choices=("nginx", "python"),
        default="nginx" if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx") else "python",
        help="the healthy reals' server: Debian's nginx (default when installed) or"
        " bench/many_http.py (one asyncio process)",
    )
    ap.add_argument("--rev", help="run lvsmon from a git worktree at REV (e.g. HEAD)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = ap.parse_args()
    args.attacks = [a for a in args.attacks.split(",") if a]
    unknown = [a for a in args.attacks if a not in KINDS]
    if unknown:
        ap.error(f"unknown attacks: {', '.join(unknown)}")
    cleanup, workdir = start_run("lvsmon-hostile-", args.keep)
    try:
        result = run(args, workdir, cleanup)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except RuntimeError as exc:
        log(f"hostile bench failed: {exc}")
        print(json.dumps({"failed": str(exc)}))
        return 1
    finally:
        cleanup.run()
    print_table(result, args)
    print(json.dumps(figures(result, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
