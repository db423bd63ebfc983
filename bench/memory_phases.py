"""Where lvsmon's RSS beyond its heap comes from (issue 22 goal 5): the build of N reals by phase.

    .venv/bin/python bench/memory_phases.py [--shape 2318|10000] [--check connect|http]

bench/memory_per_real.py's build (the daemon's state for a generated config, every real up,
no checks run), with a mark after each phase of it (the config loaded, the daemon made, each
reconcile, the schedule, the first round's results, the resync, the status built, the memory
settled). Two children: one without tracemalloc prints VmRSS at each mark, one with it prints
the heap now and its peak since the last mark; both over N, bytes a real (the base of the
interpreter and a warm-up build included, so the figures at N are above memory_per_real's
slope). Then the allocators' growth by the build: pymalloc's bytes in allocated blocks and in free
blocks of used pools, and its arenas (sys._debugmallocstats), glibc's bytes in use and free
(mallinfo2), over N. RSS above heap + free blocks is pools that a phase's peak touched and freed:
pymalloc returns an arena only when all of its pools are free. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from memory_per_real import SHAPES, build, load, rss_bytes  # noqa: E402


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def allocators() -> dict[str, int]:
    """pymalloc's and glibc's own figures, bytes."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    text = b"".join(chunks).decode()
    out: dict[str, int] = {}
    for key, name in (
        ("arenas allocated current", "pymalloc_arenas"),
        ("bytes in allocated blocks", "pymalloc_allocated"),
        ("bytes in available blocks", "pymalloc_free_blocks"),
    ):
        found = re.search(re.escape(key) + r"\s*=\s*([\d,]+)", text)
        out[name] = int(found.group(1).replace(",", "")) if found else -1
    try:
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out["glibc_in_use"], out["glibc_free"] = info.uordblks + info.hblkhd, info.fordblks
    except (OSError, AttributeError):
        pass
    return out


def child(virtuals: int, reals: int, check: str, traced: bool) -> None:
    logging.disable(logging.CRITICAL)
    from lvsmon.daemon.runner import cap_malloc_arenas

    cap_malloc_arenas()  # the daemon's process does this first (one arena, a fixed threshold)
    from many_virtuals import write_config

    import lvsmon.daemon.daemon as daemon_module
    import lvsmon.engine.engine as engine_module
    import lvsmon.engine.reconciler as reconciler_module
    import lvsmon.engine.runner as runner_module

    work = tempfile.mkdtemp(prefix="lvsmon-phases-")
    warm, cf = os.path.join(work, "warm.cf"), os.path.join(work, "ldirectord.cf")
    write_config(warm, 2, 4, 8080, check, 4, os.path.join(work, "log"))
    write_config(cf, virtuals, reals, 8080, check, 4, os.path.join(work, "log"))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    keep = [loop.run_until_complete(build(warm))]
    gc.collect()
    marks: list[dict[str, Any]] = []
    armed = False
    if traced:
        tracemalloc.start(1)
    heap0, rss0, alloc0 = tracemalloc.get_traced_memory()[0], rss_bytes(), allocators()

    def mark(name: str) -> None:
        if not armed:
            return
        now, peak = tracemalloc.get_traced_memory()
        entry: dict[str, Any] = {"phase": name, "rss": round((rss_bytes() - rss0) / reals)}
        if traced:
            entry["heap"] = round((now - heap0) / reals)
            entry["heap_peak"] = round((peak - heap0) / reals)
            tracemalloc.reset_peak()
        marks.append(entry)

    def after(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        if asyncio.iscoroutinefunction(original):

            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                result = await original(*args, **kwargs)
                mark(label)
                return result

            setattr(owner, name, wrapped_async)
        else:

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                result = original(*args, **kwargs)
                mark(label)
                return result

            setattr(owner, name, wrapped)

    after(daemon_module.Daemon, "__init__", "config loaded, daemon made")
    after(engine_module.Engine, "reconcile", "reconcile")
    after(runner_module.CheckRunner, "schedule", "jobs scheduled")
    after(reconciler_module.Reconciler, "resync", "resync")
    after(daemon_module.Daemon, "status_json", "status built")
    after(daemon_module, "settle_memory", "memory settled")
    armed = True
    keep.append(loop.run_until_complete(build(cf)))
    gc.collect()
    mark("after the build")
    alloc = {k: v - alloc0.get(k, 0) for k, v in allocators().items()}
    print(json.dumps({"marks": marks, "allocators": alloc, "rss": rss_bytes()}))
    sys.stdout.flush()
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="2318")
    ap.add_argument("--check", choices=("connect", "http"), default="http")
    ap.add_argument("--child", choices=("rss", "heap"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    virtuals, reals = SHAPES[args.shape]
    if args.child:
        child(virtuals, reals, args.check, args.child == "heap")
        return 0
    runs = {}
    for kind in ("rss", "heap"):
        cmd = [sys.executable, __file__, "--child", kind, "--shape", args.shape]
        out = subprocess.run([*cmd, "--check", args.check], check=True, capture_output=True)
        runs[kind] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    print(f"load {load()}; {virtuals} virtuals x {reals} reals, {args.check}; bytes a real")
    print(f"{'phase':28s} {'RSS':>7s} {'heap':>7s} {'peak':>7s}")
    for rss, heap in zip(runs["rss"]["marks"], runs["heap"]["marks"], strict=True):
        print(f"{rss['phase']:28s} {rss['rss']:7,d} {heap['heap']:7,d} {heap['heap_peak']:7,d}")
    alloc = runs["rss"]["allocators"]
    print("the allocators' growth by the build, bytes a real:")
    for name, value in alloc.items():
        if name != "pymalloc_arenas":
            print(f"  {name:22s} {value / reals:8.1f}")
    print(f"  pymalloc arenas        {alloc.get('pymalloc_arenas')} more (1 MiB each)")
    print(json.dumps({
        "shape": args.shape, "check": args.check, "virtuals": virtuals, "reals": reals,
        "phases": [
            {**r, "heap": h["heap"], "heap_peak": h["heap_peak"]}
            for r, h in zip(runs["rss"]["marks"], runs["heap"]["marks"], strict=True)
        ],
        "allocators_bytes_per_real": {k: round(v / reals, 1) for k, v in alloc.items()},
        "load": load(),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
