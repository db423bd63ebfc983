"""What the test folders share, in one module (a conftest is not a library): a real HTTP server on
loopback (Web, and the `webs` fixture of three), polling a condition (wait_for), lvsmon run as a
process (lvsmon) or as ldirectord (install_as_ldirectord), whether a process lives (alive), a
port nothing listens on (closed_port). A folder's conftest.py imports the fixtures it wants from
here."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from lvsmon.cli.demo import serve_http


@dataclass
class Web:
    """A real HTTP server on loopback whose answer a test can change, or that can be stopped."""

    port: int
    body: str = "still alive"
    status: int = 200
    runner: web.AppRunner | None = None
    host: str = "127.0.0.1"

    async def start(self) -> None:
        self.runner, self.port = await serve_http("/{tail:.*}", self._handle, self.port, self.host)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.body, status=self.status)


@pytest.fixture
async def webs() -> AsyncIterator[list[Web]]:
    servers = [Web(0) for _ in range(3)]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


async def wait_for(cond: Callable[[], bool], within: float = 10.0) -> None:
    """Poll a condition (not a timing assertion: `within` only bounds a hung test)."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def lvsmon(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsmon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def install_as_ldirectord(bindir: Path) -> Path:
    """lvsmon installed under the name ldirectord, as pip makes a console script: a Python
    script of that name (so sys.argv[0] says ldirectord; `python -m lvsmon` would not)."""
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "ldirectord"
    wrapper.write_text(
        f"#!{sys.executable}\nimport sys\nfrom lvsmon.cli.dispatch import main\nsys.exit(main())\n"
    )
    wrapper.chmod(0o755)
    return wrapper


def alive(pid: int) -> bool:
    """The process exists and has not exited. A killed daemon is an orphan whose zombie stays
    until whatever adopted it reaps it, so "has a /proc entry" is not enough."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return text.rpartition(")")[2].split()[0] != "Z"


def closed_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, never listened, so nobody else can take it meanwhile)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    _HELD.append(sock)
    port: int = sock.getsockname()[1]
    return port


_HELD: list[socket.socket] = []


@pytest.fixture(autouse=True)
def release_held_sockets() -> Iterator[None]:
    """closed_port's sockets, closed after each test of a folder whose conftest imports this
    (tests/checks)."""
    yield None
    while _HELD:
        _HELD.pop().close()
