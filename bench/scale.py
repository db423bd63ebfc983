"""lvsmon at 10,000 real servers, and lvsmon against Debian's ldirectord at 1,000, in one run.

Host only, loopback only, as root:   .venv/bin/python bench/scale.py [--quick] [--skip-ldirectord]

* Real servers: one nginx (Debian's) listening on the wildcard address, so that a connection to
  any of the 10,000 addresses 127.77.x.y:PORT reaches it. It answers `still alive`, or 503 for an
  address whose file exists in its down/ folder (no reload needed), and logs `$msec $server_addr
  $status` for every request: each real's check period comes from that log. A guard refuses
  every client outside 127/8.
* Big run: lvsmon `--backend memory`, V virtuals × R reals (default 100 × 100), checkinterval=1,
  checktimeout=3, quiescent=yes, http negotiate. Start-up, a steady window (checks/s, periods,
  start lateness, CPU, RSS), detection of one real turning 503, stop.
* `--scrape`: during the big run's steady window curl fetches /metrics (gzip) over the daemon's
  control socket every second, as Prometheus would: scrape time (request to last byte) p50/p99/max
  and body size, beside the checks' start lateness measured in the same window.
* Anchor (default 10 × 100): ldirectord and lvsmon `--backend ipvsadm` against the same fake
  ipvsadm (bench/fake_ipvsadm.py, a table in a file and a log of every call), ldirectord through
  a bind mount over /usr/sbin/ipvsadm in a private mount namespace. Start-up is measured until
  the fake's table holds every real with a weight above 0.

Prerequisites: `apt-get install -y nginx ldirectord` (ldirectord only without --skip-ldirectord).
Every process started here is stopped on exit, Ctrl-C included. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import gzip
import itertools
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from procs import (
    Cleanup,
    alive,
    cpu_seconds,
    free_port,
    kill_pid,
    loadavg,
    log,
    lvsmon_command,
    memory_mib,
    quantile,
    read_pid,
    start_run,
    wait_gone,
)

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_IPVSADM = os.path.join(HERE, "fake_ipvsadm.py")
MANY_HTTP = os.path.join(HERE, "many_http.py")
FALLBACK_PORT = 80


def real_address(i: int) -> str:
    """The i-th real (0-based): 127.77.0.1 … 127.77.0.200, 127.77.1.1 …"""
    return f"127.77.{i // 200}.{i % 200 + 1}"


# ---------------------------------------------------------------- the real servers

NGINX_CONF = """
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 65536;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    default_type text/plain;
    log_format probe '$msec $server_addr $status';
    access_log {dir}/access.log probe buffer=256k flush=1s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        # the wildcard: a connection to any 127/8 address reaches this one socket
        listen {port} backlog=8192;
        if ($remote_addr !~ "^127\\.") {{ return 444; }}
        location / {{
            if (-f {dir}/down/$server_addr) {{ return 503 "down\\n"; }}
            return 200 "still alive\\n";
        }}
    }}
}}
"""


class RealServers:
    """Debian's nginx answering for every 127.77.x.y:PORT, one access-log line per request."""

    def __init__(self, workdir: str, port: int, cleanup: Cleanup) -> None:
        self.dir = os.path.join(workdir, self.folder)
        self.port = port
        os.makedirs(os.path.join(self.dir, "down"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
        os.chmod(workdir, 0o755)  # workers run as nobody: they stat down/ files
        for path in (self.dir, os.path.join(self.dir, "down")):
            os.chmod(path, 0o755)
        self.proc = self._launch()
        cleanup.add(self.name, self.stop)
        self.access_log = os.path.join(self.dir, "access.log")
        self._offset = 0
        self._wait_ready()

    name = folder = "nginx"
    first = 0  # the index of the first real address served

    def _launch(self) -> subprocess.Popen[bytes]:
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(NGINX_CONF.format(dir=self.dir, port=self.port, workers=2))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return subprocess.Popen(
            [nginx, "-p", self.dir + "/", "-c", conf, "-e", os.path.join(self.dir, "error.log")],
            stdin=subprocess.DEVNULL,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}; see {self.dir}")
            if self.get(real_address(self.first)) == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("nginx did not answer on loopback within 10 s")

    def get(self, address: str) -> int | None:
        """Status of one GET (loopback only), None when nothing answers."""
        try:
            with socket.create_connection((address, self.port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                head = s.recv(64)
        except OSError:
            return None
        parts = head.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    def set_down(self, address: str, down: bool) -> None:
        path = os.path.join(self.dir, "down", address)
        if down:
            with open(path, "w", encoding="ascii"):
                pass
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def requests(self, start: float, end: float, wanted: set[str]) -> dict[str, list[float]]:
        """Request times per address in [start, end] (the log is flushed every second: call this
        two seconds after `end`). Reads only what was appended since the last call."""
        times: dict[str, list[float]] = {a: [] for a in wanted}
        with open(self.access_log, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        for line in data[:cut].splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            t = float(parts[0])
            if start <= t <= end:
                address = parts[1].decode()
                if address in times:
                    times[address].append(t)
        return times

    def cpu_seconds(self) -> float:
        """CPU of the master and its workers (workers restart only on reload, which we never do)."""
        total = 0.0
        pids = [self.proc.pid]
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children", encoding="ascii") as f,
        ):
            pids += [int(p) for p in f.read().split()]
        for pid in pids:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)[0]
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PythonServers(RealServers):
    """The kind of servers the ldirectord anchor was first measured against: one asyncio
    process on N addresses (bench/many_http.py), here answering `latency_ms` after each request,
    as a health page that does some work does. A sequential checker pays that latency once per
    real per sweep; concurrent checks pay it once per interval."""

    name, folder = "many_http.py", "many_http"

    def __init__(
        self, workdir: str, port: int, n: int, latency_ms: float, cleanup: Cleanup,
        first: int = 0, folder: str = "many_http",
    ) -> None:  # fmt: skip
        self.n = n
        self.latency_ms = latency_ms
        self.first = first
        self.folder = folder
        super().__init__(workdir, port, cleanup)

    def _launch(self) -> subprocess.Popen[bytes]:
        argv = [MANY_HTTP, self.dir, str(self.port), str(self.n), str(self.latency_ms)]
        argv.append(str(self.first))
        return subprocess.Popen([sys.executable, "-I", "-S", *argv], stdin=subprocess.DEVNULL)


@dataclass
class Periods:
    checks_per_s: float
    median_s: float
    p95_s: float
    max_s: float
    unchecked: int  # reals with fewer than two requests in the window


def periods(times: dict[str, list[float]], window: float) -> Periods:
    gaps: list[float] = []
    unchecked = 0
    total = 0
    for seen in times.values():
        seen.sort()
        total += len(seen)
        if len(seen) < 2:
            unchecked += 1
        gaps += [b - a for a, b in itertools.pairwise(seen)]
    return Periods(
        checks_per_s=total / window,
        median_s=quantile(gaps, 0.5),
        p95_s=quantile(gaps, 0.95),
        max_s=max(gaps, default=float("nan")),
        unchecked=unchecked,
    )


# ---------------------------------------------------------------- logs, the fake's calls


class LogTail:
    """Follows a log file from a thread, stamping each line with the time it was first seen
    (polled every 10 ms; the daemons open, append and close per line)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        offset = 0
        rest = b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            if data:
                now = time.time()
                offset += len(data)
                chunks = (rest + data).split(b"\n")
                rest = chunks.pop()
                with self._cond:
                    self.lines += [(now, c.decode(errors="replace")) for c in chunks]
                    self._cond.notify_all()
            self._stop.wait(0.01)

    def wait_for(self, match: Callable[[str], bool], since: int, timeout: float) -> float | None:
        """Time the first line at index ≥ since matching was seen, None on timeout."""
        deadline = time.monotonic() + timeout
        i = since
        with self._cond:
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    if match(line):
                        return t
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class FakeIpvsadm:
    """One state folder of bench/fake_ipvsadm.py: its table and its call log."""

    def __init__(self, workdir: str, name: str) -> None:
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.env = {**os.environ, "LVSMON_FAKE_IPVSADM_DIR": self.dir}

    def calls(self) -> list[dict[str, object]]:
        try:
            with open(os.path.join(self.dir, "calls.jsonl"), encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def wait_all_up(self, port: int, n: int, timeout: float) -> float | None:
        """End time of the first call after which n destinations on `port` have weight > 0."""
        deadline = time.monotonic() + timeout
        seen = 0
        path = os.path.join(self.dir, "calls.jsonl")
        offset = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
                cut = data.rfind(b"\n") + 1
                offset += cut
                for line in data[:cut].splitlines():
                    call = json.loads(line)
                    seen += 1
                    if call["up"].get(str(port), 0) >= n:
                        return float(call["t"]) + float(call["dt"])
            time.sleep(0.05)
        log(f"timeout: {seen} ipvsadm calls, not all {n} reals up")
        return None

    def count_calls(self, start: float, end: float) -> int:
        return sum(1 for c in self.calls() if start <= float(str(c["t"])) <= end)


class Flooders:
    """bench/flood_1xx.py in a process of its own: hostile reals that answer every request with
    an endless stream of `100 Continue` heads (they must cost the checks of the others nothing)."""

    def __init__(self, count: int, cleanup: Cleanup) -> None:
        base = free_port()
        self.addresses = [("127.0.0.1", base + i) for i in range(count)]
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "flood_1xx.py"), "--count", str(count),
             "--base-port", str(base)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        cleanup.add("1xx flooders", self.stop)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # {"listening": [...]} once every server listens
        if "listening" not in line:
            raise RuntimeError(f"flood_1xx.py did not start: {line!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> int:
        """Stop; the number of connections the flooders served."""
        self.stop()
        out = self.proc.stdout.read() if self.proc.stdout else ""
        for line in out.splitlines():
            with contextlib.suppress(ValueError):
                return int(json.loads(line).get("connections", 0))
        return 0


# ---------------------------------------------------------------- alerts (--alerts)


FLAP_LINE = re.compile(r"(Quiescent|Restored) real server: ")


class AlertSink:
    """An SMTP sink on 127.0.0.1 (aiosmtpd's thread, in this process) that keeps, for every mail
    lvsmon sends, when it came and how many changes it lists."""

    def __init__(self, cleanup: Cleanup) -> None:
        from aiosmtpd.controller import Controller  # only with --alerts

        self.mails: list[tuple[float, int, str]] = []  # (time received, changes, subject)
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        cleanup.add("smtp sink", self.stop)

    async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        msg = email.message_from_bytes(raw if isinstance(raw, bytes) else raw.encode())
        subject = " ".join(str(msg.get("Subject", "")).split())
        payload = msg.get_payload(decode=True)
        body = payload.decode(errors="replace") if isinstance(payload, bytes) else ""
        # a digest lists one change a line (its Log-Message counts them), a single change's mail
        # names it in Log-Message; counted: the flaps' kind, not start-up's "Added real server"
        listed = sum(1 for line in body.splitlines() if FLAP_LINE.search(line))
        with self._lock:
            self.mails.append((time.time(), listed, subject))
        return "250 OK"

    def between(self, start: float, end: float) -> list[tuple[float, int, str]]:
        with self._lock:
            return [m for m in self.mails if start <= m[0] <= end]

    def stop(self) -> None:
        self._controller.stop()


class Flapper:
    """Turns `reals` down (nginx answers 503) and up again, all at once, every `half_period` s."""

    def __init__(self, servers: RealServers, reals: list[tuple[str, int]], half_period: float):
        self.servers, self.reals, self.half_period = servers, reals, half_period
        self.toggles = 0  # times the whole set changed state
        self.started = self.stopped = float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        down = True
        while True:
            for address, _ in self.reals:
                self.servers.set_down(address, down)
            self.toggles += 1
            down = not down
            if self._stop.wait(self.half_period):
                break

    def start(self) -> None:
        self.started = time.time()
        self._thread.start()

    def stop(self) -> None:
        """Stop flapping; every real answers 200 again."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for address, _ in self.reals:
            self.servers.set_down(address, False)
        self.stopped = time.time()


@dataclass
class Alerts:
    """--alerts: where mail goes, what flaps, and the policy's settings (None: lvsmon's default)."""

    sink: AlertSink
    flap: int
    half_period: float
    window_s: float | None
    rate: int | None
    mail: bool = True  # False: the control run, same flapping, no emailalert in the file

    def directives(self) -> list[str]:
        if not self.mail:
            return []
        out = ['emailalert="ops@lvsmon.test"', f"smtp=127.0.0.1:{self.sink.port}", "smtptls=none"]
        if self.window_s is not None:
            out.append(f"emailalertwindow={self.window_s:g}")
        if self.rate is not None:
            out.append(f"emailalertrate={self.rate}")
        return out


def flapping_reals(
    reals: list[tuple[str, int]], count: int, keep: set[int]
) -> list[tuple[str, int]]:
    """`count` reals spread evenly over all of them, none of the indices in `keep`."""
    pool = [r for i, r in enumerate(reals) if i not in keep]
    count = min(count, len(pool))
    step = len(pool) / count if count else 1.0
    return [pool[int(k * step)] for k in range(count)]


FIRST_SCRAPES = 5  # lvsmon knows a scraper's beat after this many: the figures are of the rest


class Scraper:
    """GET /metrics over the control socket every `period` s, as Prometheus would: from a
    process of its own (curl), asking for gzip. Per scrape: curl's time from connect to last
    byte, the body's size on the wire and unpacked."""

    def __init__(self, socket_path: str, workdir: str, period: float = 1.0) -> None:
        self.path = socket_path
        self.out = os.path.join(workdir, "metrics.gz")
        self.period = period
        self.times_ms: list[float] = []
        self.sizes: list[int] = []  # unpacked
        self.wire_sizes: list[int] = []
        self.ahead: list[bool] = []  # per scrape: its body was built before it was asked for
        self.build_ms: list[float] = []  # lvsmon_metrics_build_seconds, as each body says
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                ms, wire, size = self.scrape_once()
                self.times_ms.append(ms)
                self.wire_sizes.append(wire)
                self.sizes.append(size)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                self.errors.append(str(exc))
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def scrape_once(self) -> tuple[float, int, int]:
        """(ms, bytes on the wire, bytes unpacked) of one scrape."""
        asked = time.time()
        proc = subprocess.run(
            ["curl", "-sS", "--max-time", "30", "--unix-socket", self.path,
             "-H", "Accept-Encoding: gzip", "-o", self.out,
             "-w", "%{http_code} %{time_total} %{size_download}", "http://lvsmon/metrics"],
            capture_output=True, text=True, timeout=40,
        )  # fmt: skip
        code, seconds, wire = [*proc.stdout.split(), "", "", ""][:3]
        if proc.returncode != 0 or code != "200":
            raise ValueError(f"/metrics: curl {proc.returncode} {code} {proc.stderr.strip()}")
        with open(self.out, "rb") as f:
            body = gzip.decompress(f.read())
        if b"\nlvsmon_checks_total " not in body:
            raise ValueError("/metrics body without lvsmon_checks_total")
        tail = body[-4096:].decode()
        built = re.search(r"^lvsmon_metrics_built_timestamp_seconds (\S+)$", tail, re.M)
        took = re.search(r"^lvsmon_metrics_build_seconds (\S+)$", tail, re.M)
        if built and took:
            self.ahead.append(float(built.group(1)) < asked)  # begun before curl was
            self.build_ms.append(float(took.group(1)) * 1000)  # the build before this one's
        return float(seconds) * 1000, int(wire), len(body)


# ---------------------------------------------------------------- the configuration


def write_config(
    path: str, virtuals: int, per_virtual: int, port: int, logfile: str,
    own_port: dict[int, int] | None = None, hostile: list[tuple[str, int]] | None = None,
    extra: list[str] | None = None, interval: int = 1,
) -> list[tuple[str, int]]:  # fmt: skip
    """An ldirectord.cf both daemons read unchanged; returns the reals as (address, port).
    `own_port`: real index → a port of its own (a server that can be stopped alone).
    `hostile`: more reals in the first virtual (the 1xx flooders), not among those returned.
    `extra`: more global directives (the alert settings)."""
    lines = [
        "checktimeout=3",
        f"checkinterval={interval}",
        "autoreload=yes",
        "quiescent=yes",
        f'logfile="{logfile}"',
        *(extra or ()),
        "",
    ]
    reals: list[tuple[str, int]] = []
    for v in range(virtuals):
        lines.append(f"virtual=127.100.0.{v + 1}:80")
        for r in range(per_virtual):
            i = v * per_virtual + r
            address, real_port = real_address(i), (own_port or {}).get(i, port)
            reals.append((address, real_port))
            lines.append(f"\treal={address}:{real_port} masq")
        if v == 0:
            lines += [f"\treal={a}:{p} masq" for a, p in hostile or ()]
        lines += [
            f"\tfallback=127.0.0.1:{FALLBACK_PORT}",
            "\tservice=http",
            '\trequest="test.html"',
            '\treceive="still alive"',
            "\tscheduler=wlc",
            "\tprotocol=tcp",
            "\tchecktype=negotiate",
            "",
        ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return reals


# ---------------------------------------------------------------- one daemon's run


@dataclass
class Run:
    """What one daemon did; times in seconds."""

    name: str
    n: int
    start_returned_s: float = float("nan")
    programmed_s: float = float("nan")
    startup_cpu_s: float = float("nan")
    startup_ipvsadm_calls: int = 0
    window_s: float = float("nan")
    load_at_window: float = float("nan")
    periods: Periods | None = None
    cpu_pct: float = float("nan")
    nginx_cpu_pct: float = float("nan")  # the real servers' side, for context
    rss_mib: float = float("nan")
    peak_rss_mib: float = float("nan")
    flood_servers: int = 0  # hostile reals streaming 100 Continue heads, in the first virtual
    flood_connections: int = 0  # the checks they got (each flooded until lvsmon gave up)
    status_checks_per_s: float = float("nan")
    lateness_ms: dict[str, float] = field(default_factory=dict)
    worst_p99_late_ms: float = float("nan")
    slots_skipped: int = 0  # during the window
    status_max_age_s: float = 0.0  # the oldest the status file was when read in the window
    false_downs: int = -1  # healthy reals declared down during the window (lvsmon's log)
    detect_s: float = float("nan")
    recover_s: float = float("nan")
    stopped_detect_s: float = float("nan")
    restarted_recover_s: float = float("nan")
    stop_returned_s: float = float("nan")
    stop_gone_s: float = float("nan")
    # --alerts: reals flapping during the steady window, and the mails that made
    alerts_flapping: int = 0
    alerts_toggles: int = 0
    alerts_span_s: float = float("nan")  # flapping start to the last mail it could cause
    alerts_mails: int = 0  # received in that span
    alerts_changes_mailed: int = 0
    alerts_changes_logged: int = 0  # the flapping reals' Quiescent/Restored lines, same span
    alerts_max_changes: int = 0
    alerts_mails_total: int = 0  # until the sink stopped (detection and "stopping" mails too)
    # --scrape: /metrics fetched every second during the steady window
    scrapes: int = 0
    scrape_errors: int = 0
    # p50, p99, max of the scrapes on the beat (after the first FIRST_SCRAPES), and "first": the
    # slowest of those (lvsmon builds a body ahead only once it knows the scraper's beat)
    scrape_ms: dict[str, float] = field(default_factory=dict)
    scrape_bytes: int = 0  # the largest body
    scrape_wire_bytes: int = 0  # the largest body as sent (gzip)
    scrapes_ahead: int = 0  # bodies built before their scrape came (lvsmon found the beat)
    scrape_build_ms: dict[str, float] = field(default_factory=dict)  # p50, max: build wall


class Baseline:
    """Another revision of lvsmon checked out beside this one (a git worktree), for an A/B run
    on the same machine at the same time: the anchor for "no more CPU per check than before"."""

    def __init__(self, rev: str, workdir: str, cleanup: Cleanup) -> None:
        self.rev = rev
        self.path = os.path.join(workdir, f"baseline-{rev}")
        top = os.path.dirname(HERE)
        subprocess.run(
            ["git", "-C", top, "worktree", "add", "--detach", "-q", self.path, rev], check=True
        )
        self._top = top
        cleanup.add(f"worktree {rev}", self.remove)

    def remove(self) -> None:
        subprocess.run(
            ["git", "-C", self._top, "worktree", "remove", "--force", self.path], check=False
        )


def read_status(path: str) -> tuple[float, dict[str, object]] | None:
    """(mtime, stats) of lvsmon's status file."""
    try:
        mtime = os.stat(path).st_mtime
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)["stats"]
    except (OSError, ValueError, KeyError):
        return None
    assert isinstance(stats, dict)
    return mtime, stats


def steady_window(
    run: Run, pid: int, seconds: float, servers: RealServers, reals: list[tuple[str, int]],
    status_path: str | None,
) -> None:  # fmt: skip
    """CPU, memory, and (lvsmon) the status file's figures over one window; then the periods."""
    servers.requests(0, 0, set())  # skip what was logged before the window
    run.load_at_window = loadavg()
    w0 = time.time()
    cpu0, _ = cpu_seconds(pid)
    nginx0 = servers.cpu_seconds()
    reads: list[tuple[float, dict[str, object]]] = []
    series: list[int] = []  # p99 lateness (ms) of each status read: is the worst one an outlier?
    worst = 0.0
    end = w0 + seconds
    while True:
        if status_path:
            now = read_status(status_path)
            if now is not None:
                run.status_max_age_s = max(run.status_max_age_s, time.time() - now[0])
                if not reads or now[0] > reads[-1][0]:
                    reads.append(now)
                late = now[1].get("lateness_ms")
                if isinstance(late, dict) and "p99" in late:
                    worst = max(worst, float(late["p99"]))
                    series.append(round(float(late["p99"])))
        if time.time() >= end:
            break
        time.sleep(min(1.0, max(end - time.time(), 0)))
    w1 = time.time()
    cpu1, _ = cpu_seconds(pid)
    run.nginx_cpu_pct = 100 * (servers.cpu_seconds() - nginx0) / (w1 - w0)
    mem = memory_mib(pid)
    run.window_s = w1 - w0
    run.cpu_pct = 100 * (cpu1 - cpu0) / (w1 - w0)
    run.rss_mib, run.peak_rss_mib = mem["VmRSS"], mem["VmHWM"]
    if status_path:
        # the daemon rewrites it every second; under load some writes are late or skipped
        if len(reads) >= 2:
            (m0, first), (m1, last) = reads[0], reads[-1]
            done = int(str(last["checks_done"])) - int(str(first["checks_done"]))
            run.status_checks_per_s = done / (m1 - m0)
            late = last.get("lateness_ms")
            run.lateness_ms = dict(late) if isinstance(late, dict) else {}
            run.slots_skipped = int(str(last.get("slots_skipped", 0))) - int(
                str(first.get("slots_skipped", 0))
            )
        run.worst_p99_late_ms = worst
        if series:
            log(f"{run.name}: p99 start lateness (ms) per status read: {series}")
    time.sleep(2.5)  # nginx flushes its log every second
    times = servers.requests(w0, w1, {a for a, _ in reals})
    run.periods = periods(times, w1 - w0)


def run_lvsmon(
    name: str, workdir: str, servers: RealServers, virtuals: int, per_virtual: int,
    window: float, cleanup: Cleanup, fake: FakeIpvsadm | None, detect: bool, flood: int = 0,
    src: str | None = None, alerts: Alerts | None = None, interval: int = 1,
    scrape: bool = False,
) -> Run:  # fmt: skip
    n = virtuals * per_virtual
    run = Run(name, n)
    flooders = Flooders(flood, cleanup) if flood else None
    base = os.path.join(workdir, name)
    os.makedirs(base)
    cfg, logfile, pidfile = (os.path.join(base, x) for x in ("bench.cf", "lvsmon.log", "l.pid"))
    status_path = os.path.join(base, "l.status.json")
    solo_index = per_virtual - 2  # a real with a server of its own, stopped and started again
    solo_port = free_port()
    own = {solo_index: solo_port} if detect else None
    hostile = flooders.addresses if flooders else None
    extra = alerts.directives() if alerts else None
    reals = write_config(
        cfg, virtuals, per_virtual, servers.port, logfile, own, hostile, extra, interval
    )
    if detect:
        solo = PythonServers(workdir, solo_port, 1, 0, cleanup, solo_index, f"{name}-solo")
    env = {**(fake.env if fake else os.environ), "LVSMON_RESOLVER": "files"}
    if src is not None:
        env["PYTHONPATH"] = src
    backend = (
        ["--backend", "ipvsadm", "--ipvsadm", FAKE_IPVSADM] if fake else ["--backend", "memory"]
    )
    cmd = [*lvsmon_command(src), *backend, "--pid-file", pidfile, cfg]
    tail = LogTail(logfile)
    pid: int | None = None

    def stop_leftover() -> None:
        if pid is not None and alive(pid):
            subprocess.run([*cmd, "stop"], env=env, timeout=60, check=False)
            kill_pid(pid, "lvsmon")

    cleanup.add(f"{name} daemon", stop_leftover)
    cleanup.add(f"{name} log tail", tail.close)
    log(f"{name}: start, {virtuals} x {per_virtual} reals")
    t0 = time.time()
    proc = subprocess.run([*cmd, "start"], env=env, timeout=600, check=False)
    run.start_returned_s = time.time() - t0
    pid = read_pid(pidfile)
    if proc.returncode != 0 or pid is None:
        raise RuntimeError(f"{name}: lvsmon start failed ({proc.returncode}); see {logfile}")
    run.startup_cpu_s = cpu_seconds(pid)[0]
    if fake:
        done = fake.wait_all_up(servers.port, n, 600)
        run.startup_ipvsadm_calls = len(fake.calls())
    else:
        # bounded: under overload reals flap and some may never all be up at once
        done = wait_weight_lines(tail, {f"{a}:{p}" for a, p in reals}, 120)
    if done is not None:
        run.programmed_s = done - t0
    time.sleep(3)  # the first run is immediate; let every job settle on its own slot
    log(f"{name}: steady window {window:.0f} s")
    mark = len(tail.lines)
    served = [(a, p) for a, p in reals if p == servers.port]  # the solo real logs elsewhere
    flapper = None
    if alerts:
        keep = {per_virtual - 1, solo_index}  # the detection phase's reals
        flapper = Flapper(servers, flapping_reals(reals, alerts.flap, keep), alerts.half_period)
        cleanup.add(f"{name} flapper", lambda: flapper.stop() if flapper else None)
        # the start-up mail ("Added real server" × N) first, so that it is not counted below
        settle = (alerts.window_s if alerts.window_s is not None else 5.0) + 60
        deadline = time.time() + settle
        while alerts.mail and not alerts.sink.mails and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        mails0 = len(alerts.sink.mails)
        log(f"{name}: {len(flapper.reals)} reals flapping every {alerts.half_period:g} s")
        flapper.start()
    scraper = None
    if scrape:
        scraper = Scraper(pidfile.removesuffix(".pid") + ".sock", workdir)
        cleanup.add(f"{name} scraper", scraper.stop)
        scraper.start()
    steady_window(run, pid, window, servers, served, status_path)
    if scraper:
        scraper.stop()
        run.scrapes, run.scrape_errors = len(scraper.times_ms), len(scraper.errors)
        if scraper.times_ms:
            beat = scraper.times_ms[FIRST_SCRAPES:] or scraper.times_ms
            run.scrape_ms = {
                "first": max(scraper.times_ms[:FIRST_SCRAPES]),
                "p50": quantile(beat, 0.5),
                "p99": quantile(beat, 0.99),
                "max": max(beat),
            }
            run.scrape_bytes = max(scraper.sizes)
            run.scrape_wire_bytes = max(scraper.wire_sizes)
        run.scrapes_ahead = sum(scraper.ahead)
        if scraper.build_ms:
            run.scrape_build_ms = {
                "p50": quantile(scraper.build_ms, 0.5), "max": max(scraper.build_ms)
            }  # fmt: skip
        log(f"{name}: {run.scrapes} scrapes of /metrics, ms (* built ahead): "
            + ", ".join(f"{t:.0f}{'*' if a else ''}"
                        for t, a in zip(scraper.times_ms, scraper.ahead, strict=False))
            + (f"; errors: {scraper.errors[:3]}" if scraper.errors else ""))  # fmt: skip
    flapped = {f"{a}:{p}" for a, p in flapper.reals} if flapper else set()

    def names_flapped(line: str) -> bool:
        return any(w.strip("()") in flapped for w in line.split())

    run.false_downs = sum(
        1 for _, line in tail.lines[mark:] if ") is down: " in line and not names_flapped(line)
    )
    if alerts and flapper:
        flapper.stop()
        # the last changes wait for the coalescing window; then the mail needs a moment
        time.sleep((alerts.window_s if alerts.window_s is not None else 5.0) + 5)
        end = time.time()
        mails = alerts.sink.between(flapper.started, end)
        run.alerts_flapping, run.alerts_toggles = len(flapper.reals), flapper.toggles
        run.alerts_span_s = end - flapper.started
        run.alerts_mails = len(mails)
        run.alerts_changes_mailed = sum(m[1] for m in mails)
        run.alerts_max_changes = max((m[1] for m in mails), default=0)
        run.alerts_changes_logged = sum(
            1 for _, line in tail.lines[mark:]
            if ("Quiescent real server: " in line or "Restored real server: " in line)
            and names_flapped(line)
        )  # fmt: skip
        if not alerts.mail:
            mails, run.alerts_mails, run.alerts_changes_mailed = [], 0, 0
        log(f"{name}: {len(mails)} mails in {run.alerts_span_s:.0f} s "
            f"(since start {len(alerts.sink.mails) - mails0}): "
            + ", ".join(f"{m[1]} at +{m[0] - flapper.started:.1f} s" for m in mails))  # fmt: skip
    if detect:
        address, port = reals[per_virtual - 1]  # the last real of the first virtual
        mark = len(tail.lines)
        t_down = time.time()
        servers.set_down(address, True)
        seen = tail.wait_for(lambda line: f"Quiescent real server: {address}:{port} " in line,
                             mark, 30)  # fmt: skip
        run.detect_s = (seen - t_down) if seen else float("nan")
        mark = len(tail.lines)
        t_up = time.time()
        servers.set_down(address, False)
        seen = tail.wait_for(lambda line: f"Restored real server: {address}:{port} " in line,
                             mark, 30)  # fmt: skip
        run.recover_s = (seen - t_up) if seen else float("nan")
        # a real whose server process stops: its connections are refused
        address, port = reals[solo_index]
        mark = len(tail.lines)
        t_down = time.time()
        solo.proc.kill()
        solo.proc.wait()
        seen = tail.wait_for(lambda line: f"Quiescent real server: {address}:{port} " in line,
                             mark, 30)  # fmt: skip
        run.stopped_detect_s = (seen - t_down) if seen else float("nan")
        mark = len(tail.lines)
        t_up = time.time()
        solo = PythonServers(workdir, solo_port, 1, 0, cleanup, solo_index, f"{name}-solo")
        seen = tail.wait_for(lambda line: f"Restored real server: {address}:{port} " in line,
                             mark, 30)  # fmt: skip
        run.restarted_recover_s = (seen - t_up) if seen else float("nan")
    log(f"{name}: stop")
    t0 = time.time()
    subprocess.run([*cmd, "stop"], env=env, timeout=300, check=False)
    run.stop_returned_s = time.time() - t0
    gone = wait_gone(pid, 300)
    run.stop_gone_s = (gone - t0) if gone else float("nan")
    if alerts and alerts.mail:
        time.sleep(2)  # the "stopping" mail
        run.alerts_mails_total = len(alerts.sink.mails)
    if flooders:
        run.flood_servers = flood
        run.flood_connections = flooders.close()
    return run


def wait_weight_lines(tail: LogTail, reals: set[str], timeout: float) -> float | None:
    """When the log has said every real got a weight above 0 (memory backend: no other witness
    with better than a second's resolution)."""
    left = set(reals)

    def match(line: str) -> bool:
        for word in ("Added real server: ", "Restored real server: "):
            at = line.find(word)
            if at >= 0 and "(Weight set to 0)" not in line:
                left.discard(line[at + len(word) :].split(" ", 1)[0])
        return not left

    return tail.wait_for(match, 0, timeout)


def run_ldirectord(
    workdir: str, servers: RealServers, virtuals: int, per_virtual: int, window: float,
    cleanup: Cleanup,
) -> Run:  # fmt: skip
    n = virtuals * per_virtual
    run = Run("ldirectord", n)
    base = os.path.join(workdir, "ldirectord")
    os.makedirs(base)
    cfname = f"lvsmon-bench-{os.getpid()}.cf"
    cfg, logfile = os.path.join(base, cfname), os.path.join(base, "ldirectord.log")
    pidfile = f"/run/ldirectord.{cfname}.pid"
    reals = write_config(cfg, virtuals, per_virtual, servers.port, logfile)
    fake = FakeIpvsadm(workdir, "fake-ldirectord")
    ldirectord = shutil.which("ldirectord") or "/usr/sbin/ldirectord"

    def in_namespace(command: str) -> list[str]:
        # only this mount namespace (the daemon's) sees the fake as /usr/sbin/ipvsadm
        script = f'mount --bind "$0" /usr/sbin/ipvsadm && exec "$1" "$2" "{command}"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                FAKE_IPVSADM, ldirectord, cfg]  # fmt: skip

    pid: int | None = None

    def stop_leftover() -> None:
        if pid is not None and alive(pid):
            subprocess.run(in_namespace("stop"), env=fake.env, timeout=120, check=False)
            kill_pid(pid, "ldirectord")

    cleanup.add("ldirectord daemon", stop_leftover)
    log(f"ldirectord: start, {virtuals} x {per_virtual} reals (expect minutes)")
    t0 = time.time()
    proc = subprocess.run(in_namespace("start"), env=fake.env, timeout=600, check=False)
    run.start_returned_s = time.time() - t0
    for _ in range(100):
        pid = read_pid(pidfile)
        if pid is not None:
            break
        time.sleep(0.05)
    if proc.returncode != 0 or pid is None:
        raise RuntimeError(f"ldirectord start failed ({proc.returncode}); see {logfile}")
    done = fake.wait_all_up(servers.port, n, 3000)
    if done is None:
        raise RuntimeError("ldirectord never had every real up in the fake table")
    run.programmed_s = done - t0
    run.startup_cpu_s = cpu_seconds(pid)[0]
    run.startup_ipvsadm_calls = len(fake.calls())
    log(f"ldirectord: programmed after {run.programmed_s:.1f} s; steady window {window:.0f} s")
    steady_window(run, pid, window, servers, reals, None)
    log("ldirectord: stop")
    t0 = time.time()
    subprocess.run(in_namespace("stop"), env=fake.env, timeout=600, check=False)
    run.stop_returned_s = time.time() - t0
    gone = wait_gone(pid, 600)
    run.stop_gone_s = (gone - t0) if gone else float("nan")
    return run


# ---------------------------------------------------------------- report


def rows(runs: list[Run]) -> Iterator[tuple[str, list[str]]]:
    def f(x: float, digits: int = 2) -> str:
        return "-" if x != x else f"{x:,.{digits}f}"

    def p(r: Run, attr: str, digits: int = 3) -> str:
        return "-" if r.periods is None else f(getattr(r.periods, attr), digits)

    yield "reals", [f"{r.n:,}" for r in runs]
    yield "start command returned (s)", [f(r.start_returned_s) for r in runs]
    yield "start-up until every real weight>0 (s)", [f(r.programmed_s) for r in runs]
    yield "start-up CPU of the daemon (s)", [f(r.startup_cpu_s) for r in runs]
    yield "ipvsadm calls during start-up", [str(r.startup_ipvsadm_calls or "-") for r in runs]
    yield "load average at window start", [f(r.load_at_window) for r in runs]
    yield "steady window (s)", [f(r.window_s, 1) for r in runs]
    yield "checks/s (server log)", [p(r, "checks_per_s", 0) for r in runs]
    yield "checks/s (status file)", [f(r.status_checks_per_s, 0) for r in runs]
    yield "check period median (s)", [p(r, "median_s") for r in runs]
    yield "check period p95 (s)", [p(r, "p95_s") for r in runs]
    yield "check period max (s)", [p(r, "max_s") for r in runs]
    yield "reals checked < 2x in window", [p(r, "unchecked", 0) for r in runs]
    for q in ("p50", "p99", "max"):
        yield f"start lateness {q} (ms)", [f(r.lateness_ms.get(q, float("nan"))) for r in runs]
    yield "worst p99 lateness seen (ms)", [f(r.worst_p99_late_ms) for r in runs]
    yield "slots skipped in window", [str(r.slots_skipped) for r in runs]
    if any(r.scrapes or r.scrape_errors for r in runs):
        yield "/metrics scrapes (errors)", [f"{r.scrapes} ({r.scrape_errors})" for r in runs]
        yield (
            f"/metrics first {FIRST_SCRAPES} scrapes, max (ms)",
            [f(r.scrape_ms.get("first", float("nan")), 1) for r in runs],
        )
        for q in ("p50", "p99", "max"):
            yield (
                f"/metrics scrape on the beat {q} (ms)",
                [f(r.scrape_ms.get(q, float("nan")), 1) for r in runs],
            )
        yield "/metrics bodies built ahead", [str(r.scrapes_ahead) for r in runs]
        for q in ("p50", "max"):
            yield (
                f"/metrics build (wall) {q} (ms)",
                [f(r.scrape_build_ms.get(q, float("nan")), 1) for r in runs],
            )
        yield "/metrics body (MB)", [f(r.scrape_bytes / 1e6 if r.scrapes else float("nan"), 1)
                                     for r in runs]  # fmt: skip
        yield (
            "/metrics gzipped (MB)",
            [f(r.scrape_wire_bytes / 1e6 if r.scrapes else float("nan"), 2) for r in runs],
        )
    yield "status file max age seen (s)", [f(r.status_max_age_s, 1) for r in runs]
    yield (
        "healthy reals declared down",
        [str(r.false_downs) if r.false_downs >= 0 else "-" for r in runs],
    )
    yield "daemon CPU (% of one core)", [f(r.cpu_pct, 1) for r in runs]
    yield "real servers' CPU (% of one core)", [f(r.nginx_cpu_pct, 1) for r in runs]
    yield "daemon CPU per check (µs)", [f(cpu_per_check_us(r), 0) for r in runs]
    yield "RSS / peak (MiB)", [f"{f(r.rss_mib, 1)} / {f(r.peak_rss_mib, 1)}" for r in runs]
    yield "503 → 'Quiescent real server' (s)", [f(r.detect_s, 3) for r in runs]
    yield "recovered → 'Restored real server' (s)", [f(r.recover_s, 3) for r in runs]
    yield "server killed → 'Quiescent real server' (s)", [f(r.stopped_detect_s, 3) for r in runs]
    yield "server restarted → 'Restored' (s)", [f(r.restarted_recover_s, 3) for r in runs]
    yield "stop command returned (s)", [f(r.stop_returned_s) for r in runs]
    yield "stop → process gone (s)", [f(r.stop_gone_s) for r in runs]
    yield (
        "1xx flooders in the pool (connections)",
        [f"{r.flood_servers} ({r.flood_connections})" for r in runs],
    )


def cpu_per_check_us(run: Run) -> float:
    if run.periods is None or not run.periods.checks_per_s:
        return float("nan")
    return run.cpu_pct / 100 / run.periods.checks_per_s * 1e6


def control_figures(big: Run, control: Run, what: str) -> dict[str, object]:
    """The control run (--alert-control: no mail; --scrape-control: no scrapes) and big/control
    ratios; `what` names the difference: "alerts" or "scrape"."""

    def r(x: float, digits: int = 3) -> float | None:
        return None if x != x else round(x, digits)

    k = f"n{control.n}_" + ("nomail" if what == "alerts" else "noscrape")
    cps = control.periods.checks_per_s if control.periods else float("nan")
    big_cps = big.periods.checks_per_s if big.periods else float("nan")
    p99 = control.lateness_ms.get("p99", float("nan"))
    return {
        f"{k}_checks_per_s": r(cps, 0),
        f"{k}_period_s_median": r(control.periods.median_s if control.periods else float("nan")),
        f"{k}_p99_late_ms": r(p99),
        f"{k}_slots_skipped": control.slots_skipped,
        f"{k}_false_downs": control.false_downs,
        f"{k}_cpu_pct": r(control.cpu_pct, 1),
        f"{k}_cpu_us_per_check": r(cpu_per_check_us(control), 0),
        f"{what}_checks_per_s_ratio": r(big_cps / cps if cps else float("nan")),
        f"{what}_p99_late_ratio": r(
            big.lateness_ms.get("p99", float("nan")) / p99 if p99 else float("nan")
        ),
        f"{what}_cpu_us_per_check_ratio": r(cpu_per_check_us(big) / cpu_per_check_us(control)),
    }


def print_table(runs: list[Run]) -> None:
    table = list(rows(runs))
    width = max(len(label) for label, _ in table)
    cols = [max(len(r.name), *(len(vals[i]) for _, vals in table)) for i, r in enumerate(runs)]
    print(" " * width + "  " + "  ".join(r.name.rjust(c) for r, c in zip(runs, cols, strict=True)))
    for label, vals in table:
        cells = "  ".join(v.rjust(c) for v, c in zip(vals, cols, strict=True))
        print(f"{label.ljust(width)}  {cells}")


def figures(big: Run, small: Run | None, ld: Run | None) -> dict[str, object]:
    def r(x: float, digits: int = 3) -> float | None:
        return None if x != x else round(x, digits)

    k = f"n{big.n}"
    out: dict[str, object] = {
        f"{k}_checks_per_s": r(big.periods.checks_per_s if big.periods else float("nan"), 0),
        f"{k}_checks_per_s_status": r(big.status_checks_per_s, 0),
        f"{k}_period_s_median": r(big.periods.median_s if big.periods else float("nan")),
        f"{k}_period_s_p95": r(big.periods.p95_s if big.periods else float("nan")),
        f"{k}_p50_late_ms": r(big.lateness_ms.get("p50", float("nan"))),
        f"{k}_p99_late_ms": r(big.lateness_ms.get("p99", float("nan"))),
        f"{k}_worst_p99_late_ms": r(big.worst_p99_late_ms),
        f"{k}_slots_skipped": big.slots_skipped,
        f"{k}_false_downs": big.false_downs,
        f"{k}_cpu_pct": r(big.cpu_pct, 1),
        f"{k}_cpu_us_per_check": r(cpu_per_check_us(big), 0),
        f"{k}_nginx_cpu_pct": r(big.nginx_cpu_pct, 1),
        f"{k}_status_max_age_s": r(big.status_max_age_s, 1),
        f"{k}_rss_mib": r(big.rss_mib, 1),
        f"{k}_peak_rss_mib": r(big.peak_rss_mib, 1),
        f"{k}_start_return_s": r(big.start_returned_s),
        f"{k}_startup_s": r(big.programmed_s),
        f"{k}_detect_s": r(big.detect_s),
        f"{k}_recover_s": r(big.recover_s),
        f"{k}_stopped_detect_s": r(big.stopped_detect_s),
        f"{k}_restarted_recover_s": r(big.restarted_recover_s),
        f"{k}_stop_s": r(big.stop_gone_s),
        f"{k}_load_avg": r(big.load_at_window, 2),
        f"{k}_flood_servers": big.flood_servers,
        f"{k}_flood_connections": big.flood_connections,
    }
    if big.scrapes or big.scrape_errors:
        out |= {
            f"{k}_scrapes": big.scrapes,
            f"{k}_scrape_errors": big.scrape_errors,
            f"{k}_scrape_first_max_ms": r(big.scrape_ms.get("first", float("nan")), 1),
            f"{k}_scrape_p50_ms": r(big.scrape_ms.get("p50", float("nan")), 1),
            f"{k}_scrape_p99_ms": r(big.scrape_ms.get("p99", float("nan")), 1),
            f"{k}_scrape_max_ms": r(big.scrape_ms.get("max", float("nan")), 1),
            f"{k}_scrapes_built_ahead": big.scrapes_ahead,
            f"{k}_scrape_build_p50_ms": r(big.scrape_build_ms.get("p50", float("nan")), 1),
            f"{k}_scrape_build_max_ms": r(big.scrape_build_ms.get("max", float("nan")), 1),
            f"{k}_scrape_bytes": big.scrape_bytes,
            f"{k}_scrape_wire_bytes": big.scrape_wire_bytes,
        }
    if big.alerts_flapping:
        out |= {
            "alerts_flapping_reals": big.alerts_flapping,
            "alerts_flap_toggles": big.alerts_toggles,
            "alerts_span_s": r(big.alerts_span_s, 1),
            "alerts_mails": big.alerts_mails,
            "alerts_mails_per_min": r(60 * big.alerts_mails / big.alerts_span_s, 1),
            "alerts_changes_logged": big.alerts_changes_logged,
            "alerts_changes_mailed": big.alerts_changes_mailed,
            "alerts_max_changes_per_mail": big.alerts_max_changes,
            "alerts_mails_total": big.alerts_mails_total,
        }
    for run, who in ((small, "lvsmon"), (ld, "ldirectord")):
        if run is None:
            continue
        k = f"n{run.n}"
        out |= {
            f"{k}_period_s_{who}": r(run.periods.median_s if run.periods else float("nan")),
            f"{k}_period_p95_s_{who}": r(run.periods.p95_s if run.periods else float("nan")),
            f"{k}_startup_s_{who}": r(run.programmed_s),
            f"{k}_startup_ipvsadm_calls_{who}": run.startup_ipvsadm_calls,
            f"{k}_stop_s_{who}": r(run.stop_gone_s),
            f"{k}_rss_mib_{who}": r(run.rss_mib, 1),
            f"{k}_peak_rss_mib_{who}": r(run.peak_rss_mib, 1),
            f"{k}_cpu_pct_{who}": r(run.cpu_pct, 1),
            f"{k}_cpu_us_per_check_{who}": r(cpu_per_check_us(run), 0),
        }
    if small and ld and small.periods and ld.periods:
        out["period_ratio"] = r(ld.periods.median_s / small.periods.median_s, 2)
        out["startup_ratio"] = r(ld.programmed_s / small.programmed_s, 1)
        out["stop_ratio"] = r(ld.stop_gone_s / small.stop_gone_s, 1)
    return out


def baseline_figures(big: Run, base: Run, rev: str) -> dict[str, object]:
    def r(x: float, digits: int = 3) -> float | None:
        return None if x != x else round(x, digits)

    k = f"n{base.n}"
    ours, theirs = cpu_per_check_us(big), cpu_per_check_us(base)
    return {
        "baseline_rev": rev,
        f"{k}_checks_per_s_baseline": r(
            base.periods.checks_per_s if base.periods else float("nan"), 0
        ),
        f"{k}_p99_late_ms_baseline": r(base.lateness_ms.get("p99", float("nan"))),
        f"{k}_false_downs_baseline": base.false_downs,
        f"{k}_cpu_pct_baseline": r(base.cpu_pct, 1),
        f"{k}_cpu_us_per_check_baseline": r(theirs, 0),
        "cpu_per_check_ratio_vs_baseline": r(ours / theirs, 3) if theirs == theirs else None,
    }


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 x 100, anchor 10 x 10")
    ap.add_argument("--skip-ldirectord", action="store_true")
    ap.add_argument("--virtuals", type=int, help="big run: virtual services (default 100)")
    ap.add_argument("--reals", type=int, help="big run: reals per virtual (default 100)")
    ap.add_argument("--anchor-virtuals", type=int, help="anchor: virtual services (default 10)")
    ap.add_argument("--anchor-reals", type=int, help="anchor: reals per virtual (default 100)")
    ap.add_argument("--window", type=float, help="lvsmon steady window, s (default 30)")
    ap.add_argument("--ldirectord-window", type=float, help="default 60 s")
    ap.add_argument("--port", type=int, default=0, help="real servers' port (default: a free one)")
    ap.add_argument(
        "--anchor-servers", choices=("python", "nginx"), default="python",
        help="real servers of the N=1000 runs: python (bench/many_http.py, as the anchor was "
        "first measured; default) or nginx (the big run's)",
    )  # fmt: skip
    ap.add_argument(
        "--anchor-latency-ms", type=float, default=5.0,
        help="python anchor servers answer this long after a request (default 5)",
    )  # fmt: skip
    ap.add_argument(
        "--flood", type=int, default=10,
        help="big run: this many hostile reals streaming 100 Continue heads (default 10)",
    )  # fmt: skip
    ap.add_argument(
        "--baseline-rev", metavar="REV",
        help="also run the big run with lvsmon at git revision REV (a worktree), same servers, "
        "same flooders, right after this one; ratios in the JSON",
    )  # fmt: skip
    ap.add_argument(
        "--alerts", action="store_true",
        help="big run: e-mail alerts to an SMTP sink on 127.0.0.1 while --alert-flap reals flap",
    )  # fmt: skip
    ap.add_argument(
        "--alert-control", action="store_true",
        help="with --alerts: first the same flapping without emailalert (the control run), so "
        "the cost of the mails is a ratio measured in this run",
    )  # fmt: skip
    ap.add_argument("--alert-flap", type=int, default=1000, help="reals flapping (default 1000)")
    ap.add_argument(
        "--alert-flap-period", type=float, default=3.0,
        help="they turn down, then up, every this many seconds (default 3)",
    )  # fmt: skip
    ap.add_argument("--alert-window", type=float, help="emailalertwindow (default lvsmon's, 5)")
    ap.add_argument("--alert-rate", type=int, help="emailalertrate (default lvsmon's, 60)")
    ap.add_argument(
        "--interval",
        type=int,
        default=1,
        help="big run: checkinterval, s (default 1: 10,000 checks/s at 10,000 reals)",
    )
    ap.add_argument(
        "--scrape", action="store_true",
        help="big run: GET /metrics over the control socket every second of the steady window; "
        "scrape time p50/p99/max and body size",
    )  # fmt: skip
    ap.add_argument(
        "--scrape-control", action="store_true",
        help="with --scrape: first the same big run without scrapes (the control run), so the "
        "cost of scraping is a ratio measured in this run",
    )  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs) for study")
    args = ap.parse_args()
    quick = args.quick
    big_v = args.virtuals or (10 if quick else 100)
    big_r = args.reals or 100
    small_v = args.anchor_virtuals or 10
    small_r = args.anchor_reals or (10 if quick else 100)
    window = args.window or (10.0 if quick else 30.0)
    ld_window = args.ldirectord_window or (15.0 if quick else 60.0)
    if os.geteuid() != 0:
        print("bench/scale.py: run as root (nginx on many addresses, unshare, mount)")
        return 2
    want_ld = not args.skip_ldirectord
    if (
        want_ld
        and shutil.which("ldirectord") is None
        and not os.path.exists("/usr/sbin/ldirectord")
    ):
        print("bench/scale.py: ldirectord is not installed (apt-get install -y ldirectord);"
              " use --skip-ldirectord")  # fmt: skip
        return 2

    cleanup, workdir = start_run("lvsmon-scale-", args.keep)
    try:
        servers = RealServers(workdir, args.port or free_port(), cleanup)
        log(f"nginx on *:{servers.port}, work folder {workdir}")
        alerts = None
        if args.alerts:
            sink = AlertSink(cleanup)
            log(f"smtp sink on 127.0.0.1:{sink.port}")
            alerts = Alerts(
                sink, args.alert_flap, args.alert_flap_period, args.alert_window, args.alert_rate
            )
        control = None
        if alerts and args.alert_control:
            control = run_lvsmon(
                "lvsmon-nomail", workdir, servers, big_v, big_r, window, cleanup, None, True,
                args.flood, alerts=replace(alerts, mail=False),
                interval=args.interval, scrape=args.scrape,
            )  # fmt: skip
        elif args.scrape and args.scrape_control:
            control = run_lvsmon(
                "lvsmon-noscrape", workdir, servers, big_v, big_r, window, cleanup, None, True,
                args.flood, alerts=alerts, interval=args.interval, scrape=False,
            )  # fmt: skip
        big = run_lvsmon(
            "lvsmon", workdir, servers, big_v, big_r, window, cleanup, None, True, args.flood,
            alerts=alerts, interval=args.interval, scrape=args.scrape,
        )  # fmt: skip
        base = None
        if args.baseline_rev:
            tree = Baseline(args.baseline_rev, workdir, cleanup)
            base = run_lvsmon(
                f"lvsmon@{args.baseline_rev}", workdir, servers, big_v, big_r, window, cleanup,
                None, True, args.flood, tree.path, interval=args.interval,
            )  # fmt: skip
        anchor = servers
        if args.anchor_servers == "python":
            n_anchor = small_v * small_r
            anchor = PythonServers(workdir, free_port(), n_anchor, args.anchor_latency_ms, cleanup)
            log(f"{anchor.name} on {n_anchor} addresses, port {anchor.port},"
                f" answering after {args.anchor_latency_ms:g} ms")  # fmt: skip
        small = run_lvsmon(
            "lvsmon-ipvsadm", workdir, anchor, small_v, small_r, window, cleanup,
            FakeIpvsadm(workdir, "fake-lvsmon"), False,
        )  # fmt: skip
        ld = run_ldirectord(workdir, anchor, small_v, small_r, ld_window, cleanup) if want_ld \
            else None  # fmt: skip
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        cleanup.run()
        return 130
    finally:
        cleanup.run()
    runs = ([control] if control else []) + [big] + ([base] if base else []) + [small]
    runs += [ld] if ld else []
    print_table(runs)
    result = figures(big, small, ld)
    if base is not None:
        result |= baseline_figures(big, base, args.baseline_rev)
    if control is not None:
        result |= control_figures(
            big, control, "alerts" if alerts and args.alert_control else "scrape"
        )
    result["anchor_servers"] = args.anchor_servers
    result["big_checkinterval_s"] = args.interval
    if args.anchor_servers == "python":
        result["anchor_server_latency_ms"] = args.anchor_latency_ms
    for key in ("period_ratio", "startup_ratio", "stop_ratio"):
        if key in result:
            print(f"{key} (ldirectord / lvsmon): {result[key]}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
