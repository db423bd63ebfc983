"""negotiate check for service=oracle: log in, run `request`, up iff it yields a row.

As ldirectord's check_sql: connect to the real with `login`/`passwd` to the instance whose SID
is `database` (DBD::Oracle's `sid=`), run `request` minus one leading "/", up iff the statement
returns a row (or, for a statement without a result set, affects one: DBI's `rows`). `receive`
is ignored, as there. Unlike there, the whole exchange runs under the check's one deadline (DBI
had none: a hung server stalled every check), and the connection is closed on every path.

python-oracledb in thin mode (pure Python, no Oracle client libraries; Oracle Database 12.1 and
later) does the protocol. It is the optional extra `lvsmon[oracle]`: this module is imported
only when a config uses service=oracle, and check-config rejects that service when the package
is missing. Its `tcp_connect_timeout` only bounds the TCP connect: the outer deadline is what
holds against a silent peer.

A peer's bytes are bounded (issue 21, class 1): python-oracledb keeps every packet of a response
until the next request (a peer streaming marker packets during the login grew the check by as
much as it sent), with no limit of its own. Its thin async connect builds its protocol from
`oracledb.thin_impl.AsyncProtocol`, so this module puts `_Protocol` there: the same protocol,
counting what it receives (after TLS) against the budget of the check that connects (a context
variable: oracledb used outside a check counts nothing), and aborting the connection past it;
the check's reason is then "oracle: response too large (over 256 KiB)".
"""

from __future__ import annotations

import re

import oracledb
from oracledb import thin_impl  # type: ignore[attr-defined]  # compiled, no stubs

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, describe_error
from lvsmon.checks.budget import CHECK_BUDGET, Budget, BudgetedProtocol
from lvsmon.checks.dialogue import shown
from lvsmon.checks.step import Step

SHOWN = 200
"""Longest server message a reason quotes."""

_CONNECTION_ID = re.compile(r"\s*\(CONNECTION_ID=[^)]*\)")


class _Protocol(BudgetedProtocol, thin_impl.AsyncProtocol):  # type: ignore[misc]
    """python-oracledb's protocol, holding the peer to the budget of the check that connects."""


thin_impl.AsyncProtocol = _Protocol  # what connect_async builds, looked up each time


def query_of(spec: CheckSpec) -> str:
    """The SQL of `request`: ldirectord strips one leading "/" (the default request)."""
    return spec.request.removeprefix("/")


def _text(exc: BaseException) -> str:
    """The first line of an oracledb error ("ORA-01017: invalid credential..."), without the
    per-attempt connection id that would make every reason unique."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = _CONNECTION_ID.sub("", lines[0]) if lines else type(exc).__name__
    return shown(text.encode(), SHOWN)


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    budget = Budget("oracle")
    token = CHECK_BUDGET.set(budget)  # read when oracledb builds the protocol, in this task
    try:
        return await _check(spec, step, budget)
    except Exception:
        budget.check()  # oracledb's "connection closed" was the budget's abort
        raise
    finally:
        CHECK_BUDGET.reset(token)


async def _check(spec: CheckSpec, step: Step, budget: Budget) -> CheckResult:
    step.name = "oracle connect"
    conn = await _connect(spec)
    try:
        step.name = "oracle query"
        try:
            result = await _query(conn, query_of(spec))
        except oracledb.Error as exc:
            budget.check()
            result = CheckResult(False, f"oracle: query: {_text(exc)}")
        await conn.close()  # logoff, as DBI's disconnect
        return result
    finally:
        # deadline or error: drop the socket without the logoff round trip (a no-op once
        # closed; AsyncConnection.terminate is oracledb >= 26)
        terminate = getattr(conn, "terminate", None)
        if terminate is not None:
            terminate()


async def _connect(spec: CheckSpec) -> oracledb.AsyncConnection:
    try:
        conn: oracledb.AsyncConnection = await oracledb.connect_async(
            user=spec.login,
            password=spec.passwd,
            host=spec.host,
            port=spec.port,
            sid=spec.database or None,
            tcp_connect_timeout=spec.timeout,
            retry_count=0,
        )
    except oracledb.Error as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno:
            raise CheckFailed(f"oracle: connect: {describe_error(cause)}") from None
        if isinstance(cause, oracledb.Error):
            exc = cause  # "DPY-6005: cannot connect" wraps the error that says why
        if _text(exc).startswith("ORA-"):
            raise CheckFailed(f"oracle: login rejected: {_text(exc)}") from None
        raise CheckFailed(f"oracle: login: {_text(exc)}") from None
    return conn


async def _query(conn: oracledb.AsyncConnection, sql: str) -> CheckResult:
    with conn.cursor() as cursor:
        await cursor.execute(sql)
        if cursor.description is None:
            # no row set (INSERT, UPDATE...): DBI's rows is the count affected
            affected = int(cursor.rowcount)
            if affected < 1:
                return CheckResult(False, "oracle: query returned no rows")
            plural = "s" if affected > 1 else ""
            return CheckResult(True, f"oracle: query affected {affected} row{plural}")
        # ldirectord fetched one row and asked DBI how many it had: the first row decides
        if await cursor.fetchone() is None:
            return CheckResult(False, "oracle: query returned no rows")
        return CheckResult(True, "oracle: query returned a row")
