"""Issue 21, class 2: the lag-aware rule cannot be turned against the pool.

Five IMAP reals answer LOGIN with an endless flood of short untagged lines (from a process of their
own, so that they flood at full speed). Parsing the flood is the daemon's own work and makes its
event loop late; the lag-aware rule must not forgive those timeouts, which the flood itself
caused (lvsmon/engine/lag.py: a check that was busy receiving is not forgiven). The flooding
reals go DOWN within checkinterval + checktimeout + 1 s of the flood's start; the healthy reals,
checked meanwhile on the same loop, stay UP.

The same holds for the checks run as tasks (TLS dialogues, the library protocols): they report the
bytes they received (CheckResult.received), and a flood under their 256 KiB budget, with the loop
lagged meanwhile, is a failure where an idle peer's timeout under the same lag is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from lvsmon.checks import run_check
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.prober import DialoguePlan, prober_for
from lvsmon.engine.events import Event, RealChanged
from lvsmon.engine.jobs import CheckJob, RealRef
from lvsmon.engine.lag import BUSY_BYTES, late_timeout
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats
from tests.daemon.conftest import VKEY, Running, start, stopper  # noqa: F401  (a fixture)
from tests.helpers import wait_for
from tests.hostile.test_driver_bounds import Talk, tcp_peer

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
        runner.lag.lost += 0.9  # the loop lost 0.9 s of the check's 1 s
        runner._done(run, False, dataclasses.replace(timed_out, received=received))
    assert len(unknown) == 1  # the idle one
    assert results == [timed_out]  # the busy one: a failure
    assert runner.stats.checks_unknown == 1 and runner.stats.checks_failed == 1


async def test_the_prober_counts_the_bytes_a_dialogue_is_fed() -> None:
    """What the runner judges by: a prober check's result carries the bytes its dialogue was fed
    (from its budget's countdown), its own timeout's result too."""

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        return False

    runner = CheckRunner(on_result, Stats())  # the default: checks on the prober
    talk = flood_then_hold(b"* OK ready\r\n", b"LOGIN", b"* \n" * 1000)
    with tcp_peer(talk) as port:
        spec = dataclasses.replace(SPEC, port=port)
        run = runner._new_run(CheckJob(spec, 1.0), (REF,))
        assert isinstance(run.spec_plan, DialoguePlan)
        result = await prober_for().probe(run.spec_plan)
    assert result.timed_out
    assert result.received == 12 + 3000


TASK_TIMEOUT_S = 2.0
BLOCK_S = 0.25  # the loop stops this long at a time while a check runs: lag it did not cause
TASK_FLOOD = 100_000  # bytes: over BUSY_BYTES, under the drivers' budget (256 KiB)


def flood_then_hold(opening: bytes, wait_for: bytes | None, flood: bytes) -> Talk:
    """Send `opening`, read up to `wait_for` (the check's command), send `flood`, then hold the
    line without a verdict until the check hangs up."""

    def talk(sock: socket.socket) -> None:
        sock.sendall(opening)
        if wait_for is not None:
            seen = b""
            while wait_for not in seen:
                data = sock.recv(4096)
                if not data:
                    return
                seen += data
        sock.sendall(flood)
        while sock.recv(4096):
            pass

    return talk


async def judged_under_lag(spec: CheckSpec) -> tuple[list[CheckResult], list[str]]:
    """Run `spec` once through a runner of tasks (run_check) while another task blocks the loop
    in bursts: what the runner made of it (results taken in, unknowns)."""
    results: list[CheckResult] = []
    unknown: list[str] = []

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        results.append(result)
        return False

    runner = CheckRunner(on_result, Stats(), run_check=run_check)
    runner.on_unknown = lambda refs, reason: unknown.append(reason)
    monitor = asyncio.create_task(runner.lag.run())
    done = False

    async def starve() -> None:
        await asyncio.sleep(0.05)
        while not done:
            time.sleep(BLOCK_S)  # noqa: ASYNC251 - the point: the whole loop stops meanwhile
            await asyncio.sleep(0.02)

    starver = asyncio.create_task(starve())
    try:
        await runner.run_once(CheckJob(spec, 1.0), (REF,))
    finally:
        done = True
        await starver
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
    return results, unknown


async def assert_busy_fails_and_idle_is_unknown(
    make_spec: Callable[[int], CheckSpec],
    opening: bytes,
    wait_for: bytes | None,
    flood: bytes,
    tls: ssl.SSLContext | None = None,
) -> None:
    assert BUSY_BYTES < len(flood) <= TASK_FLOOD + 1024
    with tcp_peer(flood_then_hold(opening, wait_for, b""), tls) as port:
        results, unknown = await judged_under_lag(make_spec(port))
    assert results == [] and len(unknown) == 1, (results, unknown)  # the lag is seen as such
    with tcp_peer(flood_then_hold(opening, wait_for, flood), tls) as port:
        results, unknown = await judged_under_lag(make_spec(port))
    assert unknown == [], unknown
    assert len(results) == 1 and results[0].timed_out, results
    assert results[0].received >= len(flood)


async def test_a_tls_flood_under_lag_is_a_failure_not_unknown() -> None:
    """imaps (TLS on the prober, run through run_check): a LOGIN answered with 100 kB of untagged
    lines."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(tls)

    def imaps(port: int) -> CheckSpec:
        return CheckSpec(
            "negotiate", "127.0.0.1", port, TASK_TIMEOUT_S, service="imaps", login="u", passwd="p"
        )

    flood = b"* x\r\n" * (TASK_FLOOD // 5)
    await assert_busy_fails_and_idle_is_unknown(imaps, b"* OK ready\r\n", b"LOGIN", flood, tls)


async def test_a_library_flood_under_lag_is_a_failure_not_unknown() -> None:
    """ftp through aioftp: a greeting of 500 continuation lines that never ends."""

    def ftp(port: int) -> CheckSpec:
        return CheckSpec("negotiate", "127.0.0.1", port, TASK_TIMEOUT_S, service="ftp")

    flood = (b"220-" + b"x" * 196 + b"\r\n") * (TASK_FLOOD // 200)
    await assert_busy_fails_and_idle_is_unknown(ftp, b"", None, flood)
