"""The prober's own machinery: the in-flight bound, aborts, partial sends, what it takes on.

Its exchange and reasons are covered through `run_check` by test_http.py and
test_connect_ping.py, which go through it for every plain-HTTP and TCP-connect check.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.prober import ProbePlan, Prober, hold_prober, prober_for, release_prober
from lvsmon.checks.registry import plan_probe
from tests.checks.conftest import HttpServer, raw_server


def http_spec(port: int, **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": "http",
        "host": "127.0.0.1",
        "port": port,
        "timeout": 5,
    }
    fields.update(kw)
    return CheckSpec(**fields)


def plan_of(spec: CheckSpec) -> ProbePlan:
    plan = plan_probe(spec)
    assert plan is not None
    return plan


@contextlib.asynccontextmanager
async def prober(**kw: Any) -> AsyncIterator[Prober]:
    p = Prober(asyncio.get_running_loop(), **kw)
    try:
        yield p
    finally:
        p.close()


@pytest.mark.parametrize(
    ("fields", "runs_here"),
    [
        ({"kind": "connect"}, True),
        ({"kind": "connect", "protocol": "fwm"}, True),
        ({"kind": "connect", "protocol": "udp"}, False),  # that is a ping
        ({"kind": "negotiate", "service": "http"}, True),
        ({"kind": "negotiate", "service": "http", "host": "::1"}, True),
        ({"kind": "negotiate", "service": "http_proxy", "request": "http://a.test/"}, True),
        ({"kind": "negotiate", "service": "https"}, True),  # TLS on the prober (issue 22)
        ({"kind": "negotiate", "service": "http", "request": "https://10.0.0.1/"}, True),
        ({"kind": "negotiate", "service": "http", "request": "http://a.test/"}, False),  # a name
        ({"kind": "negotiate", "service": "http_proxy", "request": "/relative"}, False),
        ({"kind": "external", "checkcommand": "/bin/true"}, False),
        ({"kind": "ping"}, False),
    ],
)
def test_what_runs_on_the_prober(fields: dict[str, Any], runs_here: bool) -> None:
    spec = CheckSpec(**{"host": "127.0.0.1", "port": 80, "timeout": 1, **fields})
    assert (plan_probe(spec) is not None) is runs_here


async def test_in_flight_bound_queues_starts(http_server: HttpServer) -> None:
    results: list[CheckResult] = []
    peak = 0
    async with prober(max_in_flight=2) as p:
        plan = plan_of(http_spec(http_server.port, request="/ok"))
        for _ in range(7):
            p.start(plan, results.append)
            peak = max(peak, p.in_flight)
        while len(results) < 7:
            peak = max(peak, p.in_flight)
            await asyncio.sleep(0.001)
    assert peak <= 2
    assert [r.reason for r in results] == ["http: status 200"] * 7
    assert len(http_server.seen.targets) == 7


async def test_a_queued_probes_deadline_starts_with_its_descriptor() -> None:
    results: list[CheckResult] = []
    async with raw_server(None) as silent, prober(max_in_flight=1) as p:
        plan = plan_of(http_spec(silent.port, timeout=0.2))
        p.start(plan, results.append)  # holds the only descriptor: the peer never answers
        p.start(plan, results.append)  # waits for it, its deadline not running yet
        await asyncio.sleep(0.1)
        assert (p.in_flight, p.fds.used, len(p.fds.queue)) == (1, 1, 1)
        await asyncio.wait_for(_until(lambda: len(results) == 2), 5)
        assert (p.in_flight, p.fds.used) == (0, 0)
    # a wait behind a silent real never times out the next check: each had its full 0.2 s
    assert [r.reason for r in results] == ["timeout after 0.2s during http"] * 2
    assert all(0.15 < r.latency_s < 1.0 for r in results)
    assert silent.connections == 2


async def test_an_aborted_waiting_probe_never_starts() -> None:
    results: list[CheckResult] = []
    async with raw_server(None) as silent, prober(max_in_flight=1) as p:
        plan = plan_of(http_spec(silent.port, timeout=0.1))
        p.start(plan, results.append)
        waiting = p.start(plan, results.append)
        p.abort(waiting)
        await asyncio.wait_for(_until(lambda: len(results) == 1), 5)
        await asyncio.sleep(0.2)
        assert (p.fds.used, len(p.fds.queue)) == (0, 0)
    assert len(results) == 1
    assert silent.connections == 1


async def test_abort_closes_without_a_result() -> None:
    results: list[CheckResult] = []
    async with raw_server(None) as silent, prober() as p:
        probe = p.start(plan_of(http_spec(silent.port, timeout=0.3)), results.append)
        await asyncio.wait_for(silent.connected.wait(), 5)
        p.abort(probe)
        assert p.in_flight == 0
        await asyncio.wait_for(silent.peer_closed.wait(), 5)  # the socket really closed
        await asyncio.sleep(0.4)  # past the deadline: still nothing
    assert results == []


async def test_close_aborts_everything_in_flight() -> None:
    results: list[CheckResult] = []
    async with raw_server(None) as silent:
        p = Prober(asyncio.get_running_loop())
        for _ in range(3):
            p.start(plan_of(http_spec(silent.port, timeout=0.2)), results.append)
        assert p.in_flight == 3
        p.close()
        await asyncio.sleep(0.3)
    assert results == []


async def test_a_request_larger_than_the_socket_buffer_is_sent_whole() -> None:
    got: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)  # let the send buffer fill: the rest waits for writability
        head = await reader.readuntil(b"\r\n\r\n")
        got.append(len(head))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=2**24)
    port = server.sockets[0].getsockname()[1]
    path = "/" + "a" * 8_000_000
    try:
        async with prober() as p:
            result = await p.probe(plan_of(http_spec(port, request=path)))
    finally:
        server.close()
        await server.wait_closed()
    assert result.reason == "http: status 200"
    assert got and got[0] > 8_000_000


async def test_connect_check_results() -> None:
    async with raw_server(b"") as peer, prober() as p:
        ok = await p.probe(plan_of(CheckSpec(kind="connect", host="127.0.0.1", port=peer.port,
                                             timeout=1)))  # fmt: skip
    assert (ok.ok, ok.reason) == (True, "connect: connected")


async def _until(cond: Any) -> None:
    while not cond():  # noqa: ASYNC110 (the condition is a callback's side effect)
        await asyncio.sleep(0.005)


async def test_many_queued_probes_that_end_at_once_are_admitted_without_recursion() -> None:
    results: list[CheckResult] = []
    with socket.socket() as closed:  # a loopback port nobody listens on: refused at once
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    async with raw_server(None) as silent, prober(max_in_flight=1) as p:
        p.start(plan_of(http_spec(silent.port, timeout=0.1)), results.append)
        plan = plan_of(http_spec(refused, timeout=0.1))
        for _ in range(5000):
            p.start(plan, results.append)
        assert len(p.fds.queue) == 5000
        # the silent one's timeout frees the descriptor: one admission loop runs all 5,000,
        # each refused (and giving it back) before the next is started
        await asyncio.wait_for(_until(lambda: len(results) == 5001), 10)
    assert results[0].reason == "timeout after 0.1s during http"
    assert {r.reason for r in results[1:]} == {"connect: connection refused"}


async def test_one_prober_per_loop_held_by_the_runner_and_shared() -> None:
    loop = asyncio.get_running_loop()
    shared = prober_for(loop)
    held = hold_prober(loop)
    assert held is shared  # the runner's prober is the one every other check of the loop uses
    second = hold_prober(loop)
    release_prober(second)
    assert prober_for(loop) is shared  # still held: open
    release_prober(held)
    assert prober_for(loop) is not shared  # the last holder closed it; the loop gets a new one


async def test_the_check_runner_uses_the_loops_prober() -> None:
    from lvsmon.engine.runner import CheckRunner
    from lvsmon.engine.status import Stats

    runner = CheckRunner(lambda refs, result: True, Stats())
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.05)
    try:
        assert runner._prober is prober_for()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.stop()
    assert runner._prober is None
