"""service=mysql against a real MariaDB: up, every way down, the one deadline, IPv6.

One mariadbd per module (about 1.5 s to start). The test that stops it runs last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Iterator

import aiomysql
import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.registry import probe_plan, run_check
from realservers.base import Server, SilentPeer
from realservers.mariadb import DATABASE, PASSWORD, QUERY, USER, running_mariadb
from tests.checks.conftest import raw_server
from tests.helpers import closed_port

DEADLINE = 1.0
SLACK = 0.6  # a loaded 2-core machine; still well short of a second deadline


@pytest.fixture(scope="module")
def mariadb() -> Iterator[Server]:
    with running_mariadb() as server:
        yield server


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    """A connection left open shows up as a ResourceWarning at collection: an error here."""
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
    return CheckSpec(kind="negotiate", service="mysql", host=host, port=port, **settings)  # type: ignore[arg-type]


async def check(port: int, host: str = "127.0.0.1", **kwargs: object) -> CheckResult:
    return await run_check(spec(port, host, **kwargs))


def assert_deadline(result: CheckResult, step: str, deadline: float = DEADLINE) -> None:
    assert not result.ok
    assert result.reason == f"timeout after {deadline:g}s during {step}"
    assert deadline - 0.05 <= result.latency_s <= deadline + SLACK


@contextlib.asynccontextmanager
async def garbage_peer(answer: bytes, hang_up: bool = True) -> AsyncIterator[int]:
    """A TCP peer that greets with `answer` (a MySQL server speaks first) and hangs up (or
    holds the line until the client goes)."""
    handlers: list[asyncio.Task[object]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            handlers.append(task)
        with contextlib.suppress(ConnectionError):
            writer.write(answer)
            await writer.drain()
            if not hang_up:
                await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
        if handlers:  # their writers must be closed before the loop is
            await asyncio.wait(handlers, timeout=2)


async def test_up(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"])
    assert result == CheckResult(True, "mysql: query returned 1 row", result.latency_s)


async def test_up_over_ipv6(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], "::1")
    assert (result.ok, result.reason) == (True, "mysql: query returned 1 row")


async def test_leading_slash_of_request_is_dropped(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], request="/" + QUERY)
    assert result.ok, result.reason


async def test_receive_is_ignored_as_in_ldirectord(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], receive="nothing like this")
    assert result.ok, result.reason


async def test_no_database_runs_the_query_without_a_default(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], database="", request="SELECT 1")
    assert result.ok, result.reason
    result = await check(mariadb.ports["mysql"], database="")
    assert result.reason == "mysql: query: (1046) No database selected"


async def test_wrong_password(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], passwd="wrong")
    assert not result.ok
    assert result.reason == (
        "mysql: login rejected: (1045) Access denied for user 'lvsmon'@'127.0.0.1' "
        "(using password: YES)"
    )


async def test_unknown_database(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], database="nosuch")
    assert result.reason == (
        "mysql: login rejected: (1044) Access denied for user 'lvsmon'@'127.0.0.1' "
        "to database 'nosuch'"
    )


async def test_query_error(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], request="SELECT * FROM nosuch")
    assert (result.ok, result.reason) == (
        False,
        "mysql: query: (1146) Table 'lvsmon.nosuch' doesn't exist",
    )


async def test_no_rows(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], request="SELECT * FROM health WHERE id = 2")
    assert (result.ok, result.reason) == (False, "mysql: query returned no rows")


async def test_statement_without_result_set_counts_rows_affected(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], request="DO 1")
    assert (result.ok, result.reason) == (False, "mysql: query returned no rows")


async def test_login_and_request_are_required(mariadb: Server) -> None:
    port = mariadb.ports["mysql"]
    result = await check(port, login="", request="/")
    assert (result.ok, result.reason) == (
        False,
        "mysql: login and request must be set for this check",
    )
    result = await check(port, request="/")
    assert result.reason == "mysql: request must be set for this check"
    result = await check(port, login="")
    assert result.reason == "mysql: login must be set for this check"


def test_no_probe_plan_the_check_runs_on_its_library() -> None:
    assert probe_plan(spec(3306)) is None


async def test_every_check_says_goodbye(mariadb: Server) -> None:
    """COM_QUIT after an up and after a failed query, as DBI's disconnect: the server counts no
    aborted client."""
    port = mariadb.ports["mysql"]

    async def aborted() -> int:
        result = await check(port, request="SHOW GLOBAL STATUS WHERE Variable_name = 'x'")
        assert result.reason == "mysql: query returned no rows"
        conn = await aiomysql.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD)
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
                row = await cursor.fetchone()
            await conn.ensure_closed()
        finally:
            conn.close()
        return int(row[1])

    before = await aborted()
    for request in (QUERY, "SELECT * FROM nosuch", "SELECT * FROM health WHERE id = 2"):
        await check(port, request=request)
    await asyncio.sleep(0.2)
    assert await aborted() == before


async def test_closed_port_is_down_at_once() -> None:
    result = await check(closed_port())
    assert (result.ok, result.reason) == (False, "mysql: connect: connection refused")
    assert result.latency_s < 0.5


async def test_silent_peer_is_down_at_the_deadline_and_the_socket_closed() -> None:
    """aiomysql's connect_timeout covers the TCP connect only: the one deadline holds here."""
    async with raw_server(None) as peer:
        result = await check(peer.port)
        assert_deadline(result, "mysql login")
        await asyncio.wait_for(peer.peer_closed.wait(), 2)


async def test_garbage_peer() -> None:
    async with garbage_peer(b"HTTP/1.0 400 Bad Request\r\n\r\n") as port:
        result = await check(port)
    assert not result.ok
    assert result.reason.startswith("mysql: login: "), result.reason
    assert result.latency_s < 0.5


async def test_peer_hanging_up_after_greeting() -> None:
    async with garbage_peer(b"") as port:
        result = await check(port)
    assert (result.ok, result.reason) == (
        False,
        "mysql: login: (2013) Lost connection to MySQL server during query",
    )


async def test_truncated_greeting_is_down_at_the_deadline() -> None:
    async with garbage_peer(b"\x50\x00\x00\x00\x0a5.5.5", hang_up=False) as port:
        result = await check(port)
    assert_deadline(result, "mysql login")


async def test_result_past_the_budget_is_down(mariadb: Server) -> None:
    """A real server's answer counts against the budget too (issue 21, class 1): a result
    larger than 256 KiB is down, and the connection is not left open."""
    result = await check(mariadb.ports["mysql"], request="SELECT REPEAT('x', 300000)")
    assert (result.ok, result.reason) == (False, "mysql: response too large (over 256 KiB)")
    assert (await check(mariadb.ports["mysql"])).ok


async def test_slow_query_is_down_at_the_deadline(mariadb: Server) -> None:
    result = await check(mariadb.ports["mysql"], request="SELECT SLEEP(5)")
    assert_deadline(result, "mysql query")


async def test_frozen_server_is_down_at_the_deadline(mariadb: Server) -> None:
    with mariadb.frozen():
        result = await check(mariadb.ports["mysql"])
    assert_deadline(result, "mysql login")


async def test_frozen_server_delays_no_other_check(mariadb: Server) -> None:
    """Ten checks stuck on a frozen MariaDB; a check of another live peer answers at once."""
    hung_deadline = 2.0
    async with SilentPeer() as peer:
        with mariadb.frozen():
            hung = [
                asyncio.create_task(check(mariadb.ports["mysql"], timeout=hung_deadline))
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
        assert_deadline(result, "mysql login", hung_deadline)


async def test_hung_checks_delay_no_mysql_check(mariadb: Server) -> None:
    """Ten mysql checks stuck on silent peers; a mysql check of the live server is up at once."""
    hung_deadline = 2.0
    async with SilentPeer() as peer:
        hung = [asyncio.create_task(check(peer.port, timeout=hung_deadline)) for _ in range(10)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        live = await check(mariadb.ports["mysql"], "::1")
        live_took = time.monotonic() - started
        assert live.ok, live.reason
        assert live_took < 0.5
        assert not any(task.done() for task in hung)
        results = await asyncio.gather(*hung)
    for result in results:
        assert_deadline(result, "mysql login", hung_deadline)


async def test_stopped_server_is_down(mariadb: Server) -> None:
    """Last in the module: it stops the module's server."""
    mariadb.stop()
    result = await check(mariadb.ports["mysql"])
    assert (result.ok, result.reason) == (False, "mysql: connect: connection refused")
