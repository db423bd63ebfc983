"""negotiate ldap/ldaps against a real OpenLDAP slapd (realservers/slapd.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks import ldap as ldap_check
from realservers.base import Server, SilentPeer
from realservers.slapd import PASSWORD, PEOPLE, SUFFIX, USER_DN, running_slapd
from tests.helpers import closed_port

DEADLINE = 1.5


@pytest.fixture(scope="module")
def slapd() -> Iterator[Server]:
    with running_slapd() as server:
        yield server


@pytest.fixture(scope="module")
def slapd2() -> Iterator[Server]:
    """A second instance, still live while the first one is frozen."""
    with running_slapd(("127.0.0.1",)) as server:
        yield server


def spec(
    server: Server | None = None, service: str = "ldap", host: str = "127.0.0.1", **kw: Any
) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": service,
        "host": host,
        "timeout": 5,
        "request": f"/{SUFFIX}",
    }
    if server is not None:
        fields["port"] = server.ports[service]
    fields.update(kw)
    return CheckSpec(**fields)


async def wait_threads_idle(within: float = 2.0) -> float:
    """Seconds until no LDAP thread is busy (fails past `within`)."""
    started = time.monotonic()
    while ldap_check.busy_threads():
        assert time.monotonic() - started < within, f"{ldap_check.busy_threads()} threads busy"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_anonymous_up(slapd: Server) -> None:
    result = await run_check(spec(slapd))
    assert (result.ok, result.reason) == (True, f"ldap: found {SUFFIX}")


async def test_root_dse_by_default(slapd: Server) -> None:
    result = await run_check(spec(slapd, request="/"))
    assert (result.ok, result.reason) == (True, "ldap: found the root DSE")


async def test_user_bind_up_with_receive(slapd: Server) -> None:
    result = await run_check(
        spec(slapd, request=f"/{USER_DN}", login=USER_DN, passwd=PASSWORD, receive="^uid=lvsmon,")
    )
    assert (result.ok, result.reason) == (True, f"ldap: found {USER_DN}")


async def test_wrong_password(slapd: Server) -> None:
    result = await run_check(spec(slapd, login=USER_DN, passwd="nope"))
    assert (result.ok, result.reason) == (False, "ldap: bind rejected: invalidCredentials")


async def test_login_without_passwd_binds_anonymously(slapd: Server) -> None:
    # ldirectord binds with credentials only when both are set
    result = await run_check(spec(slapd, login=USER_DN))
    assert result.ok, result.reason


async def test_missing_base(slapd: Server) -> None:
    result = await run_check(spec(slapd, request="/dc=nosuch,dc=test"))
    assert (result.ok, result.reason) == (False, "ldap: search of dc=nosuch,dc=test: noSuchObject")


async def test_dn_not_matching_receive(slapd: Server) -> None:
    result = await run_check(spec(slapd, request=f"/{PEOPLE}", receive="^uid="))
    assert (result.ok, result.reason) == (
        False,
        f"ldap: 1 entry but its DN {PEOPLE} does not match receive",
    )


async def test_ldaps_up(slapd: Server) -> None:
    result = await run_check(spec(slapd, service="ldaps"))
    assert (result.ok, result.reason) == (True, f"ldaps: found {SUFFIX}")


async def test_ldaps_to_plain_port_fails_in_tls(slapd: Server) -> None:
    result = await run_check(spec(slapd, service="ldaps", port=slapd.ports["ldap"]))
    assert not result.ok
    assert result.reason.startswith("tls: "), result.reason


async def test_ipv6(slapd: Server) -> None:
    for service in ("ldap", "ldaps"):
        result = await run_check(spec(slapd, service=service, host="::1"))
        assert (result.ok, result.reason) == (True, f"{service}: found {SUFFIX}")


async def test_refused() -> None:
    result = await run_check(spec(port=closed_port()))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_silent_peer_down_at_deadline() -> None:
    for service, step in (("ldap", "ldap bind"), ("ldaps", "tls")):
        async with SilentPeer() as peer:
            result = await run_check(spec(service=service, port=peer.port, timeout=1))
        assert result.reason == f"timeout after 1s during {step}"
        assert 0.95 <= result.latency_s < 1.5
    await wait_threads_idle(0.5)


async def test_stopped_server_is_down() -> None:
    with running_slapd(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
        port = server.ports["ldap"]
    result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_frozen_server_down_at_deadline_and_delays_no_other_check(
    slapd: Server, slapd2: Server
) -> None:
    loop = asyncio.get_running_loop()
    with slapd.frozen():
        # more frozen checks than the loop's default executor has threads
        frozen = [asyncio.create_task(run_check(spec(slapd, timeout=DEADLINE))) for _ in range(20)]
        await asyncio.sleep(0.3)  # all of them stuck in the bind by now
        assert ldap_check.busy_threads() == 20
        started = time.monotonic()
        live = await run_check(spec(slapd2))
        live_s = time.monotonic() - started
        assert (live.ok, live.reason) == (True, f"ldap: found {SUFFIX}")
        assert live_s < 0.5, live_s
        # and the default executor was never involved
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), 0.5) == 42
        results = await asyncio.gather(*frozen)
        # the threads end with their checks, not ldap3's own timeouts later
        assert await wait_threads_idle() < 0.3
    for result in results:
        assert (result.ok, result.reason) == (
            False,
            f"timeout after {DEADLINE:g}s during ldap bind",
        )
        assert DEADLINE - 0.05 <= result.latency_s < DEADLINE + 1.0
    assert (await run_check(spec(slapd))).ok  # thawed


def test_judge_counts_entries() -> None:
    s = spec(port=389)
    none = ldap_check.judge(s, "o=x", {"result": 0}, [])
    assert (none.ok, none.reason) == (False, "ldap: search of o=x: no entry")
    entry: dict[str, Any] = {"type": "searchResEntry", "raw_dn": b"o=x"}
    two = ldap_check.judge(s, "o=x", {"result": 0}, [entry, entry])
    assert (two.ok, two.reason) == (False, "ldap: search of o=x: 2 entries, not 1")
    refs: list[dict[str, Any]] = [{"type": "searchResRef", "uri": ["ldap://elsewhere/"]}, entry]
    assert ldap_check.judge(s, "o=x", {"result": 0}, refs).ok


def test_judge_shows_garbage_dn_safely() -> None:
    entry = {"type": "searchResEntry", "raw_dn": b"o=\xff\x00\n" + b"y" * 300}
    result = ldap_check.judge(spec(port=389, receive="^cn="), "", {"result": 0}, [entry])
    assert not result.ok
    assert result.reason.startswith("ldap: 1 entry but its DN o=")
    assert "\n" not in result.reason and "\x00" not in result.reason
    assert len(result.reason) < 200


def test_describe_ldap_error() -> None:
    describe = ldap_check.describe_ldap_error
    refused = OSError("socket connection error while opening: [Errno 111] Connection refused")
    assert describe(refused) == "connection refused"
    eof = OSError(
        "('socket ssl wrapping error: [SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred',)"
    )
    assert describe(eof) == "unexpected eof while reading"
    assert describe(TimeoutError("error receiving data: timed out")) == "timed out"
