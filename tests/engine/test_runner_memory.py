"""What a check job costs the runner and its timetable (issue 22: 37,298 jobs at keepalived
#2318's shape): the JobRun is the timetable's record too, and the timetable keeps no object of
its own per job."""

from __future__ import annotations

import gc
import sys
import tracemalloc

from lvsmon.checks.base import CheckSpec
from lvsmon.engine.jobs import CheckJob, CombinedJob
from lvsmon.engine.runner import JobRun
from lvsmon.engine.timetable import Timetable

N = 2000


def runs(n: int) -> list[JobRun]:
    return [
        JobRun(
            CheckJob(CheckSpec("connect", f"127.0.{i // 250}.{i % 250 + 1}", 80, timeout=1.0), 2.0),
            (),
            False,
        )
        for i in range(n)
    ]


def test_a_job_run_is_128_bytes_and_has_no_dict() -> None:
    run = runs(1)[0]
    assert not hasattr(run, "__dict__")
    # 12 slots: one more crosses pymalloc's next 16-byte step (the interval is its job's, a
    # combined check's connect plan is in its rare part)
    assert sys.getsizeof(run) <= 128
    assert run.interval == 2.0 and run.rare is None


def test_a_combined_job_run_has_its_connect_plan_aside() -> None:
    spec = CheckSpec("connect", "127.0.0.1", 80, timeout=1.0)
    run = JobRun(CombinedJob(spec, 2.0, spec, 2), (), True)
    assert run.rare is not None and run.rare.connect_plan is not None
    assert sys.getsizeof(run) <= 128
    try:
        run.interval = 3.0
    except ValueError:
        pass
    else:
        raise AssertionError("a run took an interval that is not its job's")


def test_the_timetable_keeps_no_object_per_job() -> None:
    jobs = {run: 2.0 for run in runs(N)}
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tt: Timetable[JobRun] = Timetable()
        tt.set_jobs(jobs, 0.0)
        pending = (tracemalloc.get_traced_memory()[0] - before) / N
        now = 0.0
        while now < 6.0:  # past the first round: every job on its ring
            for start in tt.pop_due(now):
                tt.finished(start.key)
            now += 0.01
        gc.collect()
        steady = (tracemalloc.get_traced_memory()[0] - before) / N
    finally:
        tracemalloc.stop()
    # the ring (a phase and a reference), the first runs' batch, the phase float: no heap slot,
    # record or dict entry (the heap timetable: some 250 bytes a job)
    assert pending < 64
    assert steady < 64


def test_a_jobs_phase_is_the_same_after_a_restart() -> None:
    # the timetable spreads jobs by a hash of the key's repr: a JobRun's must name its check and
    # real, not its address, or every restart moved every check in its interval
    from lvsmon.engine.timetable import spread_phase

    first, again, other = runs(2)[0], runs(1)[0], runs(2)[1]
    assert repr(first) == repr(again) == "JobRun(connect 127.0.0.1:80 none 2s)"
    assert spread_phase(first, 2.0) == spread_phase(again, 2.0)
    assert spread_phase(first, 2.0) != spread_phase(other, 2.0)
