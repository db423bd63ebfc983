"""What every real protocol server of the check tests needs: a directory its own user can enter,
free loopback ports, a process tree to stop or freeze, readiness polls, a self-signed certificate.

Servers come from Debian packages that `scripts/install-test-deps` installs (tests/
debian-packages.txt). A missing server binary is a test failure naming the package, never a skip:
CI must not pass by testing nothing. Server state lives in `/var/tmp/lvsmon-<name>-*` (mode 755):
pytest's tmp_path sits under a 0700 directory that postfix, mysql, postgres, news or dovecot
cannot enter once they drop privileges.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# children_of's one home is bench/procs.py, which the bench programs share without the tests.
# bench/ is scripts, not a package: mypy knows its files as top-level modules, and so do we
BENCH = str(Path(__file__).resolve().parents[1] / "bench")
if BENCH not in sys.path:
    sys.path.append(BENCH)
from procs import children_of as children_of  # noqa: E402  (re-exported: socat, dovecot)

WORK_PARENT = "/var/tmp"


def require(binary: str, package: str) -> str:
    """The path of `binary`, or a failure telling which Debian package to install."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/lib/news/bin/{binary}") if os.path.exists(p)),
        None,
    )
    if path is None:
        pytest.fail(
            f"{binary} not found: install the Debian package {package} "
            "(scripts/install-test-deps does)",
            pytrace=False,
        )
    return path


@contextlib.contextmanager
def server_dir(name: str) -> Iterator[Path]:
    """A fresh directory every server user can traverse; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"lvsmon-{name}-", dir=WORK_PARENT))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 and ::1 alike (servers here listen on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s4:
            s4.bind(("127.0.0.1", 0))
            port = int(s4.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET6, kind) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def free_ports(n: int) -> list[int]:
    """n distinct ports, free for TCP and UDP on both loopbacks."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        if port not in ports:
            ports.append(port)
    return ports


def wait_tcp(
    host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until a TCP connect to host:port succeeds; fails early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} before {host}:{port} answered"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} did not answer within {timeout:g}s")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


def read_pid(path: Path, timeout: float = 20.0) -> int:
    """The pid in a pid file (first number), waiting for the file to appear."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text().split()[0])
        if time.monotonic() > deadline:
            raise TimeoutError(f"no pid in {path} within {timeout:g}s")
        time.sleep(0.05)


@dataclass
class Server:
    """A running server: its root pid (the daemon's master), how it stops, where it lives."""

    name: str
    pid: int
    dir: Path
    stop_signal: int = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return [self.pid, *children_of(self.pid)]

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the whole process tree (it keeps accepting in the kernel's backlog but never
        answers); SIGCONT afterwards."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        """Signal the root and wait for the whole tree to go; SIGKILL what is left."""
        pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
            os.kill(self.pid, self.stop_signal)
        self._wait_gone(pids, timeout)

    def kill(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_gone(self.pids(), 5.0)

    def _wait_gone(self, pids: Sequence[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(alive(p) for p in pids):
            if self.popen is not None:
                self.popen.poll()
            if time.monotonic() > deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
            time.sleep(0.05)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(1)


def run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run a set-up command; its output is in the exception if it fails."""
    proc = subprocess.run(list(cmd), capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout.decode(errors='replace')}"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc  # type: ignore[no-any-return]


def self_signed(directory: Path, cn: str) -> tuple[Path, Path]:
    """(cert, key) of a fresh self-signed RSA certificate for `cn`, readable by every user."""
    tls = directory / "tls"
    tls.mkdir(exist_ok=True)
    tls.chmod(0o755)
    cert, key = tls / "cert.pem", tls / "key.pem"
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ]
    )
    cert.chmod(0o644)
    key.chmod(0o644)
    return cert, key


class SilentPeer:
    """A loopback TCP (or UDP) port that accepts and never says a word: the peer every check's
    one deadline must hold against."""

    def __init__(self, host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, kind)
        self.sock.bind((host, 0))
        if kind == socket.SOCK_STREAM:
            self.sock.listen(64)
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self._accepted: list[socket.socket] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SilentPeer:
        if self.sock.type == socket.SOCK_STREAM:
            self.sock.setblocking(False)
            self._task = asyncio.get_running_loop().create_task(self._accept())
        return self

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self.sock)
            self._accepted.append(conn)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for conn in self._accepted:
            conn.close()
        self.sock.close()


class Forwarder:
    """A loopback TCP port that forwards to `target` while open: a server that is down (the port
    refuses), then back (`open()`), then down again (`close()`)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (task := asyncio.current_task()) is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._tasks:  # the sessions end when the target hangs up (Postfix: after QUIT)
            await asyncio.wait(self._tasks, timeout=5)


class ScriptedPeer:
    """A loopback TCP peer playing a line protocol's server from a script: `greeting` on each
    accept, then per line received the next of `replies` (b"" says nothing); after the script it
    holds the connection open and silent (or closes it: `hold=False`). `received` is every line
    that came in."""

    def __init__(
        self,
        greeting: bytes,
        replies: Sequence[bytes] = (),
        host: str = "127.0.0.1",
        *,
        hold: bool = True,
    ) -> None:
        self.greeting = greeting
        self.hold = hold
        self.replies = list(replies)
        self.host = host
        self.port = 0
        self.received: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[object]] = []

    async def __aenter__(self) -> ScriptedPeer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if (task := asyncio.current_task()) is not None:
            self._tasks.append(task)
        with contextlib.suppress(ConnectionError, asyncio.LimitOverrunError, ValueError):
            writer.write(self.greeting)
            for reply in self.replies:
                line = await reader.readline()
                if not line:
                    return
                self.received.append(line)
                writer.write(reply)
            if not self.hold:
                await writer.drain()
                writer.close()
                return
            while line := await reader.readline():  # silent, until the client goes
                self.received.append(line)

    async def closed(self, timeout: float = 5.0) -> None:
        """Until every client so far has hung up (so `received` holds all they sent)."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()  # the handlers see EOF and end: cancelling them makes asyncio log
        await self.closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def open_sockets() -> int:
    """How many sockets this process holds."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def sockets_settled(before: int, timeout: float = 2.0) -> None:
    """Until this process holds no more than `before` sockets: a TLS transport closes its socket
    only once the close_notify exchange is done, a few ms after the check returned, and a test
    loop closed before that reports the socket as leaked."""
    for _ in range(int(timeout / 0.01)):  # polled: the close has no event to wait for
        if open_sockets() <= before:
            return
        await asyncio.sleep(0.01)
