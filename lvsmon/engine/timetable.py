"""When each check runs: a pure timetable, fed the current time, that never sleeps itself.

Every job runs at a fixed rate (its interval), with its phase spread over the interval so that
thousands of checks never fire in the same millisecond. The first run of a new job is immediate
(a healthy pool is programmed within milliseconds of start); the spreading starts from the second
run. A job whose previous run is still going is not started twice: that slot is skipped.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def spread_phase(key: Hashable, interval: float) -> float:
    """A stable offset in [0, interval) derived from the key: a restart keeps the same spread,
    and keys that differ in any way land at unrelated points of the interval."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return interval * (int.from_bytes(digest, "big") / 2**64)


@dataclass(order=True, slots=True)
class _Slot(Generic[K]):
    due: float
    seq: int
    key: K = field(compare=False)
    generation: int = field(compare=False)


@dataclass(frozen=True, slots=True)
class Start(Generic[K]):
    key: K
    due: float
    lateness: float


class Timetable(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[_Slot[K]] = []
        self._interval: dict[K, float] = {}
        self._generation: dict[K, int] = {}
        self._running: set[K] = set()
        self._seq = 0
        self.skipped = 0  # slots skipped because the previous run was still going

    def __len__(self) -> int:
        return len(self._interval)

    def __contains__(self, key: object) -> bool:
        return key in self._interval

    def _push(self, key: K, due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, _Slot(due, self._seq, key, self._generation[key]))

    def set_jobs(self, jobs: dict[K, float], now: float) -> None:
        """Replace the job set. Jobs that stay keep their place in the timetable (a reload does not
        reset them); new jobs run at once; removed jobs never start again."""
        for key in list(self._interval):
            if key not in jobs:
                del self._interval[key]
                self._generation[key] = self._generation.get(key, 0) + 1
        for key, interval in jobs.items():
            if interval <= 0:
                raise ValueError(f"interval must be positive: {interval}")
            old = self._interval.get(key)
            if old == interval:
                continue
            self._interval[key] = interval
            self._generation[key] = self._generation.get(key, 0) + 1
            self._push(key, now)
        if len(self._heap) > 4 * len(self._interval) + 64:  # drop dead slots left by reloads
            self._heap = [s for s in self._heap if self._live(s)]
            heapq.heapify(self._heap)

    def _live(self, slot: _Slot[K]) -> bool:
        return slot.key in self._interval and self._generation[slot.key] == slot.generation

    def next_due(self) -> float | None:
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> list[Start[K]]:
        """The jobs to start now, marked running; each is rescheduled at its next slot."""
        starts: list[Start[K]] = []
        while self._heap and self._heap[0].due <= now:
            slot = heapq.heappop(self._heap)
            if not self._live(slot):
                continue
            interval = self._interval[slot.key]
            if slot.key in self._running:
                self.skipped += 1
            else:
                self._running.add(slot.key)
                starts.append(Start(slot.key, slot.due, now - slot.due))
            self._push(slot.key, self._next_slot(slot.key, slot.due, interval, now))
        return starts

    def _next_slot(self, key: K, due: float, interval: float, now: float) -> float:
        """The next point of this job's own grid (phase + k * interval) at least half an interval
        after `due` and after `now`: on time that is due + interval; after the immediate first run
        it joins the grid; after a stall the missed slots are skipped instead of run in a burst."""
        phase = spread_phase(key, interval)
        lower = max(due + interval / 2, now)
        return phase + (math.floor((lower - phase) / interval) + 1) * interval

    def finished(self, key: K) -> None:
        self._running.discard(key)

    @property
    def running(self) -> int:
        return len(self._running)
