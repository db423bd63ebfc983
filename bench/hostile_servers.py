"""Hostile real servers for bench/hostile.py, in a process of their own (so that they stream at
full speed whatever the daemon or the bench does): `python bench/hostile_servers.py KIND N`
listens on N loopback ports (127.0.0.1), prints them on one line, and serves every connection
with KIND's behaviour until stdin closes.

Each peer streams without end (as long as the client reads): the daemon's per-check budget of a
peer's bytes (256 KiB; 1280 KiB for http) is what must stop it, not the peer. The wire details
follow tests/hostile/test_library_checks.py and test_driver_bounds.py (bench/ imports nothing of
tests/, so the few lines each are repeated here). Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
from collections.abc import Awaitable, Callable

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]

CHUNK = bytes(64 << 10)


async def forever(writer: Writer, chunk: bytes) -> None:
    """Send `chunk` again and again, as fast as the client takes it, until it goes."""
    while True:
        writer.write(chunk)
        await writer.drain()


async def eof(reader: Reader, writer: Writer) -> None:
    """Not hostile: accept and close (the warm-up reals: each library check's code runs once)."""


async def http_chunks(reader: Reader, writer: Writer) -> None:
    """A 200 whose chunked body is 1-byte chunks forever."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    await forever(writer, b"1\r\nx\r\n" * 8192)


async def http_1xx(reader: Reader, writer: Writer) -> None:
    """Endless `100 Continue` heads, never the final answer."""
    await reader.readuntil(b"\r\n\r\n")
    await forever(writer, b"HTTP/1.1 100 Continue\r\n\r\n" * 2048)


async def http_trickle(reader: Reader, writer: Writer) -> None:
    """A head, then one byte of a 1 MB body every 50 ms: little data, never finished (the
    deadline, not the budget, must end it)."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while True:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


async def imap_login(reader: Reader, writer: Writer) -> None:
    """A greeting, then LOGIN answered with endless 3-byte untagged lines."""
    writer.write(b"* OK IMAP4rev1 ready\r\n")
    await reader.readline()
    await forever(writer, b"* \n" * 65536)


async def ftp_lines(reader: Reader, writer: Writer) -> None:
    """Greeting continuation lines of 64 KiB, forever."""
    await forever(writer, b"220-" + b"x" * ((64 << 10) - 8) + b"\r\n")


async def smtp_continuations(reader: Reader, writer: Writer) -> None:
    """An endless multi-line greeting of 1 KB lines."""
    await forever(writer, (b"220-" + b"x" * 1000 + b"\r\n") * 64)


async def smtp_ehlo_flood(reader: Reader, writer: Writer) -> None:
    """A good greeting, then EHLO answered with endless continuation lines."""
    writer.write(b"220 hello\r\n")
    await reader.readline()
    await forever(writer, (b"250-" + b"x" * 1000 + b"\r\n") * 64)


async def mysql_packets(reader: Reader, writer: Writer) -> None:
    """A greeting of 16 MiB continuation packets, forever."""
    seq = 0
    while True:
        writer.write(struct.pack("<I", 0xFFFFFF)[:3] + bytes([seq % 256]))
        left = 0xFFFFFF
        while left:
            n = min(left, len(CHUNK))
            writer.write(CHUNK[:n])
            await writer.drain()
            left -= n
        seq += 1


async def pgsql_error(reader: Reader, writer: Writer) -> None:
    """An ErrorResponse announcing 2 GB, then streamed."""
    request = await reader.readexactly(8)
    if request == struct.pack("!ll", 8, 80877103):  # SSLRequest: no TLS here
        writer.write(b"N")
        (length,) = struct.unpack("!l", await reader.readexactly(4))
        await reader.readexactly(length - 4)  # the StartupMessage
    writer.write(b"E" + struct.pack("!l", 0x7FFFFFFF) + b"SFATAL\0")
    await forever(writer, CHUNK)


async def ldap_ber(reader: Reader, writer: Writer) -> None:
    """The bind answered with a BER length of 2 GB, then streamed."""
    await reader.read(1024)
    writer.write(b"\x30\x84\x7f\xff\xff\xff\x02\x01\x01")
    await forever(writer, CHUNK)


def tns_packet(kind: int, payload: bytes) -> bytes:
    return struct.pack("!HHBBH", 8 + len(payload), 0, kind, 0, 0) + payload


async def oracle_markers(reader: Reader, writer: Writer) -> None:
    """TNS marker packets (a break, never a reset) during the login, forever."""
    await reader.read(4096)
    await forever(writer, tns_packet(12, b"\x01\x00\x01" + bytes(0xFFFF - 11)))


async def tcp_garbage(reader: Reader, writer: Writer) -> None:
    """Bytes without a newline, forever, whatever was asked."""
    await forever(writer, b"\xa5Z" * (32 << 10))


KINDS: dict[str, Handler] = {
    "eof": eof,
    "http-chunks": http_chunks,
    "http-1xx": http_1xx,
    "http-trickle": http_trickle,
    "imap-login": imap_login,
    "ftp-lines": ftp_lines,
    "smtp-continuations": smtp_continuations,
    "smtp-ehlo-flood": smtp_ehlo_flood,
    "mysql-packets": mysql_packets,
    "pgsql-error": pgsql_error,
    "ldap-ber": ldap_ber,
    "oracle-markers": oracle_markers,
    "tcp-garbage": tcp_garbage,
}


async def serve(kind: str, n: int) -> None:
    handler = KINDS[kind]
    served = 0

    async def handle(reader: Reader, writer: Writer) -> None:
        nonlocal served
        served += 1
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256) for _ in range(n)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    loop = asyncio.get_running_loop()
    # stdin closed (the bench went): stop; the connections served are the last line
    await loop.run_in_executor(None, sys.stdin.read)
    print(f"served {served}", flush=True)
    os._exit(0)  # the handlers still streaming end with the process


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: hostile_servers.py {{{','.join(KINDS)}}} N")
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
