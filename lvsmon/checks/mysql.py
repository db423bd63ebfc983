"""negotiate check for service=mysql (MySQL, MariaDB): log in, run `request`, up iff it has a row.

As ldirectord's check_sql: connect to the real with `login`/`passwd`, `database` as the default
database (none if empty), run `request` minus one leading "/", up iff the statement returns at
least one row (or, for a statement without a result set, affects one: DBI's `rows`). `receive`
is ignored, as there. Unlike there, the whole exchange runs under the check's one deadline (DBI
had none: a hung server stalled every check), and the connection is closed on every path.

aiomysql (pure Python over PyMySQL, already a dependency; asyncmy would do as well but is a
compiled extension with no gain for one short query per check) does the protocol. Its
`connect_timeout` only bounds the TCP connect: the outer deadline is what holds against a peer
that accepts and never greets. The check builds aiomysql's `Connection` itself rather than
calling `aiomysql.connect`, for two things that function cannot give: the connection closed in a
`finally` whatever await a deadline strikes (aiomysql closes it only when the cancel lands in a
packet read), and the moment the TCP connect is done, so a deadline names "mysql connect" or
"mysql login" truthfully.

A peer's bytes are bounded (issue 21, class 1): every read aiomysql makes (a packet header, then
the length that header announces) passes `_read_bytes`, which takes it from the check's
`Budget` before reading, so a length past PEER_BYTES is refused unread ("mysql: response too
large (over 256 KiB)") instead of buffered (aiomysql appended 16 MiB continuation packets
without a limit). What waits unread in asyncio's StreamReader is bounded by its flow control.
"""

from __future__ import annotations

from typing import Any

import aiomysql
from aiomysql import MySQLError

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, describe_error
from lvsmon.checks.budget import Budget, OverBudget
from lvsmon.checks.dialogue import shown
from lvsmon.checks.step import Step

SHOWN = 200
"""Longest server message a reason quotes (MariaDB's syntax errors run to about 150)."""

CLIENT_ERRORS = 2000
"""MySQL error numbers from 2000 up are the client library's own (CR_*), below are the server's."""


class _Connection(aiomysql.Connection):  # type: ignore[misc]
    """Says when the TCP connect is done, so a deadline names the step it struck in, and
    holds the peer to the check's budget."""

    def __init__(self, step: Step, budget: Budget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._step = step
        self._budget = budget

    async def _read_bytes(self, num_bytes: int) -> bytes:
        try:
            # before the read: an announced length is not buffered
            self._budget.take(num_bytes, read=False)
        except OverBudget:
            self.close()
            raise self._budget.error() from None
        data: bytes = await super()._read_bytes(num_bytes)
        self._budget.got(len(data))
        return data

    async def _get_server_information(self) -> None:
        # aiomysql reads the server's greeting right after the TCP connect succeeded
        self._step.name = "mysql login"
        await super()._get_server_information()


def query_of(spec: CheckSpec) -> str:
    """The SQL of `request`: ldirectord strips one leading "/" (the default request)."""
    return spec.request.removeprefix("/")


def _error(exc: Exception) -> str:
    """ "(1045) Access denied ..." from a PyMySQL error, printable and bounded."""
    args = exc.args
    text = f"({args[0]}) {args[1]}" if len(args) >= 2 and isinstance(args[0], int) else ""
    return shown((text or describe_error(exc)).encode(), SHOWN)


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    step.name = "mysql connect"
    budget = Budget("mysql")
    conn = _Connection(
        step,
        budget,
        host=spec.host,
        port=spec.port,
        user=spec.login,
        password=spec.passwd,
        db=spec.database or None,
        connect_timeout=spec.timeout,
        autocommit=True,  # DBI's default; the server's too, so it costs no round trip
    )
    try:
        await _login(conn, step)
        step.name = "mysql query"
        try:
            result = await _query(conn, query_of(spec))
        except MySQLError as exc:
            budget.check()
            result = CheckResult(False, f"mysql: query: {_error(exc)}")
        await conn.ensure_closed()  # COM_QUIT, as DBI's disconnect: no "aborted connection"
        return result
    finally:
        conn.close()


async def _login(conn: _Connection, step: Step) -> None:
    try:
        await conn._connect()
    except CheckFailed:
        raise  # the budget spent
    except MySQLError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            # aiomysql wraps every socket error as (2003) "Can't connect": the errno says more
            phase = "connect" if step.name == "mysql connect" else "login"
            raise CheckFailed(f"mysql: {phase}: {describe_error(cause)}") from None
        if isinstance(cause, TimeoutError):
            raise TimeoutError from None  # connect_timeout: the deadline's reason, not 2003's
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else CLIENT_ERRORS
        if code < CLIENT_ERRORS:
            raise CheckFailed(f"mysql: login rejected: {_error(exc)}") from None
        raise CheckFailed(f"mysql: login: {_error(exc)}") from None
    except Exception as exc:
        # PyMySQL parses a garbled greeting into ValueError, struct.error and the like
        raise CheckFailed(f"mysql: login: not a MySQL answer ({_error(exc)})") from None


async def _query(conn: _Connection, sql: str) -> CheckResult:
    async with conn.cursor() as cursor:
        # the plain cursor buffers the result, so this is the row count (or the rows affected
        # by a statement without a result set), as DBD::mysql's `rows`
        rows = int(await cursor.execute(sql))
    if rows < 1:
        return CheckResult(False, "mysql: query returned no rows")
    return CheckResult(True, f"mysql: query returned {rows} row{'s' if rows > 1 else ''}")
