"""service=oracle: every failure path python-oracledb can meet without a server, the missing
library, and (opt-in) a real database.

No Oracle server is packaged for Debian, so the up path is tested only when
LVSMON_TEST_ORACLE_DSN names one (user/password@host:port/SID; host an IP literal).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from lvsmon.checks import registry
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.registry import SERVICES, is_implemented, probe_plan, run_check
from lvsmon.config import ConfigError, parse_config
from lvsmon.config.support import unsupported
from realservers.base import SilentPeer
from tests.checks.conftest import raw_server
from tests.helpers import closed_port

DEADLINE = 1.0
SLACK = 0.6  # a loaded 2-core machine; still well short of a second deadline
DSN_VARIABLE = "LVSMON_TEST_ORACLE_DSN"

CONFIG = """\
virtual=192.168.6.240:1521
\treal=192.168.6.2:1521 gate
\tservice=oracle
\tchecktype=negotiate
\tlogin="lvsmon"
\tpasswd="secret"
\tdatabase="LVSMON"
\trequest="SELECT 1 FROM dual"
"""


@pytest.fixture(autouse=True)
def _collect() -> Iterator[None]:
    """A connection left open shows up as a ResourceWarning at collection: an error here."""
    yield
    gc.collect()


def spec(port: int, host: str = "127.0.0.1", **kwargs: object) -> CheckSpec:
    settings: dict[str, object] = {
        "login": "lvsmon",
        "passwd": "secret",
        "database": "LVSMON",
        "request": "SELECT 1 FROM dual",
        "timeout": DEADLINE,
    }
    settings.update(kwargs)
    return CheckSpec(kind="negotiate", service="oracle", host=host, port=port, **settings)  # type: ignore[arg-type]


async def check(port: int, host: str = "127.0.0.1", **kwargs: object) -> CheckResult:
    return await run_check(spec(port, host, **kwargs))


def assert_deadline(result: CheckResult, step: str, deadline: float = DEADLINE) -> None:
    assert not result.ok
    assert result.reason == f"timeout after {deadline:g}s during {step}"
    assert deadline - 0.05 <= result.latency_s <= deadline + SLACK


@contextlib.asynccontextmanager
async def garbage_peer(answer: bytes, hang_up: bool = True) -> AsyncIterator[int]:
    """A TCP peer that reads the client's first packet, answers `answer` and hangs up (or
    holds the line until the client goes)."""
    handlers: list[asyncio.Task[object]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            handlers.append(task)
        with contextlib.suppress(ConnectionError):
            await reader.read(4096)
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


async def test_closed_port_is_down_at_once() -> None:
    result = await check(closed_port())
    assert (result.ok, result.reason) == (False, "oracle: connect: connection refused")
    assert result.latency_s < 0.5


async def test_closed_port_over_ipv6() -> None:
    result = await check(closed_port("::1"), "::1")
    assert (result.ok, result.reason) == (False, "oracle: connect: connection refused")


async def test_silent_peer_is_down_at_the_deadline_and_the_socket_closed() -> None:
    """oracledb's tcp_connect_timeout covers the TCP connect only: the one deadline holds."""
    async with raw_server(None) as peer:
        result = await check(peer.port)
        assert_deadline(result, "oracle connect")
        await asyncio.wait_for(peer.peer_closed.wait(), 2)


async def test_garbage_peer_hanging_up() -> None:
    async with garbage_peer(b"HTTP/1.0 400 Bad Request\r\n\r\n") as port:
        result = await check(port)
    assert (result.ok, result.reason) == (
        False,
        "oracle: login: DPY-4011: the database or network closed the connection",
    )
    assert result.latency_s < 0.5


async def test_garbage_peer_holding_the_line() -> None:
    async with garbage_peer(b"SSH-2.0-OpenSSH_9.2\r\n", hang_up=False) as port:
        result = await check(port)
    assert_deadline(result, "oracle connect")


async def test_hung_checks_delay_no_other() -> None:
    """Ten oracle checks stuck on a silent peer; another oracle check ends at once."""
    hung_deadline = 2.0
    async with SilentPeer() as peer:
        hung = [asyncio.create_task(check(peer.port, timeout=hung_deadline)) for _ in range(10)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        other = await check(closed_port())
        took = time.monotonic() - started
        assert other.reason == "oracle: connect: connection refused"
        assert took < 0.5
        assert not any(task.done() for task in hung)
        results = await asyncio.gather(*hung)
    for result in results:
        assert_deadline(result, "oracle connect", hung_deadline)


async def test_login_and_request_are_required() -> None:
    result = await check(closed_port(), login="", request="/")
    assert (result.ok, result.reason) == (
        False,
        "oracle: login and request must be set for this check",
    )


def test_no_probe_plan_the_check_runs_on_its_library() -> None:
    assert probe_plan(spec(1521)) is None


@pytest.fixture
def without_oracledb(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the optional extra were not installed."""
    present = registry._library_present  # what Service.available asks (cached per library)
    monkeypatch.setattr(
        registry, "_library_present", lambda name: name != "oracledb" and present(name)
    )


@pytest.mark.usefixtures("without_oracledb")
def test_check_config_rejects_oracle_without_the_library() -> None:
    message = "service oracle needs the Python package oracledb: pip install 'lvsmon[oracle]'"
    assert not SERVICES["oracle"].available()
    assert not is_implemented("negotiate", "oracle")
    config = parse_config(CONFIG, "x.cf", check_support=False)
    (problem,) = unsupported(config)
    assert problem.message == message
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(CONFIG, "x.cf")


@pytest.mark.usefixtures("without_oracledb")
async def test_run_check_without_the_library() -> None:
    result = await check(closed_port())
    assert (result.ok, result.reason) == (
        False,
        "checktype=negotiate service=oracle is not implemented",
    )


def test_check_config_accepts_oracle_with_the_library() -> None:
    assert unsupported(parse_config(CONFIG, "x.cf", check_support=False)) == []


def _dsn() -> tuple[str, str, str, int, str]:
    """(user, password, host, port, sid) from LVSMON_TEST_ORACLE_DSN."""
    value = os.environ.get(DSN_VARIABLE, "")
    found = re.fullmatch(r"([^/]+)/(.*)@\[?([0-9A-Fa-f.:]+?)\]?:(\d+)/(.+)", value)
    if found is None:
        pytest.fail(f"{DSN_VARIABLE} must read user/password@host:port/SID, not {value!r}")
    user, password, host, port, sid = found.groups()
    return user, password, host, int(port), sid


@pytest.mark.skipif(
    not os.environ.get(DSN_VARIABLE),
    reason=f"no Oracle server here: set {DSN_VARIABLE}=user/password@host:port/SID to run",
)
async def test_up_against_a_real_oracle() -> None:
    user, password, host, port, sid = _dsn()
    real = {"login": user, "passwd": password, "database": sid, "timeout": 10.0}
    result = await check(port, host, **real)
    assert (result.ok, result.reason) == (True, "oracle: query returned a row")
    result = await check(port, host, **{**real, "request": "SELECT 1 FROM dual WHERE 1 = 0"})
    assert (result.ok, result.reason) == (False, "oracle: query returned no rows")
    result = await check(port, host, **{**real, "request": "SELECT * FROM nosuch"})
    assert result.reason.startswith("oracle: query: ORA-00942: "), result.reason
    result = await check(port, host, **{**real, "passwd": password + "-wrong"})
    assert result.reason.startswith("oracle: login rejected: ORA-01017: "), result.reason
