"""run_check as the engine sees it: spec validation, the registry, the error boundary."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lvsmon.checks import (
    SERVICES,
    CheckResult,
    CheckSpec,
    CheckSpecError,
    is_implemented,
    run_check,
)
from lvsmon.checks.base import describe_error
from tests.checks.conftest import raw_server

BASE: dict[str, Any] = {"kind": "connect", "host": "127.0.0.1", "port": 80, "timeout": 5}


def test_equal_specs_are_one_check() -> None:
    a = CheckSpec(**BASE, service="http", request="/x")
    b = CheckSpec(**BASE, service="http", request="/x")
    c = CheckSpec(**BASE, service="http", request="/y")
    assert len({a, b, c}) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "bogus"}, "unknown check kind"),
        ({"protocol": "sctp"}, "unknown protocol"),
        ({"httpmethod": "POST"}, "httpmethod must be GET or HEAD"),
        ({"port": 70000}, "out of range"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"checkcount": 0}, "checkcount must be >= 1"),
        ({"host": "rs1.example.test"}, "not an IP literal"),
        ({"kind": "external"}, "needs a checkcommand"),
        ({"receive": "(unclosed"}, "receive regex '\\(unclosed' is not usable"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckSpecError, match=message):
        CheckSpec(**{**BASE, **change})


@pytest.mark.parametrize(
    ("kind", "service", "reason"),
    [
        ("on", "http", "checktype=on"),
        ("off", "http", "checktype=off"),
        ("negotiate", "none", "service=none"),
    ],
)
async def test_checks_that_need_no_server(kind: str, service: str, reason: str) -> None:
    result = await run_check(CheckSpec(**{**BASE, "kind": kind, "service": service}))
    assert (result.ok, result.reason) == (True, reason)


async def test_unimplemented_service_is_down_not_an_error() -> None:
    result = await run_check(CheckSpec(**{**BASE, "kind": "negotiate", "service": "gopher"}))
    assert (result.ok, result.reason) == (
        False,
        "checktype=negotiate service=gopher is not implemented",
    )


async def test_a_check_missing_a_needed_setting_is_down_naming_it() -> None:
    spec = CheckSpec(**{**BASE, "kind": "negotiate", "service": "mysql", "request": "/"})
    result = await run_check(spec)
    assert (result.ok, result.reason) == (
        False,
        "mysql: login and request must be set for this check",
    )


def test_implemented_set() -> None:
    assert set(SERVICES) >= {"http", "https", "http_proxy", "smtp", "ldap", "sip", "oracle"}
    assert is_implemented("connect", "smtp")  # connect does not care about the service
    assert is_implemented("negotiate", "http_proxy")
    assert is_implemented("negotiate", "ldap")
    assert not is_implemented("negotiate", "gopher")


async def test_cancellation_propagates_and_closes_the_connection() -> None:
    async with raw_server(None) as peer:
        spec = CheckSpec(**{**BASE, "kind": "negotiate", "service": "http", "port": peer.port})
        task = asyncio.create_task(run_check(spec))
        await peer.connected.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await peer.peer_closed.wait()  # the check's socket went with it


def test_error_descriptions() -> None:
    assert describe_error(ConnectionRefusedError(111, "Connect call failed")) == (
        "connection refused"
    )
    assert describe_error(ValueError("boom")) == "ValueError: boom"
    assert describe_error(RuntimeError()) == "RuntimeError"


def test_result_is_a_value() -> None:
    assert CheckResult(True, "x", 0.5) == CheckResult(True, "x", 0.5)
    with pytest.raises(AttributeError):
        CheckResult(True, "x").ok = False  # type: ignore[misc]


@pytest.mark.parametrize("service", ["ftp", "smtp"])
async def test_a_timed_out_result_carries_the_bytes_the_check_received(service: str) -> None:
    """The lag rule's input for a check run as a task (lvsmon/engine/lag.py): a library check
    (a counting socket under smtp, the reply reader's budget under ftp) reports what it got,
    in the deadline's own result too."""
    sent = b"220-still greeting\r\n" * 50  # a reply that never ends: the check waits for more
    held: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        writer.write(sent)
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        fields = {**BASE, "kind": "negotiate", "service": service, "port": port, "timeout": 0.5}
        result = await run_check(CheckSpec(**fields))
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert result.timed_out, result
    assert result.received == len(sent)
    assert result == CheckResult(False, result.reason, result.latency_s, True)  # not its value
