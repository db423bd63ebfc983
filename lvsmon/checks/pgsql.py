"""negotiate check for service=pgsql (PostgreSQL): log in, run `request`, up iff it yields a row.

As ldirectord's check_sql: connect to the real with `login`/`passwd` to database `database`, run
`request` minus one leading "/", up iff the statement returns at least one row (or, for a
statement without a result set, affects one: DBI's `rows`). `receive` is ignored, as there.
Unlike there, the whole exchange runs under the check's one deadline (DBI had none: a hung
server stalled every check), and the connection is closed on every path.

asyncpg does the protocol. TLS as DBD::Pg through libpq's default sslmode=prefer: TLS when the
server offers it, without verifying its certificate; plain when it declines. An empty `passwd`
or `database` is left to asyncpg's fallbacks, which are libpq's (PGPASSWORD and ~/.pgpass; the
login's name as the database).

A peer's bytes are bounded (issue 21, class 1): asyncpg buffers a message until the length it
announces has arrived (a 2 GB ErrorResponse grew the daemon by hundreds of MB), and has no limit
of its own. asyncpg builds its protocol through `asyncpg.protocol.Protocol` at connect time, so
this module puts `_Protocol` there: the same protocol, counting what it receives against the
budget of the check that connects (a context variable, so asyncpg used elsewhere, outside a
check, counts nothing) and aborting the connection past it. It counts what TLS decrypted; the
check's reason is then "pgsql: response too large (over 256 KiB)".
"""

from __future__ import annotations

from typing import Any

import asyncpg
import asyncpg.protocol

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, describe_error
from lvsmon.checks.budget import CHECK_BUDGET, Budget, BudgetedProtocol
from lvsmon.checks.dialogue import shown
from lvsmon.checks.step import Step

SHOWN = 200
"""Longest server message a reason quotes."""


class _Protocol(BudgetedProtocol, asyncpg.protocol.Protocol):  # type: ignore[misc]
    """asyncpg's protocol, holding the peer to the budget of the check that connects."""


asyncpg.protocol.Protocol = _Protocol  # what asyncpg's connect builds, looked up at each connect


def query_of(spec: CheckSpec) -> str:
    """The SQL of `request`: ldirectord strips one leading "/" (the default request)."""
    return spec.request.removeprefix("/")


def _text(exc: BaseException) -> str:
    return shown(str(exc).encode(), SHOWN) if str(exc) else type(exc).__name__


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    budget = Budget("pgsql")
    token = CHECK_BUDGET.set(budget)  # read when asyncpg builds the protocol, in this task
    try:
        return await _check(spec, step, budget)
    except Exception:
        budget.check()  # asyncpg's "connection lost" was the budget's abort
        raise
    finally:
        CHECK_BUDGET.reset(token)


async def _check(spec: CheckSpec, step: Step, budget: Budget) -> CheckResult:
    step.name = "pgsql connect"
    conn = await _connect(spec)
    try:
        step.name = "pgsql query"
        try:
            result = await _query(conn, query_of(spec), spec.timeout)
        except asyncpg.PostgresError as exc:
            budget.check()
            result = CheckResult(False, f"pgsql: query: {_text(exc)}")
        await conn.close(timeout=spec.timeout)  # Terminate, as DBI's disconnect
        return result
    finally:
        if not conn.is_closed():
            conn.terminate()  # deadline or error: no goodbye, but no socket left open


async def _connect(spec: CheckSpec) -> Any:
    try:
        return await asyncpg.connect(
            host=spec.host,
            port=spec.port,
            user=spec.login,
            password=spec.passwd or None,
            database=spec.database or None,
            timeout=spec.timeout,
            ssl="prefer",
            statement_cache_size=0,  # one statement per connection: a cache only costs
        )
    except asyncpg.ConnectionDoesNotExistError as exc:
        # asyncpg's own, not the server's: the peer closed during the login
        raise CheckFailed(f"pgsql: login: {_text(exc)}") from None
    except asyncpg.PostgresError as exc:
        raise CheckFailed(f"pgsql: login rejected: {_text(exc)}") from None
    except TimeoutError:
        raise  # asyncpg's own timeout: the deadline's reason
    except OSError as exc:
        if exc.errno:
            raise CheckFailed(f"pgsql: connect: {describe_error(exc)}") from None
        # asyncpg's ConnectionError about the answer (to the TLS request, mostly)
        raise CheckFailed(f"pgsql: login: {_text(exc)}") from None
    except asyncpg.InterfaceError as exc:
        raise CheckFailed(f"pgsql: login: {_text(exc)}") from None
    except Exception as exc:
        # a garbled answer surfaces as whatever asyncpg's parser trips on
        raise CheckFailed(f"pgsql: login: not a PostgreSQL answer ({_text(exc)})") from None


async def _query(conn: Any, sql: str, timeout: float) -> CheckResult:
    statement = await conn.prepare(sql, timeout=timeout)
    if statement.get_attributes():
        # a row set: the first row decides, there is no need to transfer the rest
        if await statement.fetchrow(timeout=timeout) is None:
            return CheckResult(False, "pgsql: query returned no rows")
        return CheckResult(True, "pgsql: query returned a row")
    await statement.fetch(timeout=timeout)
    # no row set (INSERT, UPDATE...): DBI's rows is the count its command tag ends with
    tag = statement.get_statusmsg() or ""
    count = tag.rsplit(" ", 1)[-1]
    affected = int(count) if count.isdigit() else 0
    if affected < 1:
        return CheckResult(False, "pgsql: query returned no rows")
    return CheckResult(True, f"pgsql: query affected {affected} row{'s' if affected > 1 else ''}")
