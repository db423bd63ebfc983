"""Where APScheduler fits: the cost of starting N checks a second, without the checks.

    .venv/bin/python bench/scheduler.py [--sizes 1000,10000] [--window 10]

Every job is an empty callable on a 1 s interval with its start spread over the interval, as the
daemon's checks are. Three ways, each on a fresh event loop in this process:

* `aps-per-check`: one APScheduler 3 interval job per check (AsyncIOScheduler, coroutine jobs);
* `aps-per-bucket`: one APScheduler job per virtual service of 100 checks, which starts its checks
  at their own offsets with `loop.call_at` (the issue's suggestion);
* `timetable`: lvsmon's own `Timetable` driven the way `Engine._check_loop` drives it.

For each: starts per second over the window, start lateness p50/p99/max (ms) against the slot the
scheduler meant, and CPU (% of one core) over the window. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from lvsmon.engine.runner import WAKE_QUANTUM_S
from lvsmon.engine.timetable import Timetable, spread_phase

INTERVAL_S = 1.0
BUCKET = 100  # checks per virtual service in the per-bucket variant


class Recorder:
    """Lateness of every start inside the window, and the CPU the process spent in it."""

    def __init__(self, warmup: float, window: float) -> None:
        now = time.monotonic()
        self.begin, self.end = now + warmup, now + warmup + window
        self.late: list[float] = []
        self.cpu0 = 0.0
        self.cpu1 = 0.0
        self.window = window

    def start(self, late_s: float) -> None:
        now = time.monotonic()
        if self.begin <= now < self.end:
            if not self.late:
                self.cpu0 = time.process_time()
            self.late.append(late_s)
            self.cpu1 = time.process_time()

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.late)

        def q(p: float) -> float:
            if not ordered:
                return float("nan")
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 1)

        return {
            "starts_per_s": round(len(ordered) / self.window),
            "p50_late_ms": q(0.5),
            "p99_late_ms": q(0.99),
            "max_late_ms": round(ordered[-1] * 1000, 1) if ordered else float("nan"),
            "cpu_pct": round(100 * (self.cpu1 - self.cpu0) / self.window, 1),
        }


async def aps_per_check(n: int, rec: Recorder) -> None:
    scheduler = AsyncIOScheduler()
    loop = asyncio.get_running_loop()
    wall0, mono0 = time.time(), time.monotonic()

    async def check() -> None:
        return None

    def executed(event: JobExecutionEvent) -> None:
        # scheduled_run_time is wall-clock: map it onto the monotonic clock of the window
        due = mono0 + (event.scheduled_run_time.timestamp() - wall0)
        rec.start(loop.time() - due)

    scheduler.add_listener(executed, EVENT_JOB_EXECUTED)
    first = datetime.now().astimezone() + timedelta(seconds=0.5)
    for i in range(n):
        offset = timedelta(seconds=spread_phase(i, INTERVAL_S))
        scheduler.add_job(
            check, "interval", seconds=INTERVAL_S, start_date=first + offset,
            misfire_grace_time=None, coalesce=True, max_instances=1,
        )  # fmt: skip
    scheduler.start()
    await asyncio.sleep(rec.end - time.monotonic())
    scheduler.shutdown(wait=False)


async def aps_per_bucket(n: int, rec: Recorder) -> None:
    scheduler = AsyncIOScheduler()
    loop = asyncio.get_running_loop()
    offsets = [spread_phase(i, INTERVAL_S) for i in range(n)]

    def check(due: float) -> None:
        rec.start(loop.time() - due)

    def bucket(first: int) -> None:
        base = loop.time()
        for i in range(first, min(first + BUCKET, n)):
            due = base + offsets[i]
            loop.call_at(due, check, due)

    start = datetime.now().astimezone() + timedelta(seconds=0.5)
    for b, first in enumerate(range(0, n, BUCKET)):
        scheduler.add_job(
            bucket, "interval", seconds=INTERVAL_S, args=[first],
            start_date=start + timedelta(seconds=b * INTERVAL_S * BUCKET / max(n, 1)),
            misfire_grace_time=None, coalesce=True,
        )  # fmt: skip
    scheduler.start()
    await asyncio.sleep(rec.end - time.monotonic())
    scheduler.shutdown(wait=False)


async def timetable(n: int, rec: Recorder) -> None:
    loop = asyncio.get_running_loop()
    tt: Timetable[int] = Timetable()
    tt.set_jobs(dict.fromkeys(range(n), INTERVAL_S), time.monotonic())
    wake: list[asyncio.Future[None]] = []

    def fire() -> None:
        if wake and not wake[0].done():
            wake[0].set_result(None)

    while time.monotonic() < rec.end:
        for s in tt.pop_due(time.monotonic()):
            rec.start(s.lateness)
            tt.finished(s.key)  # an empty check ends where it starts
        due = tt.next_due()
        wake[:] = [loop.create_future()]
        handle = None
        if due is not None:
            handle = loop.call_later(max(due - time.monotonic(), WAKE_QUANTUM_S), fire)
        await wake[0]
        if handle is not None:
            handle.cancel()


VARIANTS: dict[str, Callable[[int, Recorder], object]] = {
    "aps-per-check": aps_per_check,
    "aps-per-bucket": aps_per_bucket,
    "timetable": timetable,
}


def main() -> int:
    # jobs still queued when a run's scheduler shuts down are cancelled: not worth a traceback
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000", help="checks per run, comma-separated")
    ap.add_argument("--window", type=float, default=10.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=3.0)
    args = ap.parse_args()
    out: dict[str, float] = {}
    print(f"{'variant':<16}{'checks':>8}{'starts/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'max ms':>10}{'CPU %':>8}")  # fmt: skip
    for n in (int(x) for x in args.sizes.split(",")):
        for name, variant in VARIANTS.items():
            rec = Recorder(args.warmup, args.window)
            asyncio.run(variant(n, rec))  # type: ignore[arg-type]
            f = rec.figures()
            cells = (f["starts_per_s"], f["p50_late_ms"], f["p99_late_ms"], f["max_late_ms"])
            print(f"{name:<16}{n:>8}" + "".join(f"{c:>10}" for c in cells)
                  + f"{f['cpu_pct']:>8}", flush=True)  # fmt: skip
            key = name.replace("-", "_")
            for fig, value in f.items():
                out[f"n{n}_{key}_{fig}"] = value
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
