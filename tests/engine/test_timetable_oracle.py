"""The ring timetable against the heap one it replaced (kept here as the oracle, as it was at
6b12f71): any job sets, reloads, limits, finishes and clock steps give the same starts (key, due,
lateness), the same skipped count, held_at and next due."""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon.engine import timetable
from lvsmon.engine.timetable import Entry, Start, Timetable, spread_phase

K = TypeVar("K", bound=Hashable)


class _OldJob(Generic[K]):
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
_OldSlot = tuple[float, int, _OldJob[K], int]


class OldTimetable(Generic[K]):
    def __init__(self) -> None:
        self._heap: list[_OldSlot[K]] = []
        self._jobs: dict[K, _OldJob[K]] = {}
        # removed while running: kept until finished, so a job that comes back at once is still
        # not started twice
        self._draining: dict[K, _OldJob[K]] = {}
        self._seq = 0
        self._running = 0
        self.skipped = 0  # slots skipped because the previous run was still going
        self.held_at = -math.inf  # when pop_due's limit last left a due slot behind

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, key: object) -> bool:
        return key in self._jobs

    def _push(self, job: _OldJob[K], due: float) -> None:
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
                found = self._draining.pop(key, None) or _OldJob(key)
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
    def _live(slot: _OldSlot[K]) -> bool:
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
    def _next_slot(job: _OldJob[K], due: float, now: float) -> float:
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


KEYS = [f"j{i}" for i in range(12)]


class Named(Entry):
    """A key that is its own record, as the runner's JobRun is."""

    __slots__ = ("interval", "name", "phase", "running", "slot")

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __repr__(self) -> str:  # its phase as the str key's
        return repr(self.name)


INTERVALS = [0.5, 1.0, 1.0, 1.0, 2.5, 3.0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_ring_timetable_starts_what_the_heap_one_started(data: st.DataObject) -> None:
    # the rings' rebuilds (many jobs added at once, many dead places) at any size
    saved = timetable._REBUILD_AT, timetable._COMPACT_AT
    timetable._REBUILD_AT = data.draw(st.sampled_from([0, 2, 32]))
    timetable._COMPACT_AT = data.draw(st.sampled_from([0, 3, 64]))
    try:
        compare(data)
    finally:
        timetable._REBUILD_AT, timetable._COMPACT_AT = saved


def compare(data: st.DataObject) -> None:
    old: OldTimetable[str] = OldTimetable()
    new: Timetable[Hashable] = Timetable()
    own = {key: Named(key) for key in KEYS}
    if data.draw(st.booleans()):  # the new one keyed by Entry objects

        def of(key: str) -> Hashable:
            return own[key]

        def name(key: Hashable) -> str:
            return key.name if isinstance(key, Named) else str(key)

    else:

        def of(key: str) -> Hashable:
            return key

        def name(key: Hashable) -> str:
            return str(key)

    now = 0.0
    for _ in range(data.draw(st.integers(1, 60))):
        op = data.draw(st.sampled_from(["set", "pop", "pop", "pop", "finish", "step", "due"]))
        if op == "set":
            keys = data.draw(st.lists(st.sampled_from(KEYS), unique=True))
            jobs = {k: data.draw(st.sampled_from(INTERVALS)) for k in keys}
            old.set_jobs(jobs, now)
            new.set_jobs({of(k): v for k, v in jobs.items()}, now)
        elif op == "pop":
            limit = data.draw(st.one_of(st.just(math.inf), st.integers(-1, 5)))
            want = [(s.key, s.due, s.lateness) for s in old.pop_due(now, limit)]
            got = [(name(s.key), s.due, s.lateness) for s in new.pop_due(now, limit)]
            assert got == want
        elif op == "finish":
            for key in data.draw(st.lists(st.sampled_from(KEYS), unique=True)):
                old.finished(key)
                new.finished(of(key))
        elif op == "step":
            now += data.draw(st.sampled_from([0.001, 0.05, 0.3, 0.7, 1.0, 2.6, 40.0]))
        else:  # exactly onto the next slot: ties between a slot and a reload's first runs
            due = old.next_due()
            if due is not None and due > now:
                now = due
        assert new.next_due() == old.next_due()
        assert all((of(key) in new) == (key in old) for key in KEYS)
        assert (new.skipped, new.running, new.held_at, len(new)) == (
            old.skipped,
            old.running,
            old.held_at,
            len(old),
        )


def test_many_jobs_on_time_stay_on_their_ring_and_start_as_the_heap_did() -> None:
    """Past the first round every slot of an on-time pool is its ring's turn: no side heap."""
    old: OldTimetable[str] = OldTimetable()
    new: Timetable[str] = Timetable()
    jobs = {f"r{i}": 2.0 for i in range(500)} | {f"s{i}": 5.0 for i in range(100)}
    old.set_jobs(jobs, 0.0)
    new.set_jobs(jobs, 0.0)
    now = 0.0
    while now < 30.0:
        want = old.pop_due(now, 50)
        assert new.pop_due(now, 50) == want
        for s in want:
            old.finished(s.key)
            new.finished(s.key)
        now = round(now + 0.004, 6)
    assert new._heap == [] and not new._firsts
    assert sum(ring.members for ring in new._ring_list) == 600
