"""Issue 22 goal 5: a check job is one object per real (the job is its spec), and a plan's job
with a single real keeps that real without a tuple of its own."""

from __future__ import annotations

import gc
import sys
import tracemalloc

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.jobs import CheckJob, CombinedJob, JobRefs, RealRef, build_plan
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from lvsmon.ipvs.model import ServiceKey

from .conftest import cfg

SPEC = CheckSpec("connect", "127.0.0.1", 80, timeout=1.0)
V1 = ServiceKey.inet("tcp", "10.1.0.1", 80)


def test_a_job_is_its_spec_in_one_object() -> None:
    plan = build_plan(
        cfg(
            """\
            virtual=10.1.0.1:80
            \treal=10.2.0.1:80 gate
            \treal=10.2.0.2:80 gate
            \tchecktype=negotiate
            \tservice=http
            \trequest="/health"
            \treceive="ok"
            """
        )
    )
    for job in plan.jobs:
        assert job.spec is job and isinstance(job, CheckSpec)
        assert not hasattr(job, "__dict__")
        # a spec (72), a job (72) and its stored hash (36) were three objects
        assert sys.getsizeof(job) <= 80
        assert job.request == "/health" and job.interval == 10.0  # the default checkinterval


def test_jobs_compare_by_spec_interval_and_connects() -> None:
    job = CheckJob(SPEC, 2.0)
    assert job == CheckJob(CheckSpec("connect", "127.0.0.1", 80, timeout=1.0), 2.0)
    assert hash(job) == hash(CheckJob(SPEC, 2.0))
    assert job != CheckJob(SPEC, 3.0)
    assert job != CheckJob(CheckSpec("connect", "127.0.0.1", 80, timeout=2.0), 2.0)
    assert job != SPEC and SPEC.__eq__(job) is NotImplemented  # a job is not its bare spec
    assert job.connect is None and job.num_connects == 0
    combined = CombinedJob(SPEC, 2.0, SPEC, 3)
    assert combined == CombinedJob(SPEC, 2.0, SPEC, 3)
    assert combined != CombinedJob(SPEC, 2.0, SPEC, 4)
    assert combined != job and job != combined
    assert combined.connect is SPEC and combined.num_connects == 3
    assert len({job, CheckJob(SPEC, 2.0), combined, CombinedJob(SPEC, 2.0, SPEC, 3)}) == 2


def test_a_job_is_frozen() -> None:
    job = CheckJob(SPEC, 2.0)
    for name in ("interval", "host"):
        try:
            setattr(job, name, 1.0)
        except AttributeError:
            continue
        raise AssertionError(f"{name} assigned")


def test_a_job_of_one_real_keeps_its_ref_without_a_tuple() -> None:
    plan = build_plan(
        cfg(
            """\
            virtual=10.1.0.1:80
            \treal=10.2.0.1:80 gate
            \treal=10.2.0.2:80 gate
            \tchecktype=connect
            virtual=10.1.0.2:80
            \treal=10.2.0.1:80 gate
            \tchecktype=connect
            """
        )
    )
    assert isinstance(plan.jobs, JobRefs)
    alone = plan.job_of[RealRef(V1, "10.2.0.2", 80)]
    shared = plan.job_of[RealRef(V1, "10.2.0.1", 80)]
    assert isinstance(plan.jobs.packed[alone], RealRef)  # no 1-tuple
    assert plan.jobs[alone] == (RealRef(V1, "10.2.0.2", 80),)
    assert [ref.service for ref in plan.jobs[shared]] == [
        V1,
        ServiceKey.inet("tcp", "10.1.0.2", 80),
    ]
    assert dict(plan.jobs) == {alone: plan.jobs[alone], shared: plan.jobs[shared]}
    runner = CheckRunner(lambda refs, result: True, Stats(), run_check=_never)
    runner.schedule(plan)
    run = runner.runs[alone]
    assert run.packed is plan.jobs.packed[alone] and run.refs == plan.jobs[alone]
    assert runner.runs[shared].refs == plan.jobs[shared]


async def _never(spec: CheckSpec) -> CheckResult:
    raise AssertionError("not run")


def test_a_jobs_duration_sum_is_no_object_of_its_own() -> None:
    """The sum is in a shared array at the job's place: as a slot it was a float object per job
    once its first check had run (24 bytes)."""
    from lvsmon.engine.checkstats import CheckCounts

    counts = [CheckCounts() for _ in range(500)]
    result = CheckResult(True, "ok", 0.0123)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for c in counts:
            c.record(result)
        grown = (tracemalloc.get_traced_memory()[0] - before) / len(counts)
    finally:
        tracemalloc.stop()
    assert grown < 4
    assert all(c.seconds == 0.0123 and c.checks == 1 for c in counts)
    counts[0].record(CheckResult(False, "connect: connection refused", 0.5))
    assert counts[0].seconds == 0.0123 + 0.5 and sum(counts[0].failures) == 1


def test_a_jobs_place_is_no_int_object_of_its_own() -> None:
    """A place past 256 as one int was an object per job (28 B): its block's start is shared by
    the block's 32 jobs, and its offset is one of Python's cached small ints."""
    from lvsmon.engine.checkstats import CheckCounts

    counts = [CheckCounts() for _ in range(200)]
    # the jobs of one block share its start's one object (places other tests gave back may come
    # from any block, so the number of blocks is not known here)
    by_value: dict[int, set[int]] = {}
    for c in counts:
        by_value.setdefault(c._start, set()).add(id(c._start))
    assert all(len(ids) == 1 for ids in by_value.values())
    assert all(0 <= c._at <= 248 and c._at is int(str(c._at)) for c in counts)
    bases = [c._start + c._at for c in counts]
    assert len(set(bases)) == len(bases)  # each its own place
    counts[7].record(CheckResult(True, "ok", 0.002))
    assert counts[7].checks == 1 and counts[7].seconds == 0.002
    assert all(c.checks == 0 and c.seconds == 0.0 for i, c in enumerate(counts) if i != 7)
