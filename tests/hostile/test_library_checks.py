"""Hostile reals against the library-driven checks (issue 21, class 1): a peer that announces or
streams more than a check's budget of bytes gets the check down with "response too large" at
the bound, long before the deadline, and the check's memory stays bounded.

Each peer is a fake server on loopback that streams at most STREAMED bytes (then holds the line):
enough to show an unbounded client (it grew by that much, or waited for the deadline), little
enough not to hurt a shared machine when it is one. Memory is the peak of Python's allocations
during the check (tracemalloc: the libraries' buffers are bytes and bytearrays), minus what was
there before; the fake server's own share is a 64 KiB chunk and the transport's write buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

from lvsmon.checks import registry
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.budget import PEER_BYTES, Budget, CountingSocket, OverBudget
from lvsmon.checks.registry import run_check

DEADLINE = 4.0
"""The checks' deadline: far above the time a bounded check needs, so reaching it is a failure."""

PROMPT = 2.0
"""A check stopped at its budget ends within this (a loaded 2-core machine, tracemalloc on)."""

STREAMED = 48 << 20
"""What a hostile peer sends at most."""

MEMORY_BOUND = 4 << 20
"""Peak growth allowed during one hostile check: the budget (256 KiB) plus the libraries' fixed
buffers, with room to spare (bounded, they stay under 1.5 MiB here; unbounded, the same peers
grew a check by 34 to 128 MiB)."""

CHUNK = bytes(64 << 10)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(autouse=True)
def _collect() -> Any:
    yield
    gc.collect()


@contextlib.asynccontextmanager
async def hostile(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback TCP server running `handler` per connection; yields its port."""
    tasks: list[asyncio.Task[Any]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            tasks.append(task)
        try:
            await handler(reader, writer)
            await reader.read()  # hold the line until the client goes
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def stream(writer: asyncio.StreamWriter, total: int = STREAMED, chunk: bytes = CHUNK) -> None:
    """Send `total` bytes of `chunk`s as fast as the client takes them."""
    sent = 0
    while sent < total:
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)


async def measured(spec: CheckSpec) -> tuple[CheckResult, int]:
    """The check's result and the peak growth of Python's allocations while it ran (the check's
    module and its library imported before: that is no peer's doing)."""
    registry.lookup(spec.kind, spec.service)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        result = await run_check(spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before


async def assert_bounded(spec: CheckSpec, prefix: str) -> CheckResult:
    started = time.monotonic()
    result, growth = await measured(spec)
    took = time.monotonic() - started
    print(f"{spec.service}: {result.reason!r} after {took:.2f} s, peak +{growth / 2**20:.1f} MiB")
    assert not result.ok
    assert result.reason.startswith(prefix), result.reason
    assert "response too large" in result.reason, result.reason
    assert took < PROMPT, f"{took:.2f} s: not stopped at the bound"
    assert growth < MEMORY_BOUND, f"peak +{growth / 2**20:.1f} MiB"
    return result


def spec(service: str, port: int, **settings: Any) -> CheckSpec:
    values: dict[str, Any] = {"login": "lvsmon", "passwd": "secret", "timeout": DEADLINE}
    values.update(settings)
    return CheckSpec(kind="negotiate", service=service, host="127.0.0.1", port=port, **values)


# MySQL: a greeting of endless 16 MiB continuation packets (aiomysql appends them all)


async def mysql_continuations(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for seq in range(STREAMED // 0xFFFFFF + 1):
        writer.write(struct.pack("<I", 0xFFFFFF)[:3] + bytes([seq % 256]))
        await stream(writer, 0xFFFFFF - 0xFFFFFF % len(CHUNK))
        writer.write(bytes(0xFFFFFF % len(CHUNK)))


async def test_mysql_endless_continuation_packets() -> None:
    async with hostile(mysql_continuations) as port:
        result = await assert_bounded(spec("mysql", port, request="SELECT 1"), "mysql: ")
    assert result.reason == "mysql: response too large (over 256 KiB)"


# PostgreSQL: an ErrorResponse announcing 2 GB, then streamed (asyncpg buffers the length)


async def pgsql_huge_error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readexactly(8)
    if request == struct.pack("!ll", 8, 80877103):  # SSLRequest: no TLS here
        writer.write(b"N")
        (length,) = struct.unpack("!l", await reader.readexactly(4))
        await reader.readexactly(length - 4)  # the StartupMessage
    writer.write(b"E" + struct.pack("!l", 0x7FFFFFFF) + b"SFATAL\0")
    await stream(writer)


async def test_pgsql_two_gigabyte_error_response() -> None:
    async with hostile(pgsql_huge_error) as port:
        result = await assert_bounded(spec("pgsql", port, request="SELECT 1"), "pgsql: ")
    assert result.reason == "pgsql: response too large (over 256 KiB)"


# FTP: reply lines of 64 KiB (just under asyncio's line limit), forever


async def ftp_long_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await stream(writer, chunk=b"220-" + b"x" * ((64 << 10) - 8) + b"\r\n")


async def test_ftp_endless_64k_reply_lines() -> None:
    async with hostile(ftp_long_lines) as port:
        result = await assert_bounded(spec("ftp", port), "ftp")
    assert result.reason == "ftp greeting: response too large (over 256 KiB)"


async def ftp_short_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await stream(writer, chunk=b"220-x\r\n" * 8192)


async def test_ftp_endless_short_reply_lines() -> None:
    async with hostile(ftp_short_lines) as port:
        result = await assert_bounded(spec("ftp", port), "ftp")
    assert result.reason.startswith("ftp greeting: response too large")


# SMTP: endless continuation lines, and lines longer than any SMTP line


async def smtp_continuations(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await stream(writer, chunk=(b"220-" + b"x" * 1000 + b"\r\n") * 64)


async def smtp_huge_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 ")
    await stream(writer)


async def smtp_flood_after_greeting(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(b"220 hello\r\n")
    await reader.readline()  # EHLO
    await stream(writer, chunk=(b"250-" + b"x" * 1000 + b"\r\n") * 64)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (smtp_continuations, "smtp: greeting: response too large"),
        (smtp_huge_line, "smtp: greeting: response too large"),
        (smtp_flood_after_greeting, "smtp: ehlo: response too large"),
    ],
    ids=["continuations", "huge-line", "flood-after-greeting"],
)
async def test_smtp_floods(handler: Handler, reason: str) -> None:
    async with hostile(handler) as port:
        result = await assert_bounded(spec("smtp", port), reason)
    assert result.reason.startswith(reason)


# LDAP: an answer to the bind whose BER length says 2 GB, then streamed


async def ldap_huge_ber(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1024)  # the bind request
    writer.write(b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01")
    await stream(writer)


@pytest.mark.parametrize("service", ["ldap", "ldaps"])
async def test_ldap_two_gigabyte_ber_length(service: str) -> None:
    tls = None
    if service == "ldaps":
        ca = trustme.CA()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
    async with hostile(ldap_huge_ber, tls) as port:
        result = await assert_bounded(
            spec(service, port, login="", passwd="", request="/dc=example,dc=test"), service
        )
    assert result.reason == f"{service}: response too large (over 256 KiB)"


# Oracle: marker packets streamed during the login (python-oracledb keeps every packet of a
# response until the next request)


def tns_packet(kind: int, payload: bytes) -> bytes:
    return struct.pack("!HHBBH", 8 + len(payload), 0, kind, 0, 0) + payload


async def oracle_markers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(4096)  # the CONNECT packet
    marker = tns_packet(12, b"\x01\x00\x01" + bytes(0xFFFF - 11))  # a break, never a reset
    await stream(writer, chunk=marker)


async def test_oracle_endless_marker_packets() -> None:
    pytest.importorskip("oracledb")
    async with hostile(oracle_markers) as port:
        settings = {"database": "LVSMON", "request": "SELECT 1 FROM dual"}
        result = await assert_bounded(spec("oracle", port, **settings), "oracle: ")
    assert result.reason == "oracle: response too large (over 256 KiB)"


def test_the_budget_is_the_documented_one() -> None:
    assert PEER_BYTES == 256 * 1024


def test_counting_socket_stops_at_the_budget() -> None:
    """The socket under aiosmtplib (and any library that takes a connected socket): recv and
    recv_into count, and raise OverBudget, an OSError, past the budget."""
    left, right = socket.socketpair()
    budget = Budget("test", limit=100_000)
    counted = CountingSocket(left.family, left.type, fileno=left.detach())
    counted.budget = budget
    with counted, right:
        right.sendall(bytes(150_000))
        taken = len(counted.recv(60_000))
        taken += counted.recv_into(bytearray(30_000))
        with pytest.raises(OverBudget) as raised:
            while True:
                taken += len(counted.recv(60_000))
    assert isinstance(raised.value, OSError)
    assert budget.exceeded and taken <= 100_000
    assert str(raised.value) == "test: response too large (over 100000 bytes)"
