"""negotiate imap/imaps against a real Dovecot on loopback, and the IMAP dialogue as bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import MAX_LINE
from lvsmon.checks.imap import ImapDialogue, login_command
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from realservers.base import ScriptedPeer, Server, SilentPeer, open_sockets, sockets_settled
from realservers.dovecot import USERS, auth_frozen, running_dovecot

PORT = {"imap": "imap", "imaps": "imaps"}
GREETING = "OK Dovecot (Debian) ready."
REJECTED = "login rejected: NO [AUTHENTICATIONFAILED] Authentication failed."
LIVE_SCRIPT = (b"* OK fake ready\r\n", [b"a1 OK Logged in\r\n"])


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Server]:
    with running_dovecot() as server:
        yield server


@pytest.fixture(autouse=True)
async def _tls_closed() -> AsyncIterator[None]:
    before = open_sockets()
    yield
    await sockets_settled(before)


def spec(
    server: Server | None = None, /, service: str = "imap", host: str = "127.0.0.1", **kw: Any
) -> CheckSpec:
    fields: dict[str, Any] = {"kind": "negotiate", "service": service, "host": host}
    fields.update(timeout=5, port=server.ports[PORT[service]] if server else 0)
    fields.update(kw)
    return CheckSpec(**fields)


def login(user: str = "lvsmon") -> dict[str, str]:
    return {"login": user, "passwd": USERS[user]}


# ---- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["imap", "imaps"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_login_up(dovecot: Server, service: str, host: str) -> None:
    result = await run_check(spec(dovecot, service, host, **login()))
    assert (result.ok, result.reason) == (True, f"{service}: logged in")


@pytest.mark.parametrize("service", ["imap", "imaps"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_greeting_only_up(dovecot: Server, service: str, host: str) -> None:
    result = await run_check(spec(dovecot, service, host))
    assert (result.ok, result.reason) == (True, f"{service}: {GREETING}")


@pytest.mark.parametrize("service", ["imap", "imaps"])
@pytest.mark.parametrize("user", ["quoted", "umlaut"])
async def test_passwords_needing_quotes_or_a_literal(
    dovecot: Server, service: str, user: str
) -> None:
    result = await run_check(spec(dovecot, service, **login(user)))
    assert (result.ok, result.reason) == (True, f"{service}: logged in")


@pytest.mark.parametrize("service", ["imap", "imaps"])
@pytest.mark.parametrize(
    ("user", "passwd"), [("lvsmon", "wrong"), ("nobody", "secret"), ("umlaut", "pässwort")]
)
async def test_wrong_credentials_down(
    dovecot: Server, service: str, user: str, passwd: str
) -> None:
    result = await run_check(spec(dovecot, service, login=user, passwd=passwd))
    assert (result.ok, result.reason) == (False, f"{service}: {REJECTED}")


async def test_a_failed_login_does_not_slow_the_next(dovecot: Server) -> None:
    await run_check(spec(dovecot, login="lvsmon", passwd="wrong"))
    result = await run_check(spec(dovecot, "imaps", **login()))
    assert result.ok, result.reason
    assert result.latency_s < 1.0  # anvil's auth penalty would make it 2 s or more


async def test_prober_runs_plain_imap(dovecot: Server) -> None:
    plan = plan_probe(spec(dovecot, **login()))
    assert plan is not None
    result = await prober_for().probe(plan)
    assert (result.ok, result.reason) == (True, "imap: logged in")
    tls_plan = plan_probe(spec(dovecot, "imaps", **login()))  # TLS too (tls.TlsDialogue)
    assert tls_plan is not None
    for _ in range(2):  # the second resumes the first's session (test_tls_wiring.py)
        result = await prober_for().probe(tls_plan)
        assert (result.ok, result.reason) == (True, "imaps: logged in")


async def test_imaps_against_plain_port_fails_the_handshake(dovecot: Server) -> None:
    result = await run_check(spec(dovecot, "imaps", port=dovecot.ports["imap"], **login()))
    assert (result.ok, result.reason) == (False, "tls: wrong version number")


async def test_imap_against_tls_port_times_out_in_the_greeting(dovecot: Server) -> None:
    result = await run_check(spec(dovecot, port=dovecot.ports["imaps"], timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during imap greeting")


async def test_stopped_server_down() -> None:
    with running_dovecot(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
    for service in ("imap", "imaps"):
        for creds in ({}, login()):
            result = await run_check(spec(server, service, **creds))
            assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_frozen_server_times_out_and_delays_no_other_check(dovecot: Server) -> None:
    async with ScriptedPeer(*LIVE_SCRIPT) as live:
        with dovecot.frozen():
            frozen = [run_check(spec(dovecot, timeout=1, **login())) for _ in range(10)]
            frozen.append(run_check(spec(dovecot, "imaps", timeout=1)))
            started = time.monotonic()
            live_check = asyncio.ensure_future(run_check(spec(port=live.port, **login())))
            results = await asyncio.gather(*frozen)
            live_result = live_check.result()
    assert (live_result.ok, live_result.reason) == (True, "imap: logged in")
    assert live_result.latency_s < 0.5
    reasons = [r.reason for r in results]
    assert reasons == ["timeout after 1s during imap greeting"] * 10 + [
        "timeout after 1s during tls"
    ]
    assert all(not r.ok and 0.95 <= r.latency_s < 1.6 for r in results)
    assert time.monotonic() - started < 1.8
    assert (await run_check(spec(dovecot, **login()))).ok  # thawed, it answers again


@pytest.mark.parametrize("service", ["imap", "imaps"])
async def test_frozen_auth_times_out_in_the_login(dovecot: Server, service: str) -> None:
    assert (await run_check(spec(dovecot, service, **login()))).ok  # the auth process exists
    with auth_frozen(dovecot):
        result = await run_check(spec(dovecot, service, timeout=1, **login()))
    assert (result.ok, result.reason) == (False, f"timeout after 1s during {service} login")
    assert 0.95 <= result.latency_s < 1.6


@pytest.mark.parametrize(("service", "step"), [("imap", "imap greeting"), ("imaps", "tls")])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(service: str, step: str, host: str) -> None:
    async with SilentPeer(host) as peer:
        result = await run_check(spec(service=service, host=host, port=peer.port, timeout=0.5))
    assert (result.ok, result.reason) == (False, f"timeout after 0.5s during {step}")
    assert 0.45 <= result.latency_s < 1.0


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "imap: greeting: HTTP/1.1 400 Bad Request"),
        (b"* BYE too many connections\r\n", "imap: greeting: * BYE too many connections"),
        (b"* NO not now\r\n", "imap: greeting: * NO not now"),
        (b"* OK " + b"x" * MAX_LINE, f"imap: greeting: a line longer than {MAX_LINE} bytes"),
        (b"* OK half a line", "imap greeting: connection closed by the server"),
    ],
)
async def test_garbage_peer_down(greeting: bytes, reason: str) -> None:
    async with ScriptedPeer(greeting, hold=False) as peer:
        result = await run_check(spec(port=peer.port, **login()))
    assert (result.ok, result.reason) == (False, reason)


async def test_untagged_lines_and_literals_before_the_answer() -> None:
    answer = (
        b"* CAPABILITY IMAP4rev1\r\n* 1 FETCH (BODY[] {12}\r\na1 OK fake\r\n)\r\na1 NO [X] no\r\n"
    )
    async with ScriptedPeer(b"* OK hi\r\n", [answer]) as peer:
        result = await run_check(spec(port=peer.port, **login()))
        await peer.closed()
    assert (result.ok, result.reason) == (False, "imap: login rejected: NO [X] no")
    assert peer.received == [b'a1 LOGIN "lvsmon" "secret"\r\n', b"a2 LOGOUT\r\n"]


async def test_greeting_only_sends_logout() -> None:
    async with ScriptedPeer(b"* PREAUTH hello\r\n") as peer:
        result = await run_check(spec(port=peer.port))
        await peer.closed()
    assert (result.ok, result.reason) == (True, "imap: PREAUTH hello")
    assert peer.received == [b"a1 LOGOUT\r\n"]


@pytest.mark.parametrize("passwd", ["secret\r\na2 DELETE INBOX", "a\nb", "nul\0"])
async def test_credentials_that_cannot_be_sent(passwd: str) -> None:
    # refused before any connect: nothing listens on port 1 and no connect error shows
    result = await run_check(spec(port=1, login="lvsmon", passwd=passwd))
    assert (result.ok, result.reason) == (
        False,
        "imap: login or passwd holds CR, LF or NUL, which cannot be sent",
    )
    assert plan_probe(spec(port=1, login="lvsmon", passwd=passwd)) is None


# ---- the dialogue as bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login", "passwd", "pieces"),
    [
        (b"lvsmon", b"secret", [b'a1 LOGIN "lvsmon" "secret"\r\n']),
        (b"u", b'say "hi" \\o/', [b'a1 LOGIN "u" "say \\"hi\\" \\\\o/"\r\n']),
        (b"u", b"", [b'a1 LOGIN "u" ""\r\n']),
        (b"u", "pä".encode(), [b'a1 LOGIN "u" {3}\r\n', b"p\xc3\xa4\r\n"]),
        ("ü".encode(), "ä".encode(), [b"a1 LOGIN {2}\r\n", b"\xc3\xbc {2}\r\n", b"\xc3\xa4\r\n"]),
    ],
)
def test_login_command(login: bytes, passwd: bytes, pieces: list[bytes]) -> None:
    assert login_command(login, passwd) == pieces


def test_dialogue_login_with_literals() -> None:
    d = ImapDialogue("imap", "ü".encode(), b"p")
    assert (d.opening(), d.step) == (b"", "imap greeting")
    assert d.feed(b"* OK [CAPABILITY IMAP4rev1] ready\r") is None
    assert d.feed(b"\n") == b"a1 LOGIN {2}\r\n"
    assert d.step == "imap login"
    assert d.feed(b"+ OK\r\n") == b'\xc3\xbc "p"\r\n'
    assert d.feed(b"* CAPABILITY IMAP4rev1\r\nA1 ok Logged in\r\n") == CheckResult(
        True, "imap: logged in"
    )
    assert d.farewell == b"a2 LOGOUT\r\n"


def test_dialogue_literal_split_across_chunks() -> None:
    d = ImapDialogue("imaps", b"u", b"p")
    d.feed(b"* OK hi\r\n")
    assert d.feed(b"* 1 FETCH (BODY[] {23}\r\na1 OK not") is None
    assert d.feed(b" this\r\na1 NO\r\n") is None  # the rest of the literal
    assert d.feed(b")\r\na1 NO [AUTHENTICATIONFAILED] nope\r\n") == CheckResult(
        False, "imaps: login rejected: NO [AUTHENTICATIONFAILED] nope"
    )


@pytest.mark.parametrize(
    ("greeting", "result"),
    [
        (b"* OK [CAPABILITY X] Dovecot ready.", CheckResult(True, "imap: OK Dovecot ready.")),
        (b"* ok", CheckResult(True, "imap: OK")),
        (b"* PREAUTH [CAPABILITY X] hi", CheckResult(True, "imap: PREAUTH hi")),
        (b"* OKAY", CheckResult(False, "imap: greeting: * OKAY")),
        (b"a1 OK", CheckResult(False, "imap: greeting: a1 OK")),
        (b"* BYE \x00\xff", CheckResult(False, "imap: greeting: * BYE ?\ufffd")),
    ],
)
def test_dialogue_greeting(greeting: bytes, result: CheckResult) -> None:
    assert ImapDialogue("imap").feed(greeting + b"\r\n") == result


def test_dialogue_preauth_needs_no_login() -> None:
    result = ImapDialogue("imap", b"u", b"p").feed(b"* PREAUTH hi\r\n")
    assert result == CheckResult(True, "imap: preauthenticated, login not needed")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.", REJECTED),
        (b"a1 BAD Error in IMAP command LOGIN", "login rejected: BAD Error in IMAP command LOGIN"),
        (b"* BYE Disconnected for inactivity.", "login: * BYE Disconnected for inactivity."),
        (b"* " + b"x" * MAX_LINE, f"login: a line longer than {MAX_LINE} bytes"),
    ],
)
def test_dialogue_login_down(answer: bytes, reason: str) -> None:
    d = ImapDialogue("imap", b"u", b"p")
    assert d.feed(b"* OK hi\r\n") == b'a1 LOGIN "u" "p"\r\n'
    assert d.feed(answer + b"\r\n") == CheckResult(False, f"imap: {reason}")


def test_dialogue_over_long_line_without_newline() -> None:
    d = ImapDialogue("imap", b"u", b"p")
    assert d.feed(b"* OK " + b"x" * (MAX_LINE - 10)) is None
    assert d.feed(b"x" * 20) == CheckResult(
        False, f"imap: greeting: a line longer than {MAX_LINE} bytes"
    )


def test_dialogue_ignores_garbage_while_waiting_for_the_tag() -> None:
    d = ImapDialogue("imap", b"u", b"p")
    d.feed(b"* OK hi\r\n")
    assert d.feed(b"HTTP/1.1 400 Bad Request\r\n+ stray continuation\r\n") is None
    assert d.feed_eof() == CheckResult(False, "imap login: connection closed by the server")
