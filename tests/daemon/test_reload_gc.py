"""Issue 22: a reload collects garbage in full at most every RELOAD_COLLECT_EVERY_S (a walk of
the whole heap, 0.4 s at 37,000 reals, was in every reload's path); the others freeze only."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import lvsmon.daemon.daemon as daemon_module
from lvsmon.config import parse_config
from lvsmon.daemon.daemon import RELOAD_COLLECT_EVERY_S, Daemon
from lvsmon.ipvs.memory import MemoryBackend

TEXT = "virtual=10.0.0.1:80\n\treal=10.0.0.5:80 masq\n\tchecktype=on\n"


def test_reloads_collect_at_most_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    collects: list[bool] = []
    monkeypatch.setattr(daemon_module, "settle_memory", lambda *, collect: collects.append(collect))

    async def run() -> None:
        config = parse_config(TEXT, "x.cf")
        d = Daemon(config, MemoryBackend())
        await d.events.start()
        await d.engine.start()
        try:
            for digest in ("a", "b"):
                assert await d._apply_locked(dataclasses.replace(config, digest=digest))
            d._collected_at -= RELOAD_COLLECT_EVERY_S  # the interval has passed
            assert await d._apply_locked(dataclasses.replace(config, digest="c"))
            assert await d._apply_locked(dataclasses.replace(config, digest="d"))
        finally:
            await d.engine.stop(clean=False)
            await d.events.stop()

    asyncio.run(run())
    assert collects == [False, False, True, False]
