"""negotiate radius against a real FreeRADIUS (realservers/freeradius.py), and against a
scripted UDP peer for loss and forged replies."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import pytest
from pyrad import packet as rad

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks.radius import DICTIONARY, RadiusDialogue, build_request
from realservers.base import Server, SilentPeer, free_ports
from realservers.freeradius import (
    DISABLED_MESSAGE,
    DISABLED_USER,
    PASSWORD,
    SECRET,
    USER,
    running_freeradius,
)

DEADLINE = 1.5


@pytest.fixture(scope="module")
def radiusd() -> Iterator[Server]:
    with running_freeradius() as server:
        yield server


@pytest.fixture(scope="module")
def radiusd2() -> Iterator[Server]:
    """A second instance, still live while the first one is frozen."""
    with running_freeradius(("127.0.0.1",)) as server:
        yield server


def spec(server: Server | None = None, host: str = "127.0.0.1", **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": "radius",
        "host": host,
        "timeout": 5,
        "login": USER,
        "passwd": PASSWORD,
        "secret": SECRET,
        "protocol": "udp",
    }
    if server is not None:
        fields["port"] = server.ports["radius"]
    fields.update(kw)
    return CheckSpec(**fields)


async def test_accept(radiusd: Server) -> None:
    result = await run_check(spec(radiusd))
    assert (result.ok, result.reason) == (True, "radius: Access-Accept")


async def test_wrong_password_is_rejected(radiusd: Server) -> None:
    result = await run_check(spec(radiusd, passwd="wrong"))
    assert not result.ok
    assert result.reason.startswith("radius: Access-Reject"), result.reason


async def test_reject_names_reply_message(radiusd: Server) -> None:
    result = await run_check(spec(radiusd, login=DISABLED_USER))
    assert (result.ok, result.reason) == (False, f"radius: Access-Reject: {DISABLED_MESSAGE}")


async def test_wrong_secret_looks_like_a_timeout(radiusd: Server) -> None:
    # FreeRADIUS drops a request whose Message-Authenticator does not verify, without a word
    result = await run_check(spec(radiusd, secret="not-the-secret", timeout=DEADLINE))
    assert (result.ok, result.reason) == (False, f"timeout after {DEADLINE:g}s during radius")
    assert DEADLINE - 0.05 <= result.latency_s < DEADLINE + 0.5


async def test_ipv6(radiusd: Server) -> None:
    result = await run_check(spec(radiusd, host="::1"))
    assert (result.ok, result.reason) == (True, "radius: Access-Accept")


async def test_always_udp(radiusd: Server) -> None:
    assert (await run_check(spec(radiusd, protocol="tcp"))).ok


async def test_settings_it_cannot_do_without(radiusd: Server) -> None:
    result = await run_check(spec(radiusd, secret=""))
    assert (result.ok, result.reason) == (False, "radius: secret must be set for this check")
    result = await run_check(spec(radiusd, login=""))
    assert (result.ok, result.reason) == (False, "radius: login must be set for this check")
    result = await run_check(spec(radiusd, passwd="x" * 129))
    assert not result.ok
    assert result.reason.startswith("radius: cannot build the request: "), result.reason


async def test_stopped_server_is_refused_at_once() -> None:
    with running_freeradius(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
    result = await run_check(spec(server))
    assert (result.ok, result.reason) == (False, "radius: connection refused")
    assert result.latency_s < 0.5


async def test_silent_peer_down_at_deadline() -> None:
    async with SilentPeer(kind=socket.SOCK_DGRAM) as peer:
        result = await run_check(spec(port=peer.port, timeout=DEADLINE))
    assert (result.ok, result.reason) == (False, f"timeout after {DEADLINE:g}s during radius")
    assert DEADLINE - 0.05 <= result.latency_s < DEADLINE + 0.5


async def test_frozen_server_down_at_deadline_and_delays_no_other_check(
    radiusd: Server, radiusd2: Server
) -> None:
    with radiusd.frozen():
        frozen = [
            asyncio.create_task(run_check(spec(radiusd, timeout=DEADLINE))) for _ in range(10)
        ]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        live = await run_check(spec(radiusd2))
        assert (live.ok, live.reason) == (True, "radius: Access-Accept")
        assert time.monotonic() - started < 0.5
        results = await asyncio.gather(*frozen)
    for result in results:
        assert (result.ok, result.reason) == (False, f"timeout after {DEADLINE:g}s during radius")
        assert DEADLINE - 0.05 <= result.latency_s < DEADLINE + 0.5
    assert (await run_check(spec(radiusd))).ok  # thawed


# a scripted peer: it answers as told, signing with the secret it is given


class _Peer(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[int, bytes], list[bytes]]) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # 3.11's selector transport does not subclass DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.append(data)
        assert self.transport is not None
        for reply in self.answer(len(self.received), data):
            self.transport.sendto(reply, addr)


def reply_to(
    data: bytes, code: int = rad.AccessAccept, secret: str = SECRET, **attrs: Any
) -> bytes:
    request = rad.AuthPacket(packet=data, secret=secret.encode(), dict=DICTIONARY)
    reply = request.CreateReply(**attrs)
    reply.code = code
    raw: bytes = reply.ReplyPacket()
    return raw


@pytest.fixture
async def peer_factory() -> AsyncIterator[Callable[..., Any]]:
    transports: list[asyncio.BaseTransport] = []

    async def start(answer: Callable[[int, bytes], list[bytes]]) -> tuple[_Peer, int]:
        (port,) = free_ports(1)
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Peer(answer), local_addr=("127.0.0.1", port)
        )
        transports.append(transport)
        return protocol, port

    yield start
    for transport in transports:
        transport.close()


async def test_lost_request_is_sent_again(peer_factory: Callable[..., Any]) -> None:
    # the first two copies are "lost"; the third is answered
    peer, port = await peer_factory(lambda n, data: [reply_to(data)] if n == 3 else [])
    result = await run_check(spec(port=port, timeout=3))
    assert (result.ok, result.reason) == (True, "radius: Access-Accept")
    assert len(peer.received) == 3
    assert len(set(peer.received)) == 1  # the same request (id, authenticator) each time
    assert 1.4 <= result.latency_s < 2.5  # resent after 0.5 s, then 1 s later


async def test_forged_and_garbage_replies_are_ignored(peer_factory: Callable[..., Any]) -> None:
    def answer(n: int, data: bytes) -> list[bytes]:
        return [b"\x02garbage", reply_to(data, secret="forger"), reply_to(data)]

    _, port = await peer_factory(answer)
    assert (await run_check(spec(port=port))).ok


async def test_only_forged_replies_time_out_saying_so(peer_factory: Callable[..., Any]) -> None:
    _, port = await peer_factory(lambda n, data: [reply_to(data, secret="forger")])
    result = await run_check(spec(port=port, timeout=1))
    assert result.reason == (
        "timeout after 1s during radius (a reply failed verification: wrong secret?)"
    )


async def test_challenge_is_down(peer_factory: Callable[..., Any]) -> None:
    _, port = await peer_factory(
        lambda n, data: [reply_to(data, code=rad.AccessChallenge, Reply_Message="otp?")]
    )
    result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (False, "radius: Access-Challenge: otp?")


def test_dialogue_bytes() -> None:
    s = spec(port=1812)
    dialogue = RadiusDialogue(s)
    request = dialogue.opening()
    assert request[0] == rad.AccessRequest
    decoded = rad.AuthPacket(packet=request, secret=SECRET.encode(), dict=DICTIONARY)
    assert decoded["User-Name"] == [USER]
    assert decoded.PwDecrypt(decoded["User-Password"][0]) == PASSWORD
    assert decoded["NAS-Identifier"] == ["lvsmon"]
    assert 80 in dict.keys(decoded)  # Message-Authenticator
    assert dialogue.feed(b"") is None
    assert dialogue.feed(b"\xff" * 4000) is None
    other = bytearray(reply_to(request))
    other[1] ^= 1  # another id
    assert dialogue.feed(bytes(other)) is None
    long_message = reply_to(request, code=rad.AccessReject, Reply_Message="x\n" * 100)
    result = dialogue.feed(long_message)
    assert result is not None and not isinstance(result, bytes)
    assert not result.ok
    assert "\n" not in result.reason and len(result.reason) < 160
    assert RadiusDialogue(s).feed(reply_to(request)) is None  # another request's reply


def test_each_request_is_fresh() -> None:
    first, raw1 = build_request(spec(port=1812))
    second, raw2 = build_request(spec(port=1812))
    assert first.authenticator != second.authenticator
    assert raw1 != raw2
