"""The checks' budget of file descriptors (issue 21): the rule, the shared FIFO, and who takes
from it (the prober's probes, the check runner's tasks)."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any

import pytest

from lvsmon.api.guard import FD_SHARE
from lvsmon.checks import fds as fdmod
from lvsmon.checks import prober as prober_mod
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.fds import (
    EXTERNAL_FDS,
    HELD,
    RESERVE,
    TASK_FDS,
    FdBudget,
    check_budget,
    fd_limit,
    task_fds,
)
from lvsmon.checks.prober import MAX_IN_FLIGHT, ProbePlan, Prober, hold_prober, release_prober
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from tests.checks.conftest import raw_server


def test_the_control_servers_share_is_the_guards() -> None:
    assert fdmod.CONTROL_SHARE == FD_SHARE


@pytest.mark.parametrize(
    ("limit", "budget"),
    [
        (128, 128 - 25 - 64),  # the hostile test's limit: 39
        (1024, 1024 - 204 - 64),  # a common hard limit: 756
        (65536, 65536 - 13107 - 64),
        (1 << 20, (1 << 20) - 209715 - 64),
        (96, 24),  # less than the reserve would leave: a quarter
        (64, 16),
        (8, 2),
        (1, 1),
    ],
)
def test_the_check_budget(limit: int, budget: int) -> None:
    assert check_budget(limit) == budget


def test_the_budget_leaves_the_control_share_and_the_reserve() -> None:
    for limit in range(200, 200_000, 997):
        control = max(8, int(limit * FD_SHARE))  # as the guard counts its share
        assert check_budget(limit) + control + RESERVE <= limit
        if limit >= 512:
            assert check_budget(limit) >= limit // 2  # and most of it is the checks'
    budgets = [check_budget(limit) for limit in range(1, 5000)]
    assert budgets == sorted(budgets)  # a higher limit never gives less


def test_fd_limit_is_the_soft_limit() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert fd_limit() == (fdmod.UNLIMITED if soft == resource.RLIM_INFINITY else soft)


def test_what_a_task_is_counted_for() -> None:
    def spec(**kw: Any) -> CheckSpec:
        return CheckSpec(**{"host": "127.0.0.1", "port": 80, "timeout": 1, **kw})

    assert task_fds(spec(kind="external", checkcommand="/bin/true")) == EXTERNAL_FDS
    assert task_fds(spec(kind="external-perl", checkcommand="/bin/true")) == EXTERNAL_FDS
    assert task_fds(spec(kind="negotiate", service="https")) == TASK_FDS
    assert EXTERNAL_FDS > TASK_FDS > 1  # an external command or a library opens more than one


async def test_the_probers_budget_follows_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(prober_mod, "fd_limit", lambda: 128)
    p = Prober(loop)
    assert p.fds.total == check_budget(128)
    p.close()
    monkeypatch.setattr(prober_mod, "fd_limit", lambda: 1 << 20)
    p = Prober(loop)
    assert p.fds.total == MAX_IN_FLIGHT  # its bound whatever the limit
    p.close()


def test_the_fifo_serves_the_oldest_first_and_a_large_need_alone() -> None:
    budget = FdBudget(4)
    granted: list[str] = []

    def grant(name: str, ok: bool = True) -> Callable[[], bool]:
        def granted_to() -> bool:
            granted.append(name)
            return ok

        return granted_to

    assert budget.take(3)
    assert not budget.take(2)  # one left
    budget.wait(2, grant("a"))
    assert not budget.take(1)  # someone waits: no overtaking, though one is free
    budget.wait(1, grant("b"))
    budget.wait(9, grant("big"))  # more than the whole budget: runs alone
    budget.wait(1, grant("c"))
    budget.give(3)
    assert (granted, budget.used) == (["a", "b"], 3)
    budget.give(2)
    assert (granted, budget.used) == (["a", "b"], 1)  # "big" waits for an empty budget
    budget.give(1)
    assert (granted, budget.used) == (["a", "b", "big"], 9)
    budget.give(9)
    assert (granted, budget.used, len(budget.queue)) == (["a", "b", "big", "c"], 1, 0)
    budget.wait(2, grant("gone", ok=False))  # its waiter left: the descriptors come back
    budget.wait(1, grant("d"))
    budget.give(1)
    assert (granted[-2:], budget.used) == (["gone", "d"], 1)


async def test_acquire_waits_and_a_cancelled_waiter_gives_nothing_away() -> None:
    budget = FdBudget(2)
    await budget.acquire(2)
    first = asyncio.create_task(budget.acquire(1))
    second = asyncio.create_task(budget.acquire(1))
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    first.cancel()
    budget.give(2)
    await second
    assert first.cancelled()
    assert (budget.used, len(budget.queue)) == (1, 0)


async def test_a_task_check_takes_its_descriptors_and_its_own_probes_are_not_counted() -> None:
    """Through the check runner: each check run as a task holds task_fds(spec) from the
    prober's budget while it runs (HELD set), waits when they are spent, and a probe of its own
    takes nothing more."""
    loop = asyncio.get_running_loop()
    prober = hold_prober(loop)
    prober.fds.total = EXTERNAL_FDS + 1  # one external command at a time
    seen: list[tuple[str, int, bool]] = []
    release = asyncio.Event()

    async def fake_run_check(spec: CheckSpec) -> CheckResult:
        seen.append((spec.checkcommand or "", prober.fds.used, HELD.get()))
        await release.wait()
        return CheckResult(True, "ok")

    runner = CheckRunner(lambda refs, result: True, Stats())  # on the loop's prober
    runner._run_check = fake_run_check
    runner._ensure_prober()
    assert runner._prober is prober
    spec = CheckSpec(kind="external", checkcommand="/bin/a", host="127.0.0.1", port=1, timeout=1)
    other = CheckSpec(kind="external", checkcommand="/bin/b", host="127.0.0.1", port=1, timeout=1)
    try:
        one = asyncio.create_task(runner._run_metered(spec))
        two = asyncio.create_task(runner._run_metered(other))
        await asyncio.sleep(0.05)
        assert seen == [("/bin/a", EXTERNAL_FDS, True)]  # the second waits for descriptors
        release.set()
        assert (await one).ok and (await two).ok
        assert seen[1] == ("/bin/b", EXTERNAL_FDS, True)
        assert prober.fds.used == 0 and not HELD.get()

        async with raw_server(None) as silent:
            plan = ProbePlan(
                CheckSpec(kind="connect", host="127.0.0.1", port=silent.port, timeout=1),
                2,  # AF_INET
                ("127.0.0.1", silent.port),
            )

            async def inside_a_task() -> int:
                HELD.set(True)
                await prober.probe(plan)
                return prober.fds.used

            assert await asyncio.create_task(inside_a_task()) == 0
            await prober.probe(plan)  # outside one it takes a descriptor, and gives it back
            assert prober.fds.used == 0
    finally:
        await runner.stop()
        release_prober(prober)
