"""A pass's ops reach the backend in chunks of APPLY_CHUNK (issue 22): a start-up's first full
pass at 37,298 destinations held every op's result, the backend's copies and two events an op
at once, and the allocator kept what that peak touched for the daemon's life. Chunked, the
pass ends where one call would have: the same table, the same events, failures counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import lvsmon.engine.reconciler as reconciler_module
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import EventBus, KernelOp
from lvsmon.engine.health import ADOPTED_UP
from lvsmon.ipvs.errors import ErrorKind, OpError, OpResult
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.ops import Op

from .test_reload_cost import pool

CHUNK = 7


class CountingBackend(MemoryBackend):
    """The memory backend, each apply's size kept; `fail_at` (op indexes over the whole pass)
    fail, `raise_on` (an apply call's number) raises."""

    def __init__(self, fail_at: frozenset[int] = frozenset(), raise_on: int = 0) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.fail_at, self.raise_on, self._seen = fail_at, raise_on, 0

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        self.sizes.append(len(ops))
        if len(self.sizes) == self.raise_on:
            raise RuntimeError("backend bug")
        first, self._seen = self._seen, self._seen + len(ops)
        bad = {i - first for i in self.fail_at if first <= i < self._seen}
        done = iter(await super().apply([op for i, op in enumerate(ops) if i not in bad]))
        error = OpError(ErrorKind.OTHER, "injected")
        return [OpResult(op, error) if i in bad else next(done) for i, op in enumerate(ops)]


async def _first_pass(backend: MemoryBackend) -> tuple[Engine, bool, list[object]]:
    bus = EventBus()
    seen: list[object] = []
    bus.subscribe("all", seen.append, kinds=(KernelOp,), maxlen=10_000)
    engine = Engine(pool(virtuals=3, reals=10), backend, events=bus)  # 3 services + 30 dests
    for ref in engine.plan.failurecount:
        engine.health[ref] = ADOPTED_UP
    await bus.start()
    engine.reconciler.actual = {}
    ok = await engine.reconciler.reconcile()
    await bus.stop()
    return engine, ok, seen


def test_a_pass_reaches_the_backend_in_chunks_and_ends_as_one_call_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = CountingBackend()
    _, ok, seen = asyncio.run(_first_pass(whole))
    assert ok and whole.sizes == [33]
    monkeypatch.setattr(reconciler_module, "APPLY_CHUNK", CHUNK)
    chunked = CountingBackend()
    engine2, ok2, seen2 = asyncio.run(_first_pass(chunked))
    assert ok2 and chunked.sizes == [7, 7, 7, 7, 5]
    assert chunked.table == whole.table == engine2.reconciler.actual
    assert [e.op for e in seen2] == [e.op for e in seen]  # type: ignore[attr-defined]
    assert engine2.reconciler.stats.ops_applied == 33 and not engine2.reconciler._stale


def test_a_failed_op_in_an_early_chunk_fails_the_pass_and_the_others_still_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler_module, "APPLY_CHUNK", CHUNK)
    backend = CountingBackend(fail_at=frozenset({9}))  # in the second chunk of five
    engine, ok, _ = asyncio.run(_first_pass(backend))
    assert not ok and backend.sizes == [7, 7, 7, 7, 5]
    stats = engine.reconciler.stats
    assert (stats.ops_applied, stats.ops_failed) == (32, 1)
    # a later chunk's success does not hide the failure: the next pass dumps first
    assert engine.reconciler._stale and engine.reconciler.actual == backend.table


def test_a_backend_that_raises_mid_pass_stops_it_and_drops_the_view(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reconciler_module, "APPLY_CHUNK", CHUNK)
    backend = CountingBackend(raise_on=2)
    engine, ok, _ = asyncio.run(_first_pass(backend))
    assert not ok and backend.sizes == [7, 7]  # nothing after the call that raised
    assert engine.reconciler.actual is None  # what it applied is unknown: dump next
    assert engine.reconciler.stats.ops_failed == 7
