"""How checks run: combined checktype sequencing; one check for a real shared by virtuals."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.jobs import build_plan
from lvsmon.ipvs.memory import MemoryBackend
from tests.helpers import wait_for


async def test_combined_checktype_negotiates_then_n_connects(tmp_path: Path) -> None:
    cf = tmp_path / "c.cf"
    cf.write_text(
        "checkinterval=1\nvirtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq\n"
        "\tservice=http\n\tchecktype=2\n"
    )
    config = load_config(str(cf))
    job = next(iter(build_plan(config).jobs))
    kinds: list[str] = []
    answers = iter([True, True, False, True, True, True, False, True, True])

    async def check(spec: CheckSpec) -> CheckResult:
        kinds.append(spec.kind)
        return CheckResult(next(answers), "scripted")

    engine = Engine(config, MemoryBackend(), run_check=check)
    for _ in range(9):
        await engine.run_once(job)  # one slot at a time, no clock involved
    # negotiate ok → 2 connects (the 2nd fails → negotiate next) → negotiate ok → 2 connects →
    # negotiate fails → negotiate again (a failed negotiate keeps negotiating) → ok → connect
    assert kinds == [
        "negotiate",
        "connect",
        "connect",
        "negotiate",
        "connect",
        "connect",
        "negotiate",
        "negotiate",
        "connect",
    ]


async def test_a_real_in_two_virtuals_is_checked_once_per_interval(tmp_path: Path) -> None:
    hits: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = int(runner.addresses[0][1])
    block = f"\treal=127.0.0.1:{port} masq\n\tservice=http\n\tfailurecount=2\n"
    cf = tmp_path / "c.cf"
    cf.write_text(
        f"checkinterval=1\nvirtual=127.0.0.100:80\n{block}virtual=127.0.0.101:80\n{block}"
    )
    engine = Engine(load_config(str(cf)), MemoryBackend())
    await engine.start()
    await engine.wait_programmed()
    await wait_for(lambda: engine.stats.checks_done >= 3)
    await engine.stop()
    assert len(hits) == engine.stats.checks_done  # one request per check, not one per virtual
    assert len(engine.plan.jobs) == 1 and len(next(iter(engine.plan.jobs.values()))) == 2
    await runner.cleanup()


async def test_combined_checktype_on_the_prober_connects_without_a_request(
    tmp_path: Path,
) -> None:
    # what the server saw, per connection: the request line, or "" for a bare connect
    seen: list[str] = []
    replies = iter([200, 200, 200, 503, 200, 200])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(4096)  # b"" when the check closes after connecting
        seen.append(head.split(b"\r\n", 1)[0].decode())
        if head:
            code = next(replies)
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok".encode())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cf = tmp_path / "c.cf"
    cf.write_text(
        f"checkinterval=1\nvirtual=127.0.0.100:80\n\treal=127.0.0.1:{port} masq\n"
        "\tservice=http\n\tchecktype=2\n"
    )
    engine = Engine(load_config(str(cf)), MemoryBackend())  # the daemon's own check path
    job = next(iter(engine.plan.jobs))
    for _ in range(11):
        await engine.run_once(job)
    await engine.stop(clean=False)
    await wait_for(lambda: len(seen) == 11)  # a bare connect is done before the server sees it
    server.close()
    await server.wait_closed()
    get = "GET / HTTP/1.1"
    # negotiate 200 → 2 connects → 200 → 2 connects → 200 → 2 connects → 503 → negotiate again
    assert seen == [get, "", "", get, "", "", get, "", "", get, get]
    assert engine.stats.checks_done == 11 and not engine.runner.tasks  # no task per check
