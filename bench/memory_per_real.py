"""Bytes per real of lvsmon's state, built in-process the way the daemon builds it (issue 22).

    .venv/bin/python bench/memory_per_real.py [--shape 2318|10000] [--check connect|http]
        [--top 25] [--reals N --virtuals V] [--scrape] [--repeat 1]

No daemon, no sockets, no checks run: in one child process per size, the config (a generated
ldirectord.cf, bench/many_virtuals.py's write_config) is parsed, lvsmon.daemon.Daemon is built
on the memory backend, the engine is started as Engine.start does (adopt, plan, first reconcile,
the jobs scheduled with their probe plans) without its loops, every job's first result is handed
to the runner as if every real answered (CheckRunner._spec_done: counts, health, events), the
table is reconciled and resynced once (the steady state), and the status is built once (its
view keeps per-virtual texts);
with `--scrape`, /metrics is served once too (the exporter keeps its layout and last body).

Sizes: N reals and 2N reals in twice the virtuals (the same reals per virtual): the slope
(2N - N) / N is the cost of one more real with its share of a virtual, the fixed base (the
interpreter, the modules, a warm-up) cancels out. `--shape 2318`: keepalived #2318's 2,284
virtuals x 37,298 reals; `--shape 10000`: 100 virtuals x 10,000 reals.

Per size two children: one under tracemalloc (the heap, and the snapshot by file and line), one
without (VmRSS, which tracemalloc's own bookkeeping would inflate). Printed: bytes per real by
tracemalloc and by RSS, total bytes at N / N (with the base), and the `--top` lines of
snapshot(2N).compare_to(snapshot(N), "lineno") per real. The last line is one JSON object
(`bytes_per_real`, `rss_bytes_per_real`, ...). Deterministic enough for a busy host: it counts
bytes, not time (the load is printed all the same).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the tree this file is in, before an installed lvsmon

SHAPES = {"2318": (2284, 37298), "10000": (100, 10000)}


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def load() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


async def build(path: str, scrape: bool = False) -> Any:
    """The daemon's state for the config at `path`, every real up; returns what keeps it."""
    from lvsmon.checks.base import CheckResult
    from lvsmon.config.load import load_config
    from lvsmon.daemon.daemon import Daemon
    from lvsmon.ipvs.memory import MemoryBackend

    config = load_config(path)
    daemon = Daemon(config, MemoryBackend())
    engine = daemon.engine
    await daemon.events.start()
    # Engine.start without its loops (no check runs)
    engine.reconciler.actual = await engine.backend.dump()
    engine.refresh_drained()
    from lvsmon.engine.desired import adopt_health

    engine.health = adopt_health(engine.config, engine.reconciler.actual, engine.drained)
    engine._apply_modes()
    engine.refresh_maintenance()
    await engine.reconcile()
    engine.runner.schedule(engine.plan)
    # the first round: every job answers, through the runner's own result path
    for run in list(engine.runner.runs.values()):
        engine.runner._spec_done(run, CheckResult(True, "ok", 0.0004))
    await engine.reconcile()
    for service, real in engine.down_slots():
        daemon.alerts.known_down(service, real)
    # one resync, as the reconciler's loop makes every resyncinterval (Engine._reconcile_loop:
    # Reconciler.passes, then the pool edges): the daemon's steady state. From then on the
    # reconciler's view is the last dump, with the memory backend its very Service objects
    # (lvsmon.ipvs.memory's contract), and the copies the first passes made are gone
    await engine.reconciler.resync()
    engine._pool_edges()
    # the events reach their subscribers (log, alerts policy, feed)
    for _ in range(50):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    daemon.status_json(0.0)
    # what the daemon keeps from one second to the next: each virtual's text, not the whole
    # one (its housekeeping drops a client's copy after 0.5 s)
    daemon._status_cache = None
    from lvsmon.daemon.daemon import settle_memory

    settle_memory(collect=False)  # as the daemon does once its first round is done
    if scrape:  # what a Prometheus scrape leaves behind (the exporter's layout, its last body)
        from lvsmon.api.metrics import Exporter

        exporter = Exporter(daemon)
        await exporter.scrape()
        return daemon, exporter
    return daemon


def child(args: argparse.Namespace) -> None:
    """One size: prints one JSON line (and dumps the snapshot with --snapshot)."""
    import logging

    logging.disable(logging.CRITICAL)  # 37,298 "added" log lines are not the state
    from lvsmon.daemon.runner import cap_malloc_arenas

    cap_malloc_arenas()  # the daemon's process does this first (one arena, a fixed threshold)
    sys.path.insert(0, HERE)
    from many_virtuals import write_config

    work = tempfile.mkdtemp(prefix="lvsmon-mem-")
    warm = os.path.join(work, "warm.cf")
    cf = os.path.join(work, "ldirectord.cf")
    write_config(warm, 2, 4, 8080, args.check, 4, os.path.join(work, "log"))
    write_config(cf, args.virtuals, args.reals, 8080, args.check, 4, os.path.join(work, "log"))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    keep = [
        loop.run_until_complete(build(warm, args.scrape))
    ]  # imports, caches, first-use allocations
    gc.collect()
    if args.snapshot:
        tracemalloc.start(1)
    before_heap = tracemalloc.get_traced_memory()[0] if args.snapshot else 0
    before_rss = rss_bytes()
    t0 = time.process_time()
    keep.append(loop.run_until_complete(build(cf, args.scrape)))
    cpu = time.process_time() - t0
    gc.collect()
    out: dict[str, Any] = {"reals": args.reals, "virtuals": args.virtuals, "cpu_s": round(cpu, 2)}
    out["rss"] = rss_bytes()
    out["rss_growth"] = out["rss"] - before_rss
    if args.snapshot:
        out["heap"] = tracemalloc.get_traced_memory()[0] - before_heap
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        with open(args.snapshot, "wb") as f:
            pickle.dump(snap, f)
    engine = (keep[-1][0] if args.scrape else keep[-1]).engine
    up = sum(1 for h in engine.health.values() if h.up)
    out["up"] = up
    print(json.dumps(out), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    os._exit(0)  # tearing down 75,000 reals' objects is not the measure


def short(filename: str) -> str:
    """A file of this tree relative to it, others as they are."""
    rel = os.path.relpath(filename, os.path.dirname(HERE))
    return filename if rel.startswith("..") else rel


def run_child(
    check: str, virtuals: int, reals: int, snapshot: str | None, scrape: bool
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--check", check, *(["--scrape"] if scrape else [])]
    cmd += ["--virtuals", str(virtuals), "--reals", str(reals)]
    if snapshot:
        cmd += ["--snapshot", snapshot]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="2318")
    ap.add_argument("--check", choices=("connect", "http"), default="http")
    ap.add_argument("--virtuals", type=int, help="overrides the shape's")
    ap.add_argument("--reals", type=int, help="overrides the shape's")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--scrape", action="store_true", help="also serve /metrics once")
    ap.add_argument("--repeat", type=int, default=1, help="pairs of RSS children (the median)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--snapshot", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    virtuals, reals = SHAPES[args.shape]
    virtuals, reals = args.virtuals or virtuals, args.reals or reals
    print(f"load {load()}; {virtuals} virtuals x {reals} reals and twice that, {args.check}")
    work = tempfile.mkdtemp(prefix="lvsmon-mem-snap-")
    snaps = [os.path.join(work, "n.pickle"), os.path.join(work, "2n.pickle")]
    heap = [
        run_child(args.check, k * virtuals, k * reals, s, args.scrape)
        for k, s in ((1, snaps[0]), (2, snaps[1]))
    ]
    # the RSS slope moves by tens of bytes a real between runs of the same tree (1 MiB arenas,
    # and the order the allocations come in): --repeat pairs of children, the median pair's
    slopes = []
    for _ in range(args.repeat):
        pair = [run_child(args.check, k * virtuals, k * reals, None, args.scrape) for k in (1, 2)]
        slopes.append(((pair[1]["rss_growth"] - pair[0]["rss_growth"]) / reals, pair))
    slopes.sort(key=lambda item: item[0])
    rss = slopes[len(slopes) // 2][1]
    for h in heap:
        assert h["up"] == h["reals"], f"not every real is up: {h}"
    per_heap = (heap[1]["heap"] - heap[0]["heap"]) / reals
    per_rss = (rss[1]["rss_growth"] - rss[0]["rss_growth"]) / reals
    with open(snaps[0], "rb") as f:
        small = pickle.load(f)
    with open(snaps[1], "rb") as f:
        large = pickle.load(f)
    for path in snaps:
        os.unlink(path)
    os.rmdir(work)
    diffs = large.compare_to(small, "lineno")
    print(
        f"tracemalloc: {per_heap:,.0f} bytes per real (the heap's growth by the build of N"
        f" reals, over N: {heap[0]['heap'] / reals:,.0f})"
    )
    print(
        f"VmRSS growth: {per_rss:,.0f} bytes per real (RSS at N {rss[0]['rss'] / 2**20:.1f} MiB,"
        f" at 2N {rss[1]['rss'] / 2**20:.1f} MiB)"
        + (
            f"; the median of {len(slopes)} pairs: {', '.join(f'{x:,.0f}' for x, _ in slopes)}"
            if len(slopes) > 1
            else ""
        )
    )
    by_file = large.compare_to(small, "filename")
    print("by file, bytes per real (2N - N) / N:")
    for d in by_file[:12]:
        print(f"  {d.size_diff / reals:8.1f} B  {short(d.traceback[0].filename)}")
    print(f"top {args.top} lines, bytes per real (2N - N) / N:")
    top = []
    for d in diffs[: args.top]:
        frame = d.traceback[0]
        where = f"{short(frame.filename)}:{frame.lineno}"
        per = d.size_diff / reals
        count = d.count_diff / reals
        print(f"  {per:8.1f} B  {count:5.2f} blocks  {where}")
        top.append({"where": where, "bytes_per_real": round(per, 1), "blocks": round(count, 3)})
    print(json.dumps({
        "shape": args.shape, "check": args.check, "virtuals": virtuals, "reals": reals,
        "bytes_per_real": round(per_heap), "rss_bytes_per_real": round(per_rss),
        "rss_bytes_per_real_runs": [round(x) for x, _ in slopes],
        "heap_at_n": heap[0]["heap"], "rss_at_n": rss[0]["rss"], "rss_at_2n": rss[1]["rss"],
        "build_cpu_s": [h["cpu_s"] for h in rss], "load": load(), "top": top,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
