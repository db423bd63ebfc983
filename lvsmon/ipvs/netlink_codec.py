"""The IPVS generic netlink messages, both ways, without a socket: ops, dump requests and sync
daemon commands into the bytes the kernel reads, and dumped services, destinations and daemons
back into the table model.

A message here is what follows the netlink header: the generic netlink header (command, version)
and the attributes (include/uapi/linux/ip_vs.h). They are packed and parsed with struct, because
pyroute2's generic message codec costs ~0.2 ms per message natively and milliseconds under
emulation; tests/ipvs/test_netlink_codec.py checks the bytes against pyroute2's ``ipvsmsg``.

Mapping choices that are not obvious from the model:

* Validation, scheduler flag names and netmask spellings come from ``lvsmon.ipvs.rules``, shared
  with the other backends; an op those rules refuse raises InvalidConf here and never reaches the
  kernel.
* A service reads back with ``persistent=None`` and ``netmask=None`` unless the kernel has the
  persistent flag; the netmask reads back as ``None`` when it is the full mask (255.255.255.255 or
  128), which is what the kernel gets when none is given (``rules.canonical_service_conf``).
* Direct routing and tunnelling on a non-fwmark service use the virtual port as the real port
  (``model.kernel_dest_port``), as ipvsadm does, so every backend stores the same key.
* Older kernels turned the forwarding method of a destination on a local address into "local node"
  (conn_flags 1). Such a destination reads back with the method the caller last wrote for it
  (``written``), or as ``gate`` (delivery to a local address is what direct routing amounts to
  there).
* Services with a protocol the model does not know (not tcp/udp/sctp) are left out of dumps.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    DestStats,
    Family,
    Forward,
    Proto,
    ServiceConf,
    ServiceKey,
    canonical_address,
    kernel_dest_port,
)
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from lvsmon.ipvs.rules import (
    InvalidConf,
    canonical_netmask,
    check_dest,
    check_service,
    full_netmask,
    sched_flag_bits,
    sched_flag_names,
)
from lvsmon.ipvs.sync import SyncDaemon, SyncState, check_daemon

# Generic netlink commands of the IPVS family.
CMD_NEW_SERVICE = 1
CMD_SET_SERVICE = 2
CMD_DEL_SERVICE = 3
CMD_GET_SERVICE = 4
CMD_NEW_DEST = 5
CMD_SET_DEST = 6
CMD_DEL_DEST = 7
CMD_GET_DEST = 8
CMD_NEW_DAEMON = 9
CMD_DEL_DAEMON = 10
CMD_GET_DAEMON = 11
GENL_VERSION = 1

# Service flags.
F_PERSISTENT = 0x0001
F_ONEPACKET = 0x0004
_F_SCHED1 = 0x0008
_F_SCHED2 = 0x0010
_F_SCHED3 = 0x0020
_F_SCHED_ALL = _F_SCHED1 | _F_SCHED2 | _F_SCHED3
_ALL_FLAGS_MASK = 0xFFFFFFFF

# Forwarding methods (the low bits of a destination's conn_flags).
_FWD_MASK = 0x0007
_FWD_MASQ = 0
FWD_LOCALNODE = 1  # what older kernels reported for a real server on a local address
_FWD_TUNNEL = 2
_FWD_DROUTE = 3
FORWARD_TO_KERNEL = {Forward.MASQ: _FWD_MASQ, Forward.IPIP: _FWD_TUNNEL, Forward.GATE: _FWD_DROUTE}
_FORWARD_FROM_KERNEL = {v: k for k, v in FORWARD_TO_KERNEL.items()}

AF: dict[Family, int] = {Family.INET: socket.AF_INET, Family.INET6: socket.AF_INET6}
_FAMILY = {v: k for k, v in AF.items()}
PROTO: dict[Proto, int] = {
    Proto.TCP: socket.IPPROTO_TCP,
    Proto.UDP: socket.IPPROTO_UDP,
    Proto.SCTP: 132,
}
_PROTO_FROM_KERNEL = {v: k for k, v in PROTO.items()}

_FULL_NETMASK_V4 = 0xFFFFFFFF
_FULL_PREFIX_V6 = 128
_SCHED_NAME_MAX = 15  # IP_VS_SCHEDNAME_MAXLEN - 1

NLA_HDR = struct.Struct("=HH")
GENL_HDR = struct.Struct("=BBH")
_NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flag bits

# Attribute numbers.
CMD_ATTR_SERVICE = 1
CMD_ATTR_DEST = 2
CMD_ATTR_DAEMON = 3
SVC_AF, SVC_PROTOCOL, SVC_ADDR, SVC_PORT, SVC_FWMARK = 1, 2, 3, 4, 5
SVC_SCHED_NAME, SVC_FLAGS, SVC_TIMEOUT, SVC_NETMASK = 6, 7, 8, 9
SVC_STATS, SVC_STATS64 = 10, 12  # the counters, which change with every connection
DEST_ADDR, DEST_PORT, DEST_FWD_METHOD, DEST_WEIGHT = 1, 2, 3, 4
DEST_U_THRESH, DEST_L_THRESH, DEST_ACTIVE_CONNS, DEST_INACT_CONNS = 5, 6, 7, 8
DEST_ADDR_FAMILY = 11
# The sync daemon attributes, nested in IPVS_CMD_ATTR_DAEMON; pyroute2's ipvs module has the
# command numbers but no codec for these. STATE and SYNC_ID are u32, SYNC_MAXLEN and
# MCAST_PORT u16 in host order (the kernel converts the port itself), MCAST_TTL u8, the
# groups raw addresses (network order), MCAST_IFN a NUL-terminated name of at most 15 bytes.
DAEMON_STATE, DAEMON_MCAST_IFN, DAEMON_SYNC_ID, DAEMON_SYNC_MAXLEN = 1, 2, 3, 4
DAEMON_MCAST_GROUP, DAEMON_MCAST_GROUP6, DAEMON_MCAST_PORT, DAEMON_MCAST_TTL = 5, 6, 7, 8
_STATE_FROM_KERNEL = {1: SyncState.MASTER, 2: SyncState.BACKUP}


@dataclass(frozen=True, slots=True)
class Request:
    """One packed generic netlink request (genl header and attributes); the netlink header is
    added when it is sent."""

    body: bytes


# ---- encoding ------------------------------------------------------------------------------


def _nla(kind: int, payload: bytes) -> bytes:
    size = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _u16(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=H", value))


def _u32(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=I", value))


def _be16(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("!H", value))


def _packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def _service_key_attrs(key: ServiceKey) -> bytes:
    attrs = _u16(SVC_AF, AF[key.family])
    if key.is_fwmark:
        return attrs + _u32(SVC_FWMARK, key.fwmark)
    assert key.protocol is not None and key.address is not None
    return (
        attrs
        + _u16(SVC_PROTOCOL, PROTO[key.protocol])
        + _nla(SVC_ADDR, _packed(key.address))
        + _be16(SVC_PORT, key.port)
    )


def _netmask_raw(family: Family, conf: ServiceConf) -> int:
    """The u32 the kernel expects: the mask's bytes in network order for IPv4, the prefix
    length as a plain number for IPv6."""
    mask = conf.netmask if conf.persistent is not None else None
    text = canonical_netmask(family, mask) if mask is not None else full_netmask(family)
    if family is Family.INET6:
        return int(text)
    result: int = struct.unpack("=I", ipaddress.IPv4Address(text).packed)[0]
    return result


def _service_attrs(key: ServiceKey, conf: ServiceConf) -> bytes:
    check_service(key, conf)
    name = conf.scheduler
    if len(name) > _SCHED_NAME_MAX:
        raise InvalidConf(f"scheduler name too long: {name!r}")
    flags = sched_flag_bits(name, conf.sched_flags)
    timeout = 0
    if conf.persistent is not None:
        flags |= F_PERSISTENT
        timeout = conf.persistent
    if conf.ops:
        flags |= F_ONEPACKET
    return (
        _service_key_attrs(key)
        + _nla(SVC_SCHED_NAME, name.encode() + b"\0")
        + _nla(SVC_FLAGS, struct.pack("=II", flags, _ALL_FLAGS_MASK))
        + _u32(SVC_TIMEOUT, timeout)
        + _u32(SVC_NETMASK, _netmask_raw(key.family, conf))
    )


def _dest_key_attrs(dest: DestKey) -> bytes:
    return (
        _nla(DEST_ADDR, _packed(dest.address))
        + _be16(DEST_PORT, dest.port)
        + _u16(DEST_ADDR_FAMILY, AF[dest.family])
    )


def _dest_attrs(service: ServiceKey, dest: DestKey, conf: DestConf) -> bytes:
    check_dest(service, dest, conf)
    return (
        _dest_key_attrs(dest)
        + _u32(DEST_FWD_METHOD, FORWARD_TO_KERNEL[conf.forward])
        + _u32(DEST_WEIGHT, conf.weight)
        + _u32(DEST_U_THRESH, conf.upper)
        + _u32(DEST_L_THRESH, conf.lower)
    )


def _message(cmd: int, service: bytes, dest: bytes | None = None) -> Request:
    body = GENL_HDR.pack(cmd, GENL_VERSION, 0) + _nla(CMD_ATTR_SERVICE, service)
    if dest is not None:
        body += _nla(CMD_ATTR_DEST, dest)
    return Request(body)


def encode_op(op: Op) -> Request:
    """The netlink request for one op. Raises InvalidConf for what the kernel would refuse.
    Destinations are checked as the kernel will store them (``kernel_dest_port``)."""
    match op:
        case AddService(service=key, conf=conf):
            return _message(CMD_NEW_SERVICE, _service_attrs(key, conf))
        case EditService(service=key, conf=conf):
            return _message(CMD_SET_SERVICE, _service_attrs(key, conf))
        case DeleteService(service=key):
            return _message(CMD_DEL_SERVICE, _service_key_attrs(key))
        case AddDest(service=key, dest=dest, conf=conf):
            dest = kernel_dest_port(key, dest, conf.forward)
            return _message(CMD_NEW_DEST, _service_key_attrs(key), _dest_attrs(key, dest, conf))
        case EditDest(service=key, dest=dest, conf=conf):
            dest = kernel_dest_port(key, dest, conf.forward)
            return _message(CMD_SET_DEST, _service_key_attrs(key), _dest_attrs(key, dest, conf))
        case DeleteDest(service=key, dest=dest):
            return _message(CMD_DEL_DEST, _service_key_attrs(key), _dest_key_attrs(dest))
    raise InvalidConf(f"not an IPVS operation: {op!r}")


def dump_services() -> Request:
    """IPVS_CMD_GET_SERVICE, sent as a dump: every service."""
    return Request(GENL_HDR.pack(CMD_GET_SERVICE, GENL_VERSION, 0))


def dump_dests(key: ServiceKey) -> Request:
    """IPVS_CMD_GET_DEST, sent as a dump: every destination of one service."""
    return _message(CMD_GET_DEST, _service_key_attrs(key))


def dump_daemons() -> Request:
    """IPVS_CMD_GET_DAEMON, sent as a dump: the sync daemons running."""
    return Request(GENL_HDR.pack(CMD_GET_DAEMON, GENL_VERSION, 0))


def daemon_start(daemon: SyncDaemon) -> Request:
    """IPVS_CMD_NEW_DAEMON for one daemon. Raises ValueError for what the kernel would refuse."""
    check_daemon(daemon)
    attrs = (
        _u32(DAEMON_STATE, daemon.state.kernel)
        + _nla(DAEMON_MCAST_IFN, daemon.interface.encode() + b"\0")
        + _u32(DAEMON_SYNC_ID, daemon.syncid)
    )
    if daemon.maxlen is not None:
        attrs += _u16(DAEMON_SYNC_MAXLEN, daemon.maxlen)
    if daemon.group is not None:
        kind = DAEMON_MCAST_GROUP6 if daemon.group_v6 else DAEMON_MCAST_GROUP
        attrs += _nla(kind, _packed(daemon.group))
    if daemon.port is not None:
        attrs += _u16(DAEMON_MCAST_PORT, daemon.port)
    if daemon.ttl is not None:
        attrs += _nla(DAEMON_MCAST_TTL, struct.pack("=B", daemon.ttl))
    header = GENL_HDR.pack(CMD_NEW_DAEMON, GENL_VERSION, 0)
    return Request(header + _nla(CMD_ATTR_DAEMON, attrs))


def daemon_stop(state: SyncState) -> Request:
    header = GENL_HDR.pack(CMD_DEL_DAEMON, GENL_VERSION, 0)
    return Request(header + _nla(CMD_ATTR_DAEMON, _u32(DAEMON_STATE, state.kernel)))


# ---- decoding ------------------------------------------------------------------------------
# An attribute set is a dict from attribute number to its payload; each reader below takes the
# number and the payload's struct format.

Attrs = dict[int, bytes]


def parse_attrs(data: bytes, start: int = 0) -> Attrs:
    attrs: Attrs = {}
    offset = start
    while offset + NLA_HDR.size <= len(data):
        size, kind = NLA_HDR.unpack_from(data, offset)
        if size < NLA_HDR.size:
            break
        attrs[kind & _NLA_TYPE_MASK] = data[offset + NLA_HDR.size : offset + size]
        offset += size + (-size % 4)
    return attrs


def _nested(message: bytes, kind: int) -> Attrs | None:
    """The attributes nested in one top-level attribute of a message (genl header first)."""
    nested = parse_attrs(message, GENL_HDR.size).get(kind)
    return parse_attrs(nested) if nested is not None else None


def _number(attrs: Attrs, kind: int, fmt: str) -> int | None:
    data = attrs.get(kind)
    if not data:
        return None
    value: int = struct.unpack_from(fmt, data)[0]
    return value


def _text(attrs: Attrs, kind: int) -> str | None:
    data = attrs.get(kind)
    return None if data is None else data.split(b"\0", 1)[0].decode("ascii", "replace")


def _unpacked(family: Family, raw: bytes) -> str:
    size = 4 if family is Family.INET else 16
    return canonical_address(socket.inet_ntop(AF[family], bytes(raw[:size])))


def service_from(message: bytes) -> tuple[ServiceKey, ServiceConf] | None:
    """The service in one reply to ``dump_services``; None for a record without one, or of a
    family or protocol the model does not know."""
    attrs = _nested(message, CMD_ATTR_SERVICE)
    if attrs is None:
        return None
    return decode_service(attrs)


def service_signature(message: bytes) -> bytes:
    """The attributes of the service in one reply to ``dump_services``, less its counters: the
    same bytes in every dump of the same service with the same settings (and all that
    `service_from` reads), so that a resync decodes only the records it has not seen (at 1,000
    probe services of checkpath=vip, decoding their unchanged records was most of its work)."""
    return service_parts(message)[0]


def service_parts(message: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """`service_signature`, and where the counters' values are in the message: the payload
    (padding included) of each SVC_STATS and SVC_STATS64 attribute, as (start, stop) offsets,
    their attribute headers left out. Bytes equal outside those spans give equal signatures:
    the netlink backend reuses a whole dump's decoded records on that (``NetlinkBackend``)."""
    pieces: list[bytes] = []
    spans: list[tuple[int, int]] = []
    end = len(message)
    offset = GENL_HDR.size
    while offset + NLA_HDR.size <= end:
        size, kind = NLA_HDR.unpack_from(message, offset)
        if size < NLA_HDR.size:
            break
        if kind & _NLA_TYPE_MASK == CMD_ATTR_SERVICE:
            inner, stop = offset + NLA_HDR.size, min(offset + size, end)
            start = inner
            while inner + NLA_HDR.size <= stop:
                isize, ikind = NLA_HDR.unpack_from(message, inner)
                if isize < NLA_HDR.size:
                    break
                following = inner + isize + (-isize % 4)
                if ikind & _NLA_TYPE_MASK in (SVC_STATS, SVC_STATS64):
                    pieces.append(message[start:inner])
                    spans.append((inner + NLA_HDR.size, min(following, stop)))
                    start = following
                inner = following
            pieces.append(message[start:stop])
        offset += size + (-size % 4)
    return b"".join(pieces), spans


def decode_service(attrs: Attrs) -> tuple[ServiceKey, ServiceConf] | None:
    family = _FAMILY.get(_number(attrs, SVC_AF, "=H") or 0)
    if family is None:
        return None
    fwmark = _number(attrs, SVC_FWMARK, "=I") or 0
    if fwmark:
        key = ServiceKey.fwm(fwmark, family)
    else:
        protocol = _PROTO_FROM_KERNEL.get(_number(attrs, SVC_PROTOCOL, "=H") or 0)
        if protocol is None:
            return None
        address = _unpacked(family, attrs[SVC_ADDR])
        key = ServiceKey(family, protocol, address, _number(attrs, SVC_PORT, "!H") or 0)
    scheduler = _text(attrs, SVC_SCHED_NAME) or ""
    flags = _number(attrs, SVC_FLAGS, "=I") or 0  # the first of flags, mask
    persistent: int | None = None
    netmask: str | None = None
    if flags & F_PERSISTENT:
        persistent = _number(attrs, SVC_TIMEOUT, "=I") or 0
        raw_mask = _number(attrs, SVC_NETMASK, "=I")
        if family is Family.INET and raw_mask not in (None, _FULL_NETMASK_V4):
            netmask = socket.inet_ntoa(struct.pack("=I", raw_mask))
        elif family is Family.INET6 and raw_mask not in (None, _FULL_PREFIX_V6):
            netmask = str(raw_mask)
    conf = ServiceConf(
        scheduler=scheduler,
        sched_flags=sched_flag_names(scheduler, flags & _F_SCHED_ALL),
        persistent=persistent,
        netmask=netmask,
        ops=bool(flags & F_ONEPACKET),
    )
    return key, conf


def dest_from(
    service: ServiceKey, message: bytes, written: dict[DestKey, Forward]
) -> tuple[DestKey, DestConf, DestStats] | None:
    """The destination in one reply to ``dump_dests(service)``; None for a record without one.
    ``written``: the forwarding method last written per destination (see the module docstring)."""
    attrs = _nested(message, CMD_ATTR_DEST)
    if attrs is None:
        return None
    return decode_dest(service, attrs, written)


def decode_dest(
    service: ServiceKey, attrs: Attrs, written: dict[DestKey, Forward]
) -> tuple[DestKey, DestConf, DestStats]:
    family = _FAMILY.get(_number(attrs, DEST_ADDR_FAMILY, "=H") or 0, service.family)
    dest = DestKey(_unpacked(family, attrs[DEST_ADDR]), _number(attrs, DEST_PORT, "!H") or 0)
    method = (_number(attrs, DEST_FWD_METHOD, "=I") or 0) & _FWD_MASK
    forward = _FORWARD_FROM_KERNEL.get(method)
    if forward is None:  # local node (older kernels) or bypass: see the module docstring
        forward = written.get(dest, Forward.GATE)
    conf = DestConf(
        forward=forward,
        weight=_number(attrs, DEST_WEIGHT, "=I") or 0,
        upper=_number(attrs, DEST_U_THRESH, "=I") or 0,
        lower=_number(attrs, DEST_L_THRESH, "=I") or 0,
    )
    stats = DestStats(
        active_conns=_number(attrs, DEST_ACTIVE_CONNS, "=I") or 0,
        inactive_conns=_number(attrs, DEST_INACT_CONNS, "=I") or 0,
    )
    return dest, conf, stats


def daemon_from(message: bytes) -> SyncDaemon | None:
    """The sync daemon in one reply to ``dump_daemons``; None for a record without one."""
    attrs = _nested(message, CMD_ATTR_DAEMON)
    return decode_daemon(attrs) if attrs is not None else None


def decode_daemon(attrs: Attrs) -> SyncDaemon | None:
    """One IPVS_CMD_ATTR_DAEMON record of a GET_DAEMON dump; None for a state not known."""
    state = _STATE_FROM_KERNEL.get(_number(attrs, DAEMON_STATE, "=I") or 0)
    if state is None:
        return None
    group: str | None = None
    if (v4 := attrs.get(DAEMON_MCAST_GROUP)) is not None:
        group = _unpacked(Family.INET, v4)
    elif (v6 := attrs.get(DAEMON_MCAST_GROUP6)) is not None:
        group = _unpacked(Family.INET6, v6)
    return SyncDaemon(
        state=state,
        interface=attrs.get(DAEMON_MCAST_IFN, b"").split(b"\0", 1)[0].decode(errors="replace"),
        syncid=_number(attrs, DAEMON_SYNC_ID, "=I") or 0,
        maxlen=_number(attrs, DAEMON_SYNC_MAXLEN, "=H"),
        group=group,
        port=_number(attrs, DAEMON_MCAST_PORT, "=H"),
        ttl=_number(attrs, DAEMON_MCAST_TTL, "=B"),
    )
