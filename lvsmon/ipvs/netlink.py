"""IPVS backend over generic netlink (the kernel's own interface): the socket and thread part.
What goes into a message and what comes out of a reply is ``lvsmon.ipvs.netlink_codec``.

pyroute2 sockets keep per-thread state and drive their own event loop, so the backend owns one
worker thread with a private loop; every dump() and every apply() is a single hop to that thread.
pyroute2 looks the IPVS family up (and reports a kernel without it). Requests and replies travel
on a plain netlink socket (see the codec for why not through pyroute2's message classes). Writes
go out in a few large sends (chunks of ``_CHUNK`` requests); one acknowledgement is read per
request, so each op still gets its own result.

An op the shared rules (``lvsmon.ipvs.rules``) refuse is reported INVALID without reaching the
kernel. The backend remembers the forwarding method it last wrote per destination, for the
kernels that read a destination on a local address back as "local node" (see the codec).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket
from pyroute2.netlink.generic.ipvs import ipvsmsg

from lvsmon.ipvs.errors import BackendError, ErrorKind, OpError, OpResult
from lvsmon.ipvs.model import (
    DestKey,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    kernel_dest_port,
)
from lvsmon.ipvs.netlink_codec import (
    Request,
    daemon_from,
    daemon_start,
    daemon_stop,
    dest_from,
    dump_daemons,
    dump_dests,
    dump_services,
    encode_op,
    service_from,
    service_signature,
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
from lvsmon.ipvs.sync import SyncDaemon, SyncState, sync_error

T = TypeVar("T")

_NLMSG_HDR = struct.Struct("=IHHII")
_CHUNK = 256  # requests per send: their acks (with echoed requests on error) fit the rcvbuf
_RCVBUF = 1 << 20
_ACK_TIMEOUT = 60.0
_NETLINK_GENERIC = 16
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_UNSEEN: Any = object()


class _IpvsSocket(AsyncGenericNetlinkSocket):  # type: ignore[misc]
    # A missing IPVS family is reported to the caller as NO_IPVS; pyroute2 need not log it too.
    module_err_level = "debug"

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await super().setup_endpoint()
        await self.bind("IPVS", ipvsmsg)


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
        # one receive buffer, reused: a recv(1 MiB) per reply allocated (mmap) and shrank
        # (mremap) a megabyte each time, and a resync asks once per service (at 1,000 probe
        # services of checkpath=vip, 200 of those a second made a check through the VIP cost
        # 1.6 x one to the real in the VM)
        self._rbuf: memoryview | None = None
        self._seq = 1
        self._closed = False
        self._written: dict[ServiceKey, dict[DestKey, Forward]] = {}
        # the last dump's service records, decoded, by their bytes less the counters
        # (codec.service_signature): a resync decodes only what changed since
        self._decoded: dict[bytes, tuple[ServiceKey, ServiceConf] | None] = {}

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

    async def dump_known(self, known: Table) -> Table:
        return await self._call(lambda: self._dump(known))

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

    async def _dump(self, known: Table | None = None) -> Table:
        sock = await self._socket()
        with self._failures_as("dump"):
            return await self._dump_with(sock, known)
        raise AssertionError("unreachable")  # for mypy: the context manager re-raises

    async def _dump_with(self, sock: Any, known: Table | None = None) -> Table:
        family = sock.prid
        services: list[tuple[ServiceKey, ServiceConf]] = []
        seen, decoded_as = self._decoded, {}
        for record in self._dump_records(family, dump_services()):
            signature = service_signature(record)
            decoded = seen.get(signature, _UNSEEN)
            if decoded is _UNSEEN:
                decoded = service_from(record)
            decoded_as[signature] = decoded
            if decoded is not None:
                services.append(decoded)
        self._decoded = decoded_as  # this dump's only: as large as the table, no larger
        table: Table = {}
        for key, conf in services:
            if known:
                hit = known.get(key)
                if hit is not None and hit.conf == conf:
                    table[key] = hit
                    continue
            service = Service(conf)
            written = self._written.get(key, {})
            for record in self._dump_records(family, dump_dests(key)):
                found = dest_from(key, record, written)
                if found is None:
                    continue
                dest, dest_conf, stats = found
                service.dests[dest] = dest_conf
                service.stats[dest] = stats
            table[key] = service
        return table

    def _dump_records(self, family: int, request: Request) -> list[bytes]:
        """Sends one dump request; returns each reply's generic netlink message (genl header
        and attributes). Raises NetlinkError for an error reply, OSError for a socket failure."""
        raw = self._raw_socket()
        seq = self._seq
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        flags = NLM_F_REQUEST | NLM_F_DUMP
        body = request.body
        raw.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), family, flags, seq, 0) + body)
        records: list[bytes] = []
        while True:
            buffer = self._receive(raw)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(buffer):
                size, kind, _, msg_seq, _ = _NLMSG_HDR.unpack_from(buffer, offset)
                payload = bytes(buffer[offset + _NLMSG_HDR.size : offset + size])
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
                records.append(payload)

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
        pending: list[tuple[int, Request]] = []
        for index, op in enumerate(ops):
            try:
                pending.append((index, encode_op(op)))
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

    def _send_chunk(self, family: int, msgs: list[Request]) -> list[int]:
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
            buffer = self._receive(raw)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(buffer):
                size, kind, _, seq, _ = _NLMSG_HDR.unpack_from(buffer, offset)
                index = seq - base
                if kind == _NLMSG_ERROR and 0 <= index < len(msgs) and codes[index] is None:
                    codes[index] = -struct.unpack_from("=i", buffer, offset + _NLMSG_HDR.size)[0]
                    missing -= 1
                offset += max(size + (-size % 4), _NLMSG_HDR.size)
        return [code or 0 for code in codes]

    def _receive(self, raw: socket.socket) -> memoryview:
        """One datagram into the reused buffer: valid until the next receive (the worker
        thread makes every call, one at a time)."""
        view = self._rbuf
        if view is None:
            view = self._rbuf = memoryview(bytearray(_RCVBUF))
        return view[: raw.recv_into(view)]

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
        with self._failures_as("sync daemons"):
            records = self._dump_records(sock.prid, dump_daemons())
        found: dict[SyncState, SyncDaemon] = {}
        for record in records:
            daemon = daemon_from(record)
            if daemon is not None:
                found[daemon.state] = daemon
        return tuple(found[s] for s in SyncState if s in found)

    async def start_sync_daemon(self, daemon: SyncDaemon) -> OpError | None:
        try:
            request = daemon_start(daemon)
        except ValueError as exc:
            return OpError(ErrorKind.INVALID, f"cannot start the {daemon.state} sync daemon: {exc}")
        return await self._sync_request(request, daemon.state, starting=True)

    async def stop_sync_daemon(self, state: SyncState) -> OpError | None:
        return await self._sync_request(daemon_stop(state), state, starting=False)

    async def _sync_request(
        self, request: Request, state: SyncState, *, starting: bool
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
