"""negotiate simpletcp against real servers on loopback: socat echo (TCP and UDP, IPv4 and IPv6)
and Dovecot's POP3 (a line protocol that answers commands); the sans-IO dialogue itself."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import MAX_LINE
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from lvsmon.checks.simpletcp import SimpleTcpDialogue, request_bytes
from realservers.base import Server, SilentPeer, free_ports
from realservers.dovecot import running_dovecot
from realservers.socat import running_socat_echo
from tests.helpers import closed_port


@pytest.fixture(scope="module")
def echo() -> Iterator[Server]:
    with running_socat_echo() as server:
        yield server


def spec(server: Server | None = None, host: str = "127.0.0.1", **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": "simpletcp",
        "host": host,
        "port": server.ports["echo"] if server else 0,
        "timeout": 5,
        "request": "/PING lvsmon\\n",
        "receive": "^PING lvsmon$",
    }
    fields.update(kw)
    return CheckSpec(**fields)


async def check(server: Server | None = None, **kw: Any) -> tuple[bool, str]:
    result = await run_check(spec(server, **kw))
    return result.ok, result.reason


# ---- the real servers --------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "udp", "fwm"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_up(echo: Server, host: str, protocol: str) -> None:
    assert await check(echo, host=host, protocol=protocol) == (True, "simpletcp: PING lvsmon")


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize(
    ("request_", "receive", "reason"),
    [
        ("/HELLO\\nWORLD\\n", "^W", "simpletcp: WORLD"),  # the second line
        ("/HELLO\\nWORLD", "WORLD$", "simpletcp: WORLD"),  # a last line without newline
        ("/HELLO\\nWORLD\\n", "", "simpletcp: HELLO"),  # empty receive: any line
        ("/HELLO\\nWORLD\\n", "\\n", "simpletcp: HELLO"),  # a line ends with its newline
        ("HELLO\\n", "^HELLO$", "simpletcp: HELLO"),  # a request built by hand, without "/"
    ],
)
async def test_lines_matched(
    echo: Server, protocol: str, request_: str, receive: str, reason: str
) -> None:
    result = await check(echo, protocol=protocol, request=request_, receive=receive)
    assert result == (True, reason)


@pytest.mark.parametrize(
    ("request_", "receive", "reason"),
    [
        ("/HELLO\\nWORLD\\n", "^PONG", "simpletcp: no line matched receive (last: WORLD)"),
        ("/HELLO\\r\\n", "^HELLO$", "simpletcp: no line matched receive (last: HELLO\\r)"),
        ("/", "", "simpletcp: connection closed without a reply"),
    ],
)
async def test_no_match_down_at_eof(echo: Server, request_: str, receive: str, reason: str) -> None:
    # the echo ends only when cat reads EOF: the check's half-close is what makes it end
    result = await run_check(spec(echo, host="::1", request=request_, receive=receive))
    assert (result.ok, result.reason) == (False, reason)
    assert result.latency_s < 1.0


async def test_no_match_over_udp_down_at_the_deadline(echo: Server) -> None:
    # no EOF ever comes over UDP: the request is resent until the deadline
    result = await run_check(spec(echo, protocol="udp", receive="^PONG", timeout=1.2))
    assert (result.ok, result.reason) == (False, "timeout after 1.2s during simpletcp")
    assert 1.15 <= result.latency_s < 1.8


async def test_pop3_commands() -> None:
    with running_dovecot(("127.0.0.1",)) as dovecot:
        pop3: dict[str, Any] = {"port": dovecot.ports["pop3"], "request": "/CAPA\\nQUIT\\n"}
        up = await run_check(spec(receive="^\\+OK Logging out", **pop3))
        down = await run_check(spec(receive="^-ERR", **pop3))
    assert (up.ok, up.reason) == (True, "simpletcp: +OK Logging out")
    assert (down.ok, down.reason) == (
        False,
        "simpletcp: no line matched receive (last: +OK Logging out)",
    )


async def test_tcp_runs_on_the_prober(echo: Server) -> None:
    assert plan_probe(spec(echo, protocol="udp")) is None
    for protocol in ("tcp", "fwm"):
        plan = plan_probe(spec(echo, host="::1", protocol=protocol))
        assert plan is not None
        result = await prober_for().probe(plan)
        assert (result.ok, result.reason) == (True, "simpletcp: PING lvsmon")


async def test_stopped_server_down() -> None:
    with running_socat_echo(("127.0.0.1",)) as server:
        assert (await check(server))[0]
    started = time.monotonic()
    assert await check(server) == (False, "connect: connection refused")
    assert await check(server, protocol="udp") == (False, "simpletcp: connection refused")
    assert time.monotonic() - started < 1.0


async def test_frozen_server_times_out_and_delays_no_other_check(echo: Server) -> None:
    with running_socat_echo(("127.0.0.1",)) as live, echo.frozen():
        frozen = [
            run_check(spec(echo, host=host, protocol=protocol, timeout=1.5))
            for host in ("127.0.0.1", "::1")
            for protocol in ("tcp", "udp")
        ] * 3
        started = time.monotonic()
        live_checks = asyncio.gather(run_check(spec(live)), run_check(spec(live, protocol="udp")))
        results = await asyncio.gather(*frozen)
        elapsed = time.monotonic() - started
        live_results = live_checks.result()
    assert [(r.ok, r.reason) for r in live_results] == [(True, "simpletcp: PING lvsmon")] * 2
    assert all(r.latency_s < 0.5 for r in live_results)
    assert [r.reason for r in results] == ["timeout after 1.5s during simpletcp"] * 12
    assert all(not r.ok and 1.45 <= r.latency_s < 2.2 for r in results)
    assert elapsed < 2.5
    assert (await check(echo))[0]  # thawed, it answers again


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(host: str, protocol: str) -> None:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    async with SilentPeer(host, kind) as peer:
        result = await run_check(spec(host=host, port=peer.port, protocol=protocol, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during simpletcp")
    assert 0.45 <= result.latency_s < 1.0


async def test_refused() -> None:
    assert await check(port=closed_port()) == (False, "connect: connection refused")
    [port] = free_ports(1)
    assert await check(host="::1", port=port, protocol="udp") == (
        False,
        "simpletcp: connection refused",
    )


# ---- the dialogue ------------------------------------------------------------------------------


def test_request_as_ldirectord_sent_it() -> None:
    assert request_bytes("/") == b""
    assert request_bytes("/GET\\n") == b"GET\n"
    assert request_bytes("/a\\nb\\r\\n") == b"a\nb\\r\n"  # only \n is unescaped
    assert request_bytes("//x") == b"/x"  # one "/" only
    d = SimpleTcpDialogue(b"GET\n", "")
    assert d.opening() == b"GET\n" and d.shut_wr


def test_lines_byte_by_byte() -> None:
    d = SimpleTcpDialogue(b"", "^two$")
    stream = b"one\r\ntwo\nthree\n"
    outcomes = [d.feed(stream[i : i + 1]) for i in range(stream.index(b"two\n") + 4)]
    assert outcomes[:-1] == [None] * (len(outcomes) - 1)
    assert outcomes[-1] == CheckResult(True, "simpletcp: two")


def test_overlong_line_down() -> None:
    d = SimpleTcpDialogue(b"", "x")
    assert d.feed(b"y" * MAX_LINE) is None
    assert d.feed(b"y") == CheckResult(False, f"simpletcp: a line longer than {MAX_LINE} bytes")
    whole = SimpleTcpDialogue(b"", "x").feed(b"y" * (MAX_LINE + 1) + b"\n")
    assert whole == CheckResult(False, f"simpletcp: a line longer than {MAX_LINE} bytes")


def test_garbage_matched_as_bytes_and_shown_safely() -> None:
    d = SimpleTcpDialogue(b"", "^\\xff")
    assert d.feed(b"\x00\x01bin\n") is None
    assert d.feed_eof() == CheckResult(False, "simpletcp: no line matched receive (last: ??bin)")
    assert SimpleTcpDialogue(b"", "").feed(b"\xff\xfe\n") == CheckResult(
        True, "simpletcp: \ufffd\ufffd"
    )


def test_datagram_lines() -> None:
    d = SimpleTcpDialogue(b"x", "^b$", datagram=True)
    assert d.feed(b"a\nc") is None  # "c" ends with its datagram
    assert d.last == b"c"
    assert d.feed(b"b") == CheckResult(True, "simpletcp: b")
