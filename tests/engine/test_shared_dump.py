"""The memory backend shares its Service objects with the reconciler (issue 22 goal 5): after a
resync the reconciler's view is the backend's own objects, not a second copy of every
destination; a change made behind the reconciler's back (set_connections, edit_dest, the
faulty backend's drift) replaces a Service instead of editing it, so that drift is still seen
and repaired, and an earlier dump keeps what it showed."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.engine import Engine
from lvsmon.engine.reconciler import Desired
from lvsmon.ipvs.backend import shares_dump
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.memory_faults import FaultyMemoryBackend
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    DestStats,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)

from .conftest import cfg

V1 = ServiceKey.inet("tcp", "127.0.0.100", 80)
V2 = ServiceKey.inet("tcp", "127.0.0.101", 80)
R1, R2 = DestKey("127.0.0.1", 8001), DestKey("127.0.0.1", 8002)
CONFIG = (
    "checkinterval=1\nchecktimeout=1\nquiescent=yes\n"
    "virtual=127.0.0.100:80\n\treal=127.0.0.1:8001 masq\n\treal=127.0.0.1:8002 masq\n"
    "\tservice=http\n"
    "virtual=127.0.0.101:80\n\treal=127.0.0.1:8003 masq\n\tservice=http\n"
)


async def up(spec: CheckSpec) -> CheckResult:
    return CheckResult(True, "scripted ok")


def snapshot(table: Table) -> dict[ServiceKey, tuple[object, ...]]:
    """What each Service holds, by value, counters included (a Service's equality leaves them
    out)."""
    return {k: (s.conf, dict(s.dests), dict(s.stats)) for k, s in table.items()}


async def test_after_a_resync_the_reconciler_holds_the_backends_own_objects() -> None:
    backend = MemoryBackend()
    assert shares_dump(backend)
    engine = Engine(cfg(CONFIG), backend, run_check=up, resync_s=3600)
    await engine.start()
    await asyncio.wait_for(engine.wait_programmed(), 10)
    try:
        await engine.reconciler.resync()
        actual = engine.reconciler.actual
        assert actual is not None and actual is not backend.table
        assert set(actual) == {V1, V2} == set(backend.table)
        assert all(actual[k] is backend.table[k] for k in actual)
    finally:
        await engine.stop(clean=True)


async def test_drift_through_the_helpers_is_seen_and_repaired_with_shared_objects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    backend = MemoryBackend()
    engine = Engine(cfg(CONFIG), backend, run_check=up, resync_s=3600)
    await engine.start()
    await asyncio.wait_for(engine.wait_programmed(), 10)
    try:
        await engine.reconciler.resync()  # the view is the backend's objects from here on
        await engine.reconciler.resync()  # and a resync that finds them so takes the shortcut
        shared = engine.reconciler.actual
        assert shared is not None
        before = snapshot(shared)
        repairs = engine.stats.drift_repairs

        backend.edit_dest(V1, R1, DestConf(Forward.MASQ, 7))  # a weight edited by hand
        backend.edit_dest(V1, R2, None)  # a real deleted by hand
        backend.set_connections(V2, DestKey("127.0.0.1", 8003), 3, 4)
        assert snapshot(shared) == before  # what the reconciler saw is what it saw

        await engine.reconciler.resync()
        assert {d: c.weight for d, c in backend.table[V1].dests.items()} == {R1: 1, R2: 1}
        assert engine.stats.drift_repairs - repairs == 2
        assert "IPVS table drift on 127.0.0.100:80" in caplog.text
        assert "8001 weight 1 -> 7" in caplog.text and "8002 deleted" in caplog.text
        after = engine.reconciler.actual
        assert after is not None
        # the counters are the backend's, on its (new) object, which the reconciler now holds
        assert after[V2] is backend.table[V2]
        assert after[V2].stats[DestKey("127.0.0.1", 8003)] == DestStats(3, 4)
    finally:
        await engine.stop(clean=True)


async def test_the_helpers_replace_a_service_and_leave_a_dumped_one_alone() -> None:
    backend = MemoryBackend({V1: Service(ServiceConf("rr"), {R1: DestConf(), R2: DestConf()})})
    dumped = await backend.dump()
    kept = snapshot(dumped)
    backend.set_connections(V1, R1, 5)
    backend.edit_dest(V1, R2, DestConf(weight=3))
    assert backend.table[V1] is not dumped[V1]
    assert backend.table[V1].dests == {R1: DestConf(), R2: DestConf(weight=3)}
    assert backend.table[V1].stats == {R1: DestStats(5, 0)}
    backend.edit_dest(V1, R1, None)  # its counters go with it
    assert backend.table[V1].dests == {R2: DestConf(weight=3)} and backend.table[V1].stats == {}
    assert snapshot(dumped) == kept
    with pytest.raises(KeyError):
        backend.edit_dest(V2, R1, DestConf())


async def test_the_faulty_backends_drift_never_edits_a_published_service() -> None:
    table = {
        ServiceKey.inet("tcp", f"127.0.0.{100 + i}", 80): Service(
            ServiceConf(), {DestKey(f"127.0.0.{j}", 80): DestConf(Forward.MASQ) for j in (1, 2)}
        )
        for i in range(4)
    }
    backend = FaultyMemoryBackend(table, seed=3)
    for _ in range(60):  # every kind of drift, some many times
        dumped = await backend.dump()
        kept = copy.deepcopy(snapshot(dumped))
        if backend.drift() is None:
            break
        assert snapshot(dumped) == kept
    assert backend.drifts_injected > 0


async def test_the_resync_after_an_apply_compares_what_it_touched_and_recomputes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an apply the reconciler holds its own copies of the services the apply touched and
    the backend's objects for the rest: the next resync compares those few and, the kernel
    being what the pass left, takes the shortcut (no desired table, no diff of every real)."""
    backend = MemoryBackend()
    engine = Engine(cfg(CONFIG), backend, run_check=up, resync_s=3600)
    await engine.start()
    await asyncio.wait_for(engine.wait_programmed(), 10)
    try:
        await engine.reconciler.resync()
        engine.reconciler._resyncs = 0  # away from the every-FULL_EVERY-th full pass
        await engine.reconciler.reconcile()  # nothing to do: no apply
        mine = engine.reconciler.actual
        assert mine is not None
        # an apply's result as the reconciler keeps it: a copy of its own for V1
        engine.reconciler.actual = {**mine, V1: copy.deepcopy(mine[V1])}
        computed: list[object] = []
        desired_for = engine.desired_for

        def counted(*args: Any, **kwargs: Any) -> Desired:
            computed.append(args)
            return desired_for(*args, **kwargs)

        monkeypatch.setattr(engine, "desired_for", counted)
        engine.reconciler._dirty.clear()  # as the loop does once its pass is done
        assert await engine.reconciler.resync()
        assert computed == []
        after = engine.reconciler.actual
        assert after is not None and after[V1] is backend.table[V1]
    finally:
        await engine.stop(clean=True)
