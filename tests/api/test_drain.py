"""Drain end to end: `lvsmon drain` / `undrain` against a running daemon (a real process on the
memory backend, real HTTP servers on loopback), without one, and POST /drain in process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from lvsmon.api.client import request
from lvsmon.config import load_config
from lvsmon.daemon import pidfile
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestKey, ServiceKey
from realservers.base import free_port
from tests.helpers import Web, lvsmon, wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)
VIRTUAL = "tcp:127.0.0.100:80"


@pytest.fixture
async def pool() -> AsyncIterator[list[Web]]:
    """Two reals on two loopback addresses, so that `drain 127.0.0.2` names one of them."""
    servers = [Web(0, host="127.0.0.2"), Web(0, host="127.0.0.3")]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


def write_cf(path: Path, pool: list[Web], extra: str = "") -> None:
    reals = "".join(f"\treal={w.host}:{w.port} masq\n" for w in pool)
    path.write_text(
        f'checktimeout=2\ncheckinterval=1\nlogfile="{path.parent}/lb.log"\n{extra}'
        f"virtual=127.0.0.100:80\n{reals}\tfallback=127.0.0.1:80\n"
        '\tservice=http\n\treceive="alive"\n'
    )


class Cli:
    """`lvsmon --backend memory --pid-file <tmp>/x.pid CONFIG ...` as an operator types it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cf = tmp / "lb.cf"
        self.pid = tmp / "x.pid"

    async def __call__(self, *words: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(
            lvsmon, "--backend", "memory", "--pid-file", str(self.pid), str(self.cf), *words
        )
        return done.returncode, done.stdout, done.stderr

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads((self.tmp / "x.status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def real(self, web: Web) -> dict[str, Any] | None:
        for v in self.status().get("virtuals", []):
            for r in v["reals"]:
                if (r["address"], r["port"]) == (web.host, web.port):
                    return dict(r)
        return None

    async def until(self, web: Web, **want: Any) -> dict[str, Any]:
        """The real's status once it shows `want` (the status file is rewritten every second)."""

        def shows() -> bool:
            r = self.real(web)
            return r is not None and all(r.get(k) == v for k, v in want.items())

        await wait_for(shows, 15)
        got = self.real(web)
        assert got is not None
        return got

    def log(self) -> str:
        return (self.tmp / "lb.log").read_text()

    async def stop(self) -> None:
        if pidfile.state(str(self.pid)).running:
            assert (await self("stop"))[0] == 0


@pytest.fixture
async def cli(tmp_path: Path) -> AsyncIterator[Cli]:
    c = Cli(tmp_path)
    yield c
    await c.stop()


async def test_drain_undrain_through_the_daemon_survive_reload_and_restart(
    pool: list[Web], cli: Cli
) -> None:
    a, b = pool
    write_cf(cli.cf, pool)
    assert (await cli("start"))[0] == 0
    await cli.until(a, state="up", kernel_weight=1, drained=False)

    rc, out, err = await cli("drain", f"{a.host}:{a.port}")
    assert (rc, err) == (0, "")
    assert out == f"drained {a.host}:{a.port} in {VIRTUAL}\n"
    # its check still passes: up, in the kernel at weight 0; the other real untouched
    assert await cli.until(a, state="up", kernel_weight=0, drained=True)
    assert (await cli.until(b, state="up", kernel_weight=1))["drained"] is False
    rc, out, _ = await cli("status")
    line = next(x for x in out.splitlines() if f"{a.host}:{a.port}" in x)
    assert " up drained " in line and "weight 0" in line
    assert f"Drained real server: {a.host}:{a.port} ({VIRTUAL})" in cli.log()
    # kept beside the pid file
    state = json.loads((cli.tmp / "x.drain.json").read_text())
    assert state == [{"real": f"{a.host}:{a.port}", "virtual": None}]

    rc, out, _ = await cli("drain", a.host)  # by address: the same pair, already drained
    assert (rc, out) == (0, f"{a.host}:{a.port} in {VIRTUAL} was already drained\n")
    rc, out, _ = await cli("drain")
    assert (rc, out) == (0, f"drained {a.host}:{a.port} in {VIRTUAL}\n")

    # a reload (SIGHUP) keeps it
    before = cli.log().count("Configuration")
    assert (await cli("reload"))[0] == 0
    await wait_for(lambda: cli.log().count("Configuration") > before, 15)
    await asyncio.sleep(1.5)  # a status write after the reload's reconcile
    assert await cli.until(a, state="up", kernel_weight=0, drained=True)

    # so does a stop and start: the state file is read at start
    assert (await cli("stop"))[0] == 0
    assert (await cli("start"))[0] == 0
    assert await cli.until(a, kernel_weight=0, drained=True)
    await cli.until(a, state="up", checked=True)
    assert (cli.real(a) or {})["kernel_weight"] == 0

    rc, out, _ = await cli("undrain", f"{a.host}:{a.port}", "--virtual", "127.0.0.100:80")
    assert (rc, out) == (0, f"undrained {a.host}:{a.port} in {VIRTUAL}\n")
    assert await cli.until(a, state="up", kernel_weight=1, drained=False)
    assert f"Undrained real server: {a.host}:{a.port} ({VIRTUAL})" in cli.log()
    rc, out, _ = await cli("undrain", f"{a.host}:{a.port}")
    assert (rc, out) == (0, f"{a.host}:{a.port} in {VIRTUAL} was not drained\n")


async def test_unknown_reals_are_refused_with_exit_2(pool: list[Web], cli: Cli) -> None:
    write_cf(cli.cf, pool)
    for running in (False, True):  # from the file, then from the running daemon
        rc, out, err = await cli("drain", "127.0.0.9:80")
        assert (rc, out) == (2, "")
        assert err == f"lvsmon: 127.0.0.9:80 is not a real server of {cli.cf}\n"
        rc, _, err = await cli("drain", f"127.0.0.2:{pool[0].port}", "--virtual", "fwm:9")
        assert (rc, err) == (2, f"lvsmon: fwm:9 is not a virtual service of {cli.cf}\n")
        rc, _, err = await cli("undrain")
        assert rc == 2 and "undrain needs the real server" in err
        if not running:
            assert (await cli("start"))[0] == 0
    assert not (cli.tmp / "x.drain.json").exists()


async def test_maintenancedir_holds_the_drains_and_takes_hand_touched_names(
    pool: list[Web], cli: Cli
) -> None:
    a, b = pool
    maint = cli.tmp / "maint"
    maint.mkdir()
    write_cf(cli.cf, pool, f"maintenancedir={maint}\n")
    # no daemon yet: written to the directory, applied at start
    rc, out, _ = await cli("drain", f"{a.host}:{a.port}", "--virtual", VIRTUAL)
    assert rc == 0 and "applied when it starts" in out
    assert [p.name for p in maint.iterdir()] == [f"{a.host}:{a.port}@{VIRTUAL}.drain"]
    assert (await cli("start"))[0] == 0
    assert await cli.until(a, state="up", kernel_weight=0, drained=True)

    # a name touched by hand, ldirectord's `<ip>` form: taken within the maintenance scan
    (maint / f"{b.host}.drain").touch()
    assert await cli.until(b, state="up", kernel_weight=0, drained=True)
    assert await cli.until(a, kernel_weight=0)
    assert (await cli("undrain", b.host))[0] == 0
    assert not (maint / f"{b.host}.drain").exists()
    await cli.until(b, kernel_weight=1, drained=False)

    rc, out, _ = await cli("undrain", f"{a.host}:{a.port}")
    assert (rc, out) == (0, f"undrained {a.host}:{a.port} in {VIRTUAL}\n")
    assert list(maint.iterdir()) == []
    await cli.until(a, kernel_weight=1, drained=False)
    # maintenance wins over drain
    (maint / f"{a.host}:{a.port}.drain").touch()
    (maint / f"{a.host}:{a.port}").touch()
    await cli.until(a, state="maintenance", kernel_weight=None, drained=True)


async def test_drains_move_when_a_reload_turns_maintenancedir_on_and_off(
    pool: list[Web], cli: Cli
) -> None:
    a, _ = pool
    maint = cli.tmp / "maint"
    maint.mkdir()
    state = cli.tmp / "x.drain.json"
    write_cf(cli.cf, pool)
    assert (await cli("start"))[0] == 0
    assert (await cli("drain", f"{a.host}:{a.port}"))[0] == 0
    await cli.until(a, state="up", kernel_weight=0, drained=True)
    assert json.loads(state.read_text()) == [{"real": f"{a.host}:{a.port}", "virtual": None}]

    async def reload() -> None:
        before = cli.log().count("Configuration")
        assert (await cli("reload"))[0] == 0
        await wait_for(lambda: cli.log().count("Configuration") > before, 15)
        await asyncio.sleep(1.5)  # a status write after the reload's reconcile

    write_cf(cli.cf, pool, f"maintenancedir={maint}\n")  # on: into the directory
    await reload()
    assert [p.name for p in maint.iterdir()] == [f"{a.host}:{a.port}.drain"]
    assert json.loads(state.read_text()) == []
    assert await cli.until(a, state="up", kernel_weight=0, drained=True)
    assert "drains moved from" in cli.log()

    write_cf(cli.cf, pool)  # off: back into the state file
    await reload()
    assert list(maint.iterdir()) == []
    assert json.loads(state.read_text()) == [{"real": f"{a.host}:{a.port}", "virtual": None}]
    assert await cli.until(a, state="up", kernel_weight=0, drained=True)
    assert (await cli("undrain", f"{a.host}:{a.port}"))[0] == 0
    await cli.until(a, kernel_weight=1, drained=False)


# ---- in process: the API itself -------------------------------------------------------------


@pytest.fixture
async def daemon(tmp_path: Path, pool: list[Web]) -> AsyncIterator[tuple[Daemon, str, int]]:
    cf = tmp_path / "lb.cf"
    write_cf(cf, pool)
    sock, port = str(tmp_path / "l.sock"), free_port()
    d = Daemon(
        load_config(str(cf)),
        MemoryBackend(),
        control_socket=sock,
        listen=f"127.0.0.1:{port}",
        drain_state=str(tmp_path / "l.drain.json"),
    )
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(d.run(ready.set_result))
    assert await ready is None
    yield d, sock, port
    d.request_stop()
    assert await task == 0


async def post(sock: str, url: str, body: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(request, sock, "POST", url, body)


async def test_post_drain_applies_before_it_answers(
    daemon: tuple[Daemon, str, int], pool: list[Web]
) -> None:
    d, sock, _ = daemon
    a, b = pool
    refs = [RealRef(VKEY, w.host, w.port) for w in pool]
    await wait_for(lambda: d.engine.first_round_done)
    status, body = await post(sock, "/drain", {"real": f"{a.host}:{a.port}", "virtual": None})
    assert status == 200, body
    assert body["results"] == [{"virtual": VIRTUAL, "real": f"{a.host}:{a.port}", "changed": True}]
    dests = (d.engine.actual or {})[VKEY].dests
    assert dests[DestKey(a.host, a.port)].weight == 0 and d.engine.drained == {refs[0]}
    assert DestKey("127.0.0.1", 80) not in dests  # b still serves: no fallback

    # every real drained: the fallback takes new connections, as when all are down
    status, _ = await post(sock, "/drain", {"real": b.host, "virtual": "127.0.0.100:80"})
    assert status == 200
    dests = (d.engine.actual or {})[VKEY].dests
    assert {k.port: c.weight for k, c in dests.items()} == {a.port: 0, b.port: 0, 80: 1}
    assert all(r["drained"] for r in d.status()["virtuals"][0]["reals"])
    status, listing = await asyncio.to_thread(request, sock, "GET", "/drains")
    assert status == 200 and len(listing["drained"]) == 2

    status, body = await post(sock, "/undrain", {"real": b.host})
    assert status == 200 and body["results"][0]["changed"] is True
    dests = (d.engine.actual or {})[VKEY].dests
    assert {k.port: c.weight for k, c in dests.items()} == {a.port: 0, b.port: 1}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"real": "10.9.9.9:80"}, "10.9.9.9:80 is not a real server of"),
        ({"virtual": "127.0.0.100:80"}, '"real" must be a non-empty string'),
        (["127.0.0.2"], "must be a JSON object"),
    ],
)
async def test_bad_requests_are_400(daemon: tuple[Daemon, str, int], body: Any, error: str) -> None:
    d, sock, _ = daemon
    status, answer = await post(sock, "/drain", body)
    assert status == 400 and error in answer["error"]
    assert not d.engine.drained


async def test_drain_is_refused_over_tcp(daemon: tuple[Daemon, str, int], pool: list[Web]) -> None:
    d, _, port = daemon
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/drain", json={"real": pool[0].host}) as response,
    ):
        assert response.status == 403
    assert not d.engine.drained


async def test_a_state_naming_a_removed_real_is_kept_and_ignored(
    tmp_path: Path, pool: list[Web], cli: Cli
) -> None:
    write_cf(cli.cf, pool)
    (tmp_path / "x.drain.json").write_text(
        json.dumps([{"real": "127.0.0.9:80", "virtual": None}, {"real": "junk"}])
    )
    assert (await cli("start"))[0] == 0
    await cli.until(pool[0], state="up", kernel_weight=1, drained=False)
    assert "127.0.0.9:80 names no real server" in cli.log()
    rc, out, _ = await cli("drain")
    assert rc == 0 and "ignored: 127.0.0.9:80" in out
    pid = pidfile.read_pid(str(cli.pid))
    assert pid
    os.kill(pid, signal.SIGHUP)
    await asyncio.sleep(1.5)
    assert cli.log().count("127.0.0.9:80 names no real server") == 1  # once
