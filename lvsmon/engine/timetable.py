"""When each check runs: a pure timetable, fed the current time, that never sleeps itself.

Every job runs at a fixed rate (its interval), with its phase spread over the interval so that
thousands of checks never fire in the same millisecond. The first run of a new job is immediate
(a healthy pool is programmed within milliseconds of start); the spreading starts from the second
run. A job whose previous run is still going is not started twice: that slot is skipped.

`pop_due` may be given a limit (the check runner's admission window, lvsmon/engine/lag.py): the
slots past it stay due, oldest first, and start on a later call, late; `held_at` says when the
last limit held a slot back, so a start due by then was deferred. A late start rejoins its
job's grid (`_next_slot`), so a deferral stretches one period, it does not pile up a burst.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def spread_phase(key: Hashable, interval: float) -> float:
    """A stable offset in [0, interval) derived from the key: a restart keeps the same spread,
    and keys that differ in any way land at unrelated points of the interval."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return interval * (int.from_bytes(digest, "big") / 2**64)


class _Job(Generic[K]):
    """One job's place in the timetable. Slots point at it, so the hot path (pop, reschedule,
    skip) does no hashing: the keys are the engine's check jobs, whose hash is recomputed from
    every field on each lookup, and 10,000 checks a second made that a measurable cost."""

    __slots__ = ("generation", "interval", "key", "live", "phase", "running")

    def __init__(self, key: K) -> None:
        self.key = key
        self.interval = 0.0
        self.phase = 0.0
        self.generation = 0  # bumped when the job changes or leaves: its old slots die
        self.live = True
        self.running = False


# (due, sequence number, job, the job's generation when pushed): plain tuples compare in C, and
# the unique sequence number means the job itself is never compared
_Slot = tuple[float, int, _Job[K], int]


@dataclass(frozen=True, slots=True)
class Start(Generic[K]):
    key: K
    due: float
    lateness: float


class Timetable(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[_Slot[K]] = []
        self._jobs: dict[K, _Job[K]] = {}
        # removed while running: kept until finished, so a job that comes back at once is still
        # not started twice
        self._draining: dict[K, _Job[K]] = {}
        self._seq = 0
        self._running = 0
        self.skipped = 0  # slots skipped because the previous run was still going
        self.held_at = -math.inf  # when pop_due's limit last left a due slot behind

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    def _push(self, job: _Job[K], due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, job, job.generation))

    def set_jobs(self, jobs: dict[K, float], now: float) -> None:
        """Replace the job set. Jobs that stay keep their place in the timetable (a reload does not
        reset them); new jobs run at once; removed jobs never start again."""
        for key in [k for k in self._jobs if k not in jobs]:
            job = self._jobs.pop(key)
            job.live = False
            job.generation += 1
            if job.running:
                self._draining[key] = job
        for key, interval in jobs.items():
            if interval <= 0:
                raise ValueError(f"interval must be positive: {interval}")
            found = self._jobs.get(key)
            if found is not None and found.interval == interval:
                continue
            if found is None:
                found = self._draining.pop(key, None) or _Job(key)
                found.live = True
                self._jobs[key] = found
            found.interval = interval
            found.phase = spread_phase(key, interval)
            found.generation += 1
            self._push(found, now)
        if len(self._heap) > 4 * len(self._jobs) + 64:  # drop dead slots left by reloads
            self._heap = [s for s in self._heap if self._live(s)]
            heapq.heapify(self._heap)

    @staticmethod
    def _live(slot: _Slot[K]) -> bool:
        job = slot[2]
        return job.live and job.generation == slot[3]

    def next_due(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float, limit: float = math.inf) -> list[Start[K]]:
        """The jobs to start now, at most `limit`, marked running; each is rescheduled at its
        next slot. Due slots past the limit stay due (`held_at` = now)."""
        starts: list[Start[K]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            if len(starts) >= limit:
                if self._live(heap[0]):
                    self.held_at = now
                    break
                heapq.heappop(heap)
                continue
            slot = heapq.heappop(heap)
            if not self._live(slot):
                continue
            due, job = slot[0], slot[2]
            if job.running:
                self.skipped += 1
            else:
                job.running = True
                self._running += 1
                starts.append(Start(job.key, due, now - due))
            self._push(job, self._next_slot(job, due, now))
        return starts

    @staticmethod
    def _next_slot(job: _Job[K], due: float, now: float) -> float:
        """The next point of this job's own grid (phase + k * interval) at least half an interval
        after `due` and after `now`: on time that is due + interval; after the immediate first run
        it joins the grid; after a stall the missed slots are skipped instead of run in a burst."""
        interval, phase = job.interval, job.phase
        lower = max(due + interval / 2, now)
        return phase + (math.floor((lower - phase) / interval) + 1) * interval

    def finished(self, key: K) -> None:
        job = self._jobs.get(key)
        if job is None or not job.running:
            job = self._draining.pop(key, None)
        if job is not None and job.running:
            job.running = False
            self._running -= 1

    @property
    def running(self) -> int:
        return self._running
