"""negotiate dns against a real dnsmasq on loopback (UDP and TCP, IPv4 and IPv6, A, AAAA, PTR),
and the sans-IO dialogue itself on crafted answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from lvsmon.checks import CheckResult, CheckSpec, run_check
from lvsmon.checks.dns import DnsDialogue, lookup
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from realservers.base import Server, SilentPeer, free_ports
from realservers.dnsmasq import BIG, BIG_ADDRESSES, running_dnsmasq
from tests.helpers import closed_port

WWW = "www.lvsmon.test"


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Server]:
    with running_dnsmasq() as server:
        yield server


def spec(server: Server | None = None, host: str = "127.0.0.1", **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": "dns",
        "host": host,
        "port": server.ports["dns"] if server else 0,
        "timeout": 5,
        "protocol": "udp",
        "request": f"/{WWW}",
        "receive": r"192\.0\.2\.10",
    }
    fields.update(kw)
    return CheckSpec(**fields)


async def check(server: Server | None = None, **kw: Any) -> tuple[bool, str]:
    result = await run_check(spec(server, **kw))
    return result.ok, result.reason


# ---- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["udp", "tcp", "fwm"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_a_record_up(dnsmasq: Server, host: str, protocol: str) -> None:
    assert await check(dnsmasq, host=host, protocol=protocol) == (
        True,
        f"dns: {WWW} A 192.0.2.10",
    )


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("request_", "receive", "reason"),
    [
        (WWW, "2001:db8::10", f"dns: {WWW} AAAA 2001:db8::10"),  # asked after A matched nothing
        ("v6.lvsmon.test", "^2001:db8::30$", "dns: v6.lvsmon.test AAAA 2001:db8::30"),
        ("192.0.2.10", r"^www\.lvsmon\.test$", f"dns: 192.0.2.10 PTR {WWW}"),
        ("2001:db8::10", "www", f"dns: 2001:db8::10 PTR {WWW}"),
        ("alias.lvsmon.test", r"192\.0\.2\.10", "dns: alias.lvsmon.test A 192.0.2.10"),  # CNAME
        (f"{WWW}.", r"^192\.0\.2\.1\d$", f"dns: {WWW}. A 192.0.2.10"),
        ("v4.lvsmon.test", "", "dns: v4.lvsmon.test A 192.0.2.20"),  # any record
        ("v6.lvsmon.test", "", "dns: v6.lvsmon.test AAAA 2001:db8::30"),
    ],
)
async def test_other_lookups_up(
    dnsmasq: Server, protocol: str, request_: str, receive: str, reason: str
) -> None:
    result = await check(dnsmasq, protocol=protocol, request=f"/{request_}", receive=receive)
    assert result == (True, reason)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("request_", "receive", "reason"),
    [
        (
            WWW,
            "10.0.0.5",
            f"dns: no A or AAAA record for {WWW} matching 10.0.0.5 (got 192.0.2.10, 2001:db8::10)",
        ),
        (
            "v4.lvsmon.test",
            "2001:db8::20",
            "dns: no A or AAAA record for v4.lvsmon.test matching 2001:db8::20 (got 192.0.2.20)",
        ),
        (
            "192.0.2.20",
            "www",
            "dns: no PTR record for 192.0.2.20 matching www (got v4.lvsmon.test)",
        ),
        ("txt.lvsmon.test", "", "dns: no A or AAAA record for txt.lvsmon.test"),
        ("txt.lvsmon.test", "x", "dns: no A or AAAA record for txt.lvsmon.test matching x"),
        ("nosuch.lvsmon.test", "x", "dns: NXDOMAIN for nosuch.lvsmon.test"),
        ("192.0.2.99", "", "dns: NXDOMAIN for 192.0.2.99"),
        ("example.com", "x", "dns: REFUSED for example.com (A)"),  # dnsmasq has no upstream
    ],
)
async def test_wrong_content_down(
    dnsmasq: Server, protocol: str, request_: str, receive: str, reason: str
) -> None:
    result = await check(dnsmasq, protocol=protocol, request=f"/{request_}", receive=receive)
    assert result == (False, reason)


async def test_truncated_udp_answer_asked_again_over_tcp(dnsmasq: Server) -> None:
    port = dnsmasq.ports["dns"]
    query = dns.message.make_query(BIG, "A")
    over_udp = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)
    assert over_udp.flags & dns.flags.TC
    assert "198.51.100.60" not in over_udp.to_text()
    result = await check(dnsmasq, request=f"/{BIG}", receive=r"\.60$")
    assert result == (True, f"dns: {BIG} A 198.51.100.60")


async def test_many_records_named_in_part(dnsmasq: Server) -> None:
    ok, reason = await check(dnsmasq, protocol="tcp", request=f"/{BIG}", receive="^10\\.")
    assert not ok
    head = f"dns: no A or AAAA record for {BIG} matching ^10\\. (got "
    tail = f" and {len(BIG_ADDRESSES) - 4} more)"
    assert reason.startswith(head) and reason.endswith(tail), reason
    shown = reason[len(head) : -len(tail)].split(", ")
    assert len(shown) == 4 and set(shown) <= set(BIG_ADDRESSES)  # in the server's order


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        ("/", "dns: request must be set for this check"),
        ("/" + "x" * 64 + ".test", "dns: request '" + "x" * 64 + ".test' is not a domain name: "),
    ],
)
async def test_unusable_request_down(dnsmasq: Server, request_: str, reason: str) -> None:
    ok, got = await check(dnsmasq, request=request_)
    assert not ok
    assert got.startswith(reason), got


async def test_tcp_runs_on_the_prober(dnsmasq: Server) -> None:
    for protocol in ("udp", "fwm"):
        assert plan_probe(spec(dnsmasq, protocol=protocol)) is None
    plan = plan_probe(spec(dnsmasq, host="::1", protocol="tcp", receive="2001:db8::10"))
    assert plan is not None
    result = await prober_for().probe(plan)
    assert (result.ok, result.reason) == (True, f"dns: {WWW} AAAA 2001:db8::10")


class LossyRelay(asyncio.DatagramProtocol):
    """A UDP relay to a DNS server that loses the client's datagrams numbered in `drop` (0 is the
    first), as a lossy network would."""

    def __init__(self, server: tuple[str, int], drop: set[int]) -> None:
        self.server = server
        self.drop = drop
        self.count = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.client: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # 3.11's is no subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        if addr == self.server:
            self.transport.sendto(data, self.client)
            return
        self.client = addr
        self.count += 1
        if self.count - 1 not in self.drop:
            self.transport.sendto(data, self.server)


@pytest.fixture
async def relay_factory(dnsmasq: Server) -> AsyncIterator[Any]:
    transports: list[asyncio.BaseTransport] = []

    async def make(drop: set[int]) -> tuple[LossyRelay, int]:
        loop = asyncio.get_running_loop()
        target = ("127.0.0.1", dnsmasq.ports["dns"])
        transport, relay = await loop.create_datagram_endpoint(
            lambda: LossyRelay(target, drop), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return relay, int(transport.get_extra_info("sockname")[1])

    yield make
    for transport in transports:
        transport.close()


@pytest.mark.parametrize(
    ("drop", "receive", "sent", "reason"),
    [
        ({0}, r"192\.0\.2\.10", 2, f"dns: {WWW} A 192.0.2.10"),  # the A query lost once
        # the AAAA query lost: the resent A query's answer makes the check ask it again
        ({1}, "2001:db8::10", 4, f"dns: {WWW} AAAA 2001:db8::10"),
    ],
)
async def test_lost_udp_query_sent_again(
    relay_factory: Any, drop: set[int], receive: str, sent: int, reason: str
) -> None:
    relay, port = await relay_factory(drop)
    result = await run_check(spec(port=port, receive=receive, timeout=3))
    assert (result.ok, result.reason) == (True, reason)
    assert 0.45 <= result.latency_s < 1.5  # the first resend is after 0.5 s
    assert relay.count == sent


async def test_stopped_server_down() -> None:
    with running_dnsmasq(("127.0.0.1",)) as server:
        assert (await check(server))[0]
    started = time.monotonic()
    assert await check(server) == (False, "dns query: connection refused")  # ICMP unreachable
    assert await check(server, protocol="tcp") == (False, "connect: connection refused")
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
async def test_frozen_server_times_out_and_delays_no_other_check(
    dnsmasq: Server, protocol: str
) -> None:
    with running_dnsmasq(("127.0.0.1",)) as live, dnsmasq.frozen():
        frozen = [
            run_check(spec(dnsmasq, host=host, protocol=protocol, timeout=1.5))
            for host in ("127.0.0.1", "::1") * 5
        ]
        started = time.monotonic()
        live_check = asyncio.ensure_future(run_check(spec(live, protocol=protocol)))
        results = await asyncio.gather(*frozen)
        elapsed = time.monotonic() - started
        live_result = live_check.result()
    assert (live_result.ok, live_result.reason) == (True, f"dns: {WWW} A 192.0.2.10")
    assert live_result.latency_s < 0.5
    assert [r.reason for r in results] == ["timeout after 1.5s during dns query"] * 10
    assert all(not r.ok and 1.45 <= r.latency_s < 2.2 for r in results)
    assert elapsed < 2.5
    assert (await run_check(spec(dnsmasq, protocol=protocol))).ok  # thawed, it answers again


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_silent_peer_times_out(host: str, protocol: str) -> None:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    async with SilentPeer(host, kind) as peer:
        result = await run_check(spec(host=host, port=peer.port, protocol=protocol, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during dns query")
    assert 0.45 <= result.latency_s < 1.0


async def test_refused_tcp_connect() -> None:
    assert await check(port=closed_port(), protocol="tcp") == (
        False,
        "connect: connection refused",
    )


async def test_closed_udp_port_refused_promptly() -> None:
    [port] = free_ports(1)
    result = await run_check(spec(host="::1", port=port))
    assert (result.ok, result.reason) == (False, "dns query: connection refused")
    assert result.latency_s < 0.5


# ---- the dialogue on crafted answers -----------------------------------------------------------


def dialogue(request: str = WWW, receive: str = r"192\.0\.2\.10", tcp: bool = False) -> DnsDialogue:
    return DnsDialogue(lookup(request), receive, tcp=tcp)


def answer(
    d: DnsDialogue, *records: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR, tc: bool = False
) -> bytes:
    """The wire answer to the dialogue's current query holding `records` ("name ttl IN A x")."""
    response = dns.message.make_response(d.queries[d.asked])
    response.set_rcode(rcode)
    for text in records:
        name, ttl, rdclass, rdtype, rdata = text.split()
        response.answer.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata))
    if tc:
        response.flags |= dns.flags.TC
    return response.to_wire()


def framed(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


def test_lookup_of_names_and_addresses() -> None:
    assert lookup(f"/{WWW}").qtypes == (dns.rdatatype.A, dns.rdatatype.AAAA)
    assert lookup("/192.0.2.1").qname.to_text() == "1.2.0.192.in-addr.arpa."
    assert lookup("::1").qname.to_text().endswith(".ip6.arpa.")
    assert lookup(WWW).shown == WWW  # a request built by hand may lack the "/"


def test_udp_a_then_aaaa() -> None:
    d = dialogue(receive="2001:db8::1")
    a_query = d.opening()
    assert dns.message.from_wire(a_query).question[0].rdtype == dns.rdatatype.A
    aaaa_query = d.feed(answer(d, f"{WWW}. 0 IN A 192.0.2.10"))
    assert isinstance(aaaa_query, bytes)
    assert dns.message.from_wire(aaaa_query).question[0].rdtype == dns.rdatatype.AAAA
    assert d.feed(answer(d, f"{WWW}. 0 IN AAAA 2001:db8::1")) == CheckResult(
        True, f"dns: {WWW} AAAA 2001:db8::1"
    )


def test_udp_repeated_earlier_answer_asks_again_and_strays_are_ignored() -> None:
    d = dialogue(receive="2001:db8::1")
    first = answer(d, f"{WWW}. 0 IN A 192.0.2.10")
    aaaa_query = d.feed(first)
    assert d.feed(first) == aaaa_query  # the resent A query was answered: AAAA was lost
    stray = dns.message.make_response(dns.message.make_query("other.test", "A")).to_wire()
    assert d.feed(stray) is None
    assert d.feed(answer(d)) == CheckResult(
        False, f"dns: no A or AAAA record for {WWW} matching 2001:db8::1 (got 192.0.2.10)"
    )


def test_tcp_framing_byte_by_byte() -> None:
    d = dialogue(receive="2001:db8::1", tcp=True)
    opening = d.opening()
    assert int.from_bytes(opening[:2], "big") == len(opening) - 2
    stream = framed(answer(d, f"{WWW}. 0 IN A 192.0.2.10"))
    outcomes = [d.feed(stream[i : i + 1]) for i in range(len(stream))]
    assert outcomes[:-1] == [None] * (len(stream) - 1)
    aaaa_query = outcomes[-1]
    assert isinstance(aaaa_query, bytes)
    assert int.from_bytes(aaaa_query[:2], "big") == len(aaaa_query) - 2
    assert d.feed(framed(answer(d, f"{WWW}. 0 IN AAAA 2001:db8::1"))) == CheckResult(
        True, f"dns: {WWW} AAAA 2001:db8::1"
    )


def test_tcp_answer_to_another_query_down() -> None:
    d = dialogue(tcp=True)
    other = dns.message.make_response(dns.message.make_query(WWW, "A")).to_wire()
    assert d.feed(framed(other)) == CheckResult(False, "dns: answer does not match the query")


@pytest.mark.parametrize(
    "garbage", [b"\x00", b"HTTP/1.1 400 Bad Request\r\n\r\n", b"\xff" * 12 + b"\x01"]
)
def test_garbage_down(garbage: bytes) -> None:
    result = dialogue().feed(garbage)
    assert isinstance(result, CheckResult)
    assert not result.ok
    assert result.reason.startswith("dns: malformed answer: "), result.reason


def test_tcp_eof_before_the_answer() -> None:
    d = dialogue(tcp=True)
    assert d.feed(b"\x00\x40partial") is None
    assert d.feed_eof() == CheckResult(
        False, "dns: connection closed by the server before the A answer"
    )


def test_servfail_and_truncation() -> None:
    d = dialogue()
    assert d.feed(answer(d, rcode=dns.rcode.SERVFAIL)) == CheckResult(
        False, f"dns: SERVFAIL for {WWW} (A)"
    )
    d = dialogue()
    assert d.feed(answer(d, f"{WWW}. 0 IN A 192.0.2.99", tc=True)) == CheckResult(
        False, f"dns: answer for {WWW} truncated"
    )
    assert d.truncated
    d = dialogue()  # what a truncated answer holds still counts
    assert d.feed(answer(d, f"{WWW}. 0 IN A 192.0.2.10", tc=True)) == CheckResult(
        True, f"dns: {WWW} A 192.0.2.10"
    )


def test_cname_only_records_of_the_type_asked_count() -> None:
    d = dialogue(request="alias.lvsmon.test", receive="www")
    d.feed(answer(d, f"alias.lvsmon.test. 0 IN CNAME {WWW}.", f"{WWW}. 0 IN A 192.0.2.10"))
    assert d.seen == ["192.0.2.10"]  # the CNAME's target is not an address
