"""checktype=ping (and connect on UDP virtuals): ICMP echo, IPv4 and IPv6.

Up to `checkcount` echo requests, one after another, each given an equal share of the deadline
(the last one waits until the deadline itself); the first matching echo reply, to any of them,
means up. The kernel's unprivileged ICMP datagram socket is preferred: it filters replies by
identifier for us. Where `net.ipv4.ping_group_range` forbids it we fall back to a raw socket (we
run as root) and do that filtering ourselves: a raw socket sees every ICMP packet on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
from typing import Final

from lvsmon.checks.base import CheckResult, CheckSpec, received_counter
from lvsmon.checks.step import Step

_ECHO_REQUEST_V4: Final = 8
_ECHO_REPLY_V4: Final = 0
_ECHO_REQUEST_V6: Final = 128
_ECHO_REPLY_V6: Final = 129
_HEADER: Final = struct.Struct("!BBHHH")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(v6: bool, ident: int, seq: int, payload: bytes) -> bytes:
    kind = _ECHO_REQUEST_V6 if v6 else _ECHO_REQUEST_V4
    packet = _HEADER.pack(kind, 0, 0, ident, seq) + payload
    if v6:
        return packet  # the kernel fills in the ICMPv6 checksum (it covers a pseudo-header)
    return _HEADER.pack(kind, 0, checksum(packet), ident, seq) + payload


def parse_echo_reply(v6: bool, data: bytes, strip_ip_header: bool) -> tuple[int, int, bytes] | None:
    """(identifier, sequence, payload) of an echo reply, or None for any other ICMP message."""
    if strip_ip_header:
        if not data:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < _HEADER.size:
        return None
    kind, code, _, ident, seq = _HEADER.unpack_from(data)
    if kind != (_ECHO_REPLY_V6 if v6 else _ECHO_REPLY_V4) or code != 0:
        return None
    return ident, seq, data[_HEADER.size :]


def _open_socket(v6: bool) -> tuple[socket.socket, bool]:
    """An ICMP socket and whether it is raw (we filter) rather than a kernel ping socket."""
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
        raw = False
    except OSError:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
        raw = True
    sock.setblocking(False)
    return sock, raw


async def check_ping(spec: CheckSpec, step: Step) -> CheckResult:
    loop = asyncio.get_running_loop()
    v6 = spec.is_ipv6
    target = ipaddress.ip_address(spec.host)
    step.name = "ping"
    sock, raw = _open_socket(v6)
    with sock:
        payload = b"lvsmon" + os.urandom(10)
        ident = int.from_bytes(os.urandom(2), "big")
        first_seq = int.from_bytes(os.urandom(2), "big")
        sent: set[int] = set()
        # the lag rule's count (base.Received): a raw socket sees every ICMP packet of the host,
        # and a check kept busy by a flood of them is not forgiven a late timeout
        received = received_counter()
        attempts = spec.checkcount
        share = spec.timeout / attempts
        for attempt in range(1, attempts + 1):
            step.name = f"ping (echo request {attempt} of {attempts})"
            seq = (first_seq + attempt) & 0xFFFF
            sent.add(seq)
            await loop.sock_sendto(sock, echo_request(v6, ident, seq, payload), (spec.host, 0))
            if not raw:
                ident = sock.getsockname()[1]  # the kernel replaced our identifier by its own
            wait = None if attempt == attempts else share
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while True:
                        data, addr = await loop.sock_recvfrom(sock, 2048)
                        received.count += len(data)
                        reply = parse_echo_reply(v6, data, strip_ip_header=raw and not v6)
                        if (
                            reply is not None
                            and reply[0] == ident
                            and reply[1] in sent
                            and reply[2] == payload
                            and ipaddress.ip_address(addr[0].split("%", 1)[0]) == target
                        ):
                            answered = (reply[1] - first_seq) & 0xFFFF
                            return CheckResult(True, f"ping: echo reply to request {answered}")
    raise AssertionError("unreachable: the last attempt waits for the caller's deadline")
