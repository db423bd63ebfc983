"""negotiate ftp against a real ProFTPD (realservers/proftpd.py), and against scripted peers
for what no real server sends."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks import ftp as ftp_check
from realservers.base import Server, SilentPeer
from realservers.proftpd import PASSWORD, USER, running_proftpd
from tests.helpers import closed_port

DEADLINE = 1.5


@pytest.fixture(scope="module")
def proftpd() -> Iterator[Server]:
    with running_proftpd() as server:
        yield server


@pytest.fixture(scope="module")
def proftpd2() -> Iterator[Server]:
    """A second instance, still live while the first one is frozen."""
    with running_proftpd(("127.0.0.1",)) as server:
        yield server


def spec(server: Server | None = None, host: str = "127.0.0.1", **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "negotiate",
        "service": "ftp",
        "host": host,
        "timeout": 5,
        "request": "/welcome.txt",
        "receive": "anonymous ftp ok",
    }
    if server is not None:
        fields["port"] = server.ports["ftp"]
    fields.update(kw)
    return CheckSpec(**fields)


async def test_anonymous_up(proftpd: Server) -> None:
    result = await run_check(spec(proftpd))
    assert (result.ok, result.reason) == (True, "ftp: retrieved welcome.txt (24 bytes)")


async def test_user_up(proftpd: Server) -> None:
    result = await run_check(
        spec(proftpd, login=USER, passwd=PASSWORD, request="/probe.txt", receive="^lvsmon user")
    )
    assert (result.ok, result.reason) == (True, "ftp: retrieved probe.txt (19 bytes)")


async def test_wrong_password(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, login=USER, passwd="wrong"))
    assert (result.ok, result.reason) == (False, "ftp: login rejected: 530 Login incorrect.")


async def test_content_not_matching_receive(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, receive="^user"))
    assert (result.ok, result.reason) == (
        False,
        "ftp: welcome.txt (24 bytes) does not match receive",
    )


async def test_missing_file(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, request="/nosuch.txt", receive=""))
    assert (result.ok, result.reason) == (
        False,
        "ftp: retrieve nosuch.txt: 550 nosuch.txt: No such file or directory",
    )


async def test_directory_is_no_file(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, request="/pub", receive=""))
    assert (result.ok, result.reason) == (False, "ftp: retrieve pub: 550 pub: Not a regular file")


async def test_empty_receive_is_up_when_retrieved(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, receive=""))
    assert (result.ok, result.reason) == (True, "ftp: retrieved welcome.txt (24 bytes)")


async def test_no_file_is_a_login_check(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, request="/", receive=""))
    assert (result.ok, result.reason) == (True, "ftp: logged in")
    result = await run_check(spec(proftpd, request="/"))
    assert (result.ok, result.reason) == (
        False,
        "ftp: receive is set but request names no file to retrieve",
    )


async def test_download_is_bounded(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, request="/big.bin", receive="^x+$"))
    assert (result.ok, result.reason) == (True, "ftp: retrieved big.bin (first 1048576 bytes)")
    # the session was left without waiting for the rest; the server is fine
    assert (await run_check(spec(proftpd))).ok


async def test_ipv6_uses_epsv(proftpd: Server) -> None:
    result = await run_check(spec(proftpd, host="::1"))
    assert (result.ok, result.reason) == (True, "ftp: retrieved welcome.txt (24 bytes)")


async def test_refused() -> None:
    result = await run_check(spec(port=closed_port()))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_stopped_server_is_down() -> None:
    with running_proftpd(("127.0.0.1",)) as server:
        assert (await run_check(spec(server))).ok
    result = await run_check(spec(server))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_silent_peer_down_at_deadline() -> None:
    async with SilentPeer() as peer:
        result = await run_check(spec(port=peer.port, timeout=DEADLINE))
    assert (result.ok, result.reason) == (False, f"timeout after {DEADLINE:g}s during ftp greeting")
    assert DEADLINE - 0.05 <= result.latency_s < DEADLINE + 0.5


async def test_frozen_server_down_at_deadline_and_delays_no_other_check(
    proftpd: Server, proftpd2: Server
) -> None:
    with proftpd.frozen():
        frozen = [
            asyncio.create_task(run_check(spec(proftpd, timeout=DEADLINE))) for _ in range(10)
        ]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        live = await run_check(spec(proftpd2))
        assert live.ok, live.reason
        # proftpd forks a process per session and sometimes takes ~0.2 s to greet
        assert time.monotonic() - started < 1.0
        results = await asyncio.gather(*frozen)
    for result in results:
        assert (result.ok, result.reason) == (
            False,
            f"timeout after {DEADLINE:g}s during ftp greeting",
        )
        assert DEADLINE - 0.05 <= result.latency_s < DEADLINE + 0.5
    assert (await run_check(spec(proftpd))).ok  # thawed


# scripted peers: what a broken server might say


@contextlib.asynccontextmanager
async def scripted(*lines: bytes, close: bool = True) -> AsyncIterator[int]:
    """A control connection that sends `lines` (answering nothing) and closes or holds."""
    handlers: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            for line in lines:
                writer.write(line)
                await writer.drain()
            if not close:
                await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_greeting_refusal() -> None:
    async with scripted(b"421 Too many users, try later\r\n") as port:
        result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (False, "ftp: greeting: 421 Too many users, try later")


async def test_hang_up_after_greeting() -> None:
    async with scripted(b"220 hi\r\n") as port:
        result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (False, "ftp login: connection closed by the server")


async def test_latin1_greeting_is_no_error() -> None:
    async with scripted(b"220 Bienvenue \xe0 bord\r\n", b"530 Non\r\n") as port:
        result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (False, "ftp: login rejected: 530 Non")


async def test_over_long_line() -> None:
    async with scripted(b"220 " + b"x" * 100_000, close=False) as port:
        result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (
        False,
        "ftp greeting: response too large (a reply line over 64 KiB)",
    )


async def test_endless_reply() -> None:
    async with scripted(*[b"xyz garbage without a code\r\n"] * 2000, close=False) as port:
        result = await run_check(spec(port=port))
    assert (result.ok, result.reason) == (
        False,
        "ftp greeting: response too large (more than 1000 reply lines)",
    )


async def test_control_characters_in_reply_are_shown_safely() -> None:
    async with scripted(b"530-first\r\n", b"530 bad \x1b[31mred\x00\r\n") as port:
        result = await run_check(spec(port=port))
    assert not result.ok
    assert result.reason == "ftp: greeting: 530 bad ?[31mred?"


def test_judge() -> None:
    up = ftp_check.judge(spec(port=21, receive="o+k"), "f", b"ok", whole=True)
    assert (up.ok, up.reason) == (True, "ftp: retrieved f (2 bytes)")
    down = ftp_check.judge(spec(port=21, receive="^no"), "f", b"x" * 10, whole=False)
    assert (down.ok, down.reason) == (False, "ftp: f (first 10 bytes) does not match receive")


async def test_request_with_line_break_is_refused() -> None:
    result = await run_check(spec(port=21, request="/a\r\nDELE b"))
    assert (result.ok, result.reason) == (False, "ftp: request must not contain CR or LF")
