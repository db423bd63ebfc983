"""A small pool's starts come in rounds at least WAKE_QUANTUM_S apart (lvsmon/engine/runner.py):
each wake-up of the interpreter costs more than a start, so 200 checks a second are started a
few at a time, not one wake-up each."""

from __future__ import annotations

import asyncio
import itertools
import time

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.runner import CheckRunner, JobRun
from lvsmon.engine.status import Stats

from .test_admission import plan_of


class RoundCounter(CheckRunner):
    """Records when each check started (the rounds are the clusters of those times)."""

    def __init__(self) -> None:
        super().__init__(lambda refs, result: True, Stats(), run_check=self._check)
        self.started: list[float] = []

    async def _check(self, spec: CheckSpec) -> CheckResult:
        return CheckResult(True, "ok")

    def _start(self, run: JobRun) -> None:
        self.started.append(time.monotonic())
        super()._start(run)


def rounds(times: list[float], gap: float) -> int:
    return 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > gap)


async def test_a_small_pools_starts_are_batched_into_rounds() -> None:
    runner = RoundCounter()
    runner.schedule(plan_of(200, interval=1.0))  # 200 checks a second, phases spread
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        await asyncio.sleep(2.6)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.stop()
    later = [t for t in runner.started if t - runner.started[0] >= 1.1]  # past the first round
    assert len(later) >= 200  # every job came round again
    span = later[-1] - later[0]
    # a round per 10 ms at most (a 4 ms floor woke up for nearly every start: ~180 rounds)
    assert rounds(later, 0.002) <= span / 0.010 + 5
