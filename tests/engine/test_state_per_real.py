"""What lvsmon keeps per real beyond its fixed base (issue 22, goal 5: at most 1 KiB a real at
100 x 10,000 and 2,284 x 37,298 reals; bench/memory_per_real.py measures it): each test holds
one cut of session 7's second round, and fails with the structure the cut removed."""

from __future__ import annotations

import gc
import sys

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.jobs import CheckJob, Mode, Plan, RealRef, build_plan, packed_refs
from lvsmon.engine.runner import CheckRunner, JobRun
from lvsmon.engine.status import Stats
from lvsmon.engine.timetable import Timetable, spread_phase
from lvsmon.ipvs.model import ServiceKey

from .conftest import cfg

N = 1000
VIP = ServiceKey.inet("tcp", "127.100.0.1", 80)


def _plan(n: int) -> Plan:
    refs = [RealRef(VIP, f"127.0.{i // 250}.{i % 250 + 1}", 80) for i in range(n)]
    jobs = [CheckJob(CheckSpec("connect", ref.address, 80, timeout=1.0), 2.0) for ref in refs]
    return Plan(
        jobs={job: (ref,) for job, ref in zip(jobs, refs, strict=True)},
        job_of=dict(zip(refs, jobs, strict=True)),
        mode_of={},
        failurecount=dict.fromkeys(refs, 1),
    )


def _runner() -> CheckRunner:
    async def never(spec: CheckSpec) -> CheckResult:
        raise AssertionError("no check runs here")

    return CheckRunner(lambda refs, result: True, Stats(), run_check=never)


def _dicts_of(obj: object, at_least: int) -> list[str]:
    """The attributes of `obj` that are, or directly hold, a dict of `at_least` entries."""
    found = []
    for name, value in vars(obj).items():
        for o in (value, *gc.get_referents(value)):
            if isinstance(o, dict) and len(o) >= at_least and o is not vars(obj):
                found.append(name)
    return found


def test_the_runner_keeps_no_dict_per_job() -> None:
    # its runs by job were a dict of their own (35 bytes a job); the plan has the jobs and a
    # run its job, so a list of the runs does
    runner = _runner()
    plan = _plan(N)
    runner.schedule(plan)
    assert _dicts_of(runner, N) == []
    assert len(runner.runs) == N
    job = next(iter(plan.jobs))
    equal = CheckJob(CheckSpec("connect", job.host, 80, timeout=1.0), 2.0)
    assert runner.runs[equal] is runner.runs[job] and runner.runs[job].job is job
    assert [run.job for run in runner.runs.values()] == list(plan.jobs)
    assert [j for j, _ in runner.runs.items()] == list(plan.jobs)


async def test_run_once_of_a_job_outside_the_plan_still_counts() -> None:
    # a dropped run is told by its refs (an empty tuple of its own): run_once's empty refs are
    # not that one, so its result is taken in
    seen: list[tuple[RealRef, ...]] = []

    async def ok(spec: CheckSpec) -> CheckResult:
        return CheckResult(True, "connect: connected")

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        seen.append(refs)
        return True

    runner = CheckRunner(on_result, Stats(), run_check=ok)
    runner.schedule(_plan(2))
    job = CheckJob(CheckSpec("connect", "127.0.9.9", 80, timeout=1.0), 2.0)
    await runner.run_once(job)
    assert seen == [()]
    assert runner.runs[job].checks == 1 and len(runner.runs) == 3
    # a run set in another's place drops that one, as a dict by job did
    old = runner.runs[job]
    runner.runs[job] = runner._new_run(job, ())
    runner._done(old, False, CheckResult(True, "connect: connected"))
    assert seen == [()] and old.checks == 1


def test_a_job_runs_phase_is_no_object_of_its_own() -> None:
    # its phase in the timetable was a slot holding a float of its own (32 bytes a job); it is
    # at the run's place in checkstats' shared arrays now
    runs = [
        JobRun(CheckJob(CheckSpec("connect", f"127.0.0.{i}", 80, timeout=1.0), 2.0), (), False)
        for i in range(1, 4)
    ]
    tt: Timetable[JobRun] = Timetable()
    tt.set_jobs(dict.fromkeys(runs, 2.0), 0.0)
    for run in runs:
        assert run.phase == spread_phase(run, 2.0) > 0.0
        assert sys.getsizeof(run) <= 120
        assert not [o for o in gc.get_referents(run) if isinstance(o, float) and o == run.phase]
    assert len({run.phase for run in runs}) == 3  # each its own place
    # on its ring every start reads the ring's copy; off it (the first runs) the run's own
    starts = [s.key for s in tt.pop_due(0.0)]
    assert starts == runs
    for run in runs:
        tt.finished(run)
    # the second round joins the grid: at its phase, at least half an interval after the first
    second = sorted(runs, key=lambda r: r.phase if r.phase >= 1.0 else r.phase + 2.0)
    assert [s.key for s in tt.pop_due(4.0)] == second
    for run in runs:
        tt.finished(run)
    # then round after round on the ring, in phase order, each at its own phase
    for k in (2, 3):
        got = [(s.key, s.due) for s in tt.pop_due(2.0 * k + 1.999)]
        assert [r for r, _ in got][-3:] == sorted(runs, key=lambda r: r.phase)
        for run, due in got[-3:]:
            assert due == run.phase + 2.0 * k
            tt.finished(run)


def test_a_plan_keeps_no_dict_of_its_jobs() -> None:
    # its jobs with their refs were a dict kept with the plan (35 bytes a job), read once a plan
    # (the runner keeps each job's refs): the plan makes it from its parts when read
    lines = ["checkinterval=5"]
    for v in range(2):
        lines.append(f"virtual=10.1.0.{v + 1}:80")
        for r in range(N // 2):
            lines.append(f"\treal=10.2.{r // 200}.{r % 200 + 1}:80 masq")  # each job in both
        lines.append("\tchecktype=connect")
    plan = build_plan(cfg("\n".join(lines) + "\n"))
    held = [
        name
        for name in ("jobs", "job_of", "mode_of", "failurecount", "rules", "parts")
        for o in (getattr(plan, name), *gc.get_referents(getattr(plan, name)))
        if isinstance(o, dict) and o and isinstance(next(iter(o)), CheckJob)
    ]
    assert held == []
    assert len(plan.jobs) == N // 2 and len(plan.job_of) == N
    runner = _runner()
    runner.schedule(plan)
    for run in runner.runs.values():
        assert [ref.service for ref in run.refs] == list(plan.parts)
        assert run.packed == packed_refs(plan.jobs)[run.job] and run.refs == plan.jobs[run.job]


def test_a_job_runs_lag_mark_is_no_object_of_its_own() -> None:
    # the lag monitor's mark at each check start was a slot holding a float a start made (24
    # bytes and a slot a job in a running daemon); it is at the run's place now, so the run fits
    # pymalloc's 112-byte class
    runs = [
        JobRun(CheckJob(CheckSpec("connect", f"127.0.0.{i}", 80, timeout=1.0), 2.0), (), False)
        for i in range(1, 3)
    ]
    runs[0].lag_mark, runs[1].lag_mark = 1.25, 2.5
    assert (runs[0].lag_mark, runs[1].lag_mark) == (1.25, 2.5)
    for run in runs:
        assert sys.getsizeof(run) <= 112
        assert not [o for o in gc.get_referents(run) if isinstance(o, float)]


def test_a_plan_keeps_no_dict_by_real_and_reads_a_real_at_its_place() -> None:
    # job_of and mode_of were dicts by ref (35 bytes a real each): a ref knows its place in its
    # virtual, and the plan reads its part there
    lines = ["checkinterval=5", "virtual=10.1.0.1:80"]
    lines += [f"\treal=10.2.0.{r + 1}:80 masq" for r in range(50)]
    lines += ["\tchecktype=connect", "virtual=10.1.0.2:80", "\treal=10.2.1.1:80 masq"]
    lines += ["\tchecktype=on"]
    plan = build_plan(cfg("\n".join(lines) + "\n"))
    for name in ("job_of", "mode_of", "rules", "failurecount"):
        mapping = getattr(plan, name)
        held = [o for o in (mapping, *gc.get_referents(mapping)) if isinstance(o, dict) and o]
        assert not [d for d in held if isinstance(next(iter(d)), RealRef)], name
    first, second = next(iter(plan.parts.values()))[1][:2]
    assert (first.at, second.at) == (0, 1)
    assert plan.job_of[second].host == "10.2.0.2"
    # equal refs made elsewhere, without a place or at another one, are found all the same
    for at in (-1, 0, 49, 99):
        ref = RealRef(second.service, second.address, second.port, at)
        assert ref in plan.job_of and plan.job_of[ref] is plan.job_of[second]
        assert ref in plan.rules and ref not in plan.mode_of
    moded = next(iter(plan.mode_of))
    assert plan.mode_of[moded] == Mode.ALWAYS_UP and moded not in plan.job_of
    stranger = RealRef(second.service, "10.9.9.9", 80, 1)
    assert stranger not in plan.job_of and stranger not in plan.rules
    assert (len(plan.job_of), len(plan.mode_of), len(plan.rules)) == (50, 1, 51)
    assert tuple(plan.job_of) == next(iter(plan.parts.values()))[1]
    assert dict(plan.job_of.items()) == plan.job_of  # a Mapping equal to its dict


def test_transitions_are_counted_at_each_reals_place_and_follow_a_reload() -> None:
    # a dict by real held every real's pair (each came up once at start: 35 bytes a real)
    from lvsmon.engine.checkstats import Transitions

    def plan_of(reals: list[int]) -> Plan:
        lines = ["checkinterval=5", "virtual=10.1.0.1:80"]
        lines += [f"\treal=10.2.0.{r}:80 masq" for r in reals]
        return build_plan(cfg("\n".join([*lines, "\tchecktype=connect"]) + "\n"))

    def refs(plan: Plan) -> list[tuple[ServiceKey, tuple[RealRef, ...]]]:
        return [(key, part[1]) for key, part in plan.parts.items()]

    old = plan_of(list(range(1, 101)))
    transitions = Transitions()
    transitions.follow(refs(old))
    for ref in old.job_of:
        transitions.record(ref, True)
    second = list(old.job_of)[1]
    transitions.record(second, False)
    held = [o for o in gc.get_referents(transitions) if isinstance(o, dict) and o]
    assert all(not isinstance(next(iter(d)), RealRef) for d in held)
    assert transitions.of(second) == (1, 1) and len(transitions.counts) == 100
    # a reload: two reals in front, the first one gone; the others keep theirs at new places
    new = plan_of([0, 200, *range(2, 101)])
    transitions.follow(refs(new))
    moved = next(ref for ref in new.job_of if ref == second)
    assert (moved.at, second.at) == (2, 1)
    assert transitions.of(moved) == (1, 1)
    assert transitions.of(RealRef(second.service, "10.2.0.1", 80)) == (0, 0)  # gone
    assert transitions.of(RealRef(second.service, "10.2.0.0", 80)) == (0, 0)  # new
    assert transitions.of(list(new.job_of)[50]) == (1, 0)
    assert len(transitions.counts) == 99
    # a real of no plan followed is still counted (a plan made by hand)
    stranger = RealRef(ServiceKey.fwm(7), "10.9.9.9", 80)
    transitions.record(stranger, True)
    assert transitions.of(stranger) == (1, 0)
    transitions.keep_only(set(new.rules))
    assert transitions.of(stranger) == (0, 0)
