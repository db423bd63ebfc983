"""A resync decodes only the service records it has not seen (codec.service_signature): a
record's bytes less its counters are the same in every dump of an unchanged service, and
differ with anything `service_from` reads. At 1,000 probe services of checkpath=vip, decoding
their unchanged records every 5 s was most of a resync's work (bench/README.md,
checkpath_cost)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.model import ServiceConf, ServiceKey
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import AddService

_NESTED = 0x8000
PROBE = ServiceKey.fwm(0x4C560000)
PROD = ServiceKey.inet("tcp", "192.0.2.1", 80)


def counters(kind: int, conns: int, wide: bool) -> bytes:
    """A service's counters as the kernel nests them (IPVS_SVC_ATTR_STATS/STATS64)."""
    fmt = "=Q" if wide else "=I"
    return codec._nla(kind | _NESTED, b"".join(
        codec._nla(i, struct.pack(fmt, conns * i)) for i in range(1, 11)
    ))  # fmt: skip


def record(key: ServiceKey, conf: ServiceConf, conns: int = 0) -> bytes:
    """A reply to dump_services as the kernel builds it: the service's settings, then its
    counters."""
    body = codec.encode_op(AddService(key, conf)).body
    size, kind = codec.NLA_HDR.unpack_from(body, codec.GENL_HDR.size)
    inner = body[codec.GENL_HDR.size + codec.NLA_HDR.size : codec.GENL_HDR.size + size]
    inner += counters(codec.SVC_STATS, conns, False) + counters(codec.SVC_STATS64, conns, True)
    header = codec.GENL_HDR.pack(codec.CMD_NEW_SERVICE, codec.GENL_VERSION, 0)
    return header + codec._nla(kind, inner)


def test_counters_do_not_change_the_signature() -> None:
    conf = ServiceConf(scheduler="rr")
    quiet, busy = record(PROBE, conf, 0), record(PROBE, conf, 12345)
    assert quiet != busy
    assert codec.service_signature(quiet) == codec.service_signature(busy)
    assert codec.service_from(busy) == (PROBE, conf)


@pytest.mark.parametrize(
    ("key", "conf"),
    [
        (ServiceKey.fwm(0x4C560001), ServiceConf(scheduler="rr")),  # another probe service
        (PROBE, ServiceConf(scheduler="wrr")),
        (PROBE, ServiceConf(scheduler="rr", persistent=300)),
        (PROBE, ServiceConf(scheduler="sh", sched_flags=frozenset({"sh-port"}))),
        (ServiceKey.fwm(0x4C560000, "inet6"), ServiceConf(scheduler="rr")),
        (PROD, ServiceConf(scheduler="rr")),
    ],
)
def test_anything_decoded_changes_the_signature(key: ServiceKey, conf: ServiceConf) -> None:
    base = codec.service_signature(record(PROBE, ServiceConf(scheduler="rr")))
    assert codec.service_signature(record(key, conf, 7)) != base


def test_a_record_without_a_service_has_an_empty_signature() -> None:
    header = codec.GENL_HDR.pack(codec.CMD_NEW_SERVICE, codec.GENL_VERSION, 0)
    assert codec.service_signature(header) == b""
    assert codec.service_signature(header + codec._nla(7, b"\0" * 4)) == b""


def test_a_dump_decodes_only_records_it_has_not_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    confs = {PROBE: ServiceConf(scheduler="rr"), PROD: ServiceConf(scheduler="wlc")}
    conns = [0]

    def records(_family: int, request: codec.Request, *_: object) -> list[bytes]:
        if request.body == codec.dump_services().body:
            conns[0] += 1  # the counters move between dumps
            return [record(k, c, conns[0]) for k, c in confs.items()]
        return []  # no destinations

    decoded: list[bytes] = []
    real_from = codec.service_from

    def counting(message: bytes) -> Any:
        decoded.append(message)
        return real_from(message)

    monkeypatch.setattr("lvsmon.ipvs.netlink.service_from", counting)
    backend = NetlinkBackend.__new__(NetlinkBackend)
    backend._written = {}
    backend._decoded = {}
    backend._dump_records = records  # type: ignore[method-assign,assignment]
    sock: Any = type("Sock", (), {"prid": 0x20})()

    def dump() -> dict[ServiceKey, ServiceConf]:
        table = asyncio.run(backend._dump_with(sock))
        return {k: s.conf for k, s in table.items()}

    assert dump() == confs
    assert len(decoded) == 2
    assert dump() == confs  # unchanged but for the counters: nothing decoded
    assert len(decoded) == 2
    confs[PROBE] = ServiceConf(scheduler="wrr")  # changed by hand: decoded, and seen so
    assert dump() == confs
    assert len(decoded) == 3
    del confs[PROD]  # deleted by hand: gone from the dump, and from what is remembered
    assert dump() == confs
    assert list(backend._decoded.values()) == [(PROBE, confs[PROBE])]
