"""negotiate pop/pops against a real Dovecot on loopback, and the POP3 dialogue as bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import MAX_LINE
from lvsmon.checks.pop import PopDialogue
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from realservers.base import ScriptedPeer, Server, SilentPeer, open_sockets, sockets_settled
from realservers.dovecot import USERS, auth_frozen, running_dovecot

PORT = {"pop": "pop3", "pops": "pop3s"}
LIVE_SCRIPT = (b"+OK fake ready\r\n", [b"+OK\r\n", b"+OK Logged in.\r\n", b"+OK 0 0\r\n"])


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
    server: Server | None = None, /, service: str = "pop", host: str = "127.0.0.1", **kw: Any
) -> CheckSpec:
    fields: dict[str, Any] = {"kind": "negotiate", "service": service, "host": host}
    fields.update(timeout=5, port=server.ports[PORT[service]] if server else 0)
    fields.update(kw)
    return CheckSpec(**fields)


def login(user: str = "lvsmon") -> dict[str, str]:
    return {"login": user, "passwd": USERS[user]}


# ---- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["pop", "pops"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_login_up(dovecot: Server, service: str, host: str) -> None:
    result = await run_check(spec(dovecot, service, host, **login()))
    assert (result.ok, result.reason) == (True, f"{service}: logged in")


@pytest.mark.parametrize("service", ["pop", "pops"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_greeting_only_up(dovecot: Server, service: str, host: str) -> None:
    result = await run_check(spec(dovecot, service, host))
    assert (result.ok, result.reason) == (True, f"{service}: +OK Dovecot (Debian) ready.")


@pytest.mark.parametrize("user", ["quoted", "umlaut"])
async def test_passwords_sent_as_they_are(dovecot: Server, user: str) -> None:
    result = await run_check(spec(dovecot, **login(user)))
    assert (result.ok, result.reason) == (True, "pop: logged in")


@pytest.mark.parametrize("service", ["pop", "pops"])
@pytest.mark.parametrize(("user", "passwd"), [("lvsmon", "wrong"), ("nobody", "secret")])
async def test_wrong_credentials_down(
    dovecot: Server, service: str, user: str, passwd: str
) -> None:
    result = await run_check(spec(dovecot, service, login=user, passwd=passwd))
    assert (result.ok, result.reason) == (
        False,
        f"{service}: login rejected: -ERR [AUTH] Authentication failed.",
    )


async def test_a_failed_login_does_not_slow_the_next(dovecot: Server) -> None:
    await run_check(spec(dovecot, login="lvsmon", passwd="wrong"))
    result = await run_check(spec(dovecot, "pops", **login()))
    assert result.ok, result.reason
    assert result.latency_s < 1.0  # anvil's auth penalty would make it 2 s or more


async def test_prober_runs_plain_pop(dovecot: Server) -> None:
    plan = plan_probe(spec(dovecot, **login()))
    assert plan is not None
    result = await prober_for().probe(plan)
    assert (result.ok, result.reason) == (True, "pop: logged in")
    tls_plan = plan_probe(spec(dovecot, "pops", **login()))  # TLS too (tls.TlsDialogue)
    assert tls_plan is not None
    for _ in range(2):  # the second resumes the first's session (test_tls_wiring.py)
        result = await prober_for().probe(tls_plan)
        assert (result.ok, result.reason) == (True, "pops: logged in")


async def test_pops_against_plain_port_fails_the_handshake(dovecot: Server) -> None:
    result = await run_check(spec(dovecot, "pops", port=dovecot.ports["pop3"], **login()))
    assert (result.ok, result.reason) == (False, "tls: wrong version number")


async def test_pop_against_tls_port_times_out_in_the_greeting(dovecot: Server) -> None:
    result = await run_check(spec(dovecot, port=dovecot.ports["pop3s"], timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during pop greeting")


async def test_stopped_server_down_even_without_login() -> None:
    # ldirectord's pop without login stays up here (spec §10 #22)
    with running_dovecot(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
    for service in ("pop", "pops"):
        for creds in ({}, login()):
            result = await run_check(spec(server, service, **creds))
            assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_frozen_server_times_out_and_delays_no_other_check(dovecot: Server) -> None:
    async with ScriptedPeer(*LIVE_SCRIPT) as live:
        with dovecot.frozen():
            frozen = [run_check(spec(dovecot, timeout=1, **login())) for _ in range(10)]
            frozen.append(run_check(spec(dovecot, "pops", timeout=1)))
            started = time.monotonic()
            live_check = asyncio.ensure_future(run_check(spec(port=live.port, **login())))
            results = await asyncio.gather(*frozen)
            live_result = live_check.result()
    assert (live_result.ok, live_result.reason) == (True, "pop: logged in")
    assert live_result.latency_s < 0.5
    reasons = [r.reason for r in results]
    assert reasons == ["timeout after 1s during pop greeting"] * 10 + [
        "timeout after 1s during tls"
    ]
    assert all(not r.ok and 0.95 <= r.latency_s < 1.6 for r in results)
    assert time.monotonic() - started < 1.8
    assert (await run_check(spec(dovecot, **login()))).ok  # thawed, it answers again


@pytest.mark.parametrize("service", ["pop", "pops"])
async def test_frozen_auth_times_out_in_the_login(dovecot: Server, service: str) -> None:
    assert (await run_check(spec(dovecot, service, **login()))).ok  # the auth process exists
    with auth_frozen(dovecot):
        result = await run_check(spec(dovecot, service, timeout=1, **login()))
    assert (result.ok, result.reason) == (False, f"timeout after 1s during {service} login")
    assert 0.95 <= result.latency_s < 1.6


@pytest.mark.parametrize(("service", "step"), [("pop", "pop greeting"), ("pops", "tls")])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(service: str, step: str, host: str) -> None:
    async with SilentPeer(host) as peer:
        result = await run_check(spec(service=service, host=host, port=peer.port, timeout=0.5))
    assert (result.ok, result.reason) == (False, f"timeout after 0.5s during {step}")
    assert 0.45 <= result.latency_s < 1.0


@pytest.mark.parametrize(
    ("greeting", "reason"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "pop: greeting: HTTP/1.1 400 Bad Request"),
        (b"-ERR [SYS/TEMP] too busy\r\n", "pop: greeting: -ERR [SYS/TEMP] too busy"),
        (b"+OK " + b"x" * MAX_LINE, f"pop: greeting: a line longer than {MAX_LINE} bytes"),
        (b"+OK half a line", "pop greeting: connection closed by the server"),
    ],
)
async def test_garbage_peer_down(greeting: bytes, reason: str) -> None:
    async with ScriptedPeer(greeting, hold=False) as peer:
        result = await run_check(spec(port=peer.port, **login()))
    assert (result.ok, result.reason) == (False, reason)


async def test_stat_failure_down() -> None:
    replies = [b"+OK\r\n", b"+OK Logged in.\r\n", b"-ERR [IN-USE] mailbox locked\r\n"]
    async with ScriptedPeer(b"+OK ready\r\n", replies) as peer:
        result = await run_check(spec(port=peer.port, **login()))
        await peer.closed()
    assert (result.ok, result.reason) == (False, "pop: stat failed: -ERR [IN-USE] mailbox locked")
    assert peer.received == [b"USER lvsmon\r\n", b"PASS secret\r\n", b"STAT\r\n", b"QUIT\r\n"]


@pytest.mark.parametrize("passwd", ["secret\r\nDELE 1", "a\nb", "nul\0"])
async def test_credentials_that_cannot_be_sent(passwd: str) -> None:
    # refused before any connect: nothing listens on port 1 and no connect error shows
    result = await run_check(spec(port=1, login="lvsmon", passwd=passwd))
    assert (result.ok, result.reason) == (
        False,
        "pop: login or passwd holds CR, LF or NUL, which cannot be sent",
    )
    assert plan_probe(spec(port=1, login="lvsmon", passwd=passwd)) is None


# ---- the dialogue as bytes ---------------------------------------------------------------------


def test_dialogue_login_sequence() -> None:
    d = PopDialogue("pop", b"lvsmon", b"secret")
    assert (d.opening(), d.step) == (b"", "pop greeting")
    assert d.feed(b"+OK Dove") is None
    assert d.feed(b"cot ready.\r\n") == b"USER lvsmon\r\n"
    assert d.step == "pop login"
    assert d.feed(b"+ go on\r\n") == b"PASS secret\r\n"  # any "+" will do after USER
    assert d.feed(b"+OK Logged in.\n") == b"STAT\r\n"
    assert d.step == "pop stat"
    assert d.feed(b"+OK 2 320\r\n") == CheckResult(True, "pop: logged in")
    assert d.farewell == b"QUIT\r\n"


def test_dialogue_greeting_only() -> None:
    assert PopDialogue("pops").feed(b"+ok hello\r\n") == CheckResult(True, "pops: +ok hello")


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ([b"-ERR go away\r\n"], "pop: greeting: -ERR go away"),
        ([b"SSH-2.0-OpenSSH_9.2\0\r\n"], "pop: greeting: SSH-2.0-OpenSSH_9.2?"),
        ([b"+OK\r\n", b"-ERR no such user\r\n"], "pop: login rejected: -ERR no such user"),
        ([b"+OK\r\n", b"+OK\r\n", b"+ hmm\r\n"], "pop: login rejected: + hmm"),
        ([b"+OK\r\n+OK\r\n"], "pop: login: unexpected line +OK"),
        ([b"+OK\r\n", b"x" * (MAX_LINE + 1)], f"pop: login: a line longer than {MAX_LINE} bytes"),
    ],
)
def test_dialogue_down(chunks: list[bytes], reason: str) -> None:
    d = PopDialogue("pop", b"u", b"p")
    outcomes = [d.feed(chunk) for chunk in chunks]
    assert all(isinstance(o, bytes) for o in outcomes[:-1])
    assert outcomes[-1] == CheckResult(False, reason)


def test_dialogue_eof_names_the_step() -> None:
    d = PopDialogue("pop", b"u", b"p")
    d.feed(b"+OK\r\n")
    assert d.feed_eof() == CheckResult(False, "pop login: connection closed by the server")
