"""Hostile reals for the benchmark: HTTP servers that answer every request with an endless stream
of `HTTP/1.1 100 Continue` heads, as fast as the socket takes them, and never a final response.

    python bench/flood_1xx.py [--count N] [--base-port P] [--host H]

Listens on H:P .. H:P+N-1 (default 10 servers on 127.0.0.1 from port 18000) until interrupted,
printing one JSON line with the addresses once listening and one with the totals when stopped.
Loopback only: it refuses to bind anything else and drops peers outside loopback.

As a module (`bench/scale.py` or a test): `await start_flooders(count, base_port, host)` returns
a `Flooders` with `.addresses` [(host, port)], `.stats` (connections, bytes sent) and `close()`;
`base_port=0` gives each server an ephemeral port.

A check against one of these must fail after a few interim heads ("http: more than 8 interim 1xx
responses") without taking the event loop with it: before lvsmon bounded the parser, every
64 KiB read of such heads was searched once per head, for seconds on end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
from dataclasses import dataclass, field
from typing import Final

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
# one write per 64 KiB: the transport pauses us when its buffer is full, so a slow reader costs
# memory of one block, not of everything we could have sent
_BLOCK: Final = CONTINUE * (65536 // len(CONTINUE))


@dataclass
class FloodStats:
    connections: int = 0
    bytes_sent: int = 0

    @property
    def heads_sent(self) -> int:
        return self.bytes_sent // len(CONTINUE)


class _Flood(asyncio.Protocol):
    def __init__(self, stats: FloodStats, live: set[asyncio.Transport]) -> None:
        self.stats = stats
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.request = b""
        self.flooding = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        if not peer or not ipaddress.ip_address(str(peer[0]).split("%")[0]).is_loopback:
            transport.abort()
            return
        self.transport = transport
        self.live.add(transport)
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        if self.flooding:
            return  # whatever else the client says changes nothing
        self.request += data
        if b"\r\n\r\n" in self.request or b"\n\n" in self.request:
            self.flooding = True
            self.request = b""
            self._pump()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.live.discard(self.transport)
        self.transport = None

    def _pump(self) -> None:
        # write() calls pause_writing() itself once the buffer passes its high-water mark
        while not self.paused and self.transport is not None and not self.transport.is_closing():
            self.transport.write(_BLOCK)
            self.stats.bytes_sent += len(_BLOCK)


@dataclass
class Flooders:
    servers: list[asyncio.Server]
    addresses: list[tuple[str, int]]
    stats: FloodStats = field(default_factory=FloodStats)
    live: set[asyncio.Transport] = field(default_factory=set)

    async def close(self) -> None:
        """Stop listening and drop every connection still being flooded."""
        for server in self.servers:
            server.close()
        for transport in list(self.live):
            transport.abort()
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1)


async def start_flooders(count: int, base_port: int = 0, host: str = "127.0.0.1") -> Flooders:
    """`count` flooding servers on host:base_port + i (each on an ephemeral port if base_port
    is 0); loopback addresses only."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{host} is not a loopback address")
    loop = asyncio.get_running_loop()
    flooders = Flooders([], [])
    try:
        for i in range(count):
            port = base_port + i if base_port else 0
            server = await loop.create_server(
                lambda: _Flood(flooders.stats, flooders.live), host, port, backlog=128
            )
            flooders.servers.append(server)
            flooders.addresses.append((host, int(server.sockets[0].getsockname()[1])))
    except BaseException:
        await flooders.close()
        raise
    return flooders


async def _main(count: int, base_port: int, host: str) -> None:
    flooders = await start_flooders(count, base_port, host)
    print(json.dumps({"listening": [f"{h}:{p}" for h, p in flooders.addresses]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await flooders.close()
    stats = flooders.stats
    print(json.dumps({"connections": stats.connections, "heads_sent": stats.heads_sent}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10, help="servers to start (default 10)")
    parser.add_argument("--base-port", type=int, default=18000, help="first port (default 18000)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    args = parser.parse_args()
    asyncio.run(_main(args.count, args.base_port, args.host))
