"""The ARP guard's packets (lvsmon/checks/arp.py), pure: the request it writes byte for byte, and
what it makes of a peer's bytes: only a well-formed Ethernet/IPv4 reply is read, anything short,
of another opcode, protocol or hardware type is None, never an exception; a MAC is shown as
lvsmon formats it. Also the choice of the source address, and that the kernel takes the reply
filter (a packet socket needs root: skipped without it)."""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.checks.arp import (
    ARP_LEN,
    ArpReply,
    HostView,
    Link,
    Route,
    attach_reply_filter,
    build_request,
    mac_text,
    parse_reply,
    source_for,
)

MAC = bytes.fromhex("020000aabbcc")
PEER = bytes.fromhex("0a1b2c3d4e5f")
DIRECTOR = IPv4Address("192.0.2.1")
VIP = IPv4Address("192.0.2.100")


def reply(
    *,
    htype: int = 1,
    ptype: int = 0x0800,
    hlen: int = 6,
    plen: int = 4,
    oper: int = 2,
    sha: bytes = PEER,
    spa: IPv4Address = VIP,
) -> bytes:
    return struct.pack(
        "!HHBBH6s4s6s4s", htype, ptype, hlen, plen, oper, sha, spa.packed, MAC, DIRECTOR.packed
    )


def test_request_bytes() -> None:
    assert build_request(MAC, DIRECTOR, VIP) == bytes.fromhex(
        "0001 0800 06 04 0001 020000aabbcc c0000201 000000000000 c0000264"
    )
    assert len(build_request(MAC, IPv4Address(0), VIP)) == ARP_LEN


def test_request_refuses_a_mac_that_is_not_six_bytes() -> None:
    with pytest.raises(ValueError, match="6 bytes"):
        build_request(MAC[:5], DIRECTOR, VIP)


def test_a_reply_is_read() -> None:
    assert parse_reply(reply()) == ArpReply(PEER, VIP, MAC, DIRECTOR)
    # Ethernet pads a frame to 46 bytes of payload: the padding is ignored
    assert parse_reply(reply() + b"\0" * 18) == ArpReply(PEER, VIP, MAC, DIRECTOR)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        reply()[:27],  # short by one
        reply()[:8],
        reply(oper=1),  # a request (who-has), not an answer
        reply(oper=0),
        reply(oper=3),  # RARP
        reply(oper=0xFFFF),
        reply(ptype=0x86DD),  # another protocol
        reply(ptype=0x0806),
        reply(htype=6),  # IEEE 802 hardware
        reply(hlen=8),
        reply(plen=16),
    ],
)
def test_what_is_not_an_ethernet_ipv4_reply_is_none(data: bytes) -> None:
    assert parse_reply(data) is None


@given(st.binary(max_size=80))
def test_any_bytes_give_a_reply_or_none(data: bytes) -> None:
    parsed = parse_reply(data)
    if parsed is not None:
        assert len(data) >= ARP_LEN and data[6:8] == b"\x00\x02"
        assert len(parsed.sender_mac) == 6
        assert len(mac_text(parsed.sender_mac)) == 17


def test_mac_text_is_lvsmons_own() -> None:
    assert mac_text(PEER) == "0a:1b:2c:3d:4e:5f"
    # whatever the bytes, the text is hex and colons: nothing a terminal or a log can misread
    hostile = b"\r\n\x1b[2J"[:6]
    assert mac_text(hostile) == "0d:0a:1b:5b:32:4a"


def _view(addresses: tuple[IPv4Address, ...]) -> HostView:
    return HostView(
        links={3: Link(3, "eth1", MAC, True)},
        routes={},
        own_macs=frozenset({MAC}),
        addresses={3: addresses},
    )


def test_source_is_the_routes_preferred_address() -> None:
    view = _view((DIRECTOR,))
    assert source_for(view, Route(3, DIRECTOR), frozenset({VIP})) == DIRECTOR


def test_source_is_never_a_guarded_vip() -> None:
    # a real holding the VIP drops a request sent from the VIP (a martian source)
    other = IPv4Address("192.0.2.7")
    assert source_for(_view((VIP, other)), Route(3, VIP), frozenset({VIP})) == other
    assert source_for(_view((VIP,)), Route(3, VIP), frozenset({VIP})) == IPv4Address(0)
    assert source_for(_view(()), Route(3, None), frozenset({VIP})) == IPv4Address(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="a packet socket needs CAP_NET_RAW")
def test_the_kernel_accepts_the_reply_filter() -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0) as sock:
        attach_reply_filter(sock)
