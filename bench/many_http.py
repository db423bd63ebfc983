"""Real servers the way the ldirectord anchor was first measured: one asyncio process answering
HTTP on many loopback addresses, logging every request.

    python bench/many_http.py DIR PORT N [LATENCY_MS [FIRST]]

Listens on 127.77.x.y:PORT for N addresses of `scale.real_address` from index FIRST (default 0);
answers every
request `200 still alive`, or `503 down` when DIR/down/<address> exists, LATENCY_MS (default 0)
after the request arrived, as an application's health page that does some work would; appends
`<unix time> <address> <status>` per request to DIR/access.log (the format of the nginx servers
of bench/scale.py), flushed every second. Loopback only: it binds nothing else and refuses peers
outside 127/8.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

OK = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nstill alive\n"
DOWN = b"HTTP/1.0 503 Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\ndown\n"


def real_address(i: int) -> str:
    return f"127.77.{i // 200}.{i % 200 + 1}"


class Answer(asyncio.Protocol):
    def __init__(self, down_dir: str, log: list[str], latency_s: float) -> None:
        self.down_dir = down_dir
        self.log = log
        self.latency_s = latency_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if not peer or not str(peer[0]).startswith("127."):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" not in self.buf or self.transport is None:
            return
        self.buf = b""
        address = str(self.transport.get_extra_info("sockname")[0])
        down = os.path.exists(os.path.join(self.down_dir, address))
        self.log.append(f"{time.time():.3f} {address} {503 if down else 200}\n")
        if self.latency_s > 0:
            asyncio.get_running_loop().call_later(self.latency_s, self.answer, down)
        else:
            self.answer(down)

    def answer(self, down: bool) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(DOWN if down else OK)
            self.transport.close()


async def main(workdir: str, port: int, n: int, latency_s: float, first: int) -> None:
    loop = asyncio.get_running_loop()
    down_dir = os.path.join(workdir, "down")
    os.makedirs(down_dir, exist_ok=True)
    log: list[str] = []
    servers = [
        await loop.create_server(
            lambda: Answer(down_dir, log, latency_s), real_address(i), port, backlog=128
        )
        for i in range(first, first + n)
    ]
    # a plain append per second: the log's consumer polls, and a blocking write of a second's
    # lines is what nginx's buffered log does too
    path = os.path.join(workdir, "access.log")
    while servers:
        await asyncio.sleep(1.0)
        with open(path, "a", encoding="ascii") as f:  # noqa: ASYNC230
            f.write("".join(log))
        log.clear()


if __name__ == "__main__":
    latency_ms = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), latency_ms / 1000, first))
