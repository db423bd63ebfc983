"""`lvsmon demo`: a live look at lvsmon without root, a kernel or a config of your own.

It starts three real HTTP servers and a sorry server on loopback, writes an ldirectord.cf for
them, runs the engine against the in-memory IPVS backend, and then breaks things on a timeline:
one server stops (quiesced), comes back (restored), all stop (the fallback serves), one returns
(the fallback leaves). The table and each real's health are shown after every change.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.memory import MemoryBackend

CONFIG = """\
# written by `lvsmon demo`: three web servers behind one virtual service
checktimeout=1
checkinterval=1
quiescent=yes

virtual=127.0.0.100:80
\treal=127.0.0.1:{p1} masq 3
\treal=127.0.0.1:{p2} masq 2
\treal=127.0.0.1:{p3} masq 1
\tfallback=127.0.0.1:{pf} masq
\tservice=http
\trequest="health"
\treceive="OK"
\tscheduler=wrr
"""


async def serve_http(
    path: str,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    port: int = 0,
    host: str = "127.0.0.1",
) -> tuple[web.AppRunner, int]:
    """An HTTP server answering GET `path` on host:port (0: any free port), and the port it got.
    Its runner's cleanup() stops it; it can start again on the same port (reuse_address)."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, port or int(runner.addresses[0][1])


class Server:
    """One real server on loopback that can be stopped and started again on the same port."""

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.body = body
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner, self.port = await serve_http("/health", self._health, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.body)


def write_config(directory: str, text: str) -> str:
    path = os.path.join(directory, "ldirectord.cf")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def render(engine: Engine, names: dict[tuple[str, int], str]) -> str:
    lines = []
    table = engine.actual or {}
    for v in engine.config.virtuals:
        service = table.get(v.key)
        lines.append(f"  {v.key}  scheduler {v.scheduler}")
        dests = service.dests if service else {}
        for r in v.reals:
            ref = RealRef(v.key, r.address, r.port)
            h = engine.health.get(ref)
            state = "up" if h and h.up else "DOWN"
            conf = dests.get(ref.dest)
            weight = "absent" if conf is None else f"weight {conf.weight}"
            why = h.reason if h else ""
            label = names.get((r.address, r.port), "")
            lines.append(f"    {label:<9} {ref.dest!s:<18} {state:<5} {weight:<9} {why}")
        if v.fallback is not None:
            fb = (v.fallback.address, v.fallback.port)
            present = any((d.address, d.port) == fb for d in dests)
            lines.append(f"    {'fallback':<9} {fb[0]}:{fb[1]:<8} {'IN TABLE' if present else '-'}")
    return "\n".join(lines)


async def demo(step_s: float) -> int:
    servers = [Server(f"web{i}", "OK") for i in (1, 2, 3)]
    sorry = Server("sorry", "sorry, we are down")
    for s in [*servers, sorry]:
        await s.start()
    names = {("127.0.0.1", s.port): s.name for s in servers}
    text = CONFIG.format(p1=servers[0].port, p2=servers[1].port, p3=servers[2].port, pf=sorry.port)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(tmp, text)
        config = load_config(path)
        print(f"config {path}:\n{text}")
        engine = Engine(config, MemoryBackend())
        t0 = time.monotonic()

        def show(title: str) -> None:
            print(f"\n[{time.monotonic() - t0:5.1f}s] {title}\n{render(engine, names)}", flush=True)

        await engine.start()
        show("started: the virtual service exists, no real checked yet, the fallback serves")
        await engine.wait_programmed()
        show("first checks passed: all three reals are in with their weights, fallback gone")
        steps: list[tuple[str, Sequence[Server], bool]] = [
            ("web2 stops answering", [servers[1]], False),
            ("web2 is back", [servers[1]], True),
            ("every web server stops", servers, False),
            ("web1 is back", [servers[0]], True),
        ]
        for title, targets, up in steps:
            for s in targets:
                await (s.start() if up else s.stop())
            print(f"\n[{time.monotonic() - t0:5.1f}s] >>> {title}", flush=True)
            await asyncio.sleep(step_s)
            show("table now")
        await engine.stop(clean=True)
        show("stopped: cleanstop removed the virtual service")
    for s in [*servers, sorry]:
        await s.stop()
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lvsmon demo", description=__doc__)
    parser.add_argument("--step", type=float, default=3.0, help="seconds between scripted events")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO, format="          log: %(message)s", force=True
    )
    return asyncio.run(demo(args.step))
