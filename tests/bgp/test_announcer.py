"""engine/bgp.py in process: the memory backend, scripted checks and a recording speaker.
Nothing before the first round; withdrawn when the pool fails (the fallback not counted);
hold-down; a reload that moves the reals changes nothing; drift repaired; a failing speaker
retried; the graceful stop (GRACEFUL_SHUTDOWN and the worst MED, then withdrawn)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.config import parse_config
from lvsmon.engine.bgp import Announcer
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import Event, EventBus, RouteChanged
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.routes.kernel import RouteError
from tests.helpers import wait_for


class Recorder:
    name = "bird"

    def __init__(self) -> None:
        self.routes: dict[str, int] = {"192.0.2.99": 5}  # a previous run's
        self.log: list[tuple[str, str, int | None, tuple[str, ...]]] = []
        self.fail = 0

    async def start(self) -> list[str]:
        stale = [f"{v}/32" for v in self.routes]
        self.routes.clear()
        return stale

    async def announce(self, vip: str, med: int, communities: tuple[str, ...]) -> None:
        if self.fail:
            self.fail -= 1
            raise RouteError("netlink: refused")
        self.routes[vip] = med
        self.log.append(("announce", vip, med, communities))

    async def withdraw(self, vip: str) -> None:
        self.routes.pop(vip, None)
        self.log.append(("withdraw", vip, None, ()))

    async def present(self) -> dict[str, int] | None:
        return dict(self.routes)

    async def stop(self) -> None:
        self.routes.clear()


class Scripted:
    def __init__(self) -> None:
        self.up: dict[int, bool] = {8001: True, 8002: True, 8003: True}
        self.gate = asyncio.Event()
        self.gate.set()

    async def check(self, spec: CheckSpec) -> CheckResult:
        await self.gate.wait()
        ok = self.up.get(spec.port, True)
        return CheckResult(ok, "ok" if ok else "refused")


CONFIG = """\
checkinterval=1
checktimeout=1
failurecount=1
bgp=bird
bgpholddown=1
bgpdrain=1
virtual=127.0.0.100:80
\treal=127.0.0.1:8001 masq
\treal=127.0.0.1:8002 masq
\tfallback=127.0.0.1:9000 masq
\tservice=http
\tbgpmed=100
"""

MOVED = CONFIG.replace("8002", "8003")


async def running(
    config: str = CONFIG, drained_path: str | None = None
) -> tuple[Engine, Announcer, Recorder, Scripted, list[Event]]:
    pool = Scripted()
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe("test", events.append, kinds=(RouteChanged,))
    engine = Engine(parse_config(config, "t.cf"), MemoryBackend(), run_check=pool.check, events=bus)
    speaker = Recorder()
    announcer = Announcer(engine, speaker, bus, resync_s=0.3, drained_path=drained_path)
    await bus.start()
    return engine, announcer, speaker, pool, events


async def test_announce_withdraw_holddown_and_graceful_stop() -> None:
    engine, announcer, speaker, pool, events = await running()
    pool.gate.clear()  # the first round has not ended
    await engine.start()
    await announcer.start()
    assert speaker.routes == {}  # the stale route is gone, nothing new before the first round
    await asyncio.sleep(0.3)
    assert speaker.log == []
    assert announcer.status()[0]["reason"] == "waiting for the first round of checks"
    pool.gate.set()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    st = announcer.status()[0]
    assert st["announced"] and st["med"] == 100 and st["reason"].endswith("2 of 2 reals healthy")

    # every real fails: withdrawn although the fallback serves
    pool.up[8001] = pool.up[8002] = False
    await wait_for(lambda: speaker.routes == {}, 5)
    down = [e for e in events if isinstance(e, RouteChanged) and not e.announced]
    assert down[-1].reason == "tcp:127.0.0.100:80: 0 of 2 reals healthy, 1 needed"
    assert engine.actual or {}  # IPVS still has the virtual (with the fallback)

    # back: announced again only after the hold-down (1 s of unbroken eligibility)
    pool.up[8001] = True
    await wait_for(lambda: any(h.up for h in engine.health.values()), 5)
    back = asyncio.get_running_loop().time()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    assert asyncio.get_running_loop().time() - back >= 0.9

    # drift: someone removed the route; the resync puts it back
    speaker.routes.clear()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 3)

    # a failing speaker: the error is an event, the resync retries
    speaker.fail = 1
    speaker.routes.clear()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    assert any(e.error == "netlink: refused" for e in events if isinstance(e, RouteChanged))

    # the graceful stop: GRACEFUL_SHUTDOWN with the worst MED, bgpdrain s, then withdrawn
    speaker.log.clear()
    t0 = asyncio.get_running_loop().time()
    await announcer.stop(30.0)
    took = asyncio.get_running_loop().time() - t0
    assert speaker.log == [
        ("announce", "127.0.0.100", 4294967295, ("65535:0",)),
        ("withdraw", "127.0.0.100", None, ()),
    ]
    assert 0.9 <= took < 2.0
    assert speaker.routes == {}
    await engine.stop(clean=False)
    await engine.events.stop()


async def test_a_reload_that_moves_the_reals_changes_nothing() -> None:
    engine, announcer, speaker, _pool, _events = await running()
    await engine.start()
    await announcer.start()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    speaker.log.clear()
    await engine.reload(parse_config(MOVED, "t.cf"))
    await asyncio.sleep(0.5)  # the new real's first check, a resync
    assert speaker.log == []
    await announcer.stop(30.0, graceful_stop=False)
    assert speaker.log == [("withdraw", "127.0.0.100", None, ())]
    await engine.stop(clean=False)
    await engine.events.stop()


async def test_a_tripped_depool_threshold_withdraws() -> None:
    engine, announcer, speaker, pool, _events = await running(
        CONFIG.replace("bgpdrain=1\n", "bgpdrain=0\ndepoolthreshold=0.5\n").replace(
            "\tfallback", "\treal=127.0.0.1:8003 masq\n\tfallback"
        )
    )
    await engine.start()
    await announcer.start()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    # of 3 reals 1 may fail; the second failure is kept in: 8003 alone is enough for
    # bgpminup=1, but a mass failure is this director's own problem
    pool.up[8001] = pool.up[8002] = False
    await wait_for(lambda: speaker.routes == {}, 5)
    assert engine.depool_limited
    assert "depool threshold tripped" in announcer.status()[0]["reason"]
    await announcer.stop(30.0)
    await engine.stop(clean=False)
    await engine.events.stop()


async def test_drain_and_undrain_the_director() -> None:
    engine, announcer, speaker, _pool, _events = await running()
    await engine.start()
    await announcer.start()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    speaker.log.clear()
    t0 = asyncio.get_running_loop().time()
    status = await announcer.drain_director(True)
    assert asyncio.get_running_loop().time() - t0 >= 0.9  # bgpdrain=1
    assert speaker.log == [
        ("announce", "127.0.0.100", 4294967295, ("65535:0",)),
        ("withdraw", "127.0.0.100", None, ()),
    ]
    assert [(s["announced"], s["reason"]) for s in status] == [
        (False, "director drained (lvsmon drain --director)")
    ]
    await asyncio.sleep(0.5)  # healthy pool, resyncs: it stays withdrawn
    assert speaker.routes == {}
    assert await announcer.drain_director(True) == status  # again: nothing more
    status = await announcer.drain_director(False)
    assert speaker.routes == {"127.0.0.100": 100}  # at once: no hold-down
    assert status[0]["announced"]
    await announcer.stop(30.0, graceful_stop=False)
    await engine.stop(clean=False)
    await engine.events.stop()


def _drained_at(path: str) -> float | None:
    if not os.path.exists(path):
        return None
    return float(json.loads(Path(path).read_text())["drained_at"])


async def test_a_drained_director_stays_drained_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "lvsmon.t.director-drained")
    engine, announcer, speaker, _pool, _events = await running(drained_path=path)
    await engine.start()
    await announcer.start()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    await announcer.drain_director(True)
    at = _drained_at(path)
    assert at is not None and abs(at - time.time()) < 60
    await announcer.stop(30.0, graceful_stop=False)
    await engine.stop(clean=False)
    await engine.events.stop()

    # the restart: a healthy pool, the first round over, and still nothing announced
    engine, announcer, speaker, _pool, _events = await running(drained_path=path)
    await engine.start()
    await announcer.start()
    assert announcer.director_drained
    assert announcer.summary()["drained"]
    await wait_for(lambda: engine.first_round_done, 5)
    await asyncio.sleep(0.5)  # passes and resyncs
    assert speaker.routes == {}
    assert [entry for entry in speaker.log if entry[0] == "announce"] == []
    await announcer.drain_director(False)
    assert speaker.routes == {"127.0.0.100": 100}
    assert _drained_at(path) is None
    await announcer.stop(30.0, graceful_stop=False)
    await engine.stop(clean=False)
    await engine.events.stop()


async def test_a_drain_file_of_garbage_still_drains_and_its_text_is_not_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lvsmon.t.director-drained"
    path.write_bytes(b'{"drained_at": "\x1b[31mforged\nline"}')
    engine, announcer, speaker, _pool, _events = await running(drained_path=str(path))
    await engine.start()
    with caplog.at_level(logging.WARNING, logger="lvsmon"):
        await announcer.start()
    assert announcer.director_drained
    assert "this director was drained (" in caplog.text
    assert "forged" not in caplog.text
    await wait_for(lambda: engine.first_round_done, 5)
    await asyncio.sleep(0.4)
    assert speaker.routes == {}
    await announcer.stop(30.0, graceful_stop=False)
    await engine.stop(clean=False)
    await engine.events.stop()


async def test_a_drain_that_cannot_write_its_file_still_drains(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "missing-dir" / "lvsmon.t.director-drained")
    engine, announcer, speaker, _pool, _events = await running(drained_path=path)
    await engine.start()
    await announcer.start()
    await wait_for(lambda: speaker.routes == {"127.0.0.100": 100}, 5)
    with caplog.at_level(logging.ERROR, logger="lvsmon"):
        status = await announcer.drain_director(True)
    assert not status[0]["announced"]
    assert speaker.routes == {}
    assert "the drain holds until the daemon stops" in caplog.text
    await announcer.stop(30.0, graceful_stop=False)
    await engine.stop(clean=False)
    await engine.events.stop()
