"""A reload drops a check job while one of its checks runs: that check's late result must not
reach the health of reals a new job checks now. Otherwise the new job's steady shortcut hides
its good results and the real stays down while its checks pass (found by bench/soak.py)."""

from __future__ import annotations

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.jobs import CheckJob, Plan, RealRef
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from lvsmon.ipvs.model import ServiceKey

REF = RealRef(ServiceKey.inet("tcp", "127.100.0.2", 80), "127.88.0.48", 8080)
OLD = CheckJob(CheckSpec("connect", "127.88.0.48", 8080, timeout=3.0), 2.0)
NEW = CheckJob(CheckSpec("connect", "127.88.0.48", 8080, timeout=2.0), 2.0)


def plan(job: CheckJob) -> Plan:
    return Plan(jobs={job: (REF,)}, job_of={REF: job}, mode_of={}, failurecount={REF: 1})


async def test_a_dropped_jobs_late_result_is_ignored() -> None:
    seen: list[bool] = []

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        seen.append(result.ok)
        return result.ok

    async def never(spec: CheckSpec) -> CheckResult:
        raise AssertionError("no check runs here")

    runner = CheckRunner(on_result, Stats(), run_check=never)
    runner.schedule(plan(OLD))
    old_run = runner.runs[OLD]
    runner.schedule(plan(NEW))  # the reload: OLD's check is still in flight
    new_run = runner.runs[NEW]
    runner._done(new_run, False, CheckResult(True, "connect: connected"))
    runner._done(old_run, False, CheckResult(False, "timeout after 3s during connect"))
    assert seen == [True]  # the stale failure never reached health
