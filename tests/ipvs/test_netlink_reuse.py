"""A resync of an unchanged table takes the last service dump's decoded records outright
(NetlinkBackend._dump_records with `changing`): every datagram of the reply has the same size
and the same bytes outside the counters' values, with this request's seq in every message. Any
change of what a record says, one record among 1,001 with the length unchanged, is decoded; a
change of the counters only is not. And dump_known with the same known objects again reads only
what it read last time (_Plan). At 1,000 probe services of checkpath=vip this took a resync's
service records from 2.7 ms to 0.17 ms on the host (bench/resync_decode.py)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from lvsmon.ipvs import netlink as netlink_module
from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import AddDest
from tests.ipvs.test_netlink_signature import record

NLMSG = struct.Struct("=IHHII")
FAMILY_ID = 0x1D
PORT_ID = 77
MULTI = 2
DONE = 3
PER_DATAGRAM = 100
VIRTUAL = ServiceKey.inet("tcp", "192.0.2.1", 80)
PROBES = [ServiceKey.fwm(0x4C560000 + i) for i in range(1000)]
REAL = DestKey("192.0.2.11", 80)


def message(payload: bytes, seq: int, kind: int = FAMILY_ID) -> bytes:
    return NLMSG.pack(NLMSG.size + len(payload), kind, MULTI, seq, PORT_ID) + payload


class Kernel:
    """The raw socket's stand-in: answers dump requests from `services` (key -> conf, in
    order; `conns` feeds the counters), `per` service records a datagram, DONE alone."""

    def __init__(self) -> None:
        self.services: dict[ServiceKey, ServiceConf] = {VIRTUAL: ServiceConf(scheduler="wlc")}
        self.services.update((k, ServiceConf(scheduler="rr")) for k in PROBES)
        self.conns = 0
        self.per = PER_DATAGRAM
        self.stale: bytes | None = None  # a message of another seq, put first in the reply
        self.pending: list[bytes] = []
        self.dest_dumps: list[ServiceKey] = []
        self.dests_of: dict[bytes, ServiceKey] = {}

    def send(self, data: bytes) -> int:
        _, _, _, seq, _ = NLMSG.unpack_from(data)
        body = data[NLMSG.size :]
        if body == codec.dump_services().body:
            self.conns += 1
            msgs = [message(record(k, c, self.conns), seq) for k, c in self.services.items()]
            if self.stale is not None:
                msgs.insert(0, self.stale)
        else:
            if body not in self.dests_of:
                self.dests_of.update((codec.dump_dests(k).body, k) for k in self.services)
            key = self.dests_of[body]
            self.dest_dumps.append(key)
            dest = REAL if key == VIRTUAL else DestKey(REAL.address, 0)
            attrs = codec.encode_op(AddDest(key, dest, DestConf(Forward.GATE, 1))).body
            size, _ = codec.NLA_HDR.unpack_from(attrs, codec.GENL_HDR.size)
            start = codec.GENL_HDR.size + size  # the destination follows the service key
            dest_msg = codec.GENL_HDR.pack(codec.CMD_NEW_DEST, 1, 0) + attrs[start:]
            msgs = [message(dest_msg, seq)]
        datagrams = [b"".join(msgs[i : i + self.per]) for i in range(0, len(msgs), self.per)]
        datagrams.append(NLMSG.pack(NLMSG.size + 4, DONE, MULTI, seq, PORT_ID) + b"\0" * 4)
        self.pending = datagrams[::-1]
        return len(data)

    def recv_into(self, view: memoryview) -> int:
        if not self.pending:  # the real socket would wait for _ACK_TIMEOUT: a hang
            raise AssertionError("read past the end of the reply")
        datagram = self.pending.pop()
        view[: len(datagram)] = datagram
        return len(datagram)

    def close(self) -> None:
        pass


class Sock:
    prid = FAMILY_ID


@pytest.fixture
def kernel() -> Kernel:
    return Kernel()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The records decoded (service_parts walks each record the slow way)."""
    walked: list[bytes] = []
    real_parts = codec.service_parts

    def counting(message: bytes) -> Any:
        walked.append(message)
        return real_parts(message)

    monkeypatch.setattr(netlink_module, "service_parts", counting)
    return walked


def backend_on(kernel: Kernel) -> NetlinkBackend:
    backend = NetlinkBackend.__new__(NetlinkBackend)
    backend._written = {}
    backend._decoded = {}
    backend._seq = 1
    backend._rbuf = None
    backend._raw = kernel  # type: ignore[assignment]
    return backend


def dump(backend: NetlinkBackend, known: Table | None = None) -> Table:
    coro = backend._dump_with(Sock(), known)
    try:
        coro.send(None)
    except StopIteration as stop:
        table: Table = stop.value
        return table
    raise AssertionError("the dump suspended")


def confs(table: Table) -> dict[ServiceKey, ServiceConf]:
    return {k: s.conf for k, s in table.items()}


def test_a_counters_only_change_is_not_decoded_again(kernel: Kernel, decoded: list[bytes]) -> None:
    backend = backend_on(kernel)
    first = dump(backend)
    assert confs(first) == kernel.services
    assert len(decoded) == 1001
    assert backend._layout is not None and len(backend._layout.datagrams) == 12
    decoded.clear()
    again = dump(backend)  # the counters moved (Kernel.conns): nothing walked, nothing decoded
    assert decoded == []
    assert confs(again) == kernel.services
    assert again == first


@pytest.mark.parametrize(
    "conf",
    [
        ServiceConf(scheduler="sh"),  # the name as long as "rr"
        ServiceConf(scheduler="sh", sched_flags=frozenset({"sh-port"})),  # a flag
        ServiceConf(scheduler="rr", ops=True),  # one-packet scheduling: a flag too
        ServiceConf(scheduler="rr", persistent=300),  # the flag and the timeout
    ],
)
def test_a_changed_record_among_1001_of_the_same_length_is_decoded(
    kernel: Kernel, decoded: list[bytes], conf: ServiceConf
) -> None:
    backend = backend_on(kernel)
    before = record(PROBES[500], kernel.services[PROBES[500]])
    assert len(record(PROBES[500], conf)) == len(before)  # only the bytes tell
    dump(backend)
    dump(backend)
    decoded.clear()
    kernel.services[PROBES[500]] = conf
    assert confs(dump(backend)) == kernel.services
    assert len(decoded) == 1001  # walked again; decoded only the changed one (signature)
    decoded.clear()
    assert confs(dump(backend)) == kernel.services  # and reused from then on
    assert decoded == []


def test_a_changed_timeout_is_decoded(kernel: Kernel) -> None:
    kernel.services[PROBES[7]] = ServiceConf(scheduler="rr", persistent=300)
    backend = backend_on(kernel)
    dump(backend)
    kernel.services[PROBES[7]] = ServiceConf(scheduler="rr", persistent=301)
    assert confs(dump(backend))[PROBES[7]].persistent == 301


@pytest.mark.parametrize("where", [0, 99, 100, 500, 1000])
def test_an_added_or_removed_service_is_seen(kernel: Kernel, where: int) -> None:
    backend = backend_on(kernel)
    dump(backend)
    key = list(kernel.services)[where]
    conf = kernel.services.pop(key)
    assert confs(dump(backend)) == kernel.services
    kernel.services[key] = conf
    assert confs(dump(backend)) == kernel.services
    kernel.services[ServiceKey.fwm(0x4C570000)] = ServiceConf(scheduler="rr")
    assert confs(dump(backend)) == kernel.services


@pytest.mark.parametrize("per", [1, 99, 1001])
def test_a_reply_split_otherwise_is_read_whole(kernel: Kernel, per: int) -> None:
    backend = backend_on(kernel)
    dump(backend)
    kernel.per = per  # other datagram sizes, as many records
    assert confs(dump(backend)) == kernel.services
    assert confs(dump(backend)) == kernel.services


def test_a_shorter_reply_is_not_waited_on(kernel: Kernel) -> None:
    """The last reply had 11 datagrams of records, this one has 10 whose sizes are the last
    reply's first 10: its 11th, DONE, differs and is read as what it is (Kernel.recv_into fails
    a read past the end of the reply)."""
    backend = backend_on(kernel)
    dump(backend)
    dump(backend)
    del kernel.services[PROBES[-1]]
    assert confs(dump(backend)) == kernel.services
    assert backend._layout is not None and len(backend._layout.datagrams) == 11


def test_a_message_of_another_seq_is_not_taken_for_ours(kernel: Kernel) -> None:
    backend = backend_on(kernel)
    dump(backend)
    # a late reply to an earlier request, as large as a record of ours: skipped, and the reply
    # is decoded, not reused (the datagrams differ)
    kernel.stale = message(record(ServiceKey.fwm(0x4C570000), ServiceConf(scheduler="rr")), 9999)
    kernel.per = 1001
    table = dump(backend)
    assert confs(table) == kernel.services
    assert ServiceKey.fwm(0x4C570000) not in table


def test_a_changed_seq_field_is_not_reused(kernel: Kernel, decoded: list[bytes]) -> None:
    """Every message must carry this request's seq: the same bytes with another seq are not
    this request's reply (and hold no DONE of it)."""
    backend = backend_on(kernel)
    table = dump(backend)  # known below, all of it: no destination is read
    real_send = kernel.send

    def answered_as_another(data: bytes) -> int:
        return real_send(data[:8] + struct.pack("=I", 12345) + data[12:])

    kernel.send = answered_as_another  # type: ignore[method-assign]
    decoded.clear()
    with pytest.raises(AssertionError, match="read past the end"):
        dump(backend, table)  # read on for a DONE of ours: the real socket would time out
    assert len(decoded) == 0


def test_the_same_known_objects_read_only_what_was_read(kernel: Kernel) -> None:
    backend = backend_on(kernel)
    table = dump(backend)
    known = {k: table[k] for k in PROBES}
    kernel.dest_dumps.clear()
    light = dump(backend, known)
    assert kernel.dest_dumps == [VIRTUAL]
    assert all(light[k] is table[k] for k in PROBES)
    assert light == table
    kernel.dest_dumps.clear()
    again = dump(backend, {k: light[k] for k in PROBES})  # a new dict of the same objects
    assert kernel.dest_dumps == [VIRTUAL]
    assert all(again[k] is table[k] for k in PROBES)
    assert list(again) == list(table)  # the kernel's order
    assert again[VIRTUAL] is not light[VIRTUAL]  # read again, a new object
    # what the backend remembers holds no services it read (a virtual's 1,000 destinations)
    assert backend._plan is not None
    assert all(
        s is not light[VIRTUAL] and s is not table[VIRTUAL] for s in backend._plan.table.values()
    )


def test_a_known_object_changed_or_replaced_is_judged_again(kernel: Kernel) -> None:
    backend = backend_on(kernel)
    table = dump(backend)
    known = {k: table[k] for k in PROBES}
    dump(backend, known)
    # the conf of one known service set anew in place: not what the kernel has, so read
    known[PROBES[3]].conf = ServiceConf(scheduler="wrr")
    kernel.dest_dumps.clear()
    light = dump(backend, dict(known))
    assert kernel.dest_dumps == [VIRTUAL, PROBES[3]]
    assert light[PROBES[3]].conf == ServiceConf(scheduler="rr")
    # a new object equal to the known one: taken as known, by comparison
    known[PROBES[3]] = Service(ServiceConf(scheduler="rr"), dict(table[PROBES[3]].dests))
    kernel.dest_dumps.clear()
    light = dump(backend, dict(known))
    assert kernel.dest_dumps == [VIRTUAL]
    assert light[PROBES[3]] is known[PROBES[3]]
    # a key fewer known: its dests are read
    del known[PROBES[4]]
    kernel.dest_dumps.clear()
    dump(backend, dict(known))
    assert kernel.dest_dumps == [VIRTUAL, PROBES[4]]


def test_the_remembered_reply_holds_no_copy_of_its_records(kernel: Kernel) -> None:
    backend = backend_on(kernel)
    dump(backend)
    assert backend._layout is not None and backend._layout.records == []
