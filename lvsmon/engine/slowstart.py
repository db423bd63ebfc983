"""Slow start (`slowstart` seconds, lvsmon's own, off by default): a real that comes back up
ramps its kernel weight from 1 to its configured weight, so that a cold server (empty caches,
a JIT not warmed up) is not handed its full share at once.

The ramp of a real of weight w over S seconds has n = min(10, w) steps; step k (1..n) gives
weight max(1, ceil(w * k / n)) and begins at start + (k - 1) * S / (n - 1): the first at once,
the last (the configured weight) when S is over, which ends the ramp. n <= w makes the n
weights distinct; a real of weight 0 or 1, or S = 0, has no ramp.

Which reals ramp, and when, is the engine's (engine/engine.py): a real whose checks bring it
up (a DOWN -> UP transition, which includes the first pass of a real not adopted up from the
kernel, and of a real a reload added), not one adopted up at a restart: that one already
serves. The ramp is a "ramp" cap in engine/steering.py, so an agent's lower weight wins.

`Ramps` is pure (time is the caller's): which reals ramp, since when, and one heap of their
next step times, so that the engine's one timer wakes exactly when the earliest step is due,
whatever the number of ramps. A stopped or restarted ramp leaves its heap entry stale (a
generation number tells); stale entries are dropped as they surface.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from lvsmon.engine.jobs import RealRef

MAX_STEPS = 10
SOURCE = "ramp"  # the Steering source


def steps_of(weight: int) -> int:
    """The number of steps of a ramp to `weight` (< 2: none)."""
    return min(MAX_STEPS, weight) if weight > 0 else 0


def step_weight(weight: int, k: int, n: int) -> int:
    """The kernel weight at step k of n."""
    return max(1, math.ceil(weight * k / n))


def step_time(start: float, k: int, n: int, slowstart: float) -> float:
    """When step k of n begins."""
    return start + (k - 1) * slowstart / (n - 1)


def ramps(weight: int, slowstart: float) -> bool:
    """Does a real of this weight ramp at all?"""
    return slowstart > 0 and steps_of(weight) >= 2


@dataclass(frozen=True, slots=True)
class Step:
    """Where a ramp is at a time: step k of n, its weight, when the next step begins (the last
    step begins at the end, which ends the ramp)."""

    k: int
    n: int
    weight: int
    next_at: float
    ends_at: float


def ramp_at(start: float, now: float, weight: int, slowstart: float) -> Step | None:
    """The step of a ramp that began at `start`, at `now`; None: no ramp, or it is over."""
    if not ramps(weight, slowstart):
        return None
    n = steps_of(weight)
    # counted with step_time itself, so that at the very time step_time gave as the next
    # step, that step has begun (a division here could round to the one before, and a timer
    # woken for it would find nothing to do and wait for the same time again)
    k = 1
    while k < n and step_time(start, k + 1, n, slowstart) <= now:
        k += 1
    if k >= n:
        return None
    ends_at = step_time(start, n, n, slowstart)
    return Step(k, n, step_weight(weight, k, n), step_time(start, k + 1, n, slowstart), ends_at)


def schedule(weight: int, slowstart: float) -> list[tuple[float, int]]:
    """The whole ramp from start 0: (offset, weight) per step, the last the configured weight."""
    n = steps_of(weight)
    if not ramps(weight, slowstart):
        return []
    return [(step_time(0.0, k, n, slowstart), step_weight(weight, k, n)) for k in range(1, n + 1)]


@dataclass(slots=True)
class Ramp:
    start: float
    weight: int
    slowstart: float
    generation: int


class Ramps:
    """The ramps under way; pure (every time is an argument)."""

    def __init__(self) -> None:
        self._ramps: dict[RealRef, Ramp] = {}
        self._heap: list[tuple[float, int, RealRef]] = []
        self._generation = 0

    def __len__(self) -> int:
        return len(self._ramps)

    def __contains__(self, ref: object) -> bool:
        return ref in self._ramps

    def __iter__(self) -> Iterator[RealRef]:
        return iter(self._ramps)

    def get(self, ref: RealRef) -> Ramp | None:
        return self._ramps.get(ref)

    def start(
        self, ref: RealRef, now: float, weight: int, slowstart: float, since: float | None = None
    ) -> Step | None:
        """Begin (or begin again) the ramp of `ref`; `since`: its start, when earlier than now
        (a reload that changed its weight or slowstart keeps the start). The step now, or None
        (no ramp: none is kept)."""
        start = now if since is None else since
        step = ramp_at(start, now, weight, slowstart)
        if step is None:
            self._ramps.pop(ref, None)
            return None
        self._generation += 1
        self._ramps[ref] = Ramp(start, weight, slowstart, self._generation)
        heapq.heappush(self._heap, (step.next_at, self._generation, ref))
        return step

    def stop(self, ref: RealRef) -> Ramp | None:
        """Drop the ramp of `ref` (it went down, or a reload removed it); the ramp, if any."""
        return self._ramps.pop(ref, None)

    def step_of(self, ref: RealRef, now: float) -> Step | None:
        """Where the ramp of `ref` is (for status); None: none, or it is over."""
        ramp = self._ramps.get(ref)
        if ramp is None:
            return None
        return ramp_at(ramp.start, now, ramp.weight, ramp.slowstart)

    def next_at(self) -> float | None:
        """When the earliest step is due (None: no ramp)."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _live(self, entry: tuple[float, int, RealRef]) -> bool:
        ramp = self._ramps.get(entry[2])
        return ramp is not None and ramp.generation == entry[1]

    def due(self, now: float, ahead: float = 0.0) -> list[tuple[RealRef, Step | None]]:
        """Advance every ramp whose next step is due at `now` (or within `ahead` s after it:
        steps of many ramps close in time become one change of the table, not one each): per
        ramp, its step, or None when it is over (it is dropped then). A ramp moves one step
        per call at most (to the step of `now` when it is late), so `ahead` never skips one."""
        out: list[tuple[RealRef, Step | None]] = []
        heap = self._heap
        later: list[tuple[float, int, RealRef]] = []
        limit = now + ahead
        while heap and heap[0][0] <= limit:
            entry = heapq.heappop(heap)
            if not self._live(entry):
                continue
            ref = entry[2]
            ramp = self._ramps[ref]
            # at the step's own time when early: exactly that step
            step = ramp_at(ramp.start, max(now, entry[0]), ramp.weight, ramp.slowstart)
            if step is None:
                del self._ramps[ref]
            else:
                later.append((step.next_at, ramp.generation, ref))
            out.append((ref, step))
        for entry in later:
            heapq.heappush(heap, entry)
        if len(heap) > 2 * len(self._ramps) + 64:
            # many stopped ramps: their entries would wait for their times to surface
            self._heap = [e for e in heap if self._live(e)]
            heapq.heapify(self._heap)
        return out

    def keep_only(self, refs: Collection[RealRef]) -> list[RealRef]:
        """Drop the ramps of reals not in `refs`; those dropped."""
        gone = [r for r in self._ramps if r not in refs]
        for ref in gone:
            del self._ramps[ref]
        return gone
