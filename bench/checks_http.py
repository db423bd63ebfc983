"""CPU cost per negotiate-http check: lvsmon's lean path against aiohttp's client.

Starts a local HTTP server on 127.0.0.1 (nginx from Debian if installed, else a small aiohttp
server in a child process), runs the same number of checks through each client with a fixed
concurrency, and prints µs of this process's CPU per check and checks per second. Loopback only.
The last line is JSON.

    .venv/bin/python bench/checks_http.py [--checks 20000] [--concurrency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
from procs import free_port

from lvsmon.checks import CheckResult, CheckSpec, run_check

BODY = "still alive\n"

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "{body}"; }}
    }}
}}
"""

AIOHTTP_SERVER = """
import sys
from aiohttp import web
async def ok(request):
    return web.Response(text={body!r})
app = web.Application()
app.router.add_get("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, backlog=4096,
            access_log=None)
"""


def wait_listening(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"server on 127.0.0.1:{port} did not start")


@contextlib.contextmanager
def http_server() -> Iterator[tuple[str, int]]:
    port = free_port()
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    with tempfile.TemporaryDirectory() as tmp:
        if nginx:
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(dir=tmp, port=port, body=BODY.replace("\n", "\\n")))
            argv = [nginx, "-c", conf, "-p", tmp, "-e", os.path.join(tmp, "error.log")]
            name = "nginx"
        else:
            argv = [sys.executable, "-c", AIOHTTP_SERVER.format(body=BODY), str(port)]
            name = "aiohttp-server"
        proc = subprocess.Popen(argv)
        try:
            wait_listening(port)
            yield name, port
        finally:
            proc.terminate()
            proc.wait(10)


async def drive(
    check: Callable[[], Awaitable[bool]], checks: int, concurrency: int
) -> tuple[float, float, int]:
    """(CPU µs per check, checks per second, failures)."""
    failures = 0
    remaining = checks

    async def worker() -> None:
        nonlocal failures, remaining
        while remaining > 0:
            remaining -= 1
            if not await check():
                failures += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / checks * 1e6, checks / wall, failures


async def bench(port: int, checks: int, concurrency: int) -> dict[str, dict[str, float]]:
    spec = CheckSpec(
        kind="negotiate",
        service="http",
        host="127.0.0.1",
        port=port,
        timeout=5,
        receive="still alive",
    )
    last: list[CheckResult] = []

    async def lean() -> bool:
        result = await run_check(spec)
        if not result.ok:
            last[:] = [result]
        return result.ok

    async def lean_in_task() -> bool:
        # as a scheduler runs it: one task per check
        return await asyncio.create_task(lean())

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=5)
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def with_aiohttp() -> bool:
            try:
                async with session.get(url, allow_redirects=False) as response:
                    body = await response.read()
                    return 200 <= response.status < 300 and b"still alive" in body
            except (aiohttp.ClientError, TimeoutError):
                return False

        results: dict[str, dict[str, float]] = {}
        variants = (("lvsmon", lean), ("lvsmon+task", lean_in_task), ("aiohttp", with_aiohttp))
        for name, fn in variants:
            await drive(fn, min(2000, checks), concurrency)  # warm-up
            us, rate, failed = await drive(fn, checks, concurrency)
            results[name] = {
                "cpu_us_per_check": round(us, 1),
                "checks_per_s": round(rate),
                "failed": failed,
            }
            print(f"{name:12} {us:7.1f} µs CPU/check  {rate:8.0f} checks/s  failed={failed}")
    if last:
        print(f"last lvsmon failure: {last[0].reason}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    with http_server() as (server, port):
        print(f"server: {server} on 127.0.0.1:{port}; ", end="")
        print(f"{args.checks} checks, concurrency {args.concurrency}")
        results = asyncio.run(bench(port, args.checks, args.concurrency))
    print(
        json.dumps(
            {"server": server, "checks": args.checks, "concurrency": args.concurrency, **results}
        )
    )


if __name__ == "__main__":
    main()
