"""A real that streams 100 Continue heads forever (bench/flood_1xx.py), checked the real way.

Before the parser was bounded, each 64 KiB read of such heads was searched once per head and the
heads had no limit: the event loop stalled for seconds and every other check with it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.http_parser import MAX_INTERIM_RESPONSES
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from tests.checks.conftest import HttpServer
from tests.helpers import wait_for

# bench/ is scripts, not a package: mypy knows its files as top-level modules, and so do we
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from flood_1xx import CONTINUE, Flooders, start_flooders

LIMIT_REASON = f"http: more than {MAX_INTERIM_RESPONSES} interim 1xx responses"
DEADLINE = 5.0


@pytest.fixture
async def flooders() -> AsyncIterator[Flooders]:
    f = await start_flooders(4)
    try:
        yield f
    finally:
        await f.close()


def http(host: str, port: int, **kw: object) -> CheckSpec:
    return CheckSpec(kind="negotiate", service="http", host=host, port=port, timeout=DEADLINE, **kw)  # type: ignore[arg-type]


async def test_the_flooder_floods() -> None:
    flooders = await start_flooders(1)
    try:
        host, port = flooders.addresses[0]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await reader.readexactly(len(CONTINUE) * 1000)
        writer.close()
    finally:
        await flooders.close()
    assert data == CONTINUE * 1000
    assert flooders.stats.connections == 1


async def test_flooded_check_fails_fast_at_the_limit(flooders: Flooders) -> None:
    host, port = flooders.addresses[0]
    started = time.monotonic()
    result = await run_check(http(host, port))
    assert (result.ok, result.reason) == (False, LIMIT_REASON)
    assert time.monotonic() - started < DEADLINE / 5


async def test_flooded_checks_leave_the_loop_to_a_healthy_one(
    flooders: Flooders, http_server: HttpServer
) -> None:
    """Flooded checks on the prober's hot path (callbacks, as the engine runs them) and through
    run_check, with a healthy check on the same loop; a ticker measures how long the loop
    was ever kept from running."""
    loop = asyncio.get_running_loop()
    prober = prober_for(loop)
    flooded: list[CheckResult] = []
    for host, port in flooders.addresses:
        plan = plan_probe(http(host, port))
        assert plan is not None
        for _ in range(5):
            prober.start(plan, flooded.append)

    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        healthy, *via_run_check = await asyncio.gather(
            run_check(http(http_server.host, http_server.port, request="/ok", receive="alive")),
            *(run_check(http(h, p)) for h, p in flooders.addresses),
        )
        while len(flooded) < 5 * len(flooders.addresses):
            await asyncio.sleep(0.01)
            assert time.monotonic() - started < DEADLINE
    finally:
        tick.cancel()
    assert healthy.ok, healthy.reason
    assert {r.reason for r in [*flooded, *via_run_check]} == {LIMIT_REASON}
    assert all(r.latency_s < DEADLINE / 5 for r in [*flooded, *via_run_check])
    # loose on purpose: the old parser stalled the loop for seconds
    assert max(gaps) < 1.0


async def test_flooders_are_loopback_only() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        await start_flooders(1, host="192.0.2.1")  # refused before anything is bound


async def test_ten_flooders_leave_a_healthy_https_real_up(https_server: HttpServer) -> None:
    """The issue's case: ten flooding reals, rounds of checks as the engine starts them, and a
    healthy HTTPS real checked meanwhile: it stays up and no check overruns its deadline."""
    ten = await start_flooders(10)
    try:
        loop = asyncio.get_running_loop()
        prober = prober_for(loop)
        flooded: list[CheckResult] = []
        healthy: list[CheckResult] = []
        tls = CheckSpec(
            kind="negotiate",
            service="https",
            host=https_server.host,
            port=https_server.port,
            timeout=2.0,
            request="/ok",
            receive="alive",
        )
        for _round in range(5):
            for host, port in ten.addresses:
                plan = plan_probe(http(host, port))
                assert plan is not None
                prober.start(plan, flooded.append)
            healthy.append(await run_check(tls))
        await wait_for(lambda: len(flooded) >= 50)
    finally:
        await ten.close()
    assert all(r.ok for r in healthy), [r.reason for r in healthy]
    assert {r.reason for r in flooded} == {LIMIT_REASON}
    assert max(r.latency_s for r in [*flooded, *healthy]) < 2.0  # none overran a deadline
