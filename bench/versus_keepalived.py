"""keepalived 2.2.7 (Debian) and lvsmon in one run against the same nginx reals (issue 22).

Host only, loopback only, as root:   .venv/bin/python bench/versus_keepalived.py [--quick]
                                      [--only WORK,...: http,tcp,http-small,https,https-2000,
                                       shape-tcp,shape-http]

* Real servers: bench/scale.py's nginx (one Debian nginx, private prefix, wildcard address, every
  127.77.x.y answered, `$msec $server_addr $status` logged per request), plus on ports of their
  own an https server (a self-signed certificate made for the run) and a stream server for the
  TCP connect checks (nginx's stream module logs each session the same way). Every check either
  daemon makes is counted at the server: checks per second and each real's period.
* keepalived: `keepalived -C` (checker only) with a generated keepalived.conf (virtual_server per
  virtual, lb_kind NAT, alpha, delay_loop = the interval, HTTP_GET / SSL_GET `url { path /
  status_code 200 }` or TCP_CHECK, connect_timeout 3, retry 0). The host has no IPVS: the checker
  reaches IPVS only through libnl-genl-3, and bench/fake_ipvs_nl.c (compiled here with cc into
  the work folder, LD_PRELOADed) answers genl_ctrl_resolve("IPVS") with a made-up family,
  swallows every command sent on that socket and acknowledges it, logging one line per command.
  Start-up ends with the NEW_DEST that brings the last real into the table (alpha: a real is
  added after its first good check); a DEL_DEST after that is a healthy real declared down.
* lvsmon: `--backend memory` with the same layout as an ldirectord.cf (quiescent=no,
  checktimeout=3, http/https negotiate with request="/", or checktype=connect). Start-up ends
  when its log has added every real; a "Real server ... is down:" line is a false down.

One daemon at a time (keepalived first, then lvsmon) on the same nginx, so that neither takes
the other's cores. Per daemon and work: start-up, a steady window (default 30 s; CPU = utime +
stime of all the daemon's processes, keepalived's parent and checker child), checks in the
window from nginx's log, CPU per check, period p50/p99/max and p99 over the interval, reals
checked fewer than twice, false downs, VmRSS and VmHWM summed over the processes. CPU per check
is also split into the process's own (user) and the kernel's (system: on loopback the TCP work of
both ends of each connection). Each daemon starts once the host's TIME_WAIT sockets (60 s each,
the other daemon's checks') are below 2,000, or after `--time-wait-max` s (default 65): a full
TIME_WAIT table made the second daemon's connects cost more kernel time.
`--hog N` runs N busy-loop processes (nice 0, pinned nowhere) through each daemon's start-up and
window, the same for both: the saturated host of a shared machine, reproducible side by side.
Prerequisites: apt-get install -y --no-install-recommends $(sed -e 's/#.*//'
bench/debian-packages.txt) (keepalived, nginx, libnginx-mod-stream, openssl, gcc).
The table first, then the load; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from hostile import host_cpu
from procs import (
    Cleanup,
    alive,
    children_of,
    cpu_seconds,
    free_port,
    kill_pid,
    log,
    lvsmon_command,
    memory_mib,
    quantile,
    read_pid,
    start_run,
    system_seconds,
    wait_gone,
)
from scale import (
    NGINX_CONF,
    Baseline,
    LogTail,
    RealServers,
    periods,
    read_status,
    real_address,
    wait_weight_lines,
)

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_IPVS_SRC = os.path.join(HERE, "fake_ipvs_nl.c")
KEEPALIVED = "/usr/sbin/keepalived"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
IPVS_CMD_NEW_DEST, IPVS_CMD_DEL_DEST = 5, 7  # linux/ip_vs.h
CONNECT_TIMEOUT_S = 3
NAN = float("nan")
DAEMONS = ("keepalived", "lvsmon")  # the order of the runs of a work, unless --lvsmon-first


# ---------------------------------------------------------------- the works


@dataclass(frozen=True)
class Work:
    name: str  # for --only
    kind: str  # http, https or tcp
    virtuals: int
    reals: int
    interval: int

    @property
    def key(self) -> str:
        return f"n{self.reals}_{self.kind}"

    @property
    def label(self) -> str:
        virtuals = f"{self.virtuals:,} virtual{'s' if self.virtuals > 1 else ''}"
        return f"{self.kind} {self.reals:,} reals ({virtuals}) every {self.interval} s"

    def layout(self) -> Iterator[tuple[str, list[str]]]:
        """(virtual address, its reals' addresses): the reals spread evenly (16 or 17 each for
        37,298 over 2,284), every real an address of its own."""
        base, extra = divmod(self.reals, self.virtuals)
        first = 0
        for v in range(self.virtuals):
            count = base + (1 if v < extra else 0)
            yield (
                f"127.100.{v // 250}.{v % 250 + 1}",
                [real_address(i) for i in range(first, first + count)],
            )
            first += count


FULL = [
    Work("http", "http", 100, 10_000, 1),
    Work("tcp", "tcp", 100, 10_000, 1),
    Work("http-small", "http", 5, 500, 1),
    Work("https", "https", 2, 200, 1),
    # issue 22 goal 3's second size; every 5 s: 400 handshakes a second, which two cores
    # serve with room (at 1 s, 2,000 a second would saturate them for either daemon and nginx)
    Work("https-2000", "https", 20, 2_000, 5),
    # keepalived #2318: 2,284 virtual servers, 37,298 real servers
    Work("shape-tcp", "tcp", 2_284, 37_298, 4),
    Work("shape-http", "http", 2_284, 37_298, 4),
]
QUICK_SIZES = {  # --quick: (virtuals, reals) of each work, the rest as in FULL
    "http": (3, 300),
    "tcp": (3, 300),
    "http-small": (1, 100),
    "https": (1, 50),
    "https-2000": (2, 200),
    "shape-tcp": (60, 980),
    "shape-http": (60, 980),
}
QUICK = [replace(w, virtuals=QUICK_SIZES[w.name][0], reals=QUICK_SIZES[w.name][1]) for w in FULL]


# ---------------------------------------------------------------- the real servers

TLS_SERVER = """
    server {{
        listen {port} ssl backlog=8192;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        if ($remote_addr !~ "^127\\.") {{ return 444; }}
        location / {{ return 200 "still alive\\n"; }}
    }}
}}
"""

STREAM = """
stream {{
    log_format probe '$msec $server_addr $status';
    access_log {dir}/access.log probe buffer=256k flush=1s;
    server {{
        listen {port} backlog=8192;
        allow 127.0.0.0/8;
        deny all;
        return "still alive\\n";
    }}
}}
"""


def open_http_block(folder: str, port: int) -> str:
    """A self-signed certificate (key.pem, cert.pem in `folder`) and scale.py's nginx config
    with its http block left open, for https servers to be added to it (and a closing brace)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=lvsmon-bench", "-keyout", os.path.join(folder, "key.pem"),
         "-out", os.path.join(folder, "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    http = NGINX_CONF.format(dir=folder, port=port, workers=2).rstrip()
    assert http.endswith("}"), "the http block closes scale.py's nginx config"
    return http[:-1]


class Reals(RealServers):
    """bench/scale.py's nginx (http on `port`), with https on `tls_port` and a TCP stream server
    on `tcp_port`; all of them log to the one access log."""

    def __init__(self, workdir: str, cleanup: Cleanup) -> None:
        self.tls_port, self.tcp_port = free_port(), free_port()
        super().__init__(workdir, free_port(), cleanup)

    def port_for(self, kind: str) -> int:
        return {"http": self.port, "https": self.tls_port, "tcp": self.tcp_port}[kind]

    def _launch(self) -> subprocess.Popen[bytes]:
        http = open_http_block(self.dir, self.port)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(f"load_module {STREAM_MODULE};\n")
            f.write(http + TLS_SERVER.format(dir=self.dir, port=self.tls_port))
            f.write(STREAM.format(dir=self.dir, port=self.tcp_port))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return subprocess.Popen(
            [nginx, "-p", self.dir + "/", "-c", conf, "-e", os.path.join(self.dir, "error.log")],
            stdin=subprocess.DEVNULL,
        )


# ---------------------------------------------------------------- the daemons


class Daemon:
    """One daemon's run on one work: start, its witness of start-up, its processes, stop."""

    name = ""

    def __init__(self, workdir: str, work: Work, servers: Reals, cleanup: Cleanup) -> None:
        self.work, self.servers = work, servers
        self.dir = os.path.join(workdir, f"{self.name}-{work.name}")
        os.makedirs(self.dir)
        self.port = servers.port_for(work.kind)
        cleanup.add(f"{self.name} {work.name}", self.kill)

    def start(self) -> None:
        raise NotImplementedError

    def wait_up(self, timeout: float) -> float | None:
        """When the last real was put in the table (time.time()), None on timeout."""
        raise NotImplementedError

    def mark(self) -> int:
        """A mark in the daemon's witness, for false_downs."""
        raise NotImplementedError

    def false_downs(self, mark: int) -> int:
        raise NotImplementedError

    def main_pid(self) -> int | None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def sample(self) -> dict[str, float]:
        """The daemon's own figures now (lvsmon's status file), read every second of the
        window: {} when it has none."""
        return {}

    def pids(self) -> list[int]:
        pid = self.main_pid()
        return [] if pid is None else [pid, *children_of(pid)]

    def cpu(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):  # gone meanwhile
                out[pid] = cpu_seconds(pid)[0]
        return out

    def system_cpu(self) -> dict[int, float]:
        """stime alone per process (s): the kernel's share of `cpu`, most of it the TCP work
        of the checks' connections (on loopback, the server side's too)."""
        out: dict[int, float] = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                out[pid] = system_seconds(pid)
        return out

    def memory(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) summed over the daemon's processes, MiB."""
        rss = hwm = 0.0
        for pid in self.pids():
            try:
                mem = memory_mib(pid)
            except OSError:
                continue
            rss, hwm = rss + mem.get("VmRSS", 0.0), hwm + mem.get("VmHWM", 0.0)
        return rss, hwm


class Keepalived(Daemon):
    name = "keepalived"

    def __init__(self, workdir: str, work: Work, servers: Reals, cleanup: Cleanup, lib: str):
        super().__init__(workdir, work, servers, cleanup)
        self.lib = lib
        self.conf = os.path.join(self.dir, "keepalived.conf")
        self.ipvs_log = os.path.join(self.dir, "ipvs.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()
        self.tail = LogTail(self.ipvs_log)
        cleanup.add(f"keepalived {work.name} ipvs log", self.tail.close)

    def write_config(self) -> None:
        check = {
            "http": "HTTP_GET", "https": "SSL_GET", "tcp": "TCP_CHECK"
        }[self.work.kind]  # fmt: skip
        url = "url {\n        path /\n        status_code 200\n      }\n      " if (
            self.work.kind != "tcp"
        ) else ""  # fmt: skip
        real = (
            "  real_server {addr} {port} {{\n    weight 1\n    {check} {{\n      {url}"
            "connect_timeout {timeout}\n      retry 0\n    }}\n  }}\n"
        )
        with open(self.conf, "w", encoding="ascii") as f:
            f.write("global_defs {\n  router_id lvsmon_bench\n}\n")
            for vip, reals in self.work.layout():
                f.write(
                    f"virtual_server {vip} 80 {{\n  delay_loop {self.work.interval}\n"
                    "  lb_algo wlc\n  lb_kind NAT\n  protocol TCP\n  alpha\n"
                )
                for addr in reals:
                    f.write(real.format(addr=addr, port=self.port, check=check, url=url,
                                        timeout=CONNECT_TIMEOUT_S))  # fmt: skip
                f.write("}\n")

    def start(self) -> None:
        d = self.dir
        argv = [KEEPALIVED, "-C", "-n", "-l", "-D", "-G", "-B", "-f", self.conf,
                "-p", f"{d}/keepalived.pid", "-c", f"{d}/checkers.pid", "-r", f"{d}/vrrp.pid",
                "-b", f"{d}/bfd.pid"]  # fmt: skip
        env = {**os.environ, "LD_PRELOAD": self.lib, "FAKE_IPVS_LOG": self.ipvs_log}
        with open(os.path.join(d, "keepalived.log"), "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )

    def wait_up(self, timeout: float) -> float | None:
        inside: set[str] = set()  # "virtual>real" pairs in the fake table
        deadline, seen = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            lines = self.tail.lines[seen:]
            seen += len(lines)
            for _, line in lines:
                parts = line.split()  # time, genl cmd, virtual, real, weight
                if len(parts) != 5 or parts[1] not in ("5", "7"):
                    continue
                if int(parts[1]) == IPVS_CMD_NEW_DEST:
                    inside.add(parts[2] + ">" + parts[3])
                else:
                    inside.discard(parts[2] + ">" + parts[3])
                if len(inside) >= self.work.reals:
                    return float(parts[0])
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"keepalived exited ({self.proc.returncode}); see {self.dir}")
            time.sleep(0.05)
        log(f"keepalived: {len(inside)} of {self.work.reals} reals in after {timeout:.0f} s")
        return None

    def mark(self) -> int:
        return len(self.tail.lines)

    def false_downs(self, mark: int) -> int:
        return sum(
            1 for _, line in self.tail.lines[mark:]
            if line.split()[1:2] == [str(IPVS_CMD_DEL_DEST)]
        )  # fmt: skip

    def main_pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            log("keepalived: still running 120 s after TERM; killed")
            self.kill()

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in reversed(self.pids()):
            kill_pid(pid, "keepalived", grace=2)
        self.proc.wait()


# lvsmon's status file counters the window reports (slots_deferred: once status shows it)
WINDOW_COUNTS = ("slots_skipped", "slots_deferred", "checks_unknown")


class Lvsmon(Daemon):
    name = "lvsmon"

    def __init__(
        self, workdir: str, work: Work, servers: Reals, cleanup: Cleanup, src: str | None
    ) -> None:
        super().__init__(workdir, work, servers, cleanup)
        self.cfg = os.path.join(self.dir, "bench.cf")
        self.logfile = os.path.join(self.dir, "lvsmon.log")
        self.pidfile = os.path.join(self.dir, "l.pid")
        self.env = {**os.environ, "LVSMON_RESOLVER": "files"}
        if src is not None:  # --rev: lvsmon from that worktree
            self.env["PYTHONPATH"] = src
        self.cmd = [*lvsmon_command(src), "--backend", "memory", "--pid-file", self.pidfile]
        self.cmd.append(self.cfg)
        self.pid: int | None = None
        self.write_config()
        self.tail = LogTail(self.logfile)
        cleanup.add(f"lvsmon {work.name} log tail", self.tail.close)

    def write_config(self) -> None:
        lines = [
            f"checktimeout={CONNECT_TIMEOUT_S}",
            f"checkinterval={self.work.interval}",
            "quiescent=no",
            "autoreload=no",
            f'logfile="{self.logfile}"',
            "",
        ]
        if self.work.kind == "tcp":
            check = ["\tchecktype=connect"]
        else:
            check = [f"\tservice={self.work.kind}", "\tchecktype=negotiate", '\trequest="/"']
        for vip, reals in self.work.layout():
            lines.append(f"virtual={vip}:80")
            lines += [f"\treal={addr}:{self.port} masq" for addr in reals]
            lines += ["\tscheduler=wlc", "\tprotocol=tcp", *check, ""]
        with open(self.cfg, "w", encoding="ascii") as f:
            f.write("\n".join(lines))

    def start(self) -> None:
        proc = subprocess.run([*self.cmd, "start"], env=self.env, timeout=900, check=False)
        self.pid = read_pid(self.pidfile)
        if proc.returncode != 0 or self.pid is None:
            raise RuntimeError(f"lvsmon start failed ({proc.returncode}); see {self.logfile}")

    def wait_up(self, timeout: float) -> float | None:
        wanted = {f"{addr}:{self.port}" for _, reals in self.work.layout() for addr in reals}
        return wait_weight_lines(self.tail, wanted, timeout)

    def mark(self) -> int:
        return len(self.tail.lines)

    def false_downs(self, mark: int) -> int:
        return sum(1 for _, line in self.tail.lines[mark:] if ") is down: " in line)

    def main_pid(self) -> int | None:
        return self.pid if self.pid is not None and alive(self.pid) else None

    def sample(self) -> dict[str, float]:
        read = read_status(self.pidfile.removesuffix(".pid") + ".status.json")
        if read is None:
            return {}
        stats = read[1]
        late = stats.get("lateness_ms")
        out: dict[str, float] = {
            key: float(str(stats[key]))
            for key in (*WINDOW_COUNTS, "checks_failed", "loop_lag_ms")
            if key in stats
        }
        if isinstance(late, dict) and "p99" in late:
            out["late_p99_ms"] = float(late["p99"])
        return out

    def stop(self) -> None:
        if self.main_pid() is None:
            return
        subprocess.run([*self.cmd, "stop"], env=self.env, timeout=300, check=False)
        if self.pid is not None and wait_gone(self.pid, 60) is None:
            log("lvsmon: still running 60 s after stop; killed")
            self.kill()

    def kill(self) -> None:
        kill_pid(self.main_pid(), "lvsmon")


# ---------------------------------------------------------------- the load


class Hogs:
    """`count` busy-loop processes (nice 0, pinned nowhere), started with `start` and ended by
    `stop`: each daemon's start-up and window run on a host they keep saturated."""

    CODE = "while True: pass"  # niced as the bench is (0)

    def __init__(self, count: int, cleanup: Cleanup) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        cleanup.add("hogs", self.stop)

    def start(self) -> None:
        for _ in range(self.count):
            self.procs.append(
                subprocess.Popen([sys.executable, "-c", self.CODE], stdin=subprocess.DEVNULL)
            )

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []


# ---------------------------------------------------------------- one measurement


@dataclass
class Result:
    startup_s: float = NAN
    startup_cpu_s: float = NAN
    window_s: float = NAN
    checks: int = 0
    checks_per_s: float = NAN
    cpu_s: float = NAN
    sys_s: float = NAN  # of cpu_s, in the kernel
    time_wait: int = -1  # TCP sockets in TIME_WAIT on the host when the daemon started
    p50_period_s: float = NAN
    p99_period_s: float = NAN
    max_period_s: float = NAN
    unchecked: int = -1
    false_downs: int = -1
    rss_mib: float = NAN
    hwm_mib: float = NAN
    processes: int = 0
    # lvsmon's status file over the window: the worst p99 start lateness and loop lag it showed,
    # slots skipped and checks unknown (a timeout forgiven as the daemon's own lag) in the window
    late_p99_ms: float = NAN
    loop_lag_ms: float = NAN
    slots_skipped: float = NAN
    slots_deferred: float = NAN  # started late by the runner's admission window (when shown)
    checks_unknown: float = NAN
    nginx_cpu_pct: float = NAN  # the real servers, during the window
    host_busy_pct: float = NAN  # all CPUs of the host (100 % = every core busy)


# Each check leaves a connection in TIME_WAIT for 60 s (at the side that closed first), up to the
# kernel's tcp_max_tw_buckets (131,072 here). A daemon started right after the other's 10,000
# checks a second met a full table, and its connects cost more kernel time (the port search of
# __inet_hash_connect): 40 -> 47 µs of system time per HTTP check, measured. So each daemon
# starts once the other's are gone, or after TIME_WAIT_MAX_S.
TIME_WAIT_QUIET = 2_000
TIME_WAIT_MAX_S = 65.0


def time_wait() -> int:
    """TCP sockets in TIME_WAIT on the host (/proc/net/sockstat's `tw`)."""
    with open("/proc/net/sockstat", encoding="ascii") as f:
        for line in f:
            if line.startswith("TCP:"):
                words = line.split()
                return int(words[words.index("tw") + 1])
    return 0


def drain_time_wait(name: str, most_s: float) -> int:
    """Wait until the host's TIME_WAIT sockets are few (at most `most_s`); their count."""
    deadline = time.monotonic() + most_s
    count = time_wait()
    if count > TIME_WAIT_QUIET and most_s > 0:
        log(f"{name}: waiting for {count:,} TIME_WAIT sockets to expire")
    while count > TIME_WAIT_QUIET and time.monotonic() < deadline:
        time.sleep(1.0)
        count = time_wait()
    return count


def measure(
    daemon: Daemon,
    servers: Reals,
    window: float,
    timeout: float,
    settle: float,
    hogs: Hogs,
    time_wait_s: float = TIME_WAIT_MAX_S,
) -> Result:
    work, res = daemon.work, Result()
    res.time_wait = drain_time_wait(daemon.name, time_wait_s)
    log(f"{daemon.name}: {work.label}: start" + (f" ({hogs.count} hogs)" if hogs.count else ""))
    hogs.start()
    t0 = time.time()
    daemon.start()
    done = daemon.wait_up(timeout)
    if done is not None:
        res.startup_s = done - t0
        log(f"{daemon.name}: every real up after {res.startup_s:.1f} s")
    res.startup_cpu_s = sum(daemon.cpu().values())
    time.sleep(settle)
    servers.requests(0, 0, set())  # skip what was logged before the window
    mark = daemon.mark()
    sys0 = daemon.system_cpu()
    cpu0, nginx0, host0, w0 = daemon.cpu(), servers.cpu_seconds(), host_cpu(), time.time()
    samples = [daemon.sample()]
    end = w0 + window
    while time.time() < end:
        if daemon.main_pid() is None:
            raise RuntimeError(f"{daemon.name} died during the window; see {daemon.dir}")
        time.sleep(min(1.0, max(0.0, end - time.time())))
        samples.append(daemon.sample())
    cpu1, nginx1, host1, w1 = daemon.cpu(), servers.cpu_seconds(), host_cpu(), time.time()
    sys1 = daemon.system_cpu()
    hogs.stop()
    res.nginx_cpu_pct = 100 * (nginx1 - nginx0) / (w1 - w0)
    res.host_busy_pct = 100 * (host1[0] - host0[0]) / max(host1[1] - host0[1], 1.0)
    samples = [x for x in samples if x]
    if samples:
        res.late_p99_ms = max(x.get("late_p99_ms", NAN) for x in samples)
        res.loop_lag_ms = max(x.get("loop_lag_ms", NAN) for x in samples)
        for key in WINDOW_COUNTS:
            setattr(res, key, samples[-1].get(key, NAN) - samples[0].get(key, NAN))
    res.rss_mib, res.hwm_mib = daemon.memory()
    res.processes = len(cpu1)
    res.false_downs = daemon.false_downs(mark)
    log(f"{daemon.name}: stop")
    daemon.stop()
    res.window_s = w1 - w0
    res.cpu_s = sum(cpu1[pid] - cpu0[pid] for pid in cpu1 if pid in cpu0)
    res.sys_s = sum(sys1[pid] - sys0[pid] for pid in sys1 if pid in sys0)
    time.sleep(max(0.0, w1 + 2.5 - time.time()))  # nginx flushes its log every second
    wanted = {addr for _, reals in work.layout() for addr in reals}
    times = servers.requests(w0, w1, wanted)
    p = periods(times, res.window_s)  # sorts each real's times
    gaps = [b - a for seen in times.values() for a, b in itertools.pairwise(seen)]
    res.checks = sum(len(seen) for seen in times.values())
    res.checks_per_s, res.unchecked = p.checks_per_s, p.unchecked
    res.p50_period_s, res.max_period_s = p.median_s, p.max_s
    res.p99_period_s = quantile(gaps, 0.99)
    return res


# ---------------------------------------------------------------- report

# (JSON name with its unit, table label, digits, how to read it from a result and its work)
FIGURES: list[tuple[str, str, int, Callable[[Result, Work], float]]] = [
    ("startup_s", "start-up until every real up (s)", 1, lambda r, w: r.startup_s),
    ("startup_cpu_s", "CPU until then (s)", 2, lambda r, w: r.startup_cpu_s),
    ("checks_per_s", "checks/s at the server", 0, lambda r, w: r.checks_per_s),
    ("cpu_pct", "CPU (% of one core)", 1, lambda r, w: 100 * r.cpu_s / r.window_s),
    ("cpu_us_per_check", "CPU per check (µs)", 1,
     lambda r, w: r.cpu_s / r.checks * 1e6 if r.checks else NAN),
    ("user_us_per_check", "  of it in the process (user, µs)", 1,
     lambda r, w: (r.cpu_s - r.sys_s) / r.checks * 1e6 if r.checks else NAN),
    ("sys_us_per_check", "  of it in the kernel (system, µs)", 1,
     lambda r, w: r.sys_s / r.checks * 1e6 if r.checks else NAN),
    ("p50_period_s", "period p50 (s)", 3, lambda r, w: r.p50_period_s),
    ("p99_period_s", "period p99 (s)", 3, lambda r, w: r.p99_period_s),
    ("p99_period_over_interval", "period p99 / interval", 3,
     lambda r, w: r.p99_period_s / w.interval),
    ("max_period_s", "period max (s)", 3, lambda r, w: r.max_period_s),
    ("unchecked_reals", "reals checked < 2x in window", 0, lambda r, w: r.unchecked),
    ("false_downs", "healthy reals declared down", 0, lambda r, w: r.false_downs),
    ("rss_mib", "VmRSS, all processes (MiB)", 1, lambda r, w: r.rss_mib),
    ("hwm_mib", "VmHWM, all processes (MiB)", 1, lambda r, w: r.hwm_mib),
    ("processes", "processes", 0, lambda r, w: r.processes),
    ("nginx_cpu_pct", "nginx CPU in the window (% of one core)", 1, lambda r, w: r.nginx_cpu_pct),
    ("host_busy_pct", "host CPU busy in the window (% of all)", 1, lambda r, w: r.host_busy_pct),
    ("time_wait_at_start", "TCP sockets in TIME_WAIT at its start", 0, lambda r, w: r.time_wait),
    ("late_p99_ms", "status file: worst p99 start lateness (ms)", 0, lambda r, w: r.late_p99_ms),
    ("loop_lag_ms", "status file: worst loop lag (ms)", 0, lambda r, w: r.loop_lag_ms),
    ("slots_skipped", "status file: slots skipped in window", 0, lambda r, w: r.slots_skipped),
    ("slots_deferred", "status file: checks deferred in window", 0,
     lambda r, w: r.slots_deferred),
    ("checks_unknown", "status file: checks unknown in window", 0,
     lambda r, w: r.checks_unknown),
]  # fmt: skip
NO_RATIO = {"unchecked_reals", "false_downs", "processes", "late_p99_ms", "loop_lag_ms",
            "slots_skipped", "slots_deferred", "checks_unknown", "nginx_cpu_pct",
            "host_busy_pct", "time_wait_at_start"}  # fmt: skip


def number(x: float, digits: int) -> float | int | None:
    if x != x:
        return None
    return round(x) if digits == 0 else round(x, digits)


TABLE_WIDTH = 44


def table_header(hog: int) -> None:
    if hog:
        print(f"load: {hog} busy-loop processes through each daemon's start-up and window")
    print(f"{'work / figure':<{TABLE_WIDTH}} {'keepalived':>12} {'lvsmon':>12} {'lvsmon/ka':>10}")


def report(work: Work, ka: Result, lv: Result, figures: dict[str, object]) -> None:
    """One work's rows of the table, printed as soon as it is done; its figures added."""

    def cell(x: float | int | None, digits: int) -> str:
        return "-" if x is None else f"{x:,.{digits}f}"

    print(work.label)
    for name, label, digits, get in FIGURES:
        k, v = number(get(ka, work), digits), number(get(lv, work), digits)
        ratio = None
        if name not in NO_RATIO and k and v is not None:
            ratio = round(v / k, 3)
            figures[f"{work.key}_{name}_ratio"] = ratio
        figures[f"{work.key}_{name}_keepalived"] = k
        figures[f"{work.key}_{name}_lvsmon"] = v
        print(f"  {label:<{TABLE_WIDTH - 2}} {cell(k, digits):>12} {cell(v, digits):>12}"
              f" {cell(ratio, 2):>10}")  # fmt: skip
    sys.stdout.flush()


def proc_loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return f.read().strip()


def build_fake(workdir: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (apt-get install -y gcc): bench/fake_ipvs_nl.c")
    lib = os.path.join(workdir, "fake_ipvs_nl.so")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", lib, FAKE_IPVS_SRC, "-ldl"], check=True)
    return lib


def keepalived_version() -> str:
    proc = subprocess.run([KEEPALIVED, "-v"], capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return out[0] if out else "?"


def lvsmon_rev(src: str | None) -> str:
    """The commit lvsmon runs from: the worktree's (--rev), or the checkout's, '+' when lvsmon/
    has uncommitted changes there."""
    top = src or os.path.dirname(HERE)
    rev = subprocess.run(
        ["git", "-C", top, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", top, "status", "--porcelain", "--", "lvsmon"], capture_output=True, text=True
    ).stdout.strip()
    return (rev or "?") + ("+" if dirty and src is None else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few hundred reals a work (~2 min)")
    ap.add_argument(
        "--only", help="works to run, comma-separated: " + ",".join(w.name for w in FULL)
    )
    ap.add_argument("--window", type=float, help="steady window, s (default 30, quick 8)")
    ap.add_argument("--startup-timeout", type=float, help="s (default 300, quick 120)")
    ap.add_argument(
        "--rev", help="run lvsmon from a git worktree at REV (HEAD: away from edits in progress)"
    )
    ap.add_argument(
        "--lvsmon-first", action="store_true", help="per work, lvsmon before keepalived"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs) for study")
    ap.add_argument(
        "--hog",
        type=int,
        default=0,
        metavar="N",
        help="N busy-loop processes through each daemon's start-up and window (a saturated host)",
    )
    ap.add_argument(
        "--time-wait-max",
        type=float,
        default=TIME_WAIT_MAX_S,
        metavar="S",
        help="before each daemon, wait at most S s for the host's TIME_WAIT sockets to expire"
        f" (default {TIME_WAIT_MAX_S:g}; 0: do not wait)",
    )
    args = ap.parse_args()
    works = QUICK if args.quick else FULL
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {w.name for w in works}
        if unknown:
            ap.error(f"unknown work(s): {', '.join(sorted(unknown))}")
        works = [w for w in works if w.name in names]
    window = args.window or (8.0 if args.quick else 30.0)
    timeout = args.startup_timeout or (120.0 if args.quick else 300.0)
    if os.geteuid() != 0:
        print("bench/versus_keepalived.py: run as root (nginx on many addresses, keepalived)")
        return 2
    missing = [p for p in (KEEPALIVED, STREAM_MODULE) if not os.path.exists(p)]
    if missing:
        print(f"bench/versus_keepalived.py: missing {', '.join(missing)}; install the packages"
              " of bench/debian-packages.txt")  # fmt: skip
        return 2
    load_start = proc_loadavg()
    log(f"load at start: {load_start}")
    figures: dict[str, object] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "keepalived": keepalived_version(),
        "quick": args.quick,
        "window_s": window,
        "order": "lvsmon first" if args.lvsmon_first else "keepalived first",
        "hog": args.hog,
    }
    done: list[str] = []  # the works measured
    cleanup, workdir = start_run("lvsmon-vs-keepalived-", args.keep)
    try:
        lib = build_fake(workdir)
        src = Baseline(args.rev, workdir, cleanup).path if args.rev else None
        figures["lvsmon_rev"] = lvsmon_rev(src)
        servers = Reals(workdir, cleanup)
        hogs = Hogs(args.hog, cleanup)
        log(f"nginx: http *:{servers.port}, https *:{servers.tls_port}, tcp *:{servers.tcp_port};"
            f" work folder {workdir}")  # fmt: skip
        for work in works:
            settle = work.interval + 2.0  # the first checks are spread over an interval
            runs: dict[str, Result] = {}
            for name in ("lvsmon", "keepalived") if args.lvsmon_first else DAEMONS:
                daemon = (
                    Keepalived(workdir, work, servers, cleanup, lib) if name == "keepalived"
                    else Lvsmon(workdir, work, servers, cleanup, src)
                )  # fmt: skip
                runs[name] = measure(
                    daemon, servers, window, timeout, settle, hogs, args.time_wait_max
                )
            if not done:
                table_header(args.hog)
            done.append(work.name)
            report(work, runs["keepalived"], runs["lvsmon"], figures)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        figures["interrupted"] = True  # the works done are in the figures
    finally:
        cleanup.run()
    load_end = proc_loadavg()
    print(f"load (/proc/loadavg) at start: {load_start}; at end: {load_end}")
    figures["load_start"] = float(load_start.split()[0])
    figures["load_end"] = float(load_end.split()[0])
    figures["works"] = done
    print(json.dumps(figures))
    return 130 if figures.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
