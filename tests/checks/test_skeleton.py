"""The skeleton check (lvsmon/checks/_skeleton.py) a newcomer copies works as it stands: on the
prober, through `drive`, and as pure bytes in, verdict out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lvsmon.checks import _skeleton as skeleton
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.prober import prober_for
from lvsmon.checks.step import Step


def spec(port: int, **kw: Any) -> CheckSpec:
    return CheckSpec(
        kind="negotiate", service="skeleton", host="127.0.0.1", port=port, timeout=2, **kw
    )


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback server answering each line with "+OK pong" (or "-ERR" to "FAIL")."""
    heard: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        heard.append(line)
        writer.write(b"-ERR no\r\n" if line.startswith(b"FAIL") else b"+OK pong\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], heard
    finally:
        srv.close()
        await srv.wait_closed()


async def test_up_on_the_prober_and_through_drive(server: tuple[int, list[bytes]]) -> None:
    port, heard = server
    plan = skeleton.probe_plan(spec(port))
    assert plan is not None
    probed = await prober_for().probe(plan)
    assert (probed.ok, probed.reason) == (True, "skeleton: +OK pong")
    result = await skeleton.check(spec(port), Step())
    assert (result.ok, result.reason) == (True, "skeleton: +OK pong")
    assert heard == [b"PING\r\n", b"PING\r\n"]


async def test_down_with_the_servers_answer(server: tuple[int, list[bytes]]) -> None:
    port, _ = server
    result = await skeleton.check(spec(port, request="FAIL"), Step())
    assert (result.ok, result.reason) == (False, "skeleton: answer: -ERR no")


def test_the_dialogue_as_bytes() -> None:
    d = skeleton.SkeletonDialogue(b"PING", b"+OK")
    assert d.opening() == b"PING\r\n"
    assert d.feed(b"+OK pa") is None
    assert d.feed(b"rtial\r\n") == CheckResult(True, "skeleton: +OK partial")
    cut = skeleton.SkeletonDialogue(b"PING", b"+OK")
    assert cut.feed(b"+O") is None
    assert cut.feed_eof() == CheckResult(False, "skeleton: answer cut short: +O")
    assert skeleton.SkeletonDialogue(b"P", b"+OK").feed(b"\x1b[2J\r\n") == CheckResult(
        False, "skeleton: answer: ?[2J"
    )


def test_an_unsendable_request_never_reaches_the_prober() -> None:
    assert skeleton.probe_plan(spec(1, request="PING\r\nDELE 1")) is None
