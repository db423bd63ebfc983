"""negotiate smtp/submission against a real Postfix on loopback, and scripted peers for the
replies Postfix does not give (HELO fallback, garbage, over-long lines)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks.registry import plan_probe
from realservers.base import ScriptedPeer, Server, SilentPeer
from realservers.postfix import HOSTNAME, running_postfix
from tests.helpers import closed_port

UP = f"250 {HOSTNAME}"
TOO_LARGE = "response too large (a reply over 32 KiB or a line over 8 KiB)"


@pytest.fixture(scope="module")
def postfix() -> Iterator[Server]:
    with running_postfix() as server:
        yield server


def spec(
    server: Server | None = None,
    listener: str = "smtp",
    host: str = "127.0.0.1",
    service: str = "smtp",
    **kw: Any,
) -> CheckSpec:
    fields: dict[str, Any] = {"kind": "negotiate", "service": service, "host": host, "timeout": 5}
    fields["port"] = server.ports[listener] if server else 0
    fields.update(kw)
    return CheckSpec(**fields)


class Maillog:
    """Postfix's log lines written since this was made (postlogd writes them asynchronously)."""

    def __init__(self, server: Server) -> None:
        self.path = server.dir / "maillog"
        self.offset = self.path.stat().st_size

    async def disconnects(self, count: int) -> list[str]:
        """The next `count` "disconnect from" lines of sessions that said something (not the
        readiness polls), waiting up to 5 s for them."""
        deadline = time.monotonic() + 5
        while True:
            text = self.path.read_bytes()[self.offset :].decode(errors="replace")
            found = [
                line
                for line in text.splitlines()
                if ": disconnect from " in line and not line.endswith(" commands=0/0")
            ]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)


# ---- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["smtp", "submission"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_up(postfix: Server, service: str, host: str) -> None:
    log = Maillog(postfix)
    result = await run_check(spec(postfix, service, host, service))
    assert (result.ok, result.reason) == (True, f"{service}: {UP}")
    # one EHLO and a QUIT, nothing else: above all no STARTTLS, though both offer it
    # (submission requires it for mail, not for EHLO)
    [line] = await log.disconnects(1)
    assert line.endswith(" ehlo=1 quit=1 commands=2"), line


async def test_greeting_refused(postfix: Server) -> None:
    result = await run_check(spec(postfix, "reject_greeting"))
    assert not result.ok
    # the client's name is whatever reverse lookup of 127.0.0.1 gives here ("localhost")
    assert re.fullmatch(
        r"smtp: greeting: 554 5\.7\.1 <\S+\[127\.0\.0\.1\]>: Client host rejected: Access denied",
        result.reason,
    ), result.reason


async def test_ehlo_and_helo_refused(postfix: Server) -> None:
    log = Maillog(postfix)
    result = await run_check(spec(postfix, "reject_helo", "::1", "submission"))
    assert (result.ok, result.reason) == (
        False,
        "submission: helo: 554 5.7.1 <localhost.localdomain>: Helo command rejected: "
        "Access denied (after ehlo 554)",
    )
    [line] = await log.disconnects(1)
    assert line.endswith(" helo=0/1 ehlo=0/1 commands=0/2"), line  # HELO was tried after EHLO


async def test_smtp_runs_off_the_prober(postfix: Server) -> None:
    assert plan_probe(spec(postfix)) is None


async def test_stopped_server_down() -> None:
    with running_postfix(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
    result = await run_check(spec(server))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_frozen_server_times_out_and_delays_no_other_check(postfix: Server) -> None:
    async with ScriptedPeer(b"220 live ESMTP\r\n", [b"250 live\r\n"]) as live:
        with postfix.frozen():
            frozen = [
                run_check(spec(postfix, listener, timeout=1.5, service=service))
                for listener, service in [("smtp", "smtp"), ("submission", "submission")] * 5
            ]
            started = time.monotonic()
            live_check = asyncio.ensure_future(run_check(spec(port=live.port)))
            results = await asyncio.gather(*frozen)
            live_result = live_check.result()
    assert (live_result.ok, live_result.reason) == (True, "smtp: 250 live")
    assert live_result.latency_s < 0.5
    assert [r.reason for r in results] == [
        "timeout after 1.5s during smtp greeting",
        "timeout after 1.5s during submission greeting",
    ] * 5
    assert all(not r.ok and 1.45 <= r.latency_s < 2.2 for r in results)
    assert time.monotonic() - started < 2.5
    assert (await run_check(spec(postfix))).ok  # thawed, it answers again


# ---- peers that are not Postfix ----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(host: str) -> None:
    async with SilentPeer(host) as peer:
        result = await run_check(spec(host=host, port=peer.port, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during smtp greeting")
    assert 0.45 <= result.latency_s < 1.0


async def test_refused_connect() -> None:
    result = await run_check(spec(port=closed_port()))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def _received(peer: ScriptedPeer, count: int) -> list[bytes]:
    for _ in range(100):  # the QUIT is in flight when the check returns
        if len(peer.received) >= count:
            break
        await asyncio.sleep(0.01)
    return peer.received


async def test_sends_net_smtp_hello_name_and_quit() -> None:
    async with ScriptedPeer(
        b"220-fake\r\n220 ESMTP ready\r\n", [b"250-fake\r\n250 8BITMIME\r\n"]
    ) as peer:
        result = await run_check(spec(port=peer.port))
        received = await _received(peer, 2)
    assert (result.ok, result.reason) == (True, "smtp: 250 fake")
    assert received == [b"EHLO localhost.localdomain\r\n", b"QUIT\r\n"]


async def test_helo_after_ehlo_unknown() -> None:
    replies = [b"502 5.5.2 Error: command not recognized\r\n", b"250 old.example.test\r\n"]
    async with ScriptedPeer(b"220 old SMTP\r\n", replies) as peer:
        result = await run_check(spec(port=peer.port))
        received = await _received(peer, 3)
    assert (result.ok, result.reason) == (True, "smtp: 250 old.example.test")
    assert received == [
        b"EHLO localhost.localdomain\r\n",
        b"HELO localhost.localdomain\r\n",
        b"QUIT\r\n",
    ]


async def test_no_helo_after_a_temporary_ehlo_failure() -> None:
    async with ScriptedPeer(b"220 busy\r\n", [b"451 4.3.0 try again later\r\n"]) as peer:
        result = await run_check(spec(port=peer.port))
        received = await _received(peer, 1)
    assert (result.ok, result.reason) == (False, "smtp: ehlo: 451 4.3.0 try again later")
    assert received == [b"EHLO localhost.localdomain\r\n"]


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"421 4.3.2 Service not available\r\n", "smtp: greeting: 421 4.3.2 Service not available"),
        (b"554 no SMTP service here\r\n", "smtp: greeting: 554 no SMTP service here"),
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "smtp: greeting: malformed SMTP response line: HTTP/1.1 400 Bad Request",
        ),
        (b"\xff\xfe\x00garbage\r\n", "smtp: greeting: malformed SMTP response line: ?garbage"),
        (b"220 " + b"x" * 9000 + b"\r\n", f"smtp: greeting: {TOO_LARGE}"),
        (b"220-more\r\n" * 4000, f"smtp: greeting: {TOO_LARGE}"),
        (b"220 half a li", "smtp: greeting: connection closed by the server"),
        (b"", "smtp: greeting: connection closed by the server"),
    ],
)
async def test_bad_greeting_down(greeting: bytes, reason: str) -> None:
    async with ScriptedPeer(greeting, hold=False) as peer:
        result = await run_check(spec(port=peer.port))
    assert (result.ok, result.reason) == (False, reason)


async def test_ehlo_answered_with_garbage_down() -> None:
    async with ScriptedPeer(b"220 ok\r\n", [b"+OK this is pop\r\n"]) as peer:
        result = await run_check(spec(port=peer.port))
    assert (result.ok, result.reason) == (
        False,
        "smtp: ehlo: malformed SMTP response line: +OK this is pop",
    )


async def test_server_gone_after_greeting_down() -> None:
    async with ScriptedPeer(b"220 ok\r\n", [b""], hold=False) as peer:
        result = await run_check(spec(port=peer.port, service="submission"))
    assert (result.ok, result.reason) == (
        False,
        "submission: ehlo: connection closed by the server",
    )


async def test_stalled_after_greeting_times_out_in_ehlo() -> None:
    async with ScriptedPeer(b"220 ok\r\n", [b""]) as peer:
        result = await run_check(spec(port=peer.port, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during smtp ehlo")
