"""NetlinkBackend.dump_known (ipvs/backend.py KnownDump) on a stand-in for the kernel's replies:
a known service whose record is unchanged is the caller's own object, its destinations not
asked for; a known one whose record changed, and every other service, are read in full."""

from __future__ import annotations

import asyncio
from typing import Any

from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Service, ServiceConf, ServiceKey, Table
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import AddDest, AddService
from tests.ipvs.test_netlink_codec import read, reply

PROD = ServiceKey.inet("tcp", "192.0.2.1", 80)
PROBE = ServiceKey.fwm(0x4C560000)
OTHER = ServiceKey.fwm(0x4C560001)


def conf(scheduler: str = "wlc") -> ServiceConf:
    return ServiceConf(scheduler=scheduler)


KERNEL: Table = {
    PROD: Service(conf(), {DestKey("192.0.2.11", 80): DestConf(Forward.GATE, 1)}),
    PROBE: Service(conf("rr"), {DestKey("192.0.2.11", 0): DestConf(Forward.GATE, 1)}),
    OTHER: Service(conf("rr"), {DestKey("192.0.2.12", 0): DestConf(Forward.GATE, 1)}),
}


class Kernel:
    """Answers the backend's dump requests from KERNEL, counting the destination reads."""

    def __init__(self) -> None:
        self.dests_asked: list[ServiceKey] = []

    def records(self, _family: int, request: codec.Request, *_: object) -> list[bytes]:
        msg = read(request)
        if msg["cmd"] == codec.CMD_GET_SERVICE:
            out = []
            for key, svc in KERNEL.items():
                nla = read(codec.encode_op(AddService(key, svc.conf))).get_attr(
                    "IPVS_CMD_ATTR_SERVICE"
                )
                out.append(reply(codec.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nla)]))
            return out
        key = next(k for k in KERNEL if request.body == codec.dump_dests(k).body)
        self.dests_asked.append(key)
        out = []
        for dest, dconf in KERNEL[key].dests.items():
            nla = read(codec.encode_op(AddDest(key, dest, dconf))).get_attr("IPVS_CMD_ATTR_DEST")
            out.append(reply(codec.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", nla)]))
        return out


def dump(known: Table | None) -> tuple[Table, list[ServiceKey]]:
    backend = NetlinkBackend.__new__(NetlinkBackend)
    backend._written = {}
    backend._decoded = {}
    kernel = Kernel()
    backend._dump_records = kernel.records  # type: ignore[method-assign,assignment]
    sock: Any = type("Sock", (), {"prid": 0x20})()
    return asyncio.run(backend._dump_with(sock, known)), kernel.dests_asked


def test_without_known_every_service_is_read() -> None:
    table, asked = dump(None)
    assert asked == [PROD, PROBE, OTHER]
    assert table == KERNEL


def test_a_known_unchanged_service_is_taken_as_known() -> None:
    mine = Service(conf("rr"), {DestKey("192.0.2.11", 0): DestConf(Forward.GATE, 1)})
    changed = Service(conf("wrr"), {DestKey("192.0.2.12", 0): DestConf(Forward.GATE, 1)})
    table, asked = dump({PROBE: mine, OTHER: changed})
    assert asked == [PROD, OTHER]  # OTHER's record is not what the caller knew: read
    assert table[PROBE] is mine
    assert table == KERNEL
