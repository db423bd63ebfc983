"""IPVS backend over generic netlink (the kernel's own interface): the socket and thread part.
What goes into a message and what comes out of a reply is ``lvsmon.ipvs.netlink_codec``.

pyroute2 sockets keep per-thread state and drive their own event loop, so the backend owns one
worker thread with a private loop; every dump() and every apply() is a single hop to that thread.
pyroute2 looks the IPVS family up (and reports a kernel without it). Requests and replies travel
on a plain netlink socket (see the codec for why not through pyroute2's message classes). Writes
go out in a few large sends (chunks of ``_CHUNK`` requests); one acknowledgement is read per
request, so each op still gets its own result.

A resync reads every service: a reply to the service dump that is the last one's but for the
counters (and the seq) takes the services decoded last time, after a byte comparison of the
datagrams at C speed (``_dump_records``' `changing`); and dump_known with the same known objects
again reads only what it read last time (``_Plan``). At 1,000 probe services of checkpath=vip,
decoding the unchanged records was most of the VIP path's cost over the real path's.

An op the shared rules (``lvsmon.ipvs.rules``) refuse is reported INVALID without reaching the
kernel. The backend remembers the forwarding method it last wrote per destination, for the
kernels that read a destination on a local address back as "local node" (see the codec).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import operator
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
    service_parts,
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
_SEQ = struct.Struct("=I")
_SEQ_AT = 8  # the seq field's offset in a netlink header
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


# ---- a dump's reply, remembered -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Datagram:
    """One datagram of a remembered reply: its size, its bytes outside the seq fields and the
    spans that may change (`kept` reads them, skipping the rest as pad bytes) and where its
    seq fields are (`seqs` reads them)."""

    size: int
    kept: struct.Struct
    expected: bytes
    seqs: struct.Struct
    messages: int

    def same(self, data: bytes, seq: int) -> bool:
        """`data` is this datagram again, but for the spans, in reply to request `seq`."""
        return (
            len(data) == self.size
            and self.seqs.unpack_from(data) == (seq,) * self.messages
            and b"".join(self.kept.unpack_from(data)) == self.expected
        )


@dataclass(frozen=True, slots=True)
class _Layout:
    """A dump's reply as it came (``NetlinkBackend._dump_records``): a later reply to the same
    request whose every datagram has the same size and the same bytes outside the spans that may
    change, with its own seq in every message, holds the same records but for those spans."""

    request: bytes
    datagrams: list[_Datagram]
    records: list[bytes]


def _datagram(data: bytes, seqs: list[int], spans: list[tuple[int, int]]) -> _Datagram:
    """`data` remembered: `spans` (sorted, apart) may change, the seq fields at `seqs` hold
    each request's own. Struct formats, not slices: a pad byte costs nothing to keep, where a
    slice object and its two numbers took ~120 bytes (0.25 MiB at 1,000 probe services)."""
    kept, seq_fields = ["="], ["="]
    position = 0
    for at in seqs:
        seq_fields.append(f"{at - position}xI")
        position = at + _SEQ.size
    position = 0
    for start, stop in sorted([(at, at + _SEQ.size) for at in seqs] + spans):
        if start > position:
            kept.append(f"{start - position}s")
        kept.append(f"{stop - start}x")
        position = stop
    if len(data) > position:
        kept.append(f"{len(data) - position}s")
    kept_struct, seq_struct = struct.Struct("".join(kept)), struct.Struct("".join(seq_fields))
    expected = b"".join(kept_struct.unpack_from(data))
    return _Datagram(len(data), kept_struct, expected, seq_struct, len(seqs))


_CONF = operator.attrgetter("conf")
_READ_AGAIN = Service(ServiceConf())  # never handed out (_Plan.of)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one dump_known made of its decoded services: its table and the services it read in
    full (the others were the known objects). The same decoded list with a known table of the
    same keys and Service objects, in the same order, makes the same table but for those."""

    services: list[tuple[ServiceKey, ServiceConf]]
    keys: tuple[ServiceKey, ...]
    values: tuple[Service, ...]
    confs: tuple[ServiceConf, ...]  # theirs then: a Service's conf may be set anew in place
    table: Table
    read: list[tuple[ServiceKey, ServiceConf]]

    @classmethod
    def of(
        cls,
        services: list[tuple[ServiceKey, ServiceConf]],
        known: Table,
        table: Table,
        read: list[tuple[ServiceKey, ServiceConf]],
    ) -> _Plan:
        # a copy of the table (the caller may change its own: reconciler.keep_services), with
        # a stand-in for each service read, which the next use replaces: it would hold the
        # last copy of the services read (a virtual's 1,000 destinations) for nothing
        template = dict(table)
        for key, _ in read:
            template[key] = _READ_AGAIN
        values = tuple(known.values())
        return cls(services, tuple(known), values, tuple(map(_CONF, values)), template, read)

    def same(self, services: list[tuple[ServiceKey, ServiceConf]], known: Table) -> bool:
        """By identity, at C speed: an equal but new object is not taken as the same."""
        return (
            services is self.services
            and len(known) == len(self.keys)
            and all(map(operator.is_, known, self.keys))
            and all(map(operator.is_, known.values(), self.values))
            and all(map(operator.is_, map(_CONF, self.values), self.confs))
        )


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

    # The last service dump's reply (see _dump_records) and its records' decoded services: a
    # resync of an unchanged table compares the reply's bytes less the counters at C speed, then
    # takes the services decoded last time, where walking and hashing each record cost ~2.7 ms
    # natively at 1,000 probe services (bench/resync_decode.py). Class defaults: tests build the
    # backend without __init__.
    _layout: _Layout | None = None
    _last: tuple[list[bytes], list[tuple[ServiceKey, ServiceConf]]] | None = None
    # and what the last dump_known built from those services: with the same known objects
    # again, the same hits (a dict lookup, a hash and a comparison each, ~0.25 ms natively)
    _plan: _Plan | None = None

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
        signatures: list[bytes] = []

        def counters(record: bytes) -> list[tuple[int, int]]:
            # one walk of a record gives both: called once per record, in order, for a reply
            # that is not the last one again
            signature, spans = service_parts(record)
            signatures.append(signature)
            return spans

        records = self._dump_records(family, dump_services(), counters)
        last = self._last
        if last is not None and records is last[0]:  # the last reply again, but for counters
            services = last[1]
        else:
            services = []
            seen, decoded_as = self._decoded, {}
            if len(signatures) != len(records):  # the last reply's records, not decoded then
                signatures = [service_parts(record)[0] for record in records]
            for record, signature in zip(records, signatures, strict=True):
                decoded = seen.get(signature, _UNSEEN)
                if decoded is _UNSEEN:
                    decoded = service_from(record)
                decoded_as[signature] = decoded
                if decoded is not None:
                    services.append(decoded)
            self._decoded = decoded_as  # this dump's only: as large as the table, no larger
            # the list stands for its reply from now on (_dump_records hands it out again for
            # the same reply): emptied, it holds no copy of the reply
            records.clear()
            self._last = records, services
        plan = self._plan
        if known and plan is not None and plan.same(services, known):
            # what the last resync built from the same records and the same known objects:
            # only the services it read in full are read again
            table = plan.table.copy()  # the hits' keys keep their hashes: none is recomputed
            for key, conf in plan.read:
                table[key] = self._read_service(family, key, conf)
            return table
        table = {}
        read: list[tuple[ServiceKey, ServiceConf]] = []
        for key, conf in services:
            if known:
                hit = known.get(key)
                # the same object, mostly: the known service was built from this decoded conf
                if hit is not None and (hit.conf is conf or hit.conf == conf):
                    table[key] = hit
                    continue
            table[key] = self._read_service(family, key, conf)
            read.append((key, conf))
        self._plan = _Plan.of(services, known, table, read) if known else None
        return table

    def _read_service(self, family: int, key: ServiceKey, conf: ServiceConf) -> Service:
        service = Service(conf)
        written = self._written.get(key, {})
        for record in self._dump_records(family, dump_dests(key)):
            found = dest_from(key, record, written)
            if found is None:
                continue
            dest, dest_conf, stats = found
            service.dests[dest] = dest_conf
            service.stats[dest] = stats
        return service

    def _dump_records(
        self,
        family: int,
        request: Request,
        changing: Callable[[bytes], list[tuple[int, int]]] | None = None,
    ) -> list[bytes]:
        """Sends one dump request; returns each reply's generic netlink message (genl header
        and attributes). Raises NetlinkError for an error reply, OSError for a socket failure.

        `changing`: where a record's bytes may change without the record changing for the
        caller (the spans of ``codec.service_parts``). The reply is then remembered, and a
        later one that is the same outside those spans returns the records list of the last
        one itself, whose bytes in those spans are the last reply's: the caller must not read
        them. Only the last request made with `changing` is remembered."""
        raw = self._raw_socket()
        seq = self._seq
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        flags = NLM_F_REQUEST | NLM_F_DUMP
        body = request.body
        raw.send(_NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), family, flags, seq, 0) + body)
        got: list[bytes] = []  # datagrams read before the reply turned out to differ
        layout = self._layout if changing is not None else None
        if layout is not None and layout.request == body:
            for datagram in layout.datagrams:
                data = bytes(self._receive(raw))
                got.append(data)
                if not datagram.same(data, seq):
                    break
            else:
                return layout.records
        records: list[bytes] = []
        where: list[tuple[int, int]] = []  # each record's (datagram, offset of its payload)
        heads: list[list[int]] = []  # each datagram's netlink headers up to DONE
        done = False
        index = 0
        while not done:
            if index < len(got):
                buffer: Any = got[index]
            else:
                buffer = self._receive(raw)
                if changing is not None:
                    buffer = bytes(buffer)
                    got.append(buffer)
            starts: list[int] = []
            heads.append(starts)
            offset = 0
            while offset + _NLMSG_HDR.size <= len(buffer):
                size, kind, _, msg_seq, _ = _NLMSG_HDR.unpack_from(buffer, offset)
                starts.append(offset)
                at = offset + _NLMSG_HDR.size
                payload = bytes(buffer[at : offset + size])
                offset += max(size + (-size % 4), _NLMSG_HDR.size)
                if msg_seq != seq:
                    continue  # a late reply to something that timed out
                if kind == _NLMSG_DONE:
                    done = True
                    break
                if kind == _NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise NetlinkError(code)
                    continue
                records.append(payload)
                where.append((index, at))
            index += 1
        if changing is not None:
            self._remember_layout(body, got, heads, records, where, changing)
        return records

    def _remember_layout(
        self,
        request: bytes,
        datagrams: list[bytes],
        heads: list[list[int]],
        records: list[bytes],
        where: list[tuple[int, int]],
        changing: Callable[[bytes], list[tuple[int, int]]],
    ) -> None:
        spans: list[list[tuple[int, int]]] = [[] for _ in datagrams]
        for record, (index, at) in zip(records, where, strict=True):
            spans[index].extend((at + a, at + b) for a, b in changing(record))
        self._layout = _Layout(
            request,
            [
                _datagram(data, [h + _SEQ_AT for h in starts], found)
                for data, starts, found in zip(datagrams, heads, spans, strict=True)
            ],
            records,
        )

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
