"""The reconciler converges whatever fails: a backend that raises, ops refused at start or on
reload, a removed virtual whose delete fails, and changes made behind lvsmon's back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.config import Config
from lvsmon.engine.engine import Engine
from lvsmon.engine.reconciler import Desired
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Service, ServiceConf, ServiceKey, Table
from lvsmon.ipvs.ops import AddService, DeleteService, EditDest
from tests.helpers import wait_for

from .conftest import cfg
from .faulty import FaultyBackend

V1 = ServiceKey.inet("tcp", "127.0.0.100", 80)
V2 = ServiceKey.inet("tcp", "127.0.0.101", 80)


def two_virtuals(weight: int = 1, second: bool = True) -> Config:
    text = (
        "checkinterval=1\nchecktimeout=1\nquiescent=yes\n"
        f"virtual=127.0.0.100:80\n\treal=127.0.0.1:8001 masq {weight}\n"
        "\treal=127.0.0.1:8002 masq\n\tservice=http\n"
    )
    if second:
        text += "virtual=127.0.0.101:80\n\treal=127.0.0.1:8003 masq\n\tservice=http\n"
    return cfg(text)


class Pool:
    """Scripted checks: each real answers as `up` says."""

    def __init__(self) -> None:
        self.up = {8001: True, 8002: True, 8003: True}

    async def check(self, spec: CheckSpec) -> CheckResult:
        ok = self.up.get(spec.port, False)
        return CheckResult(ok, "scripted ok" if ok else "scripted failure")


def weights(backend: FaultyBackend, key: ServiceKey = V1) -> dict[int, int]:
    service = backend.table.get(key)
    return {d.port: c.weight for d, c in service.dests.items()} if service else {}


def converged(engine: Engine, backend: FaultyBackend) -> bool:
    return not diff(engine.desired(), backend.table, engine.managed)


@pytest.fixture
async def running() -> AsyncIterator[list[Engine]]:
    engines: list[Engine] = []
    yield engines
    for e in engines:
        await e.stop(clean=False)


async def started(
    config: Config, backend: FaultyBackend, pool: Pool, engines: list[Engine], resync_s: float = 5
) -> Engine:
    engine = Engine(config, backend, run_check=pool.check, resync_s=resync_s)
    engines.append(engine)
    await engine.start()
    await asyncio.wait_for(engine.wait_programmed(), 10)
    return engine


async def test_a_backend_that_raises_is_logged_and_retried(
    running: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(), backend, pool, running)
    assert weights(backend) == {8001: 1, 8002: 1}
    backend.raise_share = 1.0  # every call raises from now on
    pool.up[8001] = False
    await wait_for(lambda: backend.faults >= 2)  # the first attempt and at least one retry
    assert weights(backend) == {8001: 1, 8002: 1}  # nothing could be applied
    assert all(not t.done() for t in engine._loops)  # and nothing stopped
    assert "injected backend crash" in caplog.text
    backend.raise_share = 0.0
    await wait_for(lambda: weights(backend) == {8001: 0, 8002: 1}, within=15)
    assert engine.crashed is None


async def test_an_op_refused_at_start_is_retried(running: list[Engine]) -> None:
    backend, pool = FaultyBackend(), Pool()
    backend.refuse = lambda op: isinstance(op, AddService) and op.service == V2
    backend.refusals_left = 3
    engine = await started(two_virtuals(), backend, pool, running)
    await wait_for(lambda: V2 in backend.table, within=15)  # backoff 0.5, 1, 2 s
    assert converged(engine, backend)
    assert engine.stats.ops_failed >= 3  # each refusal, and the ops that depended on it


async def test_a_reload_op_refused_is_retried(running: list[Engine]) -> None:
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(weight=1), backend, pool, running)
    backend.refuse = lambda op: isinstance(op, EditDest)
    backend.refusals_left = 1
    await engine.reload(two_virtuals(weight=5))
    assert weights(backend)[8001] == 1  # refused once...
    await wait_for(lambda: weights(backend)[8001] == 5)  # ...then retried, no health change needed


async def test_a_removed_virtual_stays_owned_until_its_delete_succeeded(
    running: list[Engine],
) -> None:
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(), backend, pool, running)
    backend.refuse = lambda op: isinstance(op, DeleteService)
    backend.refusals_left = 2
    await engine.reload(two_virtuals(second=False))
    assert V2 in backend.table and V2 in engine.managed
    await wait_for(lambda: V2 not in backend.table, within=15)
    assert V2 not in engine.managed  # forgotten once gone
    assert converged(engine, backend)


async def test_resync_repairs_what_changed_behind_our_back(
    running: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(), backend, pool, running, resync_s=0.3)
    programmed = await backend.dump()
    foreign = ServiceKey.inet("tcp", "127.0.0.200", 80)

    backend.table.clear()  # ipvsadm -C
    backend.table[foreign] = Service(ServiceConf(), {DestKey("127.0.0.9", 80): DestConf()})
    await wait_for(lambda: all(k in backend.table for k in programmed), within=5)
    assert {k: backend.table[k] for k in programmed} == programmed
    assert foreign in backend.table  # not ours: untouched

    # a real edited by hand, another deleted by hand
    backend.edit_dest(V1, DestKey("127.0.0.1", 8001), DestConf(Forward.MASQ, 7))
    backend.edit_dest(V1, DestKey("127.0.0.1", 8002), None)
    await wait_for(lambda: weights(backend) == {8001: 1, 8002: 1}, within=5)
    assert engine.stats.drift_repairs >= 4
    assert "IPVS table drift" in caplog.text and "the service was deleted" in caplog.text
    assert "8001 weight 1 -> 7" in caplog.text


async def test_a_quiesced_real_deleted_by_hand_stays_deleted_without_readdquiescent(
    running: list[Engine],
) -> None:
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(), backend, pool, running, resync_s=0.2)
    pool.up[8002] = False
    await wait_for(lambda: weights(backend).get(8002) == 0)
    # ldirectord's way to end persistent sessions: delete the quiesced real; it stays away
    backend.edit_dest(V1, DestKey("127.0.0.1", 8002), None)
    resyncs = engine.stats.resyncs
    await wait_for(lambda: engine.stats.resyncs >= resyncs + 2)
    assert weights(backend) == {8001: 1}


async def test_drift_found_by_a_failed_op_is_reported_as_drift(
    running: list[Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """`ipvsadm -C`, then a health change before any resync: the op fails on the missing
    service, the retry dumps, and the difference is logged and repaired as drift."""
    caplog.set_level(logging.INFO, logger="lvsmon")
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(), backend, pool, running, resync_s=3600)
    programmed = await backend.dump()
    backend.table.clear()
    pool.up[8002] = False
    job = engine.plan.job_of[next(r for r in engine.plan.job_of if r.port == 8002)]
    await engine.run_once(job)
    await wait_for(lambda: V1 in backend.table and V2 in backend.table, within=10)
    # the log is an event subscriber with its own task: its lines follow the repair
    await wait_for(lambda: "Repaired drift: Added virtual server" in caplog.text, within=10)
    # down and missing, without readdquiescent: stays missing (ldirectord's rule)
    assert weights(backend) == {8001: 1}
    assert backend.table[V2] == programmed[V2]
    assert "IPVS table drift on 127.0.0.100:80: the service was deleted" in caplog.text
    assert "Repaired drift: Added virtual server: 127.0.0.101:80" in caplog.text
    assert engine.stats.drift_repairs >= 2


async def test_a_pool_that_never_stops_flapping_does_not_starve_the_resync(
    running: list[Engine],
) -> None:
    backend, pool = FaultyBackend(), Pool()
    engine = await started(two_virtuals(), backend, pool, running, resync_s=0.3)
    # results land during every pass: the reconciler finds itself dirty again each time
    desired_for = engine.desired_for

    def dirtying(actual: Table, keys: Collection[ServiceKey] | None = None) -> Desired:
        engine.reconciler.mark_dirty()
        return desired_for(actual, keys)

    engine.desired_for = dirtying  # type: ignore[method-assign]
    before = engine.stats.resyncs
    await asyncio.sleep(1.5)
    engine.desired_for = desired_for  # type: ignore[method-assign]
    assert engine.stats.resyncs >= before + 3
