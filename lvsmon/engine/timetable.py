"""When each check runs: a pure timetable, fed the current time, that never sleeps itself.

Every job runs at a fixed rate (its interval), with its phase spread over the interval so that
thousands of checks never fire in the same millisecond. The first run of a new job is immediate
(a healthy pool is programmed within milliseconds of start); the spreading starts from the second
run. A job whose previous run is still going is not started twice: that slot is skipped.

`pop_due` may be given a limit (the check runner's admission window, lvsmon/engine/lag.py): the
slots past it stay due, oldest first, and start on a later call, late; `held_at` says when the
last limit held a slot back, so a start due by then was deferred. A late start rejoins its
job's grid (`_next_slot`), so a deferral stretches one period, it does not pile up a burst.

Layout (issue 22: some 37,000 jobs, 10,000 starts a second): the jobs of one interval form a
ring sorted by phase, whose slots come round in the same order every interval, so a cursor
over it gives the next one without a heap entry per job (an array of phases and a list: 16
bytes a job, where a heap slot cost some 140). A job is on its ring while its next slot is its
turn there (on time, always); the first runs (a FIFO of batches, one per reload) and the slots
a late start or a stall moved further (a small heap) wait beside it; each ring's next due time
is kept in a list, the earliest of a few dozen intervals one min() away. Slots come out in the
order of a heap of every slot: by due time, the earlier pushed first on a tie. A key that is an
`Entry` (the runner's JobRun) is its own record: no record object nor dict entry beside it.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# a job's `slot` when its next slot is its turn on its ring
_RING: Any = object()
_REBUILD_AT = 32  # more jobs than this added to a ring at once: sorted in, not inserted one by one
_COMPACT_AT = 64  # a ring with more dead places than this and than live ones is rebuilt


def spread_phase(key: Hashable, interval: float) -> float:
    """A stable offset in [0, interval) derived from the key: a restart keeps the same spread,
    and keys that differ in any way land at unrelated points of the interval."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return interval * (int.from_bytes(digest, "big") / 2**64)


class Entry:
    """A key that is its own record in the timetable (the runner's JobRun, one a check job):
    no record beside it, nor a dict entry. Its class names these four in its own __slots__ (this
    base has none, so that it mixes with another slotted base) and calls Entry.__init__; or
    gives `interval` as a property of its own (the JobRun's is its job's: a slot less), which the
    timetable only sets to the interval it was given for the key (set_jobs), and so may `phase`
    (the JobRun's is at its place in checkstats' arrays: no float object a job)."""

    if not TYPE_CHECKING:  # its subclass gives the slots (mypy would see disjoint bases)
        __slots__ = ()
    interval: float
    phase: float
    running: bool
    # where its one live slot is: _RING, the sequence number of its side heap entry, the batch
    # list of its first run, or None (not in the timetable): the others are dead
    slot: object

    def __init__(self) -> None:
        # no interval: set_jobs sets it before the timetable reads it
        self.phase = 0.0
        self.running = False
        self.slot = None

    @property
    def key(self) -> Any:
        return self


class _Job(Entry, Generic[K]):
    """The record of a key that is not an Entry. Rings and slots point at records, so the hot
    path (pop, reschedule, skip) does no hashing."""

    __slots__ = ("interval", "key", "phase", "running", "slot")
    key: K

    def __init__(self, key: K) -> None:
        super().__init__()
        self.interval = 0.0
        self.key = key


_DEAD: Entry = _Job(None)  # a ring place whose job left
_phase_of = attrgetter("phase")


class _Ring:
    """The jobs of one interval, sorted by phase. The members (slot _RING) at or after the
    cursor are due at phase + cycle * interval, those before it one interval later."""

    __slots__ = ("at", "cycle", "dead", "interval", "jobs", "members", "phases", "pos")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.phases = array("d")
        self.jobs: list[Entry] = []
        self.at = 0
        self.cycle = 0
        self.members = 0
        self.dead = 0
        self.pos = 0  # its place in the timetable's ring list and heads

    def head(self) -> float:
        """The due time of the next member (math.inf: none); moves the cursor onto it."""
        if not self.members:
            return math.inf
        jobs, at = self.jobs, self.at
        while jobs[at].slot is not _RING:
            at += 1
            if at == len(jobs):
                at = 0
                self.cycle += 1
        self.at = at
        return self.phases[at] + self.cycle * self.interval

    def index(self, job: Entry) -> int:
        i = bisect_left(self.phases, job.phase)
        jobs = self.jobs
        while jobs[i] is not job:
            i += 1
        return i

    def add(self, new: list[Entry]) -> None:
        """Give the new jobs their places; none is a member yet (their first run waits)."""
        if len(new) > _REBUILD_AT:
            self.rebuild(new)
            return
        for job in new:
            i = bisect_right(self.phases, job.phase)
            self.phases.insert(i, job.phase)
            self.jobs.insert(i, job)
            if i < self.at:
                self.at += 1

    def drop(self, job: Entry) -> None:
        self.jobs[self.index(job)] = _DEAD
        self.dead += 1
        if job.slot is _RING:
            self.members -= 1

    def rebuild(self, new: list[Entry]) -> None:
        """The places sorted anew without the dead, `new` merged in; members keep their side
        of the cursor."""
        # the first live place at or after the cursor, to put the cursor on again
        mark = next((job for job in self.jobs[self.at :] if job is not _DEAD), None)
        jobs = [job for job in self.jobs if job is not _DEAD]
        jobs += new
        # stable: ties keep their order, the old places first; the keys are the jobs' phases
        # (a JobRun's is read from a shared array: a float for the sort's moment)
        jobs.sort(key=_phase_of)
        self.phases = array("d", [job.phase for job in jobs])
        self.jobs = jobs
        self.dead = 0
        after = None if mark is None else jobs.index(mark)
        if after is None:  # every member is in the next cycle
            self.at = 0
            self.cycle += 1
        else:
            self.at = after


# side heap entries: (due, sequence number, job); the number is the job's `slot` while live
_Slot = tuple[float, int, Entry]


@dataclass(frozen=True, slots=True)
class Start(Generic[K]):
    key: K
    due: float
    lateness: float


class Timetable(Generic[K]):
    def __init__(self) -> None:
        self._jobs: dict[K, _Job[K]] = {}
        # removed while running: kept until finished, so a job that comes back at once is still
        # not started twice
        self._draining: dict[K, _Job[K]] = {}
        self._own = 0  # Entry keys in it (not in _jobs)
        self._rings: dict[float, _Ring] = {}
        self._ring_list: list[_Ring] = []
        # each ring's head() (math.inf: none), kept as it changes: the earliest of many rings is
        # then one min() in C, not a call per ring per start
        self._heads: list[float] = []
        self._heap: list[_Slot] = []  # slots off their ring's turn (late, stalled)
        self._firsts: deque[tuple[float, list[Entry]]] = deque()  # (due, jobs) per reload
        self._first_at = 0  # the next place in the oldest batch
        self._seq = 0
        self._running = 0
        self.skipped = 0  # slots skipped because the previous run was still going
        self.held_at = -math.inf  # when pop_due's limit last left a due slot behind

    def __len__(self) -> int:
        return len(self._jobs) + self._own

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Entry):
            return key.slot is not None
        return key in self._jobs

    def set_jobs(self, jobs: dict[K, float], now: float) -> None:
        """Replace the job set. Jobs that stay keep their place in the timetable (a reload does not
        reset them); new jobs run at once; removed jobs never start again. `now` never goes back
        (the first runs wait in the order they came)."""
        for key in [k for k in self._jobs if k not in jobs]:
            job = self._jobs.pop(key)
            self._leave(job)
            if job.running:
                self._draining[key] = job
        if self._own:  # an Entry keeps its running flag: no draining entry for it
            for entry in [
                job
                for ring in self._ring_list
                for job in ring.jobs
                if job not in jobs and job is not _DEAD and job.key is job
            ]:
                self._leave(entry)
                self._own -= 1
        batch: list[Entry] = []
        added: dict[float, list[Entry]] = {}
        for key, interval in jobs.items():
            if interval <= 0:
                raise ValueError(f"interval must be positive: {interval}")
            found: Entry | None
            if isinstance(key, Entry):  # inline: once a job a reload, 37,000 jobs
                found = key if key.slot is not None else None
            else:
                found = self._jobs.get(key)
            if found is not None and found.interval == interval:
                continue
            if found is not None:
                self._leave(found)
            elif isinstance(key, Entry):
                found = key
                self._own += 1
            else:
                found = self._draining.pop(key, None) or _Job(key)
                self._jobs[key] = found
            found.interval = interval
            found.phase = spread_phase(key, interval)
            found.slot = batch
            batch.append(found)
            added.setdefault(interval, []).append(found)
        if batch:
            self._firsts.append((now, batch))
        for interval, new in added.items():
            ring = self._rings.get(interval)
            if ring is None:
                ring = self._rings[interval] = _Ring(interval)
            ring.add(new)
        for interval, ring in list(self._rings.items()):
            if ring.dead == len(ring.jobs):
                del self._rings[interval]
            elif ring.dead > _COMPACT_AT and 2 * ring.dead > len(ring.jobs):
                ring.rebuild([])
        self._ring_list = list(self._rings.values())
        for pos, ring in enumerate(self._ring_list):
            ring.pos = pos
        self._heads = [ring.head() for ring in self._ring_list]
        if len(self._heap) > 4 * len(self) + 64:  # drop dead slots left by reloads
            self._heap = [s for s in self._heap if s[2].slot is s[1]]
            heapq.heapify(self._heap)

    def _leave(self, job: Entry) -> None:
        """Its place and its slot die."""
        self._rings[job.interval].drop(job)
        job.slot = None

    def _earliest(self) -> tuple[float, object]:
        """The due time of the earliest live slot and where it is (a ring, the heap, the first
        runs; None: no slot). On a tie the one pushed first: a ring's slot was pushed before
        the side heap's, which was before a later reload's first runs."""
        best: float = math.inf
        where: object = None
        firsts = self._firsts
        while firsts:
            due, batch = firsts[0]
            at = self._first_at
            while at < len(batch) and batch[at].slot is not batch:
                at += 1
            self._first_at = at
            if at < len(batch):
                best, where = due, firsts
                break
            firsts.popleft()
            self._first_at = 0
        heap = self._heap
        while heap and heap[0][2].slot is not heap[0][1]:
            heapq.heappop(heap)
        if heap and heap[0][0] <= best:
            best, where = heap[0][0], heap
        heads = self._heads
        if heads:
            due = min(heads)
            if due <= best:
                best, where = due, self._ring_list[heads.index(due)]
        return best, where

    def next_due(self) -> float | None:
        due, where = self._earliest()
        return None if where is None else due

    def pop_due(self, now: float, limit: float = math.inf) -> list[Start[K]]:
        """The jobs to start now, at most `limit`, marked running; each is rescheduled at its
        next slot. Due slots past the limit stay due (`held_at` = now)."""
        starts: list[Start[K]] = []
        while True:
            due, where = self._earliest()
            if due > now:
                break
            if len(starts) >= limit:
                self.held_at = now
                break
            ring: _Ring | None = None
            if type(where) is _Ring:
                ring = where
                job = ring.jobs[ring.at]
                phase = ring.phases[ring.at]  # its own, read where it costs no lookup
                cycle: int | None = ring.cycle
                ring.at += 1
                if ring.at == len(ring.jobs):
                    ring.at = 0
                    ring.cycle += 1
            elif where is self._heap:
                job = heapq.heappop(self._heap)[2]
                phase = job.phase
                cycle = None
            else:
                job = self._firsts[0][1][self._first_at]
                self._first_at += 1
                phase = job.phase
                cycle = None
            if job.running:
                self.skipped += 1
            else:
                job.running = True
                self._running += 1
                starts.append(Start(job.key, due, now - due))
            self._reschedule(job, cycle, due, now, phase)
            if ring is not None:
                self._heads[ring.pos] = ring.head()
        return starts

    def _reschedule(
        self, job: Entry, cycle: int | None, due: float, now: float, phase: float
    ) -> None:
        """Its next slot (`_next_slot`): on its ring when that is its turn there; `cycle` is the
        ring's cycle it was popped from (None: it was not on its ring); `phase`: its phase."""
        interval = job.interval
        m = _next_slot(interval, phase, due, now)
        ring = self._rings[interval]
        if cycle is not None:
            if m == cycle + 1:  # on time: its next turn, nothing moves
                return
            ring.members -= 1
        elif not ring.members:
            ring.at, ring.cycle = ring.index(job), m
            ring.members = 1
            job.slot = _RING
            self._heads[ring.pos] = ring.head()
            return
        elif m == (ring.cycle if ring.index(job) >= ring.at else ring.cycle + 1):
            # its head stays: the cursor is on the head member, and a place after it this cycle
            # or before it next cycle comes later
            ring.members += 1
            job.slot = _RING
            return
        self._seq += 1
        seq = self._seq
        job.slot = seq
        heapq.heappush(self._heap, (phase + m * interval, seq, job))

    def finished(self, key: K) -> None:
        job: Entry | None
        if isinstance(key, Entry):
            job = key
        else:
            job = self._jobs.get(key)
            if job is None or not job.running:
                job = self._draining.pop(key, None)
        if job is not None and job.running:
            job.running = False
            self._running -= 1

    @property
    def running(self) -> int:
        return self._running


def _next_slot(interval: float, phase: float, due: float, now: float) -> int:
    """The next point of a job's own grid (phase + k * interval, given as k) at least half an
    interval after `due` and after `now`: on time that is due + interval; after the immediate
    first run it joins the grid; after a stall the missed slots are skipped instead of run in a
    burst."""
    lower = max(due + interval / 2, now)
    return math.floor((lower - phase) / interval) + 1
