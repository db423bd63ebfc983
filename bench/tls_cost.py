"""CPU per HTTPS check: today's task and asyncio streams, or TLS on the prober (issue 22 goal 3).

Host only, loopback only, as root:   .venv/bin/python bench/tls_cost.py [--quick] [--keep]

* Real servers: Debian's nginx (bench/scale.py's, wildcard address: every 127.77.x.y answers),
  with two https servers on a self-signed RSA 2048 certificate made for the run, one that speaks
  TLS 1.2 only and one TLS 1.3 only (`return 200 "still alive"`; tickets on, nginx's defaults).
* The checking process is this one: each way below runs `rounds` checks of every one of `reals`
  distinct addresses, `--concurrency` (200) in flight, after one unmeasured round (which also
  fills the session cache). CPU = time.process_time() of this process over the measured rounds
  / checks (loop, sockets, TLS, HTTP, all of it; nginx runs in its own processes).

  - `today`: `lvsmon.checks.run_check(CheckSpec(service=https))`, one task each, as the check
    runner starts a TLS check now (`stream.converse`: asyncio's SSL transport);
  - `bio`: the prober (`prober_for(loop)`, unchanged) running `tls.TlsDialogue(HttpDialogue)`
    (memory BIOs, no task), started with callbacks as the check runner starts probes, no
    session offered;
  - `bio_resumed`: the same with the session cache (one session per real, offered each check);
  - `bio_fresh_context`: `bio` with a new SSLContext per check (the context settings
    `stream.tls_context` has), the cost of not sharing one.

  Each at 200 and 2,000 reals (10 and 3 measured rounds; --quick: 200 reals, 3 rounds), against
  the TLS 1.3 and the TLS 1.2 server.
* Micro figures: one `SSLObject.session` read and one `wrap_bio(session=...)` (CPython copies a
  session by serialising it: ~100 µs), one SSLContext made, and the memory the cache holds per
  real (VmRSS grown while 2,000 sessions were kept, both versions).

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
import subprocess
import sys
import time
from typing import Final

from procs import Cleanup, free_port, log, memory_mib, start_run
from scale import NGINX_CONF, RealServers, real_address

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.http import HttpDialogue
from lvsmon.checks.http_request import build_target
from lvsmon.checks.prober import ProbePlan, prober_for
from lvsmon.checks.stream import tls_context
from lvsmon.checks.tls import SessionCache, TlsDialogue, TlsLayer, session_key

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
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=lvsmon-bench", "-keyout", os.path.join(self.dir, "key.pem"),
             "-out", os.path.join(self.dir, "cert.pem")],
            check=True, capture_output=True,
        )  # fmt: skip
        http = NGINX_CONF.format(dir=self.dir, port=self.port, workers=2).rstrip()
        assert http.endswith("}"), "the http block closes scale.py's nginx config"
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(http[:-1])
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
        self, spec: CheckSpec, cache: SessionCache | None, fresh: bool, stats: dict[str, int]
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


async def run_prober(plans: list[ProbePlan], rounds: int, concurrency: int) -> Outcome:
    """`rounds` checks of every plan, `concurrency` in flight, started from the callbacks."""
    loop = asyncio.get_running_loop()
    prober = prober_for(loop)
    out = Outcome()
    order = [p for _ in range(rounds) for p in plans]
    todo = iter(order)
    left = len(order)
    finished = loop.create_future()

    def done(result: CheckResult) -> None:
        nonlocal left
        out.count(result)
        left -= 1
        plan = next(todo, None)
        if plan is not None:
            prober.start(plan, done)
        elif left == 0 and not finished.done():
            finished.set_result(None)

    for plan in order[:concurrency]:
        next(todo)
        prober.start(plan, done)
    await finished
    return out


async def run_today(specs: list[CheckSpec], rounds: int, concurrency: int) -> Outcome:
    """`rounds` run_check tasks of every spec, `concurrency` in flight."""
    loop = asyncio.get_running_loop()
    out = Outcome()
    order = [s for _ in range(rounds) for s in specs]
    todo = iter(order)
    left = len(order)
    finished = loop.create_future()
    tasks: set[asyncio.Task[CheckResult]] = set()

    def start(spec: CheckSpec) -> None:
        task = loop.create_task(run_check(spec))
        tasks.add(task)
        task.add_done_callback(done)

    def done(task: asyncio.Task[CheckResult]) -> None:
        nonlocal left
        tasks.discard(task)
        out.count(task.result())
        left -= 1
        spec = next(todo, None)
        if spec is not None:
            start(spec)
        elif left == 0 and not finished.done():
            finished.set_result(None)

    for spec in order[:concurrency]:
        next(todo)
        start(spec)
    await finished
    return out


async def measure(
    way: str, version: str, reals: int, rounds: int, port: int, concurrency: int
) -> tuple[Outcome, dict[str, int]]:
    specs = [
        CheckSpec(kind="negotiate", service="https", host=real_address(i), port=port, timeout=3)
        for i in range(reals)
    ]
    stats = {"offered": 0}
    cache = SessionCache() if way == "bio_resumed" else None

    async def go(n: int) -> Outcome:
        if way == "today":
            return await run_today(specs, n, concurrency)
        plans: list[ProbePlan] = [
            TlsHttpPlan(s, cache, way == "bio_fresh_context", stats) for s in specs
        ]
        return await run_prober(plans, n, concurrency)

    warm = await go(1)  # unmeasured: fills the cache, warms nginx and the allocator
    if warm.failed:
        log(f"{way} {version} {reals}: warm-up round had {warm.failed} failures")
    stats["offered"] = 0
    gc.collect()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = await go(rounds)
    out.cpu_s, out.wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    if cache is not None:
        stats["cached"] = len(cache)
    return out, stats


def micro(port: int) -> dict[str, float]:
    """The session copy costs, a context's making, in µs."""
    ctx = tls_context()
    sess = handshake_session(port, ctx)
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


def handshake_session(port: int, ctx: ssl.SSLContext) -> ssl.SSLSession:
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
    session = layer.session
    assert session is not None
    return session


def cache_memory(port12: int, port13: int, reals: int) -> float:
    """KiB of VmRSS per session kept: `reals` sessions of each version held in a cache."""
    ctx = tls_context()
    base_sessions = [handshake_session(port13, ctx) for _ in range(20)]  # warm the allocator
    del base_sessions
    gc.collect()
    before = memory_mib(os.getpid())["VmRSS"]
    kept = []
    for i in range(reals):
        kept.append(handshake_session(port13 if i % 2 else port12, ctx))
    gc.collect()
    after = memory_mib(os.getpid())["VmRSS"]
    return (after - before) * 1024 / reals


def loadavg_text() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 reals, 3 rounds")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--ways", default=",".join(WAYS))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/tls_cost.py: run as root (nginx workers run as nobody)", file=sys.stderr)
        return 2
    sizes: list[tuple[int, int]] = [(200, 3)] if args.quick else [(200, 10), (2000, 3)]
    ways = [w for w in args.ways.split(",") if w]
    cleanup, workdir = start_run("lvsmon-tls-cost-", args.keep)
    figures: dict[str, object] = {}
    rows: list[tuple[str, ...]] = []
    load_start = loadavg_text()
    try:
        servers = TlsReals(workdir, cleanup)
        log(
            f"nginx: https TLS 1.2 *:{servers.port12}, TLS 1.3 *:{servers.port13}; load {load_start}"
        )
        for reals, rounds in sizes:
            for version in VERSIONS:
                for way in ways:
                    port = servers.port_of(version)
                    out, stats = asyncio.run(
                        measure(way, version, reals, rounds, port, args.concurrency)
                    )
                    checks = out.ok + out.failed
                    us = out.cpu_s / checks * 1e6
                    name = f"n{reals}_{way}_{version}"
                    figures[f"{name}_us_per_check"] = round(us)
                    figures[f"{name}_checks_per_s"] = round(checks / out.wall_s)
                    figures[f"{name}_failed"] = out.failed
                    resumed = ""
                    if way == "bio_resumed":
                        figures[f"{name}_offered"] = stats["offered"]
                        resumed = f"{stats['offered']}/{checks} offered"
                    rows.append(
                        (f"{reals}", version, way, f"{checks}", f"{us:,.0f}",
                         f"{checks / out.wall_s:,.0f}", f"{out.failed}", resumed)
                    )  # fmt: skip
                    log(
                        f"{reals} reals {version} {way}: {us:,.0f} µs/check, "
                        f"{checks / out.wall_s:,.0f} checks/s, {out.failed} failed "
                        f"{out.first_failure} {resumed}"
                    )
        figures.update(micro(servers.port13))
        figures["session_cache_kib_per_real"] = round(
            cache_memory(servers.port12, servers.port13, 2000), 1
        )
    finally:
        cleanup.run()
    load_end = loadavg_text()
    head = ("reals", "server", "way", "checks", "CPU µs/check", "checks/s", "failed", "sessions")
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
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
