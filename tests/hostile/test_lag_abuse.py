"""Issue 21, class 2: the lag-aware rule cannot be turned against the pool.

Five IMAP reals answer LOGIN with an endless flood of short untagged lines (from a process of their
own, so that they flood at full speed). Parsing the flood is the daemon's own work and makes its
event loop late; the lag-aware rule must not forgive those timeouts, which the flood itself
caused (lvsmon/engine/lag.py: a check that was busy receiving is not forgiven). The flooding
reals go DOWN within checkinterval + checktimeout + 1 s of the flood's start; the healthy reals,
checked meanwhile on the same loop, stay UP.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.events import Event, RealChanged
from lvsmon.engine.jobs import CheckJob, RealRef
from lvsmon.engine.lag import BUSY_BYTES, late_timeout
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from tests.daemon.conftest import VKEY, Running, start, stopper  # noqa: F401  (a fixture)
from tests.helpers import wait_for

HEALTHY, FLOODING = 3, 5
INTERVAL_S, TIMEOUT_S = 1, 2
SERVER = Path(__file__).with_name("imapflood.py")


@pytest.fixture
def imap_reals() -> Iterator[tuple[subprocess.Popen[str], list[int], list[int]]]:
    with subprocess.Popen(
        [sys.executable, str(SERVER), str(HEALTHY), str(FLOODING)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ports = [int(p) for p in proc.stdout.readline().split()]
            yield proc, ports[:HEALTHY], ports[HEALTHY:]
        finally:
            proc.kill()


def write_config(tmp_path: Path, ports: list[int]) -> Path:
    reals = "".join(f"\treal=127.0.0.1:{p} masq 1\n" for p in ports)
    cf = tmp_path / "lb.cf"
    cf.write_text(
        f"checktimeout={TIMEOUT_S}\ncheckinterval={INTERVAL_S}\nfailurecount=1\nquiescent=no\n"
        f"virtual=127.0.0.100:80\n{reals}\tservice=imap\n\tchecktype=negotiate\n"
        '\tlogin="user"\n\tpasswd="secret"\n'
    )
    return cf


async def test_a_flooding_real_goes_down_in_time_and_healthy_ones_stay_up(
    imap_reals: tuple[subprocess.Popen[str], list[int], list[int]],
    tmp_path: Path,
    stopper: list[Running],  # noqa: F811
) -> None:
    proc, healthy, flooding = imap_reals
    r = await start(write_config(tmp_path, healthy + flooding))
    stopper.append(r)
    seen: list[Event] = []
    r.daemon.events.subscribe("test", seen.append, kinds=(RealChanged,))
    await wait_for(lambda: r.weights() == dict.fromkeys(healthy + flooding, 1), within=15)

    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("flood\n")
    proc.stdin.flush()
    await asyncio.to_thread(proc.stdout.readline)  # "flooding": new LOGINs are flooded now
    started = time.monotonic()
    health = r.daemon.engine.health
    refs = [RealRef(VKEY, "127.0.0.1", p) for p in flooding]
    bound = INTERVAL_S + TIMEOUT_S + 1.0
    try:
        await wait_for(lambda: not any(health[ref].up for ref in refs), within=bound + 10)
    except AssertionError:
        pytest.fail(f"flooding reals still up {bound + 10:g}s into the flood: {seen}")
    took = time.monotonic() - started
    assert took <= bound, f"flooding reals went down after {took:.1f}s (bound {bound:g}s)"
    for ref in refs:
        assert "timeout after" in health[ref].reason or "too large" in health[ref].reason

    await asyncio.sleep(INTERVAL_S + TIMEOUT_S)  # the healthy ones, checked through the flood
    downs = [e for e in seen if isinstance(e, RealChanged) and not e.up]
    assert {e.ref.port for e in downs} <= set(flooding), downs
    assert r.weights() == dict.fromkeys(healthy, 1)
    reason = health[refs[0]].reason
    print(f"flooding reals down {took:.2f}s into the flood (bound {bound:g}s): {reason}")


def test_a_busy_check_is_not_forgiven() -> None:
    assert late_timeout(1.0, 2.0, 0)
    assert late_timeout(1.0, 2.0, BUSY_BYTES)
    assert not late_timeout(1.0, 2.0, BUSY_BYTES + 1)


SPEC = CheckSpec("negotiate", "127.0.0.1", 143, 1.0, service="imap", login="u", passwd="p")
REF = RealRef(VKEY, "127.0.0.1", 143)


async def test_a_busy_late_timeout_is_a_failure_and_an_idle_one_unknown() -> None:
    """The runner's judgement, whatever the drivers' budgets end first."""
    results: list[CheckResult] = []
    unknown: list[str] = []

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        results.append(result)
        return False

    async def never(spec: CheckSpec) -> CheckResult:
        raise AssertionError("not run")

    runner = CheckRunner(on_result, Stats(), run_check=never)
    runner.on_unknown = lambda refs, reason: unknown.append(reason)
    job = CheckJob(SPEC, 1.0)
    run = runner._runs[job] = runner._new_run(job, (REF,))
    timed_out = CheckResult(False, "timeout after 1s during imap login", 1.0, True)
    for received in (0, BUSY_BYTES + 1):
        run.lag_mark = runner.lag.lost_at(runner.lag_clock())
        run.received = received
        runner.lag.lost += 0.9  # the loop lost 0.9 s of the check's 1 s
        runner._done(run, False, timed_out)
    assert len(unknown) == 1  # the idle one
    assert results == [timed_out]  # the busy one: a failure
    assert runner.stats.checks_unknown == 1 and runner.stats.checks_failed == 1


async def test_the_runner_counts_the_bytes_a_prober_dialogue_is_fed() -> None:
    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        return False

    runner = CheckRunner(on_result, Stats())  # the default: checks on the prober
    run = runner._new_run(CheckJob(SPEC, 1.0), (REF,))
    assert run.spec_plan is not None and run.spec_plan.dialogue is not None
    dialogue = run.spec_plan.dialogue()
    assert dialogue.feed(b"* OK ready\r\n") == b'a1 LOGIN "u" "p"\r\n'
    dialogue.feed(b"* \n" * 1000)
    assert run.received == 12 + 3000
