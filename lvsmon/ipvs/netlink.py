"""IPVS backend over generic netlink (the kernel's own interface).

pyroute2 sockets keep per-thread state and drive their own event loop, so the backend owns one
worker thread with a private loop; every dump() and every apply() is a single hop to that thread.
pyroute2 looks the IPVS family up (and reports a kernel without it). Requests are packed and
replies parsed with struct on a plain netlink socket, because pyroute2's generic message codec
costs ~0.2 ms per message natively and milliseconds under emulation. Writes go out in a few
large sends (chunks of ``_CHUNK`` requests); one acknowledgement is read per request, so each op
still gets its own result.

Mapping choices that are not obvious from the model:

* Validation, scheduler flag names and netmask spellings come from ``lvsmon.ipvs.rules``, shared
  with the other backends; an op those rules refuse is reported INVALID without reaching the
  kernel.
* A service reads back with ``persistent=None`` and ``netmask=None`` unless the kernel has the
  persistent flag; the netmask reads back as ``None`` when it is the full mask (255.255.255.255 or
  128), which is what the kernel gets when none is given (``rules.canonical_service_conf``).
* Direct routing and tunnelling on a non-fwmark service use the virtual port as the real port
  (``model.kernel_dest_port``), as ipvsadm does, so every backend stores the same key.
* Older kernels turned the forwarding method of a destination on a local address into "local node"
  (conn_flags 1). Such a destination reads back with the method this backend last wrote for it, or
  as ``gate`` (delivery to a local address is what direct routing amounts to there).
* Services with a protocol the model does not know (not tcp/udp/sctp) are left out of dumps.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket
from pyroute2.netlink.generic.ipvs import ipvsmsg

from lvsmon.ipvs.errors import BackendError, ErrorKind, OpError, OpResult
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    DestStats,
    Family,
    Forward,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
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
from lvsmon.ipvs.sync import SyncDaemon, SyncState, check_daemon, sync_error

T = TypeVar("T")

# Generic netlink commands of the IPVS family (include/uapi/linux/ip_vs.h).
_CMD_NEW_SERVICE = 1
_CMD_SET_SERVICE = 2
_CMD_DEL_SERVICE = 3
_CMD_GET_SERVICE = 4
_CMD_NEW_DEST = 5
_CMD_SET_DEST = 6
_CMD_DEL_DEST = 7
_CMD_GET_DEST = 8
_CMD_NEW_DAEMON = 9
_CMD_DEL_DAEMON = 10
_CMD_GET_DAEMON = 11
_GENL_VERSION = 1

# Service flags.
_F_PERSISTENT = 0x0001
_F_ONEPACKET = 0x0004
_F_SCHED1 = 0x0008
_F_SCHED2 = 0x0010
_F_SCHED3 = 0x0020
_F_SCHED_ALL = _F_SCHED1 | _F_SCHED2 | _F_SCHED3
_ALL_FLAGS_MASK = 0xFFFFFFFF

# Forwarding methods (the low bits of a destination's conn_flags).
_FWD_MASK = 0x0007
_FWD_MASQ = 0
_FWD_LOCALNODE = 1  # what older kernels reported for a real server on a local address
_FWD_TUNNEL = 2
_FWD_DROUTE = 3
_FORWARD_TO_KERNEL = {Forward.MASQ: _FWD_MASQ, Forward.IPIP: _FWD_TUNNEL, Forward.GATE: _FWD_DROUTE}
_FORWARD_FROM_KERNEL = {v: k for k, v in _FORWARD_TO_KERNEL.items()}

_AF = {Family.INET: socket.AF_INET, Family.INET6: socket.AF_INET6}
_FAMILY = {v: k for k, v in _AF.items()}
_PROTO = {Proto.TCP: socket.IPPROTO_TCP, Proto.UDP: socket.IPPROTO_UDP, Proto.SCTP: 132}
_PROTO_FROM_KERNEL = {v: k for k, v in _PROTO.items()}

_FULL_NETMASK_V4 = 0xFFFFFFFF
_FULL_PREFIX_V6 = 128
_SCHED_NAME_MAX = 15  # IP_VS_SCHEDNAME_MAXLEN - 1

_CHUNK = 256  # requests per send: their acks (with echoed requests on error) fit the rcvbuf
_RCVBUF = 1 << 20
_ACK_TIMEOUT = 60.0
_NETLINK_GENERIC = 16
_NLMSG_ERROR = 2
_NLMSG_DONE = 3


class _IpvsSocket(AsyncGenericNetlinkSocket):  # type: ignore[misc]
    # A missing IPVS family is reported to the caller as NO_IPVS; pyroute2 need not log it too.
    module_err_level = "debug"

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super().setup_endpoint()
        await self.bind("IPVS", ipvsmsg)


# ---- encoding ------------------------------------------------------------------------------

_NLA_HDR = struct.Struct("=HH")
_NLMSG_HDR = struct.Struct("=IHHII")
_GENL_HDR = struct.Struct("=BBH")

# Attribute numbers (include/uapi/linux/ip_vs.h).
_CMD_ATTR_SERVICE = 1
_CMD_ATTR_DEST = 2
_SVC_AF, _SVC_PROTOCOL, _SVC_ADDR, _SVC_PORT, _SVC_FWMARK = 1, 2, 3, 4, 5
_SVC_SCHED_NAME, _SVC_FLAGS, _SVC_TIMEOUT, _SVC_NETMASK = 6, 7, 8, 9
_DEST_ADDR, _DEST_PORT, _DEST_FWD_METHOD, _DEST_WEIGHT = 1, 2, 3, 4
_DEST_U_THRESH, _DEST_L_THRESH, _DEST_ADDR_FAMILY = 5, 6, 11
# The sync daemon attributes, nested in IPVS_CMD_ATTR_DAEMON; pyroute2's ipvs module has the
# command numbers but no codec for these. STATE and SYNC_ID are u32, SYNC_MAXLEN and
# MCAST_PORT u16 in host order (the kernel converts the port itself), MCAST_TTL u8, the
# groups raw addresses (network order), MCAST_IFN a NUL-terminated name of at most 15 bytes.
_CMD_ATTR_DAEMON = 3
_DAEMON_STATE, _DAEMON_MCAST_IFN, _DAEMON_SYNC_ID, _DAEMON_SYNC_MAXLEN = 1, 2, 3, 4
_DAEMON_MCAST_GROUP, _DAEMON_MCAST_GROUP6, _DAEMON_MCAST_PORT, _DAEMON_MCAST_TTL = 5, 6, 7, 8
_STATE_FROM_KERNEL = {1: SyncState.MASTER, 2: SyncState.BACKUP}


def _nla(kind: int, payload: bytes) -> bytes:
    size = _NLA_HDR.size + len(payload)
    return _NLA_HDR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _u16(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=H", value))


def _u32(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("=I", value))


def _be16(kind: int, value: int) -> bytes:
    return _nla(kind, struct.pack("!H", value))


@dataclass(frozen=True, slots=True)
class _Request:
    """One packed generic netlink request (genl header and attributes); the netlink header is
    added when it is sent."""

    body: bytes


def _packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def _service_key_attrs(key: ServiceKey) -> bytes:
    attrs = _u16(_SVC_AF, _AF[key.family])
    if key.is_fwmark:
        return attrs + _u32(_SVC_FWMARK, key.fwmark)
    assert key.protocol is not None and key.address is not None
    return (
        attrs
        + _u16(_SVC_PROTOCOL, _PROTO[key.protocol])
        + _nla(_SVC_ADDR, _packed(key.address))
        + _be16(_SVC_PORT, key.port)
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
        flags |= _F_PERSISTENT
        timeout = conf.persistent
    if conf.ops:
        flags |= _F_ONEPACKET
    return (
        _service_key_attrs(key)
        + _nla(_SVC_SCHED_NAME, name.encode() + b"\0")
        + _nla(_SVC_FLAGS, struct.pack("=II", flags, _ALL_FLAGS_MASK))
        + _u32(_SVC_TIMEOUT, timeout)
        + _u32(_SVC_NETMASK, _netmask_raw(key.family, conf))
    )


def _dest_key_attrs(dest: DestKey) -> bytes:
    return (
        _nla(_DEST_ADDR, _packed(dest.address))
        + _be16(_DEST_PORT, dest.port)
        + _u16(_DEST_ADDR_FAMILY, _AF[dest.family])
    )


def _dest_attrs(service: ServiceKey, dest: DestKey, conf: DestConf) -> bytes:
    check_dest(service, dest, conf)
    return (
        _dest_key_attrs(dest)
        + _u32(_DEST_FWD_METHOD, _FORWARD_TO_KERNEL[conf.forward])
        + _u32(_DEST_WEIGHT, conf.weight)
        + _u32(_DEST_U_THRESH, conf.upper)
        + _u32(_DEST_L_THRESH, conf.lower)
    )


def _message(cmd: int, service: bytes, dest: bytes | None = None) -> _Request:
    body = _GENL_HDR.pack(cmd, _GENL_VERSION, 0) + _nla(_CMD_ATTR_SERVICE, service)
    if dest is not None:
        body += _nla(_CMD_ATTR_DEST, dest)
    return _Request(body)


def _encode(op: Op) -> _Request:
    """The netlink request for one op. Raises InvalidConf for what the kernel would refuse."""
    match op:
        case AddService(service=key, conf=conf):
            return _message(_CMD_NEW_SERVICE, _service_attrs(key, conf))
        case EditService(service=key, conf=conf):
            return _message(_CMD_SET_SERVICE, _service_attrs(key, conf))
        case DeleteService(service=key):
            return _message(_CMD_DEL_SERVICE, _service_key_attrs(key))
        case AddDest(service=key, dest=dest, conf=conf):
            dest = kernel_dest_port(key, dest, conf.forward)
            return _message(_CMD_NEW_DEST, _service_key_attrs(key), _dest_attrs(key, dest, conf))
        case EditDest(service=key, dest=dest, conf=conf):
            dest = kernel_dest_port(key, dest, conf.forward)
            return _message(_CMD_SET_DEST, _service_key_attrs(key), _dest_attrs(key, dest, conf))
        case DeleteDest(service=key, dest=dest):
            return _message(_CMD_DEL_DEST, _service_key_attrs(key), _dest_key_attrs(dest))
    raise InvalidConf(f"not an IPVS operation: {op!r}")


def _daemon_start(daemon: SyncDaemon) -> _Request:
    """IPVS_CMD_NEW_DAEMON for one daemon. Raises ValueError for what the kernel would refuse."""
    check_daemon(daemon)
    attrs = (
        _u32(_DAEMON_STATE, daemon.state.kernel)
        + _nla(_DAEMON_MCAST_IFN, daemon.interface.encode() + b"\0")
        + _u32(_DAEMON_SYNC_ID, daemon.syncid)
    )
    if daemon.maxlen is not None:
        attrs += _u16(_DAEMON_SYNC_MAXLEN, daemon.maxlen)
    if daemon.group is not None:
        kind = _DAEMON_MCAST_GROUP6 if daemon.group_v6 else _DAEMON_MCAST_GROUP
        attrs += _nla(kind, _packed(daemon.group))
    if daemon.port is not None:
        attrs += _u16(_DAEMON_MCAST_PORT, daemon.port)
    if daemon.ttl is not None:
        attrs += _nla(_DAEMON_MCAST_TTL, struct.pack("=B", daemon.ttl))
    header = _GENL_HDR.pack(_CMD_NEW_DAEMON, _GENL_VERSION, 0)
    return _Request(header + _nla(_CMD_ATTR_DAEMON, attrs))


def _daemon_stop(state: SyncState) -> _Request:
    header = _GENL_HDR.pack(_CMD_DEL_DAEMON, _GENL_VERSION, 0)
    return _Request(header + _nla(_CMD_ATTR_DAEMON, _u32(_DAEMON_STATE, state.kernel)))


def _decode_daemon(raw: dict[int, bytes]) -> SyncDaemon | None:
    """One IPVS_CMD_ATTR_DAEMON record of a GET_DAEMON dump; None for a state not known."""
    state_raw = raw.get(_DAEMON_STATE)
    state = _STATE_FROM_KERNEL.get(struct.unpack_from("=I", state_raw)[0]) if state_raw else None
    if state is None:
        return None

    def number(kind: int, fmt: str) -> int | None:
        data = raw.get(kind)
        return struct.unpack_from(fmt, data)[0] if data else None

    group: str | None = None
    if (v4 := raw.get(_DAEMON_MCAST_GROUP)) is not None:
        group = _unpacked(Family.INET, v4)
    elif (v6 := raw.get(_DAEMON_MCAST_GROUP6)) is not None:
        group = _unpacked(Family.INET6, v6)
    return SyncDaemon(
        state=state,
        interface=raw.get(_DAEMON_MCAST_IFN, b"").split(b"\0", 1)[0].decode(errors="replace"),
        syncid=number(_DAEMON_SYNC_ID, "=I") or 0,
        maxlen=number(_DAEMON_SYNC_MAXLEN, "=H"),
        group=group,
        port=number(_DAEMON_MCAST_PORT, "=H"),
        ttl=number(_DAEMON_MCAST_TTL, "=B"),
    )


# ---- decoding ------------------------------------------------------------------------------
# Dumps are parsed with struct as well (pyroute2's decoder costs milliseconds per destination
# under emulation). Each attribute: (number, struct format, or None for raw bytes / "s" for text).

_SVC_FIELDS: dict[str, tuple[int, str | None]] = {
    "IPVS_SVC_ATTR_AF": (1, "=H"),
    "IPVS_SVC_ATTR_PROTOCOL": (2, "=H"),
    "IPVS_SVC_ATTR_ADDR": (3, None),
    "IPVS_SVC_ATTR_PORT": (4, "!H"),
    "IPVS_SVC_ATTR_FWMARK": (5, "=I"),
    "IPVS_SVC_ATTR_SCHED_NAME": (6, "s"),
    "IPVS_SVC_ATTR_FLAGS": (7, "=II"),
    "IPVS_SVC_ATTR_TIMEOUT": (8, "=I"),
    "IPVS_SVC_ATTR_NETMASK": (9, "=I"),
}
_DEST_FIELDS: dict[str, tuple[int, str | None]] = {
    "IPVS_DEST_ATTR_ADDR": (1, None),
    "IPVS_DEST_ATTR_PORT": (2, "!H"),
    "IPVS_DEST_ATTR_FWD_METHOD": (3, "=I"),
    "IPVS_DEST_ATTR_WEIGHT": (4, "=I"),
    "IPVS_DEST_ATTR_U_THRESH": (5, "=I"),
    "IPVS_DEST_ATTR_L_THRESH": (6, "=I"),
    "IPVS_DEST_ATTR_ACTIVE_CONNS": (7, "=I"),
    "IPVS_DEST_ATTR_INACT_CONNS": (8, "=I"),
    "IPVS_DEST_ATTR_ADDR_FAMILY": (11, "=H"),
}
_NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flag bits


def _parse_attrs(data: bytes, start: int = 0) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    offset = start
    while offset + _NLA_HDR.size <= len(data):
        size, kind = _NLA_HDR.unpack_from(data, offset)
        if size < _NLA_HDR.size:
            break
        attrs[kind & _NLA_TYPE_MASK] = data[offset + _NLA_HDR.size : offset + size]
        offset += size + (-size % 4)
    return attrs


class _Attrs:
    """Attributes of one nested IPVS record, read by name."""

    def __init__(self, raw: dict[int, bytes], fields: dict[str, tuple[int, str | None]]) -> None:
        self.raw = raw
        self.fields = fields

    def get_attr(self, name: str) -> Any:
        number, fmt = self.fields[name]
        data = self.raw.get(number)
        if data is None:
            return None
        if fmt is None:
            return data
        if fmt == "s":
            return data.split(b"\0", 1)[0].decode("ascii", "replace")
        if fmt == "=II":
            flags, mask = struct.unpack_from(fmt, data)
            return {"flags": flags, "mask": mask}
        return struct.unpack_from(fmt, data)[0]


def _unpacked(family: Family, raw: bytes) -> str:
    size = 4 if family is Family.INET else 16
    return canonical_address(socket.inet_ntop(_AF[family], bytes(raw[:size])))


def _decode_service(attrs: Any) -> tuple[ServiceKey, ServiceConf] | None:
    family = _FAMILY.get(attrs.get_attr("IPVS_SVC_ATTR_AF"))
    if family is None:
        return None
    fwmark = attrs.get_attr("IPVS_SVC_ATTR_FWMARK") or 0
    if fwmark:
        key = ServiceKey.fwm(fwmark, family)
    else:
        protocol = _PROTO_FROM_KERNEL.get(attrs.get_attr("IPVS_SVC_ATTR_PROTOCOL"))
        if protocol is None:
            return None
        address = _unpacked(family, attrs.get_attr("IPVS_SVC_ATTR_ADDR"))
        key = ServiceKey(family, protocol, address, attrs.get_attr("IPVS_SVC_ATTR_PORT"))
    scheduler = attrs.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or ""
    flags = (attrs.get_attr("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
    persistent: int | None = None
    netmask: str | None = None
    if flags & _F_PERSISTENT:
        persistent = attrs.get_attr("IPVS_SVC_ATTR_TIMEOUT") or 0
        raw_mask = attrs.get_attr("IPVS_SVC_ATTR_NETMASK")
        if family is Family.INET and raw_mask not in (None, _FULL_NETMASK_V4):
            netmask = socket.inet_ntoa(struct.pack("=I", raw_mask))
        elif family is Family.INET6 and raw_mask not in (None, _FULL_PREFIX_V6):
            netmask = str(raw_mask)
    conf = ServiceConf(
        scheduler=scheduler,
        sched_flags=sched_flag_names(scheduler, flags & _F_SCHED_ALL),
        persistent=persistent,
        netmask=netmask,
        ops=bool(flags & _F_ONEPACKET),
    )
    return key, conf


def _decode_dest(
    service: ServiceKey, attrs: Any, written: dict[DestKey, Forward]
) -> tuple[DestKey, DestConf, DestStats]:
    family = _FAMILY.get(attrs.get_attr("IPVS_DEST_ATTR_ADDR_FAMILY"), service.family)
    dest = DestKey(
        _unpacked(family, attrs.get_attr("IPVS_DEST_ATTR_ADDR")),
        attrs.get_attr("IPVS_DEST_ATTR_PORT"),
    )
    method = (attrs.get_attr("IPVS_DEST_ATTR_FWD_METHOD") or 0) & _FWD_MASK
    forward = _FORWARD_FROM_KERNEL.get(method)
    if forward is None:  # local node (older kernels) or bypass: see the module docstring
        forward = written.get(dest, Forward.GATE)
    conf = DestConf(
        forward=forward,
        weight=attrs.get_attr("IPVS_DEST_ATTR_WEIGHT") or 0,
        upper=attrs.get_attr("IPVS_DEST_ATTR_U_THRESH") or 0,
        lower=attrs.get_attr("IPVS_DEST_ATTR_L_THRESH") or 0,
    )
    stats = DestStats(
        active_conns=attrs.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0,
        inactive_conns=attrs.get_attr("IPVS_DEST_ATTR_INACT_CONNS") or 0,
    )
    return dest, conf, stats


# ---- errors --------------------------------------------------------------------------------


def _error_kind(op: Op | None, code: int) -> ErrorKind:
    if code == errno.EEXIST:
        return ErrorKind.EXISTS
    if code == errno.ESRCH:  # the kernel's "no such service"
        return ErrorKind.NOT_FOUND
    if code == errno.ENOENT:
        # On a service write ENOENT means the scheduler (or persistence engine) module does not
        # exist; a missing service is ESRCH there. On destinations it is "no such destination".
        if isinstance(op, AddService | EditService):
            return ErrorKind.INVALID
        return ErrorKind.NOT_FOUND
    if code in (errno.EPERM, errno.EACCES):
        return ErrorKind.PERMISSION
    if code in (errno.EINVAL, errno.ERANGE, errno.EAFNOSUPPORT, errno.EOPNOTSUPP, errno.E2BIG):
        return ErrorKind.INVALID
    return ErrorKind.OTHER


def _describe(op: Op) -> str:
    dest = getattr(op, "dest", None)
    return f"{op.service} -> {dest}" if dest is not None else str(op.service)


def _op_error(op: Op, code: int) -> OpError:
    kind = _error_kind(op, code)
    words = os.strerror(code)
    if kind is ErrorKind.INVALID and code == errno.ENOENT:
        assert isinstance(op, AddService | EditService)
        words = f"unknown scheduler {op.conf.scheduler!r} ({words})"
    name = type(op).__name__
    return OpError(kind, f"{name} {_describe(op)}: {words} (errno {code})")


def _connect_error(exc: BaseException) -> OpError:
    if isinstance(exc, NetlinkError) and exc.code == errno.ENOENT:
        return OpError(
            ErrorKind.NO_IPVS,
            "the kernel has no IPVS (generic netlink family 'IPVS' not found: modprobe ip_vs)",
        )
    code = getattr(exc, "code", None) or getattr(exc, "errno", None)
    if isinstance(code, int) and code in (errno.EPERM, errno.EACCES):
        return OpError(ErrorKind.PERMISSION, f"netlink: {os.strerror(code)}")
    return OpError(ErrorKind.OTHER, f"netlink socket: {exc}")


# ---- the backend ---------------------------------------------------------------------------


class NetlinkBackend:
    """Reads and writes the kernel's IPVS table over generic netlink."""

    name = "netlink"

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lvsmon-netlink")
        # Everything below is touched only on the worker thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: Any = None  # pyroute2's, for the family lookup and dumps
        self._raw: socket.socket | None = None  # for writes
        self._seq = 1
        self._closed = False
        self._written: dict[ServiceKey, dict[DestKey, Forward]] = {}

    # -- the thread hop

    async def _call(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._closed:
            raise BackendError(OpError(ErrorKind.OTHER, "netlink backend is closed"))
        future = self._executor.submit(self._run, work)
        return await asyncio.wrap_future(future)

    def _run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(work())

    async def _socket(self) -> Any:
        """The bound socket, opened on first use (and again after a failure: ip_vs may be
        loaded later). Raises BackendError."""
        if self._sock is not None:
            return self._sock
        sock = _IpvsSocket()
        try:
            await sock.setup_endpoint()
        except (NetlinkError, OSError) as exc:
            sock.close()
            raise BackendError(_connect_error(exc)) from None
        self._sock = sock
        return sock

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    # -- dump

    async def dump(self) -> Table:
        return await self._call(self._dump)

    @contextlib.contextmanager
    def _failures_as(self, what: str) -> Iterator[None]:
        """A failed dump as a BackendError; a broken socket is dropped (the next call opens one)."""
        try:
            yield
        except NetlinkError as exc:
            raise BackendError(
                OpError(_error_kind(None, exc.code), f"{what}: {os.strerror(exc.code)}")
            ) from None
        except OSError as exc:
            self._drop_socket()
            raise BackendError(OpError(ErrorKind.OTHER, f"{what}: {exc}")) from None

    async def _dump(self) -> Table:
        sock = await self._socket()
        with self._failures_as("dump"):
            return await self._dump_with(sock)
        raise AssertionError("unreachable")  # for mypy: the context manager re-raises

    async def _dump_with(self, sock: Any) -> Table:
        family = sock.prid
        services: list[tuple[ServiceKey, ServiceConf]] = []
        for record in self._dump_records(
            family, _GENL_HDR.pack(_CMD_GET_SERVICE, _GENL_VERSION, 0)
        ):
            nested = _parse_attrs(record).get(_CMD_ATTR_SERVICE)
            if nested is not None:
                decoded = _decode_service(_Attrs(_parse_attrs(nested), _SVC_FIELDS))
                if decoded is not None:
                    services.append(decoded)
        table: Table = {}
        for key, conf in services:
            service = Service(conf)
            written = self._written.get(key, {})
            request = _message(_CMD_GET_DEST, _service_key_attrs(key))
            for record in self._dump_records(family, request.body):
                nested = _parse_attrs(record).get(_CMD_ATTR_DEST)
                if nested is None:
                    continue
                dest, dest_conf, stats = _decode_dest(
                    key, _Attrs(_parse_attrs(nested), _DEST_FIELDS), written
                )
                service.dests[dest] = dest_conf
                service.stats[dest] = stats
            table[key] = service
        return table

    def _dump_records(self, family: int, body: bytes) -> list[bytes]:
        """Sends one dump request; returns each reply's attributes (after the genl header).
        Raises NetlinkError for an error reply, OSError for a socket failure."""
        raw = self._raw_socket()
        seq = self._seq
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        flags = NLM_F_REQUEST | NLM_F_DUMP
        raw.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), family, flags, seq, 0) + body)
        records: list[bytes] = []
        while True:
            buffer = raw.recv(_RCVBUF)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(buffer):
                size, kind, _, msg_seq, _ = _NLMSG_HDR.unpack_from(buffer, offset)
                payload = buffer[offset + _NLMSG_HDR.size : offset + size]
                offset += max(size + (-size % 4), _NLMSG_HDR.size)
                if msg_seq != seq:
                    continue  # a late reply to something that timed out
                if kind == _NLMSG_DONE:
                    return records
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code)
                    continue
                records.append(payload[_GENL_HDR.size :])

    # -- apply

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        ops = list(ops)
        if not ops:
            return []
        try:
            return await self._call(lambda: self._apply(ops))
        except BackendError as exc:
            return [OpResult(op, exc.error) for op in ops]

    async def _apply(self, ops: list[Op]) -> list[OpResult]:
        results: list[OpResult | None] = [None] * len(ops)
        pending: list[tuple[int, _Request]] = []
        for index, op in enumerate(ops):
            try:
                pending.append((index, _encode(op)))
            except (ValueError, KeyError, struct.error) as exc:  # InvalidConf is a ValueError
                results[index] = OpResult(op, OpError(ErrorKind.INVALID, f"{_describe(op)}: {exc}"))
        if pending:
            try:
                sock = await self._socket()
            except BackendError as exc:
                for index, _ in pending:
                    results[index] = OpResult(ops[index], exc.error)
                pending = []
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            try:
                codes = self._send_chunk(sock.prid, [msg for _, msg in chunk])
            except OSError as exc:
                self._drop_socket()
                failure = OpError(ErrorKind.OTHER, f"netlink socket: {exc}")
                for index, _ in pending[start:]:
                    results[index] = OpResult(ops[index], failure)
                break
            for (index, _), code in zip(chunk, codes, strict=True):
                op = ops[index]
                if code == 0:
                    self._remember(op)
                    results[index] = OpResult(op)
                else:
                    results[index] = OpResult(op, _op_error(op, code))
        return [result for result in results if result is not None]

    def _send_chunk(self, family: int, msgs: list[_Request]) -> list[int]:
        """Sends the requests in one write, then reads one acknowledgement per request: the errno
        it carries (0 = done). The kernel handles every request in the buffer in order, whether
        an earlier one failed or not."""
        raw = self._raw_socket()
        base = self._seq
        self._seq = (self._seq + len(msgs)) & 0x7FFFFFFF or 1
        flags = NLM_F_REQUEST | NLM_F_ACK
        data = b"".join(
            _NLMSG_HDR.pack(_NLMSG_HDR.size + len(m.body), family, flags, base + i, 0) + m.body
            for i, m in enumerate(msgs)
        )
        raw.send(data)
        codes: list[int | None] = [None] * len(msgs)
        missing = len(msgs)
        while missing:
            buffer = raw.recv(_RCVBUF)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(buffer):
                size, kind, _, seq, _ = _NLMSG_HDR.unpack_from(buffer, offset)
                index = seq - base
                if kind == _NLMSG_ERROR and 0 <= index < len(msgs) and codes[index] is None:
                    codes[index] = -struct.unpack_from("=i", buffer, offset + _NLMSG_HDR.size)[0]
                    missing -= 1
                offset += max(size + (-size % 4), _NLMSG_HDR.size)
        return [code or 0 for code in codes]

    def _raw_socket(self) -> socket.socket:
        """A plain netlink socket for writes: packing and reading acknowledgements with struct
        costs a fraction of going through pyroute2's generic message machinery."""
        if self._raw is None:
            raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC)
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _RCVBUF)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
                raw.bind((0, 0))
                raw.settimeout(_ACK_TIMEOUT)  # a lost ack fails the apply instead of hanging it
            except OSError:
                raw.close()
                raise
            self._raw = raw
        return self._raw

    def _remember(self, op: Op) -> None:
        """Tracks the forwarding method written per destination (see the module docstring)."""
        match op:
            case (
                AddDest(service=key, dest=dest, conf=conf)
                | EditDest(service=key, dest=dest, conf=conf)
            ):
                stored = kernel_dest_port(key, dest, conf.forward)
                self._written.setdefault(key, {})[stored] = conf.forward
            case DeleteDest(service=key, dest=dest):
                self._written.get(key, {}).pop(dest, None)
            case DeleteService(service=key):
                self._written.pop(key, None)
            case _:
                pass

    # -- connection sync daemons

    async def sync_daemons(self) -> tuple[SyncDaemon, ...]:
        return await self._call(self._sync_daemons)

    async def _sync_daemons(self) -> tuple[SyncDaemon, ...]:
        sock = await self._socket()
        body = _GENL_HDR.pack(_CMD_GET_DAEMON, _GENL_VERSION, 0)
        with self._failures_as("sync daemons"):
            records = self._dump_records(sock.prid, body)
        found: dict[SyncState, SyncDaemon] = {}
        for record in records:
            nested = _parse_attrs(record).get(_CMD_ATTR_DAEMON)
            daemon = _decode_daemon(_parse_attrs(nested)) if nested is not None else None
            if daemon is not None:
                found[daemon.state] = daemon
        return tuple(found[s] for s in SyncState if s in found)

    async def start_sync_daemon(self, daemon: SyncDaemon) -> OpError | None:
        try:
            request = _daemon_start(daemon)
        except ValueError as exc:
            return OpError(ErrorKind.INVALID, f"cannot start the {daemon.state} sync daemon: {exc}")
        return await self._sync_request(request, daemon.state, starting=True)

    async def stop_sync_daemon(self, state: SyncState) -> OpError | None:
        return await self._sync_request(_daemon_stop(state), state, starting=False)

    async def _sync_request(
        self, request: _Request, state: SyncState, *, starting: bool
    ) -> OpError | None:
        async def send() -> int:
            sock = await self._socket()
            try:
                [code] = self._send_chunk(sock.prid, [request])
            except OSError:
                self._drop_socket()
                raise
            return code

        try:
            code = await self._call(send)
        except BackendError as exc:
            return exc.error
        except OSError as exc:
            return OpError(ErrorKind.OTHER, f"netlink socket: {exc}")
        return None if code == 0 else sync_error(state, starting, code)

    # -- close

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._executor.submit(self._shutdown))
        self._executor.shutdown(wait=True)

    def _shutdown(self) -> None:
        self._drop_socket()
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()
            self._loop = None
