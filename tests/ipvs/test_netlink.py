"""The netlink backend on a kernel without IPVS (the host here): typed errors, no traceback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from lvsmon.ipvs.errors import BackendError, ErrorKind
from lvsmon.ipvs.model import DestConf, DestKey, ServiceConf, ServiceKey
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import AddDest, AddService, Op

pytestmark = pytest.mark.skipif(
    os.path.exists("/proc/net/ip_vs"), reason="this kernel has IPVS; the VM tests cover it"
)

SVC = ServiceKey.inet("tcp", "192.0.2.1", 80)


@pytest.fixture
async def backend() -> AsyncIterator[NetlinkBackend]:
    b = NetlinkBackend()
    yield b
    await b.close()


async def test_dump_without_ipvs_is_a_typed_error(backend: NetlinkBackend) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.dump()
    assert caught.value.error.kind is ErrorKind.NO_IPVS
    assert "IPVS" in caught.value.error.message


async def test_apply_without_ipvs_reports_each_op(backend: NetlinkBackend) -> None:
    ops: list[Op] = [
        AddService(SVC, ServiceConf("rr")),
        AddService(SVC, ServiceConf("no-such-scheduler")),
        AddDest(SVC, DestKey.of("192.0.2.10", 80), DestConf(weight=-1)),
    ]
    results = await backend.apply(ops)
    assert [r.op for r in results] == ops
    assert results[0].error is not None and results[0].error.kind is ErrorKind.NO_IPVS
    # What the kernel would refuse is refused before the kernel is asked.
    assert results[1].error is not None and results[1].error.kind is ErrorKind.INVALID
    assert results[2].error is not None and results[2].error.kind is ErrorKind.INVALID


async def test_apply_nothing_is_nothing(backend: NetlinkBackend) -> None:
    assert await backend.apply([]) == []


async def test_after_close() -> None:
    b = NetlinkBackend()
    await b.close()
    await b.close()  # twice is fine
    with pytest.raises(BackendError) as caught:
        await b.dump()
    assert caught.value.error.kind is ErrorKind.OTHER
    [result] = await b.apply([AddService(SVC, ServiceConf())])
    assert result.error is not None and "closed" in result.error.message
