from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey
from tests.helpers import webs  # noqa: F401  (a fixture, found by name)


@pytest.fixture
def rundir(tmp_path: Path) -> Path:
    return tmp_path


VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)


class Running:
    def __init__(self, daemon: Daemon, task: asyncio.Task[int]) -> None:
        self.daemon, self.task = daemon, task

    def weights(self) -> dict[int, int]:
        table = self.daemon.engine.actual or {}
        return {d.port: c.weight for d, c in table[VKEY].dests.items()} if VKEY in table else {}


async def start(path: Path, backend: MemoryBackend | None = None) -> Running:
    daemon = Daemon(load_config(str(path)), backend or MemoryBackend())
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    return Running(daemon, task)


@pytest.fixture
async def stopper() -> AsyncIterator[list[Running]]:
    running: list[Running] = []
    yield running
    for r in running:
        r.daemon.request_stop()
        await r.task
