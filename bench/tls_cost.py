"""CPU per HTTPS check: today's task and asyncio streams, or TLS on the prober (issue 22 goal 3).

Host only, loopback only, as root:   .venv/bin/python bench/tls_cost.py [--quick] [--keep]

* Real servers: Debian's nginx (bench/scale.py's, wildcard address: every 127.77.x.y answers),
  with two https servers on a self-signed RSA 2048 certificate made for the run, one that speaks
  TLS 1.2 only and one TLS 1.3 only (`return 200 "still alive"`; tickets on, nginx's defaults).
* The checking process is this one; CPU = time.process_time() of this process over the
  measured part / its checks (loop, sockets, TLS, HTTP, all of it; nginx runs in its own
  processes: its CPU per check is printed beside). The ways:

  - `today`: `lvsmon.checks.run_check(CheckSpec(service=https))`, one task each, as the check
    runner starts a TLS check now (`stream.converse`: asyncio's SSL transport);
  - `bio`: the prober (`prober_for(loop)`, unchanged) running `tls.TlsDialogue(HttpDialogue)`
    (memory BIOs, no task), started with callbacks as the check runner starts probes, no
    session offered;
  - `bio_resumed`: the same with a session cache (one session per real, offered each check);
  - `bio_fresh_context`: `bio` with a new SSLContext per check (the context settings
    `stream.tls_context` has), the cost of not sharing one;
  - `ticker` (paced only): the pacing's own cost, a start that does nothing.

  Two shapes, each against the TLS 1.3 and the TLS 1.2 server, at 200 and 2,000 distinct
  addresses (127.77.x.y), after an unmeasured warm-up (which also fills the session cache):
  `burst`, rounds of every real with `--concurrency` (200) checks in flight, the next started
  from a result (10 rounds at 200 reals, 3 at 2,000); `paced`, every real once per interval
  with the starts spread evenly, as the daemon checks (200 reals every 1 s, 2,000 every 2 s),
  over `--window` seconds (5). Each way runs `--repeat` (3) times, the ways in turn, so that a
  neighbour's load falls on all alike; the table gives the median and the range.
  `--quick`: 200 reals only, 3 rounds, a 4 s window.
* Micro figures: one `SSLObject.session` read and one `wrap_bio(session=...)` (CPython copies a
  session by serialising it: ~100 µs), one SSLContext made, and the memory a kept session
  holds (VmRSS grown over 2,000 exchanges keeping their sessions, less that of 2,000 dropping
  them, each in a child process).

Printed: a table, the load (/proc/loadavg) at start and end, and last one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Final, cast

from procs import Cleanup, free_port, log, memory_mib, start_run
from scale import RealServers, real_address
from versus_keepalived import open_http_block

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.http import HttpDialogue
from lvsmon.checks.http_request import build_target
from lvsmon.checks.prober import ProbePlan, prober_for
from lvsmon.checks.stream import tls_context
from lvsmon.checks.tls import SessionCache, TlsDialogue, TlsLayer, session_key
from lvsmon.checks.tlssession import Session

TLS_SERVERS = """
    server {{
        listen {port12} ssl backlog=8192;
        ssl_protocols TLSv1.2;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        if ($remote_addr !~ "^127\\.") {{ return 444; }}
        location / {{ return 200 "still alive\\n"; }}
    }}
    server {{
        listen {port13} ssl backlog=8192;
        ssl_protocols TLSv1.3;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        if ($remote_addr !~ "^127\\.") {{ return 444; }}
        location / {{ return 200 "still alive\\n"; }}
    }}
}}
"""

VERSIONS: Final = ("tls13", "tls12")
WAYS: Final = ("today", "bio", "bio_resumed", "bio_fresh_context")
TICK_S: Final = 0.01


class TlsReals(RealServers):
    """bench/scale.py's nginx (http on `port`) with https TLS 1.2 only on `port12` and TLS 1.3
    only on `port13`."""

    folder = "nginx-tls"

    def __init__(self, workdir: str, cleanup: Cleanup) -> None:
        self.port12, self.port13 = free_port(), free_port()
        super().__init__(workdir, free_port(), cleanup)

    def port_of(self, version: str) -> int:
        return self.port13 if version == "tls13" else self.port12

    def _launch(self) -> subprocess.Popen[bytes]:
        http = open_http_block(self.dir, self.port)
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(http)
            f.write(TLS_SERVERS.format(dir=self.dir, port12=self.port12, port13=self.port13))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return subprocess.Popen(
            [nginx, "-p", self.dir + "/", "-c", conf, "-e", os.path.join(self.dir, "error.log")],
            stdin=subprocess.DEVNULL,
        )


def fresh_context() -> ssl.SSLContext:
    """A new context with `stream.tls_context`'s settings."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class TlsHttpPlan(ProbePlan):
    """What http.py's plan would become for https: the request, the SNI and the session key in
    slots, the dialogue wrapped in TLS when made."""

    __slots__ = ("cache", "fresh", "key", "request", "sni", "stats")

    def __init__(
        self, spec: CheckSpec, cache: SessionCache | None, fresh: bool, stats: dict[str, float]
    ) -> None:
        super().__init__(spec, socket.AF_INET, (spec.host, spec.port))
        target = build_target(spec)
        self.request = target.request
        self.sni = target.server_hostname
        self.key = session_key(spec.host, spec.port, self.sni) if cache is not None else None
        self.cache = cache
        self.fresh = fresh
        self.stats = stats

    def make_dialogue(self) -> Dialogue:
        inner = HttpDialogue(self.spec, self.request)
        context = fresh_context() if self.fresh else None
        dialogue = TlsDialogue(inner, self.sni, self.key, self.cache, context)
        if dialogue.layer.offered is not None:
            self.stats["offered"] += 1
        return dialogue


class Outcome:
    __slots__ = ("cpu_s", "failed", "first_failure", "ok", "wall_s")

    def __init__(self) -> None:
        self.ok = self.failed = 0
        self.cpu_s = self.wall_s = 0.0
        self.first_failure = ""

    def count(self, result: CheckResult) -> None:
        if result.ok:
            self.ok += 1
        else:
            self.failed += 1
            self.first_failure = self.first_failure or result.reason


Starter = Callable[[int, Callable[[CheckResult], None]], None]
"""Starts the check of real i; the callback gets its result."""


def prober_starter(plans: list[ProbePlan]) -> Starter:
    prober = prober_for(asyncio.get_running_loop())

    def start(i: int, done: Callable[[CheckResult], None]) -> None:
        prober.start(plans[i], done)

    return start


def today_starter(specs: list[CheckSpec]) -> Starter:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[CheckResult]] = set()

    def start(i: int, done: Callable[[CheckResult], None]) -> None:
        task = loop.create_task(run_check(specs[i]))
        tasks.add(task)

        def finished(t: asyncio.Task[CheckResult]) -> None:
            tasks.discard(t)
            done(t.result())

        task.add_done_callback(finished)

    return start


async def burst(start: Starter, reals: int, rounds: int, concurrency: int, out: Outcome) -> None:
    """`rounds` checks of every real, `concurrency` in flight, the next started from a result."""
    loop = asyncio.get_running_loop()
    order = [i for _ in range(rounds) for i in range(reals)]
    todo = iter(order)
    left = len(order)
    finished = loop.create_future()

    def done(result: CheckResult) -> None:
        nonlocal left
        out.count(result)
        left -= 1
        i = next(todo, None)
        if i is not None:
            start(i, done)
        elif left == 0 and not finished.done():
            finished.set_result(None)

    for _ in range(min(concurrency, len(order))):
        start(next(todo), done)
    await finished


async def paced(start: Starter, reals: int, interval: float, duration: float, out: Outcome) -> None:
    """Every real once per `interval`, their starts spread evenly (the daemon's shape), for
    `duration`; returns once the last started check is done. A 10 ms ticker starts what is due."""
    loop = asyncio.get_running_loop()
    total = round(duration / interval * reals)
    rate = reals / interval
    t0 = loop.time()
    started = 0
    left = total
    finished = loop.create_future()

    def done(result: CheckResult) -> None:
        nonlocal left
        out.count(result)
        left -= 1
        if left == 0 and not finished.done():
            finished.set_result(None)

    def tick() -> None:
        nonlocal started
        now = loop.time()
        due = min(total, int((now - t0) * rate) + 1)
        while started < due:
            start(started % reals, done)
            started += 1
        if started < total:
            loop.call_at(now + TICK_S, tick)

    tick()
    await finished


async def measure(
    way: str,
    version: str,
    port: int,
    reals: int,
    shape: tuple[str, float, float],
    concurrency: int,
    servers: TlsReals | None,
) -> tuple[Outcome, dict[str, float]]:
    """One way against one server: a warm-up (one round, or one interval and a second), then
    the measured part. `shape`: ("burst", rounds, 0) or ("paced", interval, window)."""
    specs = [
        CheckSpec(kind="negotiate", service="https", host=real_address(i), port=port, timeout=3)
        for i in range(reals)
    ]
    stats: dict[str, float] = {"offered": 0}
    cache = SessionCache() if way == "bio_resumed" else None
    if way == "today":
        start = today_starter(specs)
    elif way == "ticker":  # the paced shape's own cost: a start that does nothing

        def start(i: int, done: Callable[[CheckResult], None]) -> None:
            done(CheckResult(True, "nothing"))
    else:
        plans: list[ProbePlan] = [
            TlsHttpPlan(s, cache, way == "bio_fresh_context", stats) for s in specs
        ]
        start = prober_starter(plans)
    kind, a, b = shape
    warm = Outcome()
    if kind == "burst":
        await burst(start, reals, 1, concurrency, warm)
    else:
        await paced(start, reals, a, a + 1, warm)
    if warm.failed:
        log(f"{way} {version} {reals}: the warm-up had {warm.failed} failures")
    stats["offered"] = 0
    gc.collect()
    out = Outcome()
    nginx0 = servers.cpu_seconds() if servers else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if kind == "burst":
        await burst(start, reals, int(a), concurrency, out)
    else:
        await paced(start, reals, a, b, out)
    out.cpu_s, out.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    stats["nginx_s"] = (servers.cpu_seconds() - nginx0) if servers else 0.0
    if cache is not None:
        stats["cached"] = len(cache)
    return out, stats


def micro(port: int) -> dict[str, float]:
    """The session copy costs, a context's making, in µs."""
    ctx = tls_context()
    sess = cast(ssl.SSLSession, handshake_session(port, ctx, cpython=True))
    n = 2000
    t = time.process_time()
    for _ in range(n):
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    plain = time.process_time() - t
    t = time.process_time()
    for _ in range(n):
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), session=sess)
    with_session = time.process_time() - t
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), session=sess)
    t = time.process_time()
    for _ in range(n):
        obj.session  # noqa: B018  (the getter is what is measured)
    get = time.process_time() - t
    t = time.process_time()
    for _ in range(n // 4):
        fresh_context()
    ctx_new = time.process_time() - t
    return {
        "session_set_us": round((with_session - plain) / n * 1e6, 1),
        "session_get_us": round(get / n * 1e6, 1),
        "context_new_us": round(ctx_new / (n // 4) * 1e6, 1),
    }


def handshake_session(port: int, ctx: ssl.SSLContext, cpython: bool = False) -> Session:
    """A full exchange's session: as lvsmon takes it (lvsmon/checks/tlssession.py), or with
    `cpython` CPython's own copy (ssl.SSLSession)."""
    """A session from one blocking exchange with 127.77.0.1:port (TLS 1.3: after the reply)."""
    layer = TlsLayer("", None, ctx)
    with socket.create_connection((real_address(0), port), timeout=3) as sock:
        sock.sendall(layer.start())
        asked = False
        while not layer.eof:
            data = sock.recv(65536)
            _, out = layer.receive(data)
            if layer.handshake_done and not asked:
                out += layer.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                asked = True
            if out:
                sock.sendall(out)
            if not data:
                break
    session = layer._obj.session if cpython else layer.session
    assert session is not None
    return session


def memory_child(port12: int, port13: int, n: int, keep: bool) -> None:
    """In a child: VmRSS grown over `n` exchanges (both versions) whose sessions are kept or
    dropped; the difference of the two is what the sessions hold."""
    ctx = tls_context()
    for _ in range(50):  # warm the allocator and the modules
        handshake_session(port13, ctx)
    gc.collect()
    before = memory_mib(os.getpid())["VmRSS"]
    kept = []
    for i in range(n):
        session = handshake_session(port13 if i % 2 else port12, ctx)
        if keep:
            kept.append(session)
    gc.collect()
    print((memory_mib(os.getpid())["VmRSS"] - before) * 1024)


def cache_memory(port12: int, port13: int, n: int) -> float:
    """KiB of VmRSS per session kept (sessions held against sessions dropped, in children)."""
    grown = {}
    for keep in ("keep", "drop"):
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", f"{port12},{port13},{n},{keep}"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        grown[keep] = float(proc.stdout.split()[-1])
    return (grown["keep"] - grown["drop"]) / n


def loadavg_text() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 reals only, shorter")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--concurrency", type=int, default=200, help="burst: checks in flight")
    ap.add_argument("--ways", default=",".join(WAYS))
    ap.add_argument("--window", type=float, default=5.0, help="paced: measured seconds")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each way, in turn (median)")
    ap.add_argument("--runs", help="instead of the default: 2000:paced:5,200:burst:10")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        p12, p13, n, keep = args.memory_child.split(",")
        memory_child(int(p12), int(p13), int(n), keep == "keep")
        return 0
    if os.geteuid() != 0:
        print("bench/tls_cost.py: run as root (nginx workers run as nobody)", file=sys.stderr)
        return 2
    # (reals, shape): burst rounds; paced every `interval` s over the window
    window = 4.0 if args.quick else args.window
    runs: list[tuple[int, tuple[str, float, float]]] = [
        (200, ("burst", 3 if args.quick else 10, 0)),
        (200, ("paced", 1.0, window)),
    ]
    if not args.quick:
        runs += [(2000, ("burst", 3, 0)), (2000, ("paced", 2.0, window))]
    if args.runs:  # reals:burst:rounds or reals:paced:interval, comma-separated
        runs = []
        for item in args.runs.split(","):
            n, kind, arg = item.split(":")
            shape = ("burst", float(arg), 0.0) if kind == "burst" else ("paced", float(arg), window)
            runs.append((int(n), shape))
    ways = [w for w in args.ways.split(",") if w]
    cleanup, workdir = start_run("lvsmon-tls-cost-", args.keep)
    figures: dict[str, object] = {}
    rows: list[tuple[str, ...]] = []
    load_start = loadavg_text()
    try:
        servers = TlsReals(workdir, cleanup)
        log(f"nginx: https TLS 1.2 *:{servers.port12}, 1.3 *:{servers.port13}; load {load_start}")
        for reals, shape in runs:
            kind = shape[0]
            label = f"every {shape[1]:g} s" if kind == "paced" else f"{shape[1]:g} rounds"
            for version in VERSIONS:
                port = servers.port_of(version)
                names = ways + (["ticker"] if kind == "paced" and version == "tls13" else [])
                got: dict[str, list[tuple[float, float, float, int, int, float]]] = {
                    w: [] for w in names
                }
                for rep in range(args.repeat):  # the ways in turn: a neighbour's load falls
                    for way in names:  # on all of them alike
                        out, stats = asyncio.run(
                            measure(way, version, port, reals, shape, args.concurrency, servers)
                        )
                        checks = out.ok + out.failed
                        us = out.cpu_s / checks * 1e6
                        nginx_us = stats["nginx_s"] / checks * 1e6
                        rate = checks / out.wall_s
                        got[way].append((us, nginx_us, rate, checks, out.failed, stats["offered"]))
                        log(
                            f"{reals} reals {label} {version} {way} #{rep + 1}: {us:,.0f} "
                            f"µs/check (nginx {nginx_us:,.0f}), {rate:,.0f} checks/s, "
                            f"{out.failed} failed {out.first_failure} "
                            f"{stats['offered']:.0f} offered"
                        )
                for way in names:
                    us = statistics.median(g[0] for g in got[way])
                    nginx_us = statistics.median(g[1] for g in got[way])
                    rate = statistics.median(g[2] for g in got[way])
                    checks = sum(g[3] for g in got[way])
                    failed = sum(g[4] for g in got[way])
                    offered = sum(g[5] for g in got[way])
                    spread = (
                        f"{min(g[0] for g in got[way]):,.0f}-{max(g[0] for g in got[way]):,.0f}"
                    )
                    name = f"n{reals}_{kind}_{way}_{version}"
                    figures[f"{name}_us_per_check"] = round(us)
                    figures[f"{name}_us_per_check_min"] = round(min(g[0] for g in got[way]))
                    figures[f"{name}_checks_per_s"] = round(rate)
                    figures[f"{name}_failed"] = failed
                    figures[f"{name}_nginx_us_per_check"] = round(nginx_us)
                    sessions = ""
                    if way == "bio_resumed":
                        figures[f"{name}_offered"] = offered
                        sessions = f"{offered:.0f}/{checks} offered"
                    rows.append(
                        (f"{reals}", label, version, way, f"{checks}", f"{us:,.0f}", spread,
                         f"{nginx_us:,.0f}", f"{rate:,.0f}", f"{failed}", sessions)
                    )  # fmt: skip
        figures.update(micro(servers.port13))
        figures["session_cache_kib_per_real"] = round(
            cache_memory(servers.port12, servers.port13, 2000), 1
        )
    finally:
        cleanup.run()
    load_end = loadavg_text()
    head = ("reals", "shape", "server", "way", "checks", "CPU µs/check", "min-max",
            "nginx µs/check", "checks/s", "failed", "sessions")  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for row in (head, *rows):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    print(
        f"session get {figures['session_get_us']} µs, set {figures['session_set_us']} µs, "
        f"new context {figures['context_new_us']} µs, cache "
        f"{figures['session_cache_kib_per_real']} KiB/real"
    )
    print(f"load at start {load_start}, at end {load_end}")
    figures.update(
        load_start=load_start,
        load_end=load_end,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        python=sys.version.split()[0],
        openssl=ssl.OPENSSL_VERSION,
        concurrency=args.concurrency,
        repeat=args.repeat,
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
