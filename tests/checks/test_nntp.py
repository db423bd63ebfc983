"""negotiate nntp against a real innd on loopback, and the NNTP dialogue as bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import MAX_LINE
from lvsmon.checks.nntp import NntpDialogue
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from realservers.base import ScriptedPeer, SilentPeer
from realservers.inn2 import InnServer, running_innd
from tests.helpers import closed_port

BANNER = "200 server.example.net InterNetNews server INN 2.7.1 ready (transit mode)"


@pytest.fixture(scope="module")
def innd() -> Iterator[InnServer]:
    with running_innd() as server:
        yield server


def spec(server: InnServer | None = None, host: str = "127.0.0.1", **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {"kind": "negotiate", "service": "nntp", "host": host, "timeout": 5}
    fields["port"] = server.ports["nntp"] if server else 0
    fields.update(kw)
    return CheckSpec(**fields)


# ---- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_up(innd: InnServer, host: str) -> None:
    result = await run_check(spec(innd, host))
    assert (result.ok, result.reason) == (True, f"nntp: {BANNER}")


async def test_runs_on_the_prober(innd: InnServer) -> None:
    plan = plan_probe(spec(innd, "::1"))  # what the engine asks for
    assert plan is not None
    result = await prober_for().probe(plan)
    assert (result.ok, result.reason) == (True, f"nntp: {BANNER}")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_throttled_server_down(innd: InnServer, host: str) -> None:
    with innd.throttled("lvsmon test throttle"):
        result = await run_check(spec(innd, host))
    assert (result.ok, result.reason) == (False, "nntp: greeting: 400 lvsmon test throttle")
    assert (await run_check(spec(innd, host))).ok  # "ctlinnd go" and it greets again


async def test_stopped_server_down() -> None:
    with running_innd(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
    result = await run_check(spec(server))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_frozen_server_times_out_and_delays_no_other_check(innd: InnServer) -> None:
    with running_innd(("::1",)) as live, innd.frozen():
        frozen = [run_check(spec(innd, timeout=1)) for _ in range(10)]
        started = time.monotonic()
        live_check = asyncio.ensure_future(run_check(spec(live, "::1")))
        results = await asyncio.gather(*frozen)
        elapsed = time.monotonic() - started
        live_result = live_check.result()
    assert (live_result.ok, live_result.reason) == (True, f"nntp: {BANNER}")
    assert live_result.latency_s < 0.5
    assert [r.reason for r in results] == ["timeout after 1s during nntp greeting"] * 10
    assert all(not r.ok and 0.95 <= r.latency_s < 1.6 for r in results)
    assert elapsed < 1.8
    assert (await run_check(spec(innd))).ok  # thawed, it answers again


# ---- peers that are not innd -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(host: str) -> None:
    async with SilentPeer(host) as peer:
        result = await run_check(spec(host=host, port=peer.port, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during nntp greeting")
    assert 0.45 <= result.latency_s < 1.0


async def test_refused_connect() -> None:
    result = await run_check(spec(port=closed_port()))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_quit_after_the_verdict() -> None:
    async with ScriptedPeer(b"201 news.example.test ready (no posting)\r\n") as peer:
        result = await run_check(spec(port=peer.port))
        for _ in range(100):  # the QUIT is in flight when the check returns
            if peer.received:
                break
            await asyncio.sleep(0.01)
    assert (result.ok, result.reason) == (True, "nntp: 201 news.example.test ready (no posting)")
    assert peer.received == [b"QUIT\r\n"]


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"502 access denied\r\n", "nntp: greeting: 502 access denied"),
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "nntp: greeting is not an NNTP response: HTTP/1.1 400 Bad Request",
        ),
        (b"2" * 200 + b"\r\n", "nntp: greeting is not an NNTP response: " + "2" * 120 + "..."),
        (b"200 " + b"x" * MAX_LINE, f"nntp: greeting: a line longer than {MAX_LINE} bytes"),
        (b"200 half a li", "nntp: greeting cut short: 200 half a li"),
        (b"", "nntp: connection closed before the greeting"),
    ],
)
async def test_bad_greeting_down(greeting: bytes, reason: str) -> None:
    async with ScriptedPeer(greeting, hold=False) as peer:
        result = await run_check(spec(port=peer.port))
    assert (result.ok, result.reason) == (False, reason)


# ---- the dialogue as bytes ---------------------------------------------------------------------


def test_dialogue_waits_for_the_whole_line() -> None:
    d = NntpDialogue()
    assert (d.opening(), d.step, d.farewell) == (b"", "nntp greeting", b"QUIT\r\n")
    assert d.feed(b"2") is None
    assert d.feed(b"00 news ready\r") is None
    assert d.feed(b"\n") == CheckResult(True, "nntp: 200 news ready")


@pytest.mark.parametrize(
    ("data", "result"),
    [
        (b"200\n", CheckResult(True, "nntp: 200")),
        (b"200 ok\r\n201 second line ignored\r\n", CheckResult(True, "nntp: 200 ok")),
        (
            b"400 NNTP server unavailable.  Try later!\r\n",
            CheckResult(False, "nntp: greeting: 400 NNTP server unavailable.  Try later!"),
        ),
        (b"2xx ok\r\n", CheckResult(False, "nntp: greeting is not an NNTP response: 2xx ok")),
        (b"2000 ok\r\n", CheckResult(False, "nntp: greeting is not an NNTP response: 2000 ok")),
        (b"20\r\n", CheckResult(False, "nntp: greeting is not an NNTP response: 20")),
        (b"\r\n", CheckResult(False, "nntp: greeting is not an NNTP response: an empty line")),
        (
            b"\xff\xfe\x00 200\r\n",
            CheckResult(False, "nntp: greeting is not an NNTP response: \ufffd\ufffd? 200"),
        ),
        (b"200 caf\xc3\xa9 \x1b[31m\r\n", CheckResult(True, "nntp: 200 caf\u00e9 ?[31m")),
    ],
)
def test_dialogue_verdicts(data: bytes, result: CheckResult) -> None:
    assert NntpDialogue().feed(data) == result


def test_dialogue_over_long_line_without_newline() -> None:
    d = NntpDialogue()
    assert d.feed(b"200 " + b"x" * (MAX_LINE - 10)) is None
    assert d.feed(b"x" * 20) == CheckResult(
        False, f"nntp: greeting: a line longer than {MAX_LINE} bytes"
    )


def test_dialogue_eof() -> None:
    assert NntpDialogue().feed_eof() == CheckResult(
        False, "nntp: connection closed before the greeting"
    )
    d = NntpDialogue()
    assert d.feed(b"20") is None
    assert d.feed_eof() == CheckResult(False, "nntp: greeting cut short: 20")
