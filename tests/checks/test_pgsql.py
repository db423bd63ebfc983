"""service=pgsql against a real PostgreSQL 15: up (over TLS and not), every way down, the one
deadline, IPv6.

One postgres per module (about 2 s to start, initdb included), with TLS on as Debian's default
cluster has it. The test that stops it runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import struct
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.registry import probe_plan, run_check
from realservers.base import Server, SilentPeer
from realservers.postgresql import DATABASE, PASSWORD, QUERY, USER, running_postgresql
from tests.checks.conftest import raw_server
from tests.helpers import closed_port

DEADLINE = 1.0
SLACK = 0.6  # a loaded 2-core machine; still well short of a second deadline
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    with running_postgresql() as server:
        yield server


@pytest.fixture(autouse=True)
def _collect(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """libpq's environment must not steer the check under test; a connection left open shows
    up as a ResourceWarning at collection, an error here."""
    for name in ("PGDATABASE", "PGPASSWORD", "PGSSLMODE", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    yield
    gc.collect()


def spec(port: int, host: str = "127.0.0.1", **kwargs: object) -> CheckSpec:
    settings: dict[str, object] = {
        "login": USER,
        "passwd": PASSWORD,
        "database": DATABASE,
        "request": QUERY,
        "timeout": DEADLINE,
    }
    settings.update(kwargs)
    return CheckSpec(kind="negotiate", service="pgsql", host=host, port=port, **settings)  # type: ignore[arg-type]


async def check(port: int, host: str = "127.0.0.1", **kwargs: object) -> CheckResult:
    return await run_check(spec(port, host, **kwargs))


def assert_deadline(result: CheckResult, step: str, deadline: float = DEADLINE) -> None:
    assert not result.ok
    assert result.reason == f"timeout after {deadline:g}s during {step}"
    assert deadline - 0.05 <= result.latency_s <= deadline + SLACK


@contextlib.asynccontextmanager
async def declining_peer(after: bytes) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A peer that declines TLS ("N"), keeps the startup message it then gets, sends `after`
    and hangs up."""
    startups: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if await reader.readexactly(8) == SSL_REQUEST:
                writer.write(b"N")
                (length,) = struct.unpack("!i", await reader.readexactly(4))
                startups.append(await reader.readexactly(length - 4))
                writer.write(after)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), startups
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def garbage_peer(answer: bytes) -> AsyncIterator[int]:
    """A TCP peer that reads the client's first packet, answers `answer` and hangs up."""
    handlers: list[asyncio.Task[object]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            handlers.append(task)
        with contextlib.suppress(ConnectionError):
            await reader.read(4096)
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
        if handlers:  # their writers must be closed before the loop is
            await asyncio.wait(handlers, timeout=2)


async def test_up(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"])
    assert result == CheckResult(True, "pgsql: query returned a row", result.latency_s)


async def test_up_over_ipv6(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], "::1")
    assert (result.ok, result.reason) == (True, "pgsql: query returned a row")


async def test_tls_when_the_server_offers_it(postgres: Server) -> None:
    """sslmode=prefer, as DBD::Pg's libpq: this server has TLS on, so the session uses it."""
    request = "SELECT 1 FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
    result = await check(postgres.ports["pgsql"], request=request)
    assert result.ok, result.reason


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_result_past_the_budget_is_down(postgres: Server, tls: bool) -> None:
    """A real server's answer counts against the budget too (issue 21, class 1), over TLS as
    well: a first row larger than 256 KiB is down."""
    request = "SELECT repeat('x', 300000)"
    if tls:
        request = "SELECT repeat('x', 300000) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
    result = await check(postgres.ports["pgsql"], request=request)
    assert (result.ok, result.reason) == (False, "pgsql: response too large (over 256 KiB)")
    assert (await check(postgres.ports["pgsql"])).ok


async def test_plain_when_the_server_declines_tls() -> None:
    """The other half of prefer: after "N" the login goes on in the clear."""
    auth_ok = b"R" + struct.pack("!ii", 8, 0)  # then it hangs up before ReadyForQuery
    async with declining_peer(auth_ok) as (port, startups):
        result = await check(port)
    assert (result.ok, result.reason) == (
        False,
        "pgsql: login: connection was closed in the middle of operation",
    )
    (startup,) = startups
    assert startup[:4] == struct.pack("!i", 196608)  # protocol 3.0
    assert b"\x00user\x00lvsmon\x00" in startup
    assert b"\x00database\x00lvsmon\x00" in startup


async def test_leading_slash_of_request_is_dropped(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], request="/" + QUERY)
    assert result.ok, result.reason


async def test_receive_is_ignored_as_in_ldirectord(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], receive="nothing like this")
    assert result.ok, result.reason


async def test_no_database_means_the_login_name_as_in_libpq(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], database="")
    assert result.ok, result.reason


async def test_wrong_password(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], passwd="wrong")
    assert (result.ok, result.reason) == (
        False,
        'pgsql: login rejected: password authentication failed for user "lvsmon"',
    )


async def test_unknown_database(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], database="nosuch")
    assert result.reason == 'pgsql: login rejected: database "nosuch" does not exist'


async def test_query_error(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], request="SELECT * FROM nosuch")
    assert (result.ok, result.reason) == (False, 'pgsql: query: relation "nosuch" does not exist')


async def test_no_rows(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], request="SELECT * FROM health WHERE id = 2")
    assert (result.ok, result.reason) == (False, "pgsql: query returned no rows")


async def test_statement_without_result_set_counts_rows_affected(postgres: Server) -> None:
    port = postgres.ports["pgsql"]
    result = await check(port, request="CREATE TEMP TABLE t AS SELECT 1 AS x")
    assert (result.ok, result.reason) == (True, "pgsql: query affected 1 row")
    result = await check(port, request="SET search_path = public")
    assert (result.ok, result.reason) == (False, "pgsql: query returned no rows")


async def test_login_and_request_are_required(postgres: Server) -> None:
    port = postgres.ports["pgsql"]
    result = await check(port, login="", request="/")
    assert (result.ok, result.reason) == (
        False,
        "pgsql: login and request must be set for this check",
    )


def test_no_probe_plan_the_check_runs_on_its_library() -> None:
    assert probe_plan(spec(5432)) is None


async def test_every_check_leaves_no_session(postgres: Server) -> None:
    """Up, failed query, no rows: each connection ends (Terminate), none lingers on the server."""
    port = postgres.ports["pgsql"]
    for request in (QUERY, "SELECT * FROM nosuch", "SELECT * FROM health WHERE id = 2"):
        await check(port, request=request)
    others = "SELECT 1 FROM pg_stat_activity WHERE usename = 'lvsmon' AND pid <> pg_backend_pid()"
    for _ in range(20):
        result = await check(port, request=others)
        if result.reason == "pgsql: query returned no rows":
            break
        await asyncio.sleep(0.1)
    assert result.reason == "pgsql: query returned no rows"


async def test_closed_port_is_down_at_once() -> None:
    result = await check(closed_port())
    assert (result.ok, result.reason) == (False, "pgsql: connect: connection refused")
    assert result.latency_s < 0.5


async def test_silent_peer_is_down_at_the_deadline_and_the_socket_closed() -> None:
    async with raw_server(None) as peer:
        result = await check(peer.port)
        assert_deadline(result, "pgsql connect")
        await asyncio.wait_for(peer.peer_closed.wait(), 2)


async def test_garbage_peer() -> None:
    async with garbage_peer(b"HTTP/1.0 400 Bad Request\r\n\r\n") as port:
        result = await check(port)
    assert not result.ok
    assert result.reason.startswith("pgsql: login: "), result.reason
    assert result.latency_s < 0.5


async def test_slow_query_is_down_at_the_deadline(postgres: Server) -> None:
    result = await check(postgres.ports["pgsql"], request="SELECT pg_sleep(5)")
    assert_deadline(result, "pgsql query")


async def test_frozen_server_is_down_at_the_deadline(postgres: Server) -> None:
    with postgres.frozen():
        result = await check(postgres.ports["pgsql"])
    assert_deadline(result, "pgsql connect")


async def test_frozen_server_delays_no_other_check(postgres: Server) -> None:
    """Ten checks stuck on a frozen PostgreSQL; a check of another live peer answers at once."""
    hung_deadline = 2.0
    async with SilentPeer() as peer:
        with postgres.frozen():
            hung = [
                asyncio.create_task(check(postgres.ports["pgsql"], timeout=hung_deadline))
                for _ in range(10)
            ]
            await asyncio.sleep(0.1)
            live = await run_check(
                CheckSpec(kind="connect", host="127.0.0.1", port=peer.port, timeout=hung_deadline)
            )
            assert live.ok, live.reason
            assert live.latency_s < 0.5
            results = await asyncio.gather(*hung)
    for result in results:
        assert_deadline(result, "pgsql connect", hung_deadline)


async def test_hung_checks_delay_no_pgsql_check(postgres: Server) -> None:
    """Ten pgsql checks stuck on silent peers; a pgsql check of the live server is up at once."""
    hung_deadline = 2.0
    async with SilentPeer() as peer:
        hung = [asyncio.create_task(check(peer.port, timeout=hung_deadline)) for _ in range(10)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        live = await check(postgres.ports["pgsql"], "::1")
        live_took = time.monotonic() - started
        assert live.ok, live.reason
        assert live_took < 0.5
        assert not any(task.done() for task in hung)
        results = await asyncio.gather(*hung)
    for result in results:
        assert_deadline(result, "pgsql connect", hung_deadline)


async def test_stopped_server_is_down(postgres: Server) -> None:
    """Last in the module: it stops the module's server."""
    postgres.stop()
    result = await check(postgres.ports["pgsql"])
    assert (result.ok, result.reason) == (False, "pgsql: connect: connection refused")
