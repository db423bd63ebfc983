"""Issue 21, class 3: when the daemon does run out of file descriptors, its log says so (the log
file is kept open, so writing it needs no new descriptor), and the daemon keeps running with a
fresh status file.

A daemon process on the memory backend under RLIMIT_NOFILE 128 (soft and hard: the daemon
raises the soft limit to the hard one), with 300 reals on a loopback server that accepts and
never answers: each HTTP check holds its socket for the whole checktimeout, so the checks alone
use up every descriptor and the later ones fail with EMFILE."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvsmon.daemon import pidfile
from tests.helpers import alive

NOFILE = 128
REALS = 300
EMFILE_TEXT = os.strerror(24).lower()  # "too many open files", as describe_error words it


class Silent:
    """Loopback servers (one port per real) that accept every connection and never answer (nor
    close)."""

    def __init__(self, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.ports: list[int] = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.ports.append(sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(BlockingIOError):
                    self.held.append(sock.accept()[0])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
        for conn in self.held:
            conn.close()


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["prlimit", f"--nofile={NOFILE}:{NOFILE}", sys.executable, "-m", "lvsmon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(tmp / "lb.pid")},
        check=False,
    )


@dataclass
class Exhausted:
    """What 5 s of a daemon out of descriptors looked like, sampled every 0.5 s."""

    lines: list[str]  # log lines that name EMFILE
    alive: list[bool]
    held: list[int]  # the daemon's open descriptors
    ages: list[float]  # the status file's age


@pytest.fixture(scope="module")
def exhausted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exhausted]:
    tmp = tmp_path_factory.mktemp("fd")
    silent = Silent(REALS)
    log = tmp / "lvsmon.log"
    status = tmp / "lb.status.json"
    cf = tmp / "lb.cf"
    reals = "".join(f"\treal=127.0.0.1:{port} masq\n" for port in silent.ports)
    cf.write_text(
        f'checktimeout=10\ncheckinterval=1\nlogfile="{log}"\n'
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
    )
    began = time.monotonic()
    try:
        started = run(tmp, str(cf), "start")
        assert (started.returncode, started.stderr) == (0, "")
        pid = pidfile.read_pid(str(tmp / "lb.pid"))
        assert pid is not None
        # the checks take every descriptor: wait until the log says so
        while EMFILE_TEXT not in log.read_text(errors="replace"):
            assert time.monotonic() < began + 60, log.read_text()[-2000:]
            time.sleep(0.1)
        took = time.monotonic() - began
        seen = Exhausted([], [], [], [])
        for _ in range(10):  # 5 s more of exhaustion
            time.sleep(0.5)
            seen.alive.append(alive(pid))
            seen.ages.append(time.time() - status.stat().st_mtime)
            with contextlib.suppress(OSError):
                seen.held.append(len(os.listdir(f"/proc/{pid}/fd")))
        seen.lines = [line for line in log.read_text().splitlines() if EMFILE_TEXT in line]
        print(
            f"\n{len(seen.lines)} log line(s) on EMFILE, the first {took:.1f} s after start: "
            f"{seen.lines[0]}\ndaemon fds {seen.held} of {NOFILE}; status file ages "
            f"{[round(a, 1) for a in seen.ages]} s"
        )
        yield seen
    finally:
        try:
            stopped = run(tmp, str(cf), "stop")
            assert stopped.returncode == 0, stopped.stderr
        finally:
            silent.close()


def test_a_daemon_out_of_descriptors_logs_it_and_keeps_running(exhausted: Exhausted) -> None:
    assert max(exhausted.held) >= NOFILE - 8  # it really was out of descriptors
    assert exhausted.lines  # "Real server ... is down ...: connect: too many open files"
    assert all(exhausted.alive)


@pytest.mark.xfail(
    strict=True,
    reason="the checks hold every descriptor (no reserve for the daemon's own files): writing "
    "the status file fails with EMFILE, logged at debug level only, and the file goes stale",
)
def test_a_daemon_out_of_descriptors_keeps_its_status_file_fresh(exhausted: Exhausted) -> None:
    assert max(exhausted.ages) < 3
