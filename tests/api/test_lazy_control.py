"""The control server loaded on first use (lvsmon/api/control.py): without --listen a started
daemon has bound its control socket but not imported aiohttp (some 15 MiB); the first client is
answered all the same; a stop before it, or during the load, leaves nothing behind; a load that
fails leaves the daemon running. With --listen the server is there from the start."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsmon.api import control
from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.memory import MemoryBackend
from realservers.base import free_port

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter: this one has aiohttp loaded already (the tests' client).
CHILD = r"""
import asyncio, json, os, sys
from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.memory import MemoryBackend

async def ask(reader, writer, host):
    writer.write(b"GET /status HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    async with asyncio.timeout(20):
        answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), json.loads(body)["phase"]

async def main(cfg, sock, listen, mode):
    out = {}
    daemon = Daemon(load_config(cfg), MemoryBackend(), control_socket=sock, listen=listen or None)
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    out["ready"] = await ready
    out["aiohttp_at_start"] = "aiohttp" in sys.modules
    out["server_at_start"] = getattr(daemon.control, "server", None) is not None
    out["socket_mode"] = oct(os.stat(sock).st_mode)
    if mode == "unix":
        out["answer"] = await ask(*await asyncio.open_unix_connection(sock), b"lvsmon")
        out["aiohttp_after"] = "aiohttp" in sys.modules
    if mode == "tcp":
        host, port = listen.split(":")
        conn = await asyncio.open_connection(host, int(port))
        out["answer"] = await ask(*conn, listen.encode())
    daemon.request_stop()
    out["rc"] = await task
    out["socket_after_stop"] = os.path.exists(sock)
    out["aiohttp_after_stop"] = "aiohttp" in sys.modules
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:]))
"""


def write_config(tmp: Path) -> str:
    cfg = tmp / "t.cf"
    cfg.write_text(
        f'checktimeout=2\ncheckinterval=1\nlogfile="{tmp}/lvsmon.log"\n'
        "virtual=127.0.0.100:80\n\treal=127.0.0.1:8081 masq\n\tchecktype=on\n\tservice=http\n"
    )
    return str(cfg)


def child(tmp: Path, mode: str, listen: str = "") -> dict[str, object]:
    sock = tmp / "l.sock"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, write_config(tmp), str(sock), listen, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    assert out["ready"] is None
    assert out["rc"] == 0
    assert out["socket_mode"] == oct(stat.S_IFSOCK | 0o600)
    assert out["socket_after_stop"] is False
    return out


def test_a_started_daemon_without_listen_has_not_imported_aiohttp(tmp_path: Path) -> None:
    out = child(tmp_path, "none")
    assert out["aiohttp_at_start"] is False
    assert out["server_at_start"] is False


def test_the_first_request_on_the_socket_is_answered_and_loads_the_server(
    tmp_path: Path,
) -> None:
    out = child(tmp_path, "unix")
    assert out["aiohttp_at_start"] is False
    assert out["answer"] == ["HTTP/1.1 200 OK", "running"]
    assert out["aiohttp_after"] is True


def test_a_stop_before_any_connection_unlinks_the_socket(tmp_path: Path) -> None:
    # child() asserts the socket is gone after the stop; the server was never loaded
    out = child(tmp_path, "none")
    assert out["aiohttp_after_stop"] is False


def test_with_listen_the_server_is_served_at_start(tmp_path: Path) -> None:
    out = child(tmp_path, "tcp", f"127.0.0.1:{free_port()}")
    assert out["aiohttp_at_start"] is True
    assert out["server_at_start"] is True
    assert out["answer"] == ["HTTP/1.1 200 OK", "running"]


async def start_daemon(tmp: Path) -> tuple[Daemon, asyncio.Task[int], Path]:
    sock = tmp / "l.sock"
    daemon = Daemon(load_config(write_config(tmp)), MemoryBackend(), control_socket=str(sock))
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    return daemon, task, sock


async def first_request(sock: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(sock)
    writer.write(b"GET /status HTTP/1.1\r\nHost: lvsmon\r\nConnection: close\r\n\r\n")
    await writer.drain()
    return reader, writer


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionResetError:
        return b""


async def test_a_stop_during_the_load_is_bounded_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a server module whose import takes 2 s: the stop comes in the middle of it
    name = f"slow_server_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(
        "import time\ntime.sleep(2)\nfrom lvsmon.api.server import ControlServer  # noqa\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(control, "SERVER_MODULE", name)
    daemon, task, sock = await start_daemon(tmp_path)
    front = daemon.control
    assert isinstance(front, control.LazyControlServer)
    reader, writer = await first_request(sock)
    async with asyncio.timeout(5):
        while front._loading is None:  # noqa: ASYNC110 (a poll)
            await asyncio.sleep(0.01)
    began = time.monotonic()
    daemon.request_stop()
    assert await task == 0
    assert time.monotonic() - began < 1.5  # not the import's 2 s
    assert front.server is None
    assert not sock.exists()
    assert await read_to_end(reader) == b""  # the waiting client is let go, not kept
    writer.close()


async def test_a_load_that_fails_is_logged_and_the_daemon_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, "lvsmon")
    monkeypatch.setattr(control, "SERVER_MODULE", "lvsmon.api.no_such_module")
    daemon, task, sock = await start_daemon(tmp_path)
    reader, writer = await first_request(sock)
    assert await read_to_end(reader) == b""
    writer.close()
    [record] = [r for r in caplog.records if "control server cannot start" in r.getMessage()]
    assert record.levelno == logging.CRITICAL
    assert record.exc_info is not None
    await asyncio.sleep(1.5)  # a round of checks later
    assert not task.done()
    assert daemon.exit_code == 0
    assert json.loads(daemon.status_json())["phase"] == "running"
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_unix_connection(sock)
    daemon.request_stop()
    assert await task == 0
    assert not sock.exists()
