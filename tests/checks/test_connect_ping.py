"""checktype=connect and ping against loopback, IPv4 and IPv6."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks.ping import checksum, echo_request, parse_echo_reply
from tests.helpers import closed_port


@pytest.fixture(params=["127.0.0.1", "::1"])
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    host: str = request.param
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        sock.listen(8)
        yield host, sock.getsockname()[1]


async def test_connect_up(listener: tuple[str, int]) -> None:
    host, port = listener
    result = await run_check(CheckSpec(kind="connect", host=host, port=port, timeout=5))
    assert (result.ok, result.reason) == (True, "connect: connected")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connect_refused(host: str) -> None:
    spec = CheckSpec(kind="connect", host=host, port=closed_port(host), timeout=5)
    result = await run_check(spec)
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_connect_that_hangs_hits_the_deadline() -> None:
    # a listener that never accepts: once its queue is full the kernel drops further SYNs
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                filler.connect_ex(("127.0.0.1", port))
            spec = CheckSpec(kind="connect", host="127.0.0.1", port=port, timeout=0.5)
            result = await run_check(spec)
        finally:
            for filler in fillers:
                filler.close()
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during connect")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("count", [1, 3])
async def test_ping(host: str, count: int) -> None:
    result = await run_check(CheckSpec(kind="ping", host=host, port=0, timeout=5, checkcount=count))
    assert result.ok, result.reason
    assert result.reason.startswith("ping: echo reply")
    # the ICMP bytes it read count for the lag rule (issue 21): at least one echo reply
    assert result.received >= 8 + 16


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_connect_on_udp_virtual_pings(host: str) -> None:
    # nothing listens on UDP port 9, yet the real is up: ldirectord pings instead of connecting
    spec = CheckSpec(kind="connect", host=host, port=9, protocol="udp", timeout=5)
    result = await run_check(spec)
    assert result.ok, result.reason
    assert result.reason.startswith("ping: ")


def test_checksum_of_a_known_packet() -> None:
    # RFC 1071 example words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    packet = echo_request(False, 0x1234, 7, b"abc")
    assert checksum(packet) == 0  # a packet carrying its own checksum sums to zero


def test_echo_reply_parsing() -> None:
    request = bytearray(echo_request(False, 0x1234, 7, b"payload"))
    request[0] = 0  # the reply mirrors the request with type 0
    ip_header = bytes([0x45]) + bytes(19)
    assert parse_echo_reply(False, ip_header + bytes(request), True) == (0x1234, 7, b"payload")
    assert parse_echo_reply(False, echo_request(False, 1, 1, b""), False) is None  # a request
    assert parse_echo_reply(True, bytes([129, 0, 0, 0, 0, 5, 0, 9]) + b"x", False) == (5, 9, b"x")
    assert parse_echo_reply(True, b"\x81", False) is None
