"""Graceful removal in the running engine (issue 25 point 3): the in-memory backend, real HTTP
servers on loopback, connection counters set by hand (MemoryBackend.set_connections). A reload
that removes a real (or a virtual) leaves it at weight 0 until its counters say 0 or its time is
up; a reload that adds it back ends that; events, the status and the log say so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.eventlog import LOGGED, log_event
from lvsmon.engine.events import Event, EventBus, RealLeaving
from lvsmon.engine.status import check_status, render_status
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestKey, ServiceKey
from tests.helpers import Web, wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)
V2 = ServiceKey.inet("tcp", "127.0.0.101", 80)


def write_cf(path: Path, webs: list[Web], drain: int = 30, second: bool = False) -> None:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq 2\n" for w in webs)
    check = '\tservice=http\n\trequest="health"\n\treceive="alive"\n'
    text = f"checktimeout=1\ncheckinterval=1\nremovedrain={drain}\nvirtual=127.0.0.100:80\n"
    text += reals + check
    if second:
        text += "virtual=127.0.0.101:80\n" + reals + check
    path.write_text(text)


def weights(engine: Engine, key: ServiceKey = VKEY) -> dict[int, int]:
    table = engine.actual or {}
    return {d.port: c.weight for d, c in table[key].dests.items()} if key in table else {}


class Setup:
    def __init__(self, tmp_path: Path, webs: list[Web]) -> None:
        self.cf = tmp_path / "lb.cf"
        self.webs = webs
        self.backend = MemoryBackend()
        self.seen: list[RealLeaving] = []
        self.bus = EventBus()
        self.bus.subscribe("log", log_event, kinds=LOGGED)
        self.bus.subscribe("test", self._seen, kinds=(RealLeaving,))

    def _seen(self, event: Event) -> None:
        assert isinstance(event, RealLeaving)
        self.seen.append(event)

    async def start(self, **kw: object) -> Engine:
        write_cf(self.cf, self.webs, **kw)  # type: ignore[arg-type]
        await self.bus.start()
        engine = Engine(load_config(str(self.cf)), self.backend, events=self.bus)
        await engine.start()
        await engine.wait_programmed()
        return engine

    async def reload(self, engine: Engine, webs: list[Web], **kw: object) -> None:
        write_cf(self.cf, webs, **kw)  # type: ignore[arg-type]
        await engine.reload(load_config(str(self.cf)))

    async def stop(self, engine: Engine) -> None:
        await engine.stop()
        await self.bus.stop()


async def test_a_removed_real_drains_then_goes(
    webs: list[Web], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    s = Setup(tmp_path, webs[:2])
    engine = await s.start()
    p = [w.port for w in webs[:2]]
    assert weights(engine) == {p[0]: 2, p[1]: 2}
    leaver = DestKey("127.0.0.1", p[1])
    s.backend.set_connections(VKEY, leaver, 3)
    await s.reload(engine, webs[:1])
    # weight 0 at once, not deleted
    assert weights(engine) == {p[0]: 2, p[1]: 0}
    status = engine.status()
    check_status(status)
    [entry] = status["leaving"]
    assert (entry["virtual"], entry["real"]) == (str(VKEY), str(leaver))
    assert 29 < entry["deadline"] - entry["since"] <= 30
    # the counters are read (at most once a second): 3 connections keep it
    await wait_for(lambda: engine.status()["leaving"][0]["connections"] == 3, within=5)
    text = render_status(engine.status())
    assert f"leaving: {leaver} of {VKEY}: weight 0, 3 connections, deleted at" in text
    assert weights(engine) == {p[0]: 2, p[1]: 0}
    s.backend.set_connections(VKEY, leaver, 0, 4)  # TIME_WAIT entries do not hold it
    await wait_for(lambda: weights(engine) == {p[0]: 2}, within=5)
    assert engine.status()["leaving"] == []
    await s.stop(engine)
    assert [(e.dest, e.started, e.reason) for e in s.seen] == [
        (leaver, True, "removed"),
        (leaver, False, "no active connections"),
    ]
    assert f"Leaving real server: {leaver} ({VKEY}), removed: weight 0" in caplog.text
    assert f"Real server {leaver} ({VKEY}) stopped leaving after" in caplog.text


async def test_the_time_is_up_whatever_the_connections(webs: list[Web], tmp_path: Path) -> None:
    s = Setup(tmp_path, webs[:2])
    engine = await s.start(drain=1)
    p = [w.port for w in webs[:2]]
    s.backend.set_connections(VKEY, DestKey("127.0.0.1", p[1]), 50)
    await s.reload(engine, webs[:1], drain=1)
    assert weights(engine) == {p[0]: 2, p[1]: 0}
    await wait_for(lambda: weights(engine) == {p[0]: 2}, within=5)
    await s.stop(engine)
    assert [e.reason for e in s.seen] == ["removed", "time up"]
    assert 0.9 < s.seen[1].seconds < 3


async def test_a_real_added_back_before_it_left_gets_its_weight(
    webs: list[Web], tmp_path: Path
) -> None:
    s = Setup(tmp_path, webs[:2])
    engine = await s.start()
    p = [w.port for w in webs[:2]]
    s.backend.set_connections(VKEY, DestKey("127.0.0.1", p[1]), 2)
    await s.reload(engine, webs[:1])
    assert weights(engine) == {p[0]: 2, p[1]: 0}
    await s.reload(engine, webs[:2])
    assert weights(engine) == {p[0]: 2, p[1]: 2}
    assert engine.status()["leaving"] == []
    await s.stop(engine)
    assert [e.reason for e in s.seen] == ["removed", "added again"]


async def test_a_removed_virtual_drains_its_reals_then_the_service_goes(
    webs: list[Web], tmp_path: Path
) -> None:
    s = Setup(tmp_path, webs[:2])
    engine = await s.start(second=True)
    p = [w.port for w in webs[:2]]
    assert weights(engine, V2) == {p[0]: 2, p[1]: 2}
    s.backend.set_connections(V2, DestKey("127.0.0.1", p[0]), 1)
    await s.reload(engine, webs[:2])
    assert weights(engine, V2) == {p[0]: 0, p[1]: 0}
    # the one without connections goes at the first reading, the service stays for the other
    await wait_for(lambda: weights(engine, V2) == {p[0]: 0}, within=5)
    assert V2 in s.backend.table
    s.backend.set_connections(V2, DestKey("127.0.0.1", p[0]), 0)
    await wait_for(lambda: V2 not in s.backend.table, within=5)
    assert weights(engine) == {p[0]: 2, p[1]: 2}  # the other virtual untouched
    await s.stop(engine)
    assert sorted((e.dest.port, e.started, e.reason) for e in s.seen) == sorted(
        [
            (p[0], True, "virtual removed"),
            (p[1], True, "virtual removed"),
            (p[1], False, "no active connections"),
            (p[0], False, "no active connections"),
        ]
    )


async def test_without_removedrain_a_removed_real_goes_at_once(
    webs: list[Web], tmp_path: Path
) -> None:
    s = Setup(tmp_path, webs[:2])
    engine = await s.start(drain=0)
    p = [w.port for w in webs[:2]]
    s.backend.set_connections(VKEY, DestKey("127.0.0.1", p[1]), 3)
    await s.reload(engine, webs[:1], drain=0)
    assert weights(engine) == {p[0]: 2}
    await s.stop(engine)
    assert s.seen == []
