"""Every negotiate service at 200 reals: lvsmon's CPU per check and check latency, and Debian's
ldirectord's check period for the same pool, in one run.

As root, loopback only, in a private network namespace it makes itself:

    .venv/bin/python bench/protocols.py [--services http,imap,...] [--reals 200] [--seconds 15]
                                        [--skip-ldirectord] [--keep] [--install-packages]

Per service, one real server of that protocol (bench/protocols_servers.py: realservers/
fixtures, nginx, socat) listens on the wildcard address; the 200 reals are 200 loopback addresses
127.(80+S).0.1 ... (S: the service's index) on its port, so all reach that one server. Then:

* lvsmon: bench/protocols_lvsmon.py runs the pool's checks the way the engine does (its config
  parser, plan and CheckRunner: prober for plain-TCP dialogues, run_check for the others) with
  checkinterval=1 in a child process, and reports its CPU per check and the checks' latency;
* ldirectord (Debian's, `fork=no`, same ldirectord.cf) against bench/fake_ipvsadm.py bind-mounted
  over /usr/sbin/ipvsadm in a private mount namespace, as bench/scale.py runs it; once its first
  sweep has put every real in the fake's table, a steady window.

Both daemons' check periods come from the same witness: bench/protocols_wire.py stamps every
check's first packet (TCP SYN, or datagram) to the server's port on the loopback wire. Per real,
the period is the time between two of them. ldirectord checks one real after the other and then
sleeps checkinterval, so its period is one sweep plus the interval; lvsmon's is the interval.

The private network namespace (`unshare -n`, lo brought up) makes the wildcard binds harmless and
keeps the other helpers' servers and ports apart. Every process started is stopped on exit, Ctrl-C
and SIGTERM included. The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from procs import (
    Cleanup,
    alive,
    children_of,
    cpu_seconds,
    kill_pid,
    loadavg,
    log,
    quantile,
    read_pid,
    start_run,
    wait_gone,
)
from protocols_servers import SERVICES, WILDCARD, Bench, Target
from protocols_wire import Wire

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_IPVSADM = os.path.join(HERE, "fake_ipvsadm.py")
LVSMON_SIDE = os.path.join(HERE, "protocols_lvsmon.py")
PACKAGES = os.path.join(HERE, "debian-packages.txt")
NETNS_ENV = "LVSMON_PROTOCOLS_NETNS"
WARMUP_S = 3.0
SAME_CHECK_S = 0.25  # openings of one real closer than this are one check

# what ldirectord loads for a service's check; the first ones it needs to start at all
PERL_ALWAYS = ("LWP::UserAgent", "Net::HTTP", "URI", "Socket6", "IO::Socket::INET6")
PERL_MODULES: dict[str, tuple[str, ...]] = {
    "https": ("LWP::Protocol::https",),
    "smtp": ("Net::SMTP",),
    "submission": ("Net::SMTP",),
    "pop": ("Mail::POP3Client",),
    "pops": ("Mail::POP3Client", "IO::Socket::SSL"),
    "imap": ("Net::IMAP::Simple",),
    "imaps": ("Net::IMAP::Simple::SSL",),
    "ldap": ("Net::LDAP",),
    "ldaps": ("Net::LDAP", "IO::Socket::SSL"),
    "radius": ("Authen::Radius",),
    "mysql": ("DBI", "DBD::mysql"),
    "pgsql": ("DBI", "DBD::Pg"),
    "ftp": ("Net::FTP",),
    "dns": ("Net::DNS",),
}


def missing_perl_modules(services: list[str]) -> list[str]:
    wanted = set(PERL_ALWAYS)
    for s in services:
        wanted.update(PERL_MODULES.get(s, ()))
    return sorted(
        m
        for m in wanted
        if subprocess.run(["perl", f"-M{m}", "-e", "1"], capture_output=True).returncode != 0
    )


def debian_packages() -> list[str]:
    with open(PACKAGES, encoding="utf-8") as f:
        return [w for line in f for w in line.split("#", 1)[0].split()]


def real_address(service_index: int, i: int) -> str:
    return f"127.{80 + service_index}.{i // 250}.{i % 250 + 1}"


# ---------------------------------------------------------------- the pool's ldirectord.cf


def write_config(
    path: str, service: str, target: Target, reals: list[str], logfile: str, interval: float
) -> None:
    """One virtual of `reals`, read unchanged by lvsmon's parser and by ldirectord."""
    lines = [
        "checktimeout=3",
        "negotiatetimeout=3",
        f"checkinterval={interval:g}",
        "autoreload=no",
        "fork=no",
        "quiescent=yes",
        "cleanstop=no",  # a stop of 200 ipvsadm -d calls would only cost time here
        f'logfile="{logfile}"',
        "",
        f"virtual=127.100.0.1:{target.port}",
        *(f"\treal={a}:{target.port} masq" for a in reals),
        f"\tservice={service}",
        *(f"\t{k}={v}" for k, v in target.settings.items()),
        "\tscheduler=wlc",
        f"\tprotocol={target.protocol}",
        "\tchecktype=negotiate",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------- measures


@dataclass
class Periods:
    checks: int = 0
    median_s: float = float("nan")
    p95_s: float = float("nan")
    unchecked: int = 0  # reals seen fewer than twice


def periods(times: dict[str, list[float]], reals: list[str]) -> Periods:
    gaps: list[float] = []
    out = Periods()
    for a in reals:
        seen: list[float] = []
        for t in sorted(times.get(a, [])):
            # one check may open more than once (a resent datagram, A then AAAA): one check
            if not seen or t - seen[-1] > SAME_CHECK_S:
                seen.append(t)
        out.checks += len(seen)
        if len(seen) < 2:
            out.unchecked += 1
        gaps += [b - x for x, b in itertools.pairwise(seen)]
    out.median_s, out.p95_s = quantile(gaps, 0.5), quantile(gaps, 0.95)
    return out


def tree_cpu_s(root: int) -> float:
    """CPU of a server's process tree: the live processes', and what reaped children left in
    their parents' cutime (a server forking per connection spends most of it there)."""
    total = 0.0
    for pid in [root, *children_of(root)]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            own, reaped = cpu_seconds(pid)
            total += own + reaped
    return total


@dataclass
class Side:
    """What one daemon did with one service's pool."""

    ran: bool = False
    error: str = ""
    window_s: float = float("nan")
    periods: Periods = field(default_factory=Periods)
    cpu_pct: float = float("nan")
    cpu_us_per_check: float = float("nan")
    server_cpu_pct: float = float("nan")
    extra: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------- lvsmon's side


def run_lvsmon(cf: str, seconds: float, wire: Wire, reals: list[str], target: Target) -> Side:
    side = Side()
    s0, w0 = tree_cpu_s(target.root_pid), time.time()
    proc = subprocess.run(
        [sys.executable, LVSMON_SIDE, cf, str(WARMUP_S), str(seconds)],
        capture_output=True, text=True, timeout=seconds + WARMUP_S + 120, check=False,
    )  # fmt: skip
    w1 = time.time()
    if proc.returncode != 0 or not proc.stdout.strip():
        side.error = f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
        return side
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    side.ran = True
    side.extra = got
    side.window_s = float(got["window_s"])
    side.cpu_pct = float(got["cpu_pct"])
    side.cpu_us_per_check = float(got["cpu_us_per_check"] or "nan")
    # the wire over the child's measuring window (its wall clock times)
    start, end = float(got["wall_start"]), float(got["wall_end"])
    side.periods = periods(wire.between(start, end), reals)
    # the server's CPU over the child's whole life (warm-up included), as a share of that time
    side.server_cpu_pct = 100 * (tree_cpu_s(target.root_pid) - s0) / (w1 - w0)
    return side


# ---------------------------------------------------------------- ldirectord's side


class CallLog:
    """The fake ipvsadm's call log, read as it grows: how many reals are up, when it last ran."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "calls.jsonl")
        self._offset = 0
        self.calls = 0
        self.last_end = 0.0
        self.up: dict[str, int] = {}

    def poll(self) -> None:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
            cut = data.rfind(b"\n") + 1
            self._offset += cut
            for line in data[:cut].splitlines():
                call = json.loads(line)
                self.calls += 1
                self.last_end = float(call["t"]) + float(call["dt"])
                self.up = call["up"]


def run_ldirectord(
    workdir: str, cf: str, logfile: str, seconds: float, wire: Wire, reals: list[str],
    target: Target, cleanup: Cleanup, startup_timeout: float, tls: bool, max_seconds: float,
) -> Side:  # fmt: skip
    side = Side()
    fake_dir = os.path.join(workdir, f"fake-{os.path.basename(cf)}")
    os.makedirs(fake_dir)
    env = {**os.environ, "LVSMON_FAKE_IPVSADM_DIR": fake_dir}
    if tls:
        env |= {"PERL5LIB": HERE, "PERL5OPT": "-Mprotocols_noverify"}
    ldirectord = shutil.which("ldirectord") or "/usr/sbin/ldirectord"
    pidfile = f"/run/ldirectord.{os.path.basename(cf)}.pid"
    # only this mount namespace (the daemon's) sees the fake as /usr/sbin/ipvsadm
    script = 'mount --bind "$0" /usr/sbin/ipvsadm && exec "$1" "$2" start'
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
            FAKE_IPVSADM, ldirectord, cf]  # fmt: skip
    pid: int | None = None

    def stop() -> None:
        # cleanstop=no: TERM ends it without an ipvsadm call per real
        kill_pid(pid, "ldirectord", grace=20)

    cleanup.add("ldirectord", stop)
    t0 = time.time()
    proc = subprocess.run(argv, env=env, timeout=120, check=False, capture_output=True, text=True)
    for _ in range(100):
        pid = read_pid(pidfile)
        if pid is not None:
            break
        time.sleep(0.05)
    if proc.returncode != 0 or pid is None:
        side.error = f"start failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-400:]}"
        return side
    calls = CallLog(fake_dir)
    port = str(target.port)
    n = len(reals)
    deadline = time.monotonic() + startup_timeout
    all_up = False
    while time.monotonic() < deadline:
        calls.poll()
        if calls.up.get(port, 0) >= n:
            all_up = True
            break
        # some reals down for good: go on once the fake has been quiet for 10 s (the first
        # sweep's ipvsadm calls are over: every real's first result changes its weight)
        if calls.calls and time.time() - calls.last_end > 10:
            break
        if not alive(pid):
            side.error = f"ldirectord exited during start-up; see {logfile}"
            return side
        time.sleep(0.5)
    else:
        side.error = f"not steady after {startup_timeout:g} s ({calls.up.get(port, 0)} up)"
        stop()
        return side
    side.extra["startup_s"] = round(calls.last_end - t0, 2)
    side.extra["startup_ipvsadm_calls"] = calls.calls
    side.extra["reals_up"] = calls.up.get(port, 0)
    if not all_up:
        log(f"ldirectord: only {calls.up.get(port, 0)} of {n} reals up; see {logfile}")
    time.sleep(1.0)
    side.extra["load_avg"] = loadavg()
    w0, c0, s0 = time.time(), cpu_seconds(pid)[0], tree_cpu_s(target.root_pid)
    time.sleep(seconds)
    # a slow sweep: go on until most reals were checked three times (two periods each)
    while time.time() - w0 < max_seconds:
        seen = wire.between(w0, time.time())
        if sum(len(seen.get(a, ())) >= 3 for a in reals) >= 0.9 * n:
            break
        time.sleep(1.0)
    w1, c1, s1 = time.time(), cpu_seconds(pid)[0], tree_cpu_s(target.root_pid)
    calls.poll()
    side.extra["window_ipvsadm_calls"] = calls.calls - int(str(side.extra["startup_ipvsadm_calls"]))
    stop()
    wait_gone(pid, 5)
    side.ran = True
    side.window_s = w1 - w0
    side.periods = periods(wire.between(w0, w1), reals)
    side.cpu_pct = 100 * (c1 - c0) / (w1 - w0)
    if side.periods.checks:
        side.cpu_us_per_check = (c1 - c0) / side.periods.checks * 1e6
    side.server_cpu_pct = 100 * (s1 - s0) / (w1 - w0)
    return side


# ---------------------------------------------------------------- one service


@dataclass
class Outcome:
    service: str
    reals: int
    notes: list[str]
    lvsmon: Side
    ldirectord: Side | None


def bench_service(
    index: int, bench: Bench, args: argparse.Namespace, workdir: str, cleanup: Cleanup
) -> Outcome:
    reals = [real_address(index, i) for i in range(args.reals)]
    base = os.path.join(workdir, bench.service)
    os.makedirs(base)
    cf = os.path.join(base, f"lvsmon-protocols-{bench.service}-{os.getpid()}.cf")
    logfile = os.path.join(base, "ldirectord.log")
    if bench.per_address:
        # a UDP server on the wildcard address answers from 127.0.0.1, not from the address it
        # was asked on, and a check rightly ignores that answer: such servers bind each real's
        # address, which must then be an interface address (dnsmasq looks them up)
        batch = "".join(f"address add {a}/32 dev lo\n" for a in reals)
        subprocess.run(["ip", "-batch", "-"], input=batch.encode(), check=True)
    with bench.start(reals if bench.per_address else WILDCARD) as target:
        write_config(cf, bench.service, target, reals, logfile, 1.0)
        log(f"{bench.service}: server on *:{target.port} ({', '.join(target.notes)});"
            f" {len(reals)} reals {reals[0]}..{reals[-1]}")  # fmt: skip
        wire = Wire(target.port, f"127.{80 + index}.")
        cleanup.add(f"wire {bench.service}", wire.close)
        try:
            log(f"{bench.service}: lvsmon, {WARMUP_S:g} s warm-up + {args.seconds:g} s")
            ours = run_lvsmon(cf, args.seconds, wire, reals, target)
            if ours.error:
                log(f"{bench.service}: lvsmon side failed: {ours.error}")
            theirs = None
            if not args.skip_ldirectord:
                log(f"{bench.service}: ldirectord start-up (its first sweep; about a minute)")
                theirs = run_ldirectord(
                    workdir, cf, logfile, args.ldirectord_seconds, wire, reals, target, cleanup,
                    args.startup_timeout, bench.tls, args.ldirectord_max_seconds,
                )  # fmt: skip
                if theirs.error:
                    log(f"{bench.service}: ldirectord side failed: {theirs.error}")
        finally:
            wire.close()
    return Outcome(bench.service, len(reals), target.notes, ours, theirs)


# ---------------------------------------------------------------- report


def f(x: object, digits: int = 2) -> str:
    if not isinstance(x, int | float) or x != x:
        return "-"
    return f"{x:,.{digits}f}"


def _latency(o: Outcome, q: str) -> object:
    latency = o.lvsmon.extra.get("latency_ms")
    return latency.get(q) if isinstance(latency, dict) else None


def _ld(o: Outcome, attr: str) -> object:
    return getattr(o.ldirectord, attr) if o.ldirectord and o.ldirectord.ran else None


def _ldp(o: Outcome, attr: str) -> object:
    return getattr(o.ldirectord.periods, attr) if o.ldirectord and o.ldirectord.ran else None


def _ld_extra(o: Outcome, key: str) -> object:
    return o.ldirectord.extra.get(key) if o.ldirectord else None


def _ms_per_check(o: Outcome) -> str:
    """ldirectord's own time per check: its period less the interval's sleep, over the reals."""
    p = _ldp(o, "median_s")
    return f((p - 1) / o.reals * 1000, 1) if isinstance(p, float) else "-"


ROWS: list[tuple[str, Callable[[Outcome], str]]] = [
    ("reals", lambda o: str(o.reals)),
    ("lvsmon checks/s", lambda o: f(o.lvsmon.extra.get("checks_per_s"), 0)),
    ("lvsmon jobs on the prober", lambda o: f"{o.lvsmon.extra.get('on_prober', '-')}"),
    ("lvsmon CPU µs per check", lambda o: f(o.lvsmon.cpu_us_per_check, 0)),
    ("lvsmon CPU (% of a core)", lambda o: f(o.lvsmon.cpu_pct, 1)),
    ("lvsmon latency p50 (ms)", lambda o: f(_latency(o, "p50"))),
    ("lvsmon latency p90 (ms)", lambda o: f(_latency(o, "p90"))),
    ("lvsmon latency p99 (ms)", lambda o: f(_latency(o, "p99"))),
    ("lvsmon latency max (ms)", lambda o: f(_latency(o, "max"))),
    ("lvsmon failed checks", lambda o: str(o.lvsmon.extra.get("failed", "-"))),
    ("lvsmon period median (s)", lambda o: f(o.lvsmon.periods.median_s, 3)),
    ("server CPU, lvsmon run (%)", lambda o: f(o.lvsmon.server_cpu_pct, 1)),
    ("ldirectord period median (s)", lambda o: f(_ldp(o, "median_s"), 3)),
    ("ldirectord period p95 (s)", lambda o: f(_ldp(o, "p95_s"), 3)),
    ("ldirectord ms per check", _ms_per_check),
    ("ldirectord CPU µs per check", lambda o: f(_ld(o, "cpu_us_per_check"), 0)),
    ("ldirectord CPU (% of a core)", lambda o: f(_ld(o, "cpu_pct"), 1)),
    ("ldirectord reals up", lambda o: str(_ld_extra(o, "reals_up") or "-")),
    ("ldirectord start-up (s)", lambda o: f(_ld_extra(o, "startup_s"))),
    ("server CPU, ldirectord run (%)", lambda o: f(_ld(o, "server_cpu_pct"), 1)),
    (
        "period ratio ldirectord / lvsmon",
        lambda o: f(ratio(_ldp(o, "median_s"), o.lvsmon.periods.median_s)),
    ),
    (
        "CPU per check ratio",
        lambda o: f(ratio(_ld(o, "cpu_us_per_check"), o.lvsmon.cpu_us_per_check), 1),
    ),
]


def print_table(outcomes: list[Outcome]) -> None:
    table = [(label, [cell(o) for o in outcomes]) for label, cell in ROWS]
    width = max(len(label) for label, _ in table)
    cols = [max(len(o.service), *(len(v[i]) for _, v in table)) for i, o in enumerate(outcomes)]
    head = "  ".join(o.service.rjust(c) for o, c in zip(outcomes, cols, strict=True))
    print(" " * width + "  " + head)
    for label, vals in table:
        cells = "  ".join(v.rjust(c) for v, c in zip(vals, cols, strict=True))
        print(f"{label.ljust(width)}  {cells}")


def ratio(a: object, b: object) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and a == a and b == b and b:
        return float(a) / float(b)
    return None


def figures(
    outcomes: list[Outcome], missing: dict[str, str], args: argparse.Namespace
) -> dict[str, object]:
    def r(x: object, digits: int = 3) -> float | None:
        return round(float(x), digits) if isinstance(x, int | float) and x == x else None

    out: dict[str, object] = {"reals": args.reals, "checkinterval_s": 1.0}
    for o in outcomes:
        s, ours = o.service, o.lvsmon
        latency = ours.extra.get("latency_ms")
        latency = latency if isinstance(latency, dict) else {}
        out |= {
            f"{s}_cpu_us_per_check": r(ours.cpu_us_per_check, 1),
            f"{s}_cpu_pct": r(ours.cpu_pct, 1),
            f"{s}_checks_per_s": r(ours.extra.get("checks_per_s"), 1),
            f"{s}_p50_latency_ms": r(latency.get("p50")),
            f"{s}_p99_latency_ms": r(latency.get("p99")),
            f"{s}_max_latency_ms": r(latency.get("max")),
            f"{s}_failed_checks": ours.extra.get("failed"),
            f"{s}_period_s": r(ours.periods.median_s),
            f"{s}_server_cpu_pct": r(ours.server_cpu_pct, 1),
        }
        if ours.error:
            out[f"{s}_error"] = ours.error[:200]
        theirs = o.ldirectord
        if theirs is None:
            continue
        if theirs.error:
            out[f"{s}_ldirectord_error"] = theirs.error[:200]
        if not theirs.ran:
            continue
        out |= {
            f"{s}_ldirectord_period_s": r(theirs.periods.median_s),
            f"{s}_ldirectord_period_p95_s": r(theirs.periods.p95_s),
            f"{s}_ldirectord_cpu_us_per_check": r(theirs.cpu_us_per_check, 0),
            f"{s}_ldirectord_cpu_pct": r(theirs.cpu_pct, 1),
            f"{s}_ldirectord_reals_up": theirs.extra.get("reals_up"),
            f"{s}_period_ratio": r(ratio(theirs.periods.median_s, ours.periods.median_s), 2),
            f"{s}_cpu_per_check_ratio": r(ratio(theirs.cpu_us_per_check, ours.cpu_us_per_check), 1),
        }
    if missing:
        out["not_run"] = missing
    return out


# ---------------------------------------------------------------- main


def enter_namespace() -> None:
    """Re-run this script in a network namespace of its own (same pid: unshare execs), with lo up:
    wildcard binds are then harmless and the whole of 127/8 reaches lo."""
    if os.environ.get(NETNS_ENV) != "1":
        os.environ[NETNS_ENV] = "1"
        argv = ["unshare", "-n", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
        os.execvp("unshare", argv)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", help="comma-separated (default: every one that can run)")
    ap.add_argument("--reals", type=int, default=200, help="reals per service (default 200)")
    ap.add_argument("--seconds", type=float, default=15.0, help="lvsmon window (default 15 s)")
    ap.add_argument(
        "--ldirectord-seconds", type=float, default=30.0,
        help="ldirectord steady window (default 30 s: several of its sweeps)",
    )  # fmt: skip
    ap.add_argument(
        "--ldirectord-max-seconds", type=float, default=300.0,
        help="a slow sweep stretches the window until most reals were checked 3 times, up to "
        "this (default 300 s)",
    )  # fmt: skip
    ap.add_argument("--startup-timeout", type=float, default=600.0,
                    help="ldirectord's first sweep may take this long (default 600 s)")  # fmt: skip
    ap.add_argument("--skip-ldirectord", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    ap.add_argument(
        "--install-packages", action="store_true",
        help="apt-get install what bench/debian-packages.txt lists (ldirectord, Perl modules)",
    )  # fmt: skip
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/protocols.py: run as root (network namespace, packet socket, mount)")
        return 2
    known = {b.service: b for b in SERVICES}
    names = args.services.split(",") if args.services else list(known)
    if unknown := [n for n in names if n not in known]:
        print(f"bench/protocols.py: unknown service(s) {unknown}; known: {', '.join(known)}")
        return 2
    if not args.skip_ldirectord and os.environ.get(NETNS_ENV) != "1":
        # before the namespace: apt needs the network
        installed = shutil.which("ldirectord") or os.path.exists("/usr/sbin/ldirectord")
        if not installed and not args.install_packages:
            print("bench/protocols.py: ldirectord is not installed; --install-packages or "
                  f"apt-get install -y $(sed -e 's/#.*//' {PACKAGES})")  # fmt: skip
            return 2
        if (absent := missing_perl_modules(names)) or args.install_packages:
            if absent and not args.install_packages:
                print(f"bench/protocols.py: Perl modules missing for ldirectord: {absent}; run "
                      f"with --install-packages or apt-get install -y $(sed -e 's/#.*//' "
                      f"{PACKAGES})")  # fmt: skip
                return 2
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                            *debian_packages()], check=True)  # fmt: skip
    enter_namespace()

    cleanup, workdir = start_run("lvsmon-protocols-", args.keep, parent="/var/tmp")
    os.chmod(workdir, 0o755)
    if args.keep:
        log(f"work folder {workdir} (kept)")
    outcomes: list[Outcome] = []
    missing: dict[str, str] = {}
    try:
        for name in names:
            bench = known[name]
            index = SERVICES.index(bench)
            if why := bench.missing():
                log(f"{name}: skipped: {why}")
                missing[name] = why
                continue
            try:
                outcomes.append(bench_service(index, bench, args, workdir, cleanup))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a fixture's pytest.fail is a BaseException
                log(f"{name}: failed: {type(exc).__name__}: {exc}")
                missing[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        cleanup.run()
        return 130
    finally:
        cleanup.run()
    if outcomes:
        print_table(outcomes)
    for o in outcomes:
        reasons = o.lvsmon.extra.get("failure_reasons")
        if isinstance(reasons, dict) and reasons:
            shown = "; ".join(f"{n} x {r!r}" for r, n in reasons.items())
            print(f"{o.service}: lvsmon's failed checks, most frequent reasons: {shown}")
    for name, why in missing.items():
        print(f"{name}: not run: {why}")
    print(json.dumps(figures(outcomes, missing, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
