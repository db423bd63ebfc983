"""A small HAProxy-style agent for tests: an asyncio server on 127.0.0.1 that answers each
connection with its current `answer` (bytes, sent as is), or behaves badly (`mode`): "hang"
(accept, never speak), "flood" (1 MiB without a newline), "close" (close at once). It records
what each client sent before it answered (`requests`) and when its answer last changed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

Mode = Literal["answer", "hang", "flood", "close"]


class Agent:
    def __init__(
        self,
        answer: bytes = b"100%\n",
        *,
        expect: bytes = b"",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self.answer = answer
        self.mode: Mode = "answer"
        self.expect = expect  # read this many bytes' worth (a request line) before answering
        self.requests: list[bytes] = []
        self.served: list[tuple[float, bytes]] = []  # (monotonic time, answer) per answer sent
        self.connections = 0
        self.changed_at = time.monotonic()
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def say(self, answer: bytes) -> None:
        self.answer = answer
        self.mode = "answer"
        self.changed_at = time.monotonic()

    async def start(self) -> Agent:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.expect:
                with contextlib.suppress(Exception):
                    got = await asyncio.wait_for(reader.readexactly(len(self.expect)), 2)
                    self.requests.append(got)
            if self.mode == "hang":
                await asyncio.sleep(3600)
            elif self.mode == "flood":
                writer.write(b"7" * (1 << 20))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            elif self.mode == "answer":
                writer.write(self.answer)
                self.served.append((time.monotonic(), self.answer))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
