"""lvsmon's side of bench/protocols.py: the checks of one ldirectord.cf, run the way the engine
runs them, in a process of their own so that its CPU is theirs alone.

    protocols_lvsmon.py CONFIG WARMUP_S WINDOW_S      (prints one JSON object)

The config is parsed by lvsmon's parser, `build_plan` makes the check jobs, and the engine's
`CheckRunner` starts each on its timetable slot: on the epoll prober when the service has a
plain-TCP dialogue, else as a task through `run_check`, exactly as in the daemon. What is left out
is the health bookkeeping and the kernel, which do nothing while every real stays up.
`every_result` is set so every result reaches us (the engine skips a healthy real's steady
results): that adds one call and one list append per check.

CPU is getrusage(RUSAGE_SELF) over the window (every thread of the process: ldap3 and oracledb
checks run in threads), divided by the checks finished in it; latencies are the results'
`latency_s` (connect to verdict).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import sys
import time

from lvsmon.checks.base import CheckResult
from lvsmon.checks.registry import plan_probe
from lvsmon.config.load import load_config
from lvsmon.engine.jobs import RealRef, build_plan
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(path: str, warmup: float, window: float) -> dict[str, object]:
    config = load_config(path)
    plan = build_plan(config)
    recording = False
    latencies: list[float] = []
    failed: dict[str, int] = {}
    done_at: dict[str, list[float]] = {}

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        # False: never "steady", so every result comes here (every_result is set too)
        if not recording:
            return False
        latencies.append(result.latency_s)
        if not result.ok:
            failed[result.reason] = failed.get(result.reason, 0) + 1
        done_at.setdefault(refs[0].address, []).append(time.monotonic())
        return False

    stats = Stats()
    runner = CheckRunner(on_result, stats)
    runner.every_result = True
    runner.schedule(plan)
    probes = sum(1 for job in plan.jobs if plan_probe(job.spec) is not None)
    loop = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(warmup)
        recording = True
        t0, c0, d0, wall0 = time.monotonic(), cpu_s(), stats.checks_done, time.time()
        late0 = len(stats.lateness)
        await asyncio.sleep(window)
        t1, c1, d1, wall1 = time.monotonic(), cpu_s(), stats.checks_done, time.time()
        recording = False
        lateness = list(stats.lateness)[late0:] if late0 < len(stats.lateness) else []
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await runner.stop()
    checks = d1 - d0
    gaps = [b - a for times in done_at.values() for a, b in itertools.pairwise(times)]
    return {
        "jobs": len(plan.jobs),
        "on_prober": probes,
        "window_s": t1 - t0,
        "wall_start": wall0,
        "wall_end": wall1,
        "checks": checks,
        "checks_per_s": checks / (t1 - t0),
        "cpu_s": c1 - c0,
        "cpu_us_per_check": (c1 - c0) / checks * 1e6 if checks else None,
        "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
        "latency_ms": {
            q: (v * 1000 if (v := quantile(latencies, f)) is not None else None)
            for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "start_late_ms_p99": (v * 1000 if (v := quantile(lateness, 0.99)) is not None else None),
        "period_s_median": quantile(gaps, 0.5),
        "failed": sum(failed.values()),
        "failure_reasons": dict(sorted(failed.items(), key=lambda kv: -kv[1])[:3]),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    path, warmup, window = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    os.environ.setdefault("LVSMON_RESOLVER", "files")
    print(json.dumps(asyncio.run(measure(path, warmup, window))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
