"""The real servers of bench/soak.py: one asyncio process listening on many loopback addresses,
each real's behaviour switched at run time through stdin.

    python bench/soak_servers.py POOL.json CERT KEY

POOL.json: [["127.88.0.1", 8080, false], ["127.88.0.2", 8443, true], ...] (address, port, TLS).
Every real starts `ok`. Commands on stdin, one a line:

    SET <address>:<port> <mode>   ok | refused | hung | slow <seconds> | 5xx | wrong | tlsstall
    SYNC                          answers `synced` on stdout once the lines before it are done

* ok: `200 still alive`; 5xx: `503`; wrong: `200` with a body no receive string matches;
* refused: the listener is closed (connections refused) until the mode changes again;
* hung: the request is read, nothing is ever answered (the connection is held until the
  checker gives up);
* slow: the answer comes that many seconds after the request;
* tlsstall (TLS reals): the TCP connection is accepted, the TLS handshake never answered.
  On a plain real it behaves as hung.

TLS reals do the handshake (the self-signed CERT/KEY) before the HTTP exchange. Prints `ready N`
once every listener is up, and at EOF on stdin (or SIGTERM) closes everything and prints one
JSON line of counts per mode. Loopback only: binds 127/8 addresses, refuses other peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import ssl
import sys
from collections import Counter

OK = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nstill alive\n"
FAIL = b"HTTP/1.0 503 Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\ndown\n"
WRONG = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot here\n"
HOLD_MAX_S = 120.0  # a checker that never closes must not make us leak


class Reals:
    def __init__(self, pool: list[tuple[str, int, bool]], tls: ssl.SSLContext) -> None:
        self.tls_ctx = tls
        self.tls = {f"{a}:{p}": t for a, p, t in pool}
        self.where = {f"{a}:{p}": (a, p) for a, p, _ in pool}
        self.mode: dict[str, tuple[str, float]] = {k: ("ok", 0.0) for k in self.tls}
        self.servers: dict[str, asyncio.Server] = {}
        self.served: Counter[str] = Counter()
        self.conns: set[asyncio.Task[None]] = set()

    async def listen(self, key: str) -> None:
        if key in self.servers:
            return
        address, port = self.where[key]
        self.servers[key] = await asyncio.start_server(
            lambda r, w: self._handle(key, r, w), address, port, backlog=256
        )

    async def unlisten(self, key: str) -> None:
        server = self.servers.pop(key, None)
        if server is not None:
            server.close()

    async def set(self, key: str, mode: str, arg: float) -> None:
        if key not in self.mode:
            return
        self.mode[key] = (mode, arg)
        if mode == "refused":
            await self.unlisten(key)
        else:
            await self.listen(key)

    async def _handle(
        self, key: str, reader: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.conns.add(task)
        try:
            peer = w.get_extra_info("peername")
            if not peer or not str(peer[0]).startswith("127."):
                return
            mode, arg = self.mode[key]
            self.served[mode] += 1
            if mode in ("hung", "tlsstall") or (mode == "refused"):
                await self._hold(reader)
                return
            if self.tls[key]:
                async with asyncio.timeout(10):
                    await w.start_tls(self.tls_ctx)
            async with asyncio.timeout(10):
                await reader.readuntil(b"\r\n\r\n")
            if mode == "slow":
                await asyncio.sleep(arg)
            w.write(OK if mode == "ok" or mode == "slow" else WRONG if mode == "wrong" else FAIL)
            async with asyncio.timeout(10):
                await w.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ssl.SSLError:
            pass
        finally:
            w.close()
            self.conns.discard(task)

    async def _hold(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(HOLD_MAX_S):
                while await reader.read(4096):
                    pass

    async def close(self) -> None:
        for key in list(self.servers):
            await self.unlisten(key)
        for task in list(self.conns):
            task.cancel()


async def main(pool_path: str, cert: str, key: str) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(pool_path, encoding="utf-8") as f:  # noqa: ASYNC230 (before serving anything)
        pool = [(str(a), int(p), bool(t)) for a, p, t in json.load(f)]
    if any(not a.startswith("127.") for a, _, _ in pool):
        raise SystemExit("soak_servers.py: loopback addresses only")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    reals = Reals(pool, ctx)
    for k in reals.mode:
        await reals.listen(k)
    print(f"ready {len(reals.servers)}", flush=True)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def commands() -> None:
        while line := await stdin.readline():
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "SET" and len(words) >= 3:
                arg = float(words[3]) if len(words) > 3 else 0.0
                await reals.set(words[1], words[2], arg)
            elif words[0] == "SYNC":
                print("synced", flush=True)
        stop.set()

    reader = asyncio.create_task(commands())
    await stop.wait()
    reader.cancel()
    await reals.close()
    print(json.dumps({"served": dict(reals.served)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
