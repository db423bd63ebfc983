"""ARP who-has for a VIP, and who answers: the probe behind the ARP guard (engine/arpguard.py).

A direct-routing real must hold the VIP (on lo) without answering ARP for it (arp_ignore=1,
arp_announce=2). One that answers makes the router send the VIP's traffic to it instead of the
director, and no health check can see it: every check still passes. The guard asks the segment
toward the gate reals who has the VIP, from the director's own MAC and address there; any answer
from a MAC the director does not own is the conflict.

Three parts:

* the packet (pure): `build_request` writes the 28-byte Ethernet/IPv4 ARP request,
  `parse_reply` reads an answer and returns None for anything that is not a well-formed
  Ethernet/IPv4 ARP reply (short, another opcode, another protocol or hardware type). A reply is
  a peer's bytes: its MAC and address are only ever shown as formatted here (`mac_text`, the
  address's own literal), never as the bytes themselves.
* the host (blocking, for a thread): `host_view` asks the kernel (pyroute2) which interface and
  source address it routes each real's address through, and which MACs are the director's.
* the round (async): `probe_round` opens one AF_PACKET socket per interface (SOCK_DGRAM: the
  kernel writes the Ethernet header; bound to ARP on that interface only, with a classic BPF
  filter that passes replies alone, so a busy segment's requests never wake the loop), sends the
  requests, reads answers until one deadline, at most `max_bytes` in all, and closes every
  socket. Sending and receiving need CAP_NET_RAW.

IPv4 only: a VIP's IPv6 neighbour discovery is not probed (docs/operations.md, "ARP guard").
"""

from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARP_REQUEST = 1
ARP_REPLY = 2
ARP_LEN = 28  # Ethernet/IPv4 ARP: 8 bytes of header, two (MAC, IPv4) pairs
BROADCAST = b"\xff" * 6
PACKET_OUTGOING = 4  # linux/if_packet.h: a frame this host sent, looped to packet sockets
SO_ATTACH_FILTER = 26
IFF_LOOPBACK = 0x8
IFF_NOARP = 0x80
RECV_SIZE = 64  # an ARP reply is 28 bytes (46 with Ethernet padding); more is never read
RCVBUF = 65_536  # the kernel's queue per socket: a flood is dropped there, not read

_ARP = struct.Struct("!HHBBH6s4s6s4s")


def mac_text(mac: bytes) -> str:
    """aa:bb:cc:dd:ee:ff, from the bytes (never the peer's text)."""
    return ":".join(f"{b:02x}" for b in mac)


def build_request(sender_mac: bytes, sender_ip: IPv4Address, target_ip: IPv4Address) -> bytes:
    """Who has `target_ip`? Tell `sender_ip` (0.0.0.0: an RFC 5227 probe) at `sender_mac`."""
    if len(sender_mac) != 6:
        raise ValueError(f"a MAC is 6 bytes, not {len(sender_mac)}")
    return _ARP.pack(
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        ARP_REQUEST,
        sender_mac,
        sender_ip.packed,
        b"\0" * 6,
        target_ip.packed,
    )


@dataclass(frozen=True, slots=True)
class ArpReply:
    sender_mac: bytes
    sender_ip: IPv4Address
    target_mac: bytes
    target_ip: IPv4Address


def parse_reply(data: bytes) -> ArpReply | None:
    """An Ethernet/IPv4 ARP reply as its four fields; None for anything else. Bytes past the
    28 (Ethernet padding) are ignored."""
    if len(data) < ARP_LEN:
        return None
    htype, ptype, hlen, plen, oper, sha, spa, tha, tpa = _ARP.unpack_from(data)
    if (htype, ptype, hlen, plen, oper) != (ARPHRD_ETHER, ETH_P_IP, 6, 4, ARP_REPLY):
        return None
    return ArpReply(sha, IPv4Address(spa), tha, IPv4Address(tpa))


# -- the kernel's filter: replies only ---------------------------------------------------------


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


# On a SOCK_DGRAM packet socket the filter sees the ARP header at offset 0. A load past the end
# of a short packet ends the program with "drop".
_REPLIES_ONLY = (
    (0x28, 0, 0, 2),  # ldh [2]           protocol type
    (0x15, 0, 3, ETH_P_IP),  # jeq #0x0800      else drop
    (0x28, 0, 0, 6),  # ldh [6]           opcode
    (0x15, 0, 1, ARP_REPLY),  # jeq #2           else drop
    (0x06, 0, 0, RECV_SIZE),  # ret #64           keep (the first 64 bytes)
    (0x06, 0, 0, 0),  # ret #0            drop
)


def attach_reply_filter(sock: socket.socket) -> None:
    program = (_SockFilter * len(_REPLIES_ONLY))(*(_SockFilter(*i) for i in _REPLIES_ONLY))
    fprog = _SockFprog(len(_REPLIES_ONLY), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    # the kernel copies the program during the call: `program` only has to live until it returns
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


# -- the host: interfaces toward the reals ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    mac: bytes
    arp: bool  # Ethernet, not loopback, ARP not switched off: the guard can ask here


@dataclass(frozen=True, slots=True)
class Route:
    """How the kernel sends to one address: out of `link`, from `source` (None: no preferred
    source)."""

    link: int
    source: IPv4Address | None


@dataclass(frozen=True, slots=True)
class HostView:
    links: dict[int, Link]
    routes: dict[IPv4Address, Route]  # per real address; absent: no route (logged by the guard)
    own_macs: frozenset[bytes]  # every interface's MAC: none of them is a conflict
    addresses: dict[int, tuple[IPv4Address, ...]]  # each link's IPv4 addresses, primary first
    failed: dict[IPv4Address, str] = field(default_factory=dict)  # no route: why, per real


def _mac(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        mac = bytes.fromhex(value.replace(":", ""))
    except ValueError:
        return None
    return mac if len(mac) == 6 else None


def host_view(reals: Iterable[IPv4Address]) -> HostView:
    """The kernel's links, addresses and its route toward each real (blocking: run in a thread)."""
    from pyroute2 import IPRoute  # heavy; only a daemon with the guard on loads it here
    from pyroute2.netlink.exceptions import NetlinkError

    links: dict[int, Link] = {}
    routes: dict[IPv4Address, Route] = {}
    addresses: dict[int, list[IPv4Address]] = {}
    failed: dict[IPv4Address, str] = {}
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            mac = _mac(msg.get("address"))
            name = msg.get("ifname")
            if mac is None or not isinstance(name, str):
                continue
            flags = int(msg["flags"])
            arp = (
                msg["ifi_type"] == ARPHRD_ETHER
                and not flags & (IFF_LOOPBACK | IFF_NOARP)
                and mac != b"\0" * 6
            )
            links[int(msg["index"])] = Link(int(msg["index"]), name, mac, arp)
        connected: list[tuple[IPv4Network, int, IPv4Address]] = []
        for msg in ipr.get_addr(family=socket.AF_INET):
            local = msg.get("local") or msg.get("address")
            if isinstance(local, str):
                index = int(msg["index"])
                addresses.setdefault(index, []).append(IPv4Address(local))
                net = IPv4Network(f"{local}/{msg['prefixlen']}", strict=False)
                connected.append((net, index, IPv4Address(local)))
        # the longest prefix first; a /32 (a VIP) never contains a real
        connected.sort(key=lambda c: -c[0].prefixlen)
        for real in reals:
            # a real on a connected prefix is reached on that link, from the address there: the
            # direct-routing case, and no netlink round trip (0.3 ms of CPU each through pyroute2)
            on_link = next(
                ((i, a) for n, i, a in connected if real in n and n.prefixlen < 32), None
            )
            if on_link is not None:
                routes[real] = Route(*on_link)
                continue
            try:
                (msg, *_) = ipr.route("get", dst=str(real))
            except (NetlinkError, ValueError) as exc:
                failed[real] = str(exc)
                continue
            oif = msg.get("oif")
            if not isinstance(oif, int):
                continue
            src = msg.get("prefsrc")
            routes[real] = Route(oif, IPv4Address(src) if isinstance(src, str) else None)
    own = frozenset(link.mac for link in links.values())
    return HostView(links, routes, own, {k: tuple(v) for k, v in addresses.items()}, failed)


def local_addresses() -> frozenset[IPv4Address]:
    """The director's IPv4 addresses now (blocking: run in a thread)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = (
            msg.get("local") or msg.get("address") for msg in ipr.get_addr(family=socket.AF_INET)
        )
        return frozenset(IPv4Address(a) for a in found if isinstance(a, str))


# -- one round -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask on `link` who has each of `vips`, from `source` at the link's MAC."""

    link: Link
    source: IPv4Address
    vips: tuple[IPv4Address, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    interface: str
    vip: IPv4Address
    mac: bytes


@dataclass(slots=True)
class RoundResult:
    answers: set[Answer] = field(default_factory=set)  # foreign MACs claiming a VIP
    errors: dict[str, str] = field(default_factory=dict)  # interface -> what failed there
    read: int = 0  # bytes read, in all
    cut_short: bool = False  # max_bytes reached before the deadline


def _error_text(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


async def probe_round(
    probes: Sequence[Probe],
    own_macs: frozenset[bytes],
    *,
    wait_s: float,
    max_bytes: int = 65_536,
    on_answer: Callable[[Answer], None] | None = None,
) -> RoundResult:
    """Send every probe's requests, then collect answers until `wait_s` has passed (one
    deadline for the round) or `max_bytes` were read; every socket is closed on return.
    `on_answer` hears each new answer as it arrives (the round still listens to its end)."""
    loop = asyncio.get_running_loop()
    result = RoundResult()
    open_socks: list[tuple[socket.socket, Probe]] = []
    readers: list[int] = []

    def stop_reading() -> None:
        for fd in readers:
            loop.remove_reader(fd)
        readers.clear()

    def drain(sock: socket.socket, probe: Probe) -> None:
        wanted = frozenset(probe.vips)
        while result.read < max_bytes:
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                result.errors[probe.link.name] = f"receive: {_error_text(exc)}"
                loop.remove_reader(sock.fileno())
                readers.remove(sock.fileno())
                return
            result.read += len(data)
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            reply = parse_reply(data)
            if reply is None or reply.sender_ip not in wanted or reply.sender_mac in own_macs:
                continue
            answer = Answer(probe.link.name, reply.sender_ip, reply.sender_mac)
            if answer not in result.answers:
                result.answers.add(answer)
                if on_answer is not None:
                    on_answer(answer)
        result.cut_short = True
        stop_reading()

    try:
        for probe in probes:
            link = probe.link
            try:
                # protocol 0: nothing is queued until bind() names ARP on this one interface
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            except OSError as exc:
                result.errors[link.name] = f"packet socket: {_error_text(exc)}"
                continue
            open_socks.append((sock, probe))
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                attach_reply_filter(sock)
                sock.bind((link.name, ETH_P_ARP))
                for vip in probe.vips:
                    request = build_request(link.mac, probe.source, vip)
                    sock.sendto(request, (link.name, ETH_P_ARP, 0, ARPHRD_ETHER, BROADCAST))
            except OSError as exc:
                result.errors[link.name] = f"send: {_error_text(exc)}"
                continue
            loop.add_reader(sock.fileno(), drain, sock, probe)
            readers.append(sock.fileno())
        if readers:
            await asyncio.sleep(wait_s)
    finally:
        stop_reading()
        for sock, _probe in open_socks:
            sock.close()
    return result


def source_for(view: HostView, route: Route, vips: frozenset[IPv4Address]) -> IPv4Address:
    """The director's address to ask from on the route's link: the route's preferred source,
    unless it is a guarded VIP (a real holding the VIP drops a request from its own address as
    a martian), else the link's first other address, else 0.0.0.0 (an RFC 5227 probe, which
    Linux answers too)."""
    if route.source is not None and route.source not in vips:
        return route.source
    for address in view.addresses.get(route.link, ()):
        if address not in vips:
            return address
    return IPv4Address(0)


def ipv4(address: str) -> IPv4Address | None:
    try:
        return IPv4Address(address)
    except ipaddress.AddressValueError:
        return None
