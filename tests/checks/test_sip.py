"""negotiate sip against a real Kamailio on loopback (UDP and TCP, IPv4 and IPv6), what the check
sends, and the sans-IO dialogue on crafted answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dialogue import MAX_LINE
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from lvsmon.checks.sip import SipDialogue, default_login, options_request
from realservers.base import Server, SilentPeer, free_ports
from realservers.kamailio import running_kamailio
from tests.helpers import closed_port


@pytest.fixture(scope="module")
def kamailio() -> Iterator[Server]:
    with running_kamailio() as server:
        yield server


def spec(server: Server | None = None, host: str = "127.0.0.1", **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": "sip",
        "host": host,
        "port": server.ports["sip"] if server else 0,
        "timeout": 5,
        "protocol": "udp",
        "login": "lvsmon@lvsmon.test",
    }
    fields.update(kw)
    return CheckSpec(**fields)


async def check(server: Server | None = None, **kw: Any) -> tuple[bool, str]:
    result = await run_check(spec(server, **kw))
    return result.ok, result.reason


# ---- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["udp", "tcp", "fwm"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_up(kamailio: Server, host: str, protocol: str) -> None:
    assert await check(kamailio, host=host, protocol=protocol) == (True, "sip: 200 OK")


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("login", "expected"),
    [
        ("", (True, "sip: 200 OK")),  # ldirectord@<hostname>
        ("nobody@lvsmon.test", (False, "sip: 404 Not here")),
        ("trying@lvsmon.test", (True, "sip: 200 OK")),  # after "100 Trying"
        ("alive@lvsmon.test", (True, "sip: 200 Alive")),  # ldirectord wanted "200 OK"
    ],
)
async def test_answers(
    kamailio: Server, protocol: str, login: str, expected: tuple[bool, str]
) -> None:
    assert await check(kamailio, host="::1", protocol=protocol, login=login) == expected


async def test_unusable_login_down(kamailio: Server) -> None:
    assert await check(kamailio, login="a b@lvsmon.test") == (
        False,
        "sip: login 'a b@lvsmon.test' cannot be the user@host of a SIP URI",
    )


async def test_tcp_runs_on_the_prober(kamailio: Server) -> None:
    assert plan_probe(spec(kamailio, protocol="udp")) is None
    for protocol in ("tcp", "fwm"):
        plan = plan_probe(spec(kamailio, host="::1", protocol=protocol, login="alive@x.test"))
        assert plan is not None
        result = await prober_for().probe(plan)
        assert (result.ok, result.reason) == (True, "sip: 200 Alive")


async def test_stopped_server_down() -> None:
    with running_kamailio(("127.0.0.1",)) as server:
        assert (await check(server))[0]
    started = time.monotonic()
    assert await check(server) == (False, "sip options: connection refused")  # ICMP unreachable
    assert await check(server, protocol="tcp") == (False, "connect: connection refused")
    assert time.monotonic() - started < 1.0


async def test_frozen_server_times_out_and_delays_no_other_check(kamailio: Server) -> None:
    with running_kamailio(("127.0.0.1",)) as live, kamailio.frozen():
        frozen = [
            run_check(spec(kamailio, host=host, protocol=protocol, timeout=1.5))
            for host in ("127.0.0.1", "::1")
            for protocol in ("udp", "tcp")
        ] * 3
        started = time.monotonic()
        live_checks = asyncio.gather(run_check(spec(live)), run_check(spec(live, protocol="tcp")))
        results = await asyncio.gather(*frozen)
        elapsed = time.monotonic() - started
        live_results = live_checks.result()
    assert [(r.ok, r.reason) for r in live_results] == [(True, "sip: 200 OK")] * 2
    assert all(r.latency_s < 0.5 for r in live_results)
    assert [r.reason for r in results] == ["timeout after 1.5s during sip options"] * 12
    assert all(not r.ok and 1.45 <= r.latency_s < 2.2 for r in results)
    assert elapsed < 2.5
    assert (await check(kamailio))[0]  # thawed, it answers again


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(host: str, protocol: str) -> None:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    async with SilentPeer(host, kind) as peer:
        result = await run_check(spec(host=host, port=peer.port, protocol=protocol, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during sip options")
    assert 0.45 <= result.latency_s < 1.0


async def test_refused() -> None:
    assert await check(port=closed_port(), protocol="tcp") == (
        False,
        "connect: connection refused",
    )
    [port] = free_ports(1)
    assert await check(host="::1", port=port) == (False, "sip options: connection refused")


# ---- what is sent ------------------------------------------------------------------------------


class Recorder(asyncio.DatagramProtocol):
    """A UDP peer that keeps each request and answers it with `reply`, to where it came from."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.requests.append(data)
        self.transport.sendto(self.reply, addr)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, int]]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        lambda: Recorder(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), local_addr=("::1", 0)
    )
    yield peer, int(transport.get_extra_info("sockname")[1])
    transport.close()


async def test_request_as_ldirectord(recorder: tuple[Recorder, int]) -> None:
    peer, port = recorder
    assert await check(host="::1", port=port, login="") == (True, "sip: 200 OK")
    assert await check(host="::1", port=port) == (True, "sip: 200 OK")
    first, second = (r.decode().split("\r\n") for r in peer.requests)
    login = default_login()
    assert first[0] == f"OPTIONS sip:{login} SIP/2.0"
    assert second[0] == "OPTIONS sip:lvsmon@lvsmon.test SIP/2.0"
    headers = dict(line.split(": ", 1) for line in first[1:] if line)
    assert headers["Via"].startswith("SIP/2.0/UDP [::1];rport;branch=z9hG4bK")
    assert headers["To"] == f"<sip:{login}>"
    assert headers["From"].startswith(f"<sip:{login}>;tag=")
    assert headers["Contact"] == f"<sip:{login}>"
    assert headers["CSeq"] == "1 OPTIONS"
    assert headers["Max-Forwards"] == "70"
    assert headers["Content-Length"] == "0"
    assert first[-2:] == ["", ""]  # the empty line ends it
    other = dict(line.split(": ", 1) for line in second[1:] if line)
    for name in ("Call-ID", "Via"):  # fresh per request (the branch is in the Via)
        assert headers[name] != other[name]


def test_tcp_request_names_tcp_in_the_via() -> None:
    request = options_request("a@b.test", "TCP", "192.0.2.1").decode()
    assert "\r\nVia: SIP/2.0/TCP 192.0.2.1;rport;branch=z9hG4bK" in request


# ---- the dialogue on crafted answers -----------------------------------------------------------


def tcp() -> SipDialogue:
    return SipDialogue(b"OPTIONS ...", datagram=False)


def udp() -> SipDialogue:
    return SipDialogue(b"OPTIONS ...", datagram=True)


def test_tcp_provisional_then_final_split_anywhere() -> None:
    stream = (
        b"\r\nSIP/2.0 100 Trying\r\nVia: x\r\nContent-Length: 0\r\n\r\n"
        b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"
    )
    for cut in range(1, len(stream)):
        d = tcp()
        outcome = d.feed(stream[:cut])
        if outcome is None:
            outcome = d.feed(stream[cut:])
        assert outcome == CheckResult(True, "sip: 200 OK"), cut


def test_tcp_final_after_provisional() -> None:
    d = tcp()
    assert d.feed(b"SIP/2.0 180 Ringing\r\nVia: x\r\n\r\n") is None
    assert d.feed(b"SIP/2.0 486 Busy Here\r\n") == CheckResult(False, "sip: 486 Busy Here")


def test_udp_datagrams() -> None:
    d = udp()
    assert d.feed(b"SIP/2.0 100 Trying\r\nVia: x\r\n\r\n") is None
    assert d.feed(b"SIP/2.0 200 OK\r\n\r\n") == CheckResult(True, "sip: 200 OK")
    assert udp().feed(b"SIP/2.0 503 Service Unavailable") == CheckResult(
        False, "sip: 503 Service Unavailable"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.1 200 OK\r\n", "sip: not a SIP response: HTTP/1.1 200 OK"),
        (b"SIP/2.0 2OO OK\r\n", "sip: not a SIP response: SIP/2.0 2OO OK"),
        (b"OPTIONS sip:x SIP/2.0\r\n", "sip: not a SIP response: OPTIONS sip:x SIP/2.0"),
        (b"\xff\xfe\x00garbage\r\n", "sip: not a SIP response: \ufffd\ufffd?garbage"),
    ],
)
def test_garbage_down(data: bytes, reason: str) -> None:
    assert tcp().feed(data) == CheckResult(False, reason)
    assert udp().feed(data) == CheckResult(False, reason)


def test_overlong_line_down() -> None:
    d = tcp()
    assert d.feed(b"SIP/2.0 100 Trying\r\n") is None
    assert d.feed(b"X-Long: " + b"x" * MAX_LINE) == CheckResult(
        False, f"sip: a line longer than {MAX_LINE} bytes"
    )
    long_phrase = tcp().feed(b"SIP/2.0 200 " + b"O" * 300 + b"\r\n")
    assert long_phrase == CheckResult(True, "sip: 200 " + "O" * 116 + "...")


def test_eof_before_a_final_answer() -> None:
    d = tcp()
    assert d.feed(b"SIP/2.0 100 Trying\r\n\r\nSIP/2.0 2") is None
    assert d.feed_eof() == CheckResult(
        False, "sip: connection closed by the server without a final answer"
    )
