"""A stand-in for systemd's notification socket (PID 1 is never booted on these machines): an
AF_UNIX datagram socket with SO_PASSCRED, so that each notification carries the sender's pid as
the kernel saw it, read by a thread into a list the tests wait on."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Note:
    at: float  # time.monotonic() when it arrived
    pid: int | None  # the sender, from SCM_CREDENTIALS
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.fields if k == key), None)

    def has(self, key: str, value: str = "1") -> bool:
        return self.get(key) == value

    def __str__(self) -> str:
        return f"{self.at:.3f} pid={self.pid} " + " ".join(f"{k}={v}" for k, v in self.fields)


class NotifyListener:
    """Bound at a short path under /tmp (AF_UNIX paths are limited to 107 bytes; pytest's
    tmp_path can be longer) or, with `abstract`, at an abstract name. `address` is what goes
    into NOTIFY_SOCKET. `at_ready` runs in the reading thread the moment the first READY=1
    arrives (before the daemon can do anything else), its result kept in `ready_result`."""

    def __init__(
        self, *, abstract: bool = False, at_ready: Callable[[], object] | None = None
    ) -> None:
        self.notes: list[Note] = []
        self.at_ready = at_ready
        self.ready_result: object = None
        self._dir: str | None = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"lvsmon-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="sdn.", dir="/tmp")
            self.address = os.path.join(self._dir, "notify")
            self.sock.bind(self.address)
        self.sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._running = True
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = None
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", value[:12])[0]
            fields = tuple(
                (k, v)
                for k, _, v in (line.partition("=") for line in data.decode().split("\n"))
                if k
            )
            note = Note(time.monotonic(), pid, fields)
            if note.has("READY") and self.at_ready is not None and not self.readies():
                self.ready_result = self.at_ready()
            with self._lock:
                self.notes.append(note)

    def snapshot(self) -> list[Note]:
        with self._lock:
            return list(self.notes)

    def readies(self) -> list[Note]:
        return [n for n in self.snapshot() if n.has("READY")]

    def with_key(self, key: str, value: str | None = None) -> list[Note]:
        return [
            n
            for n in self.snapshot()
            if (n.get(key) is not None if value is None else n.has(key, value))
        ]

    async def wait(
        self, match: Callable[[Note], bool], *, after: int = 0, within: float = 30.0
    ) -> tuple[int, Note]:
        """The first note from index `after` on that matches, with its index (polling, so the
        test's event loop, which serves the real servers, keeps running). `within` only bounds
        a hung test."""
        deadline = time.monotonic() + within
        while True:
            notes = self.snapshot()
            for i in range(after, len(notes)):
                if match(notes[i]):
                    return i, notes[i]
            if time.monotonic() > deadline:
                shown = "\n".join(map(str, notes[after:])) or "(none)"
                raise AssertionError(f"no matching notification; received:\n{shown}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
