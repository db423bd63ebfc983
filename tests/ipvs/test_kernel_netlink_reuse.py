"""The netlink backend's reuse of an unchanged service dump (NetlinkBackend._dump_records'
`changing`, tests/ipvs/test_netlink_reuse.py on the host) against a real kernel: the kernel's
replies to two dumps of an unchanged table compare equal, so the second decodes nothing; a
change made behind the backend's back (ipvsadm), one service among 1,001 with the record's
length unchanged, is read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from lvsmon.ipvs import netlink as netlink_module
from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.model import DestConf, DestKey, Forward, ServiceConf, ServiceKey
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import AddDest, AddService, Op
from tests.ipvs.test_kernel_netlink import apply_ok, ipvsadm, require_ipvs

pytestmark = pytest.mark.kernel

BASE = 0x4C560000
VIRTUAL = ServiceKey.inet("tcp", "10.0.0.1", 80)
PROBES = [ServiceKey.fwm(BASE + i) for i in range(1000)]


@pytest.fixture
async def nl() -> AsyncIterator[NetlinkBackend]:
    require_ipvs()
    ipvsadm("-C")
    backend = NetlinkBackend()
    ops: list[Op] = [AddService(VIRTUAL, ServiceConf(scheduler="wlc"))]
    for i, key in enumerate(PROBES):
        real = DestKey(f"10.0.{1 + i // 250}.{1 + i % 250}", 0)
        ops += [
            AddService(key, ServiceConf(scheduler="rr")),
            AddDest(key, real, DestConf(Forward.GATE, 1)),
        ]
    await apply_ok(backend, ops)
    yield backend
    await backend.close()
    ipvsadm("-C")


@pytest.fixture
def walked(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The service records walked one by one (the slow way); the dump's worker thread sees
    the module attribute too."""
    records: list[bytes] = []
    real_parts = codec.service_parts

    def counting(message: bytes) -> Any:
        records.append(message)
        return real_parts(message)

    monkeypatch.setattr(netlink_module, "service_parts", counting)
    return records


async def test_an_unchanged_table_is_not_decoded_again(
    nl: NetlinkBackend, walked: list[bytes]
) -> None:
    table = await nl.dump()
    assert len(table) == 1001 and len(walked) == 1001
    known = {k: table[k] for k in PROBES}
    walked.clear()
    light = await nl.dump_known(known)
    assert walked == []  # the kernel's reply was the same, datagram by datagram
    assert light == table
    assert all(light[k] is known[k] for k in PROBES)
    light = await nl.dump_known({k: light[k] for k in PROBES})
    assert walked == [] and light == table


@pytest.mark.parametrize(
    ("edit", "conf"),
    [
        (["-s", "lc"], ServiceConf(scheduler="lc")),  # as long as "rr"
        (["-s", "sh", "-b", "sh-port"], ServiceConf("sh", frozenset({"sh-port"}))),  # a flag
        (["-s", "rr", "-p", "300"], ServiceConf(scheduler="rr", persistent=300)),
    ],
)
async def test_a_change_behind_its_back_is_read(
    nl: NetlinkBackend, walked: list[bytes], edit: list[str], conf: ServiceConf
) -> None:
    table = await nl.dump()
    known = {k: table[k] for k in PROBES}
    await nl.dump_known(known)
    ipvsadm("-E", "-f", str(BASE + 500), *edit)
    walked.clear()
    fresh = await nl.dump_known(known)
    assert len(walked) == 1001
    assert fresh[PROBES[500]].conf == conf
    assert fresh[PROBES[500]].dests == table[PROBES[500]].dests  # read, not known
    if conf.persistent is not None:
        ipvsadm("-E", "-f", str(BASE + 500), "-s", "rr", "-p", "301")
        fresh = await nl.dump_known(known)
        assert fresh[PROBES[500]].conf == ServiceConf(scheduler="rr", persistent=301)


async def test_a_service_deleted_or_added_behind_its_back_is_read(nl: NetlinkBackend) -> None:
    table = await nl.dump()
    known = {k: table[k] for k in PROBES}
    await nl.dump_known(known)
    ipvsadm("-D", "-f", str(BASE + 999))
    fresh = await nl.dump_known(known)
    assert PROBES[999] not in fresh and len(fresh) == 1000
    del known[PROBES[999]]
    ipvsadm("-A", "-f", str(BASE + 999), "-s", "rr")
    fresh = await nl.dump_known(known)
    assert fresh[PROBES[999]].dests == {}


async def test_a_destination_change_of_a_service_read_is_read(nl: NetlinkBackend) -> None:
    """The virtual is not known: its destinations are read at every dump, reused or not."""
    table = await nl.dump()
    known = {k: table[k] for k in PROBES}
    await nl.dump_known(known)
    await nl.dump_known(known)
    ipvsadm("-a", "-t", "10.0.0.1:80", "-r", "10.0.9.9:80", "-g", "-w", "3")
    fresh = await nl.dump_known(known)
    assert fresh[VIRTUAL].dests == {DestKey("10.0.9.9", 80): DestConf(Forward.GATE, 3)}
    ipvsadm("-e", "-t", "10.0.0.1:80", "-r", "10.0.9.9:80", "-g", "-w", "4")
    fresh = await nl.dump_known(known)
    assert fresh[VIRTUAL].dests == {DestKey("10.0.9.9", 80): DestConf(Forward.GATE, 4)}
