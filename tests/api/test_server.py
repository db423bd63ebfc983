"""The control server (lvsmon/api/server.py, eventfeed.py): where it listens, who may do what,
/status and the live event stream, against a real daemon on the memory backend."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from lvsmon.api import server
from lvsmon.api.client import ControlUnavailable, request
from lvsmon.api.eventfeed import EventFeed, event_json
from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine import events as ev
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, DestKey, Forward, ServiceConf, ServiceKey
from lvsmon.ipvs.ops import AddDest, AddService, DeleteDest, DeleteService, EditDest, EditService
from realservers.base import free_port
from tests.helpers import Web, lvsmon

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)


def config_text(tmp: Path, webs: list[Web]) -> str:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq\n" for w in webs)
    return (
        f'checktimeout=2\ncheckinterval=1\nlogfile="{tmp}/lvsmon.log"\n'
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\trequest="/"\n'
        '\treceive="still alive"\n\tchecktype=negotiate\n'
    )


class Running(typing.NamedTuple):
    daemon: Daemon
    socket: str
    port: int


@pytest.fixture
async def running(tmp_path: Path, webs: list[Web]) -> AsyncIterator[Running]:
    cfg = tmp_path / "t.cf"
    cfg.write_text(config_text(tmp_path, webs[:2]))
    sock, port = str(tmp_path / "l.sock"), free_port()
    daemon = Daemon(
        load_config(str(cfg)),
        MemoryBackend(),
        str(tmp_path / "l.status.json"),
        control_socket=sock,
        listen=f"127.0.0.1:{port}",
    )
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    yield Running(daemon, sock, port)
    daemon.request_stop()
    assert await task == 0


async def get(url: str, sock: str | None = None) -> tuple[int, str]:
    connector = aiohttp.UnixConnector(path=sock) if sock else None
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url) as response,
    ):
        return response.status, await response.text()


async def test_the_socket_is_root_only_and_gone_after_stop(tmp_path: Path, webs: list[Web]) -> None:
    cfg = tmp_path / "t.cf"
    cfg.write_text(config_text(tmp_path, webs[:1]))
    sock = tmp_path / "l.sock"
    sock.write_text("left by a crashed daemon")  # stale: the new daemon holds the pid lock
    daemon = Daemon(load_config(str(cfg)), MemoryBackend(), control_socket=str(sock))
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    daemon.request_stop()
    assert await task == 0
    assert not sock.exists()


async def test_status_is_the_status_files_content(running: Running, tmp_path: Path) -> None:
    code, text = await get("http://lvsmon/status", running.socket)
    assert code == 200
    status = json.loads(text)
    assert status["phase"] == "running"
    assert status["backend"] == "memory"
    [virtual] = status["virtuals"]
    assert [r["state"] for r in virtual["reals"]] == ["up", "up"]
    on_disk = json.loads((tmp_path / "l.status.json").read_text())
    assert on_disk.keys() == status.keys()
    # over TCP the same
    code, text = await get(f"http://127.0.0.1:{running.port}/status")
    assert code == 200
    assert json.loads(text)["virtuals"] == status["virtuals"]


async def test_commands_are_refused_over_tcp(running: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{running.port}/drain", json={}) as response,
    ):
        assert response.status == 403
        assert "control socket" in await response.text()


async def test_a_host_not_served_is_counted_in_metrics(running: Running) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{running.port}/status", headers={"Host": "attacker.example"}
        ) as response,
    ):
        assert response.status == 421
    code, text = await get("http://lvsmon/metrics", running.socket)
    assert code == 200
    counted = {
        line.split()[0]: line.split()[1]
        for line in text.splitlines()
        if line.startswith("lvsmon_control_refused_total{")
    }
    assert counted == {
        f'lvsmon_control_refused_total{{reason="{reason}"}}': "1" if reason == "host" else "0"
        for reason in ("cap", "fds", "host", "timeout", "stalled")
    }


async def read_events(
    response: aiohttp.ClientResponse, until: typing.Callable[[dict[str, typing.Any]], bool]
) -> list[dict[str, typing.Any]]:
    seen: list[dict[str, typing.Any]] = []
    async with asyncio.timeout(20):
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if until(seen[-1]):
                    return seen
    raise AssertionError(f"stream ended; saw {seen}")


async def test_events_replay_then_stream_live(running: Running, webs: list[Web]) -> None:
    connector = aiohttp.UnixConnector(path=running.socket)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://lvsmon/events") as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        # what happened before the client connected: start-up, replayed in order
        replayed = await read_events(response, lambda e: e.get("phase") == "running")
        assert [e["seq"] for e in replayed] == sorted(e["seq"] for e in replayed)
        assert any(e["type"] == "KernelOp" and e["op"]["kind"] == "AddDest" for e in replayed)
        # then live: a real fails its check and is taken out
        webs[1].status = 503
        live = await read_events(response, lambda e: e["type"] == "RealChanged" and not e["up"])
        down = live[-1]
        assert down["ref"] == {"virtual": str(VKEY), "real": f"127.0.0.1:{webs[1].port}"}
        assert "503" in down["reason"]
        webs[1].status = 200
        await read_events(response, lambda e: e["type"] == "RealChanged" and e["up"])


async def stream_lasts(url: str, sock: str | None, bound: float) -> float | None:
    """Seconds until an /events stream ended by itself (None: still open after `bound`)."""
    connector = aiohttp.UnixConnector(path=sock) if sock else None
    began = asyncio.get_running_loop().time()
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url) as response,
    ):
        assert response.status == 200
        try:
            async with asyncio.timeout(bound):
                async for _ in response.content:
                    pass
        except TimeoutError:
            return None
    return asyncio.get_running_loop().time() - began


async def test_event_streams_over_tcp_end_after_their_lifetime(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: over TCP a client that acknowledges without reading cannot be told from one
    that reads, so a stream ends after SSE_TCP_LIFETIME_S (the browser's EventSource reconnects);
    on the control socket, where the write timeout sees an unread backlog, it does not."""
    monkeypatch.setattr(server, "SSE_TCP_LIFETIME_S", 1.0)
    took = await stream_lasts(f"http://127.0.0.1:{running.port}/events", None, 10)
    assert took is not None and 0.9 < took < 5, took
    assert await stream_lasts("http://lvsmon/events", running.socket, 3) is None


async def test_event_streams_over_tcp_end_after_their_bytes(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "SSE_TCP_BYTES", 64)  # the replay alone is more
    took = await stream_lasts(f"http://127.0.0.1:{running.port}/events", None, 10)
    assert took is not None and took < 2, took


async def test_stop_ends_open_event_streams(tmp_path: Path, webs: list[Web]) -> None:
    cfg = tmp_path / "t.cf"
    cfg.write_text(config_text(tmp_path, webs[:1]))
    sock = str(tmp_path / "l.sock")
    daemon = Daemon(load_config(str(cfg)), MemoryBackend(), control_socket=sock)
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    connector = aiohttp.UnixConnector(path=sock)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://lvsmon/events") as response,
    ):
        await read_events(response, lambda e: e.get("phase") == "running")
        daemon.request_stop()
        async with asyncio.timeout(15):  # the stream ends, the stop is not held up by it
            assert await task == 0
            async for _ in response.content:
                pass


def test_a_slow_client_is_cut_off_not_waited_for() -> None:
    async def scenario() -> None:
        feed = EventFeed(replay=10)
        _, queue = feed.attach()
        for _ in range(queue.maxsize + 5):
            feed.on_event(ev.PhaseChanged(ev.Phase.RUNNING))  # never blocks
        assert feed.clients == 0 and feed.cut_off == 1
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        assert items[-1] is None  # the reader ends its response
        assert len(feed.recent) == 10  # the replay ring is bounded

    asyncio.run(scenario())


def test_events_nobody_follows_are_encoded_only_when_a_client_attaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 22: a start-up of 37,000 reals emits some 75,000 events; with no /events client
    they are kept as they are (the last 500) and encoded when one attaches, in their order,
    with the sequence numbers and times they had."""
    from lvsmon.api import eventfeed

    encoded: list[int] = []
    real_json = eventfeed.event_json

    def counting(event: ev.Event, seq: int, at: float) -> dict[str, typing.Any]:
        encoded.append(seq)
        return real_json(event, seq, at)

    monkeypatch.setattr(eventfeed, "event_json", counting)

    async def scenario() -> None:
        feed = EventFeed(replay=10)
        for i in range(1000):
            feed.on_event(ev.ConfigRejected("lb.cf", f"file:{i}: bad"))
        assert encoded == []
        replay, queue = feed.attach()
        assert encoded == list(range(991, 1001))  # the ring's last 10, once each
        frames = [f.decode() for f in replay]
        assert [f.split("\n", 1)[0] for f in frames] == [f"id: {n}" for n in range(991, 1001)]
        assert '"file:999: bad"' in frames[-1]
        feed.on_event(ev.ConfigRejected("lb.cf", "live"))  # a client follows: encoded at once, once
        assert encoded[-1] == 1001 and queue.get_nowait() == feed.recent[-1]
        assert len(encoded) == 11

    asyncio.run(scenario())


def sample(kind: type) -> object:
    """One instance of an event class with every field filled."""
    key = VKEY
    ref = RealRef(key, "127.0.0.1", 8080)
    dest = DestKey("127.0.0.1", 8080)
    conf = DestConf(Forward.MASQ, 1, 0, 0)
    values: dict[type, object] = {
        ev.RealChanged: ev.RealChanged(ref, False, "http: status 503"),
        ev.SoftFailure: ev.SoftFailure(ref, 1, 3, "connect: timed out"),
        ev.SoftReset: ev.SoftReset(ref),
        ev.CheckDone: ev.CheckDone(ref, True, "ok"),
        ev.WeightChanged: ev.WeightChanged(key, dest, None, 1),
        ev.FallbackChanged: ev.FallbackChanged(key, True),
        ev.ConfigLoaded: ev.ConfigLoaded("/etc/ha.d/x.cf", "ab", 2),
        ev.ConfigFileChanged: ev.ConfigFileChanged("/etc/ha.d/x.cf", "ab"),
        ev.ConfigRejected: ev.ConfigRejected("/etc/ha.d/x.cf", "x.cf:3: bad"),
        ev.PhaseChanged: ev.PhaseChanged(ev.Phase.RELOADING),
        ev.SyncDaemonOp: ev.SyncDaemonOp("start", "master sync daemon", None),
    }
    if kind is ev.KernelOp:
        return [
            ev.KernelOp(op)
            for op in (
                AddService(key, ServiceConf(sched_flags=frozenset({"flag-1"}))),
                EditService(key, ServiceConf()),
                DeleteService(key),
                AddDest(key, dest, conf),
                EditDest(key, dest, conf),
                DeleteDest(key, dest),
            )
        ]
    if kind in values:
        return values[kind]
    # an event class added later: fill what can be filled, so that the test names it
    fields = {f.name: ref for f in dataclasses.fields(kind)}
    return kind(**fields)


@pytest.mark.parametrize("kind", typing.get_args(ev.Event), ids=lambda k: k.__name__)
def test_every_event_kind_becomes_json(kind: type) -> None:
    made = sample(kind)
    for event in made if isinstance(made, list) else [made]:
        body = event_json(event, 7, 1.5)  # type: ignore[arg-type]
        text = json.dumps(body)
        assert json.loads(text)["type"] == kind.__name__
        assert body["seq"] == 7


def test_client_says_when_no_daemon_answers(tmp_path: Path) -> None:
    with pytest.raises(ControlUnavailable):
        request(str(tmp_path / "none.sock"), "GET", "/status")


def test_a_bad_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    done = lvsmon("--listen", "localhost", "--backend", "memory", str(tmp_path / "x.cf"), "start")
    assert done.returncode == 2
    assert "HOST:PORT" in done.stderr
    assert "Traceback" not in done.stderr
