"""Issue 21, class 3: the checks keep to a budget of file descriptors (lvsmon/checks/fds.py),
so that hostile reals never take the daemon's own; and when the process does run out of them
anyway, its log says so (the log file is kept open, so writing it needs no new descriptor) and
the daemon keeps running, its status file fresh again once descriptors are back.

A daemon process on the memory backend under RLIMIT_NOFILE 128 (soft and hard: the daemon
raises the soft limit to the hard one), with 300 reals on a loopback server that accepts and
never answers: each HTTP check holds its socket for the whole checktimeout, so without the
budget the checks alone would use up every descriptor (they did: EMFILE, a stale status file).
Then the test lowers the running daemon's soft limit to 3 (prlimit --pid: every new descriptor
fails with EMFILE, the checks' and the status file's alike) for a while, and gives it back.
"""

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
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lvsmon.api.guard import FD_SHARE
from lvsmon.checks.fds import RESERVE, check_budget
from lvsmon.daemon import pidfile
from tests.helpers import alive

NOFILE = 128
REALS = 300
EMFILE_TEXT = os.strerror(24).lower()  # "too many open files", as describe_error words it
BUDGET = check_budget(NOFILE)  # 39 descriptors for the checks
CONTROL = max(8, int(NOFILE * FD_SHARE))  # the control server's share: 25


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


def limit(pid: int, soft: int) -> None:
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:{NOFILE}"], check=True)


def wait_for(log: Path, text: str, bound: float) -> float | None:
    """Seconds until the log has `text`; None if it has not within `bound` (the tests say so)."""
    began = time.monotonic()
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > began + bound:
            return None
        time.sleep(0.1)
    return time.monotonic() - began


@dataclass
class Sampled:
    """A few seconds of the daemon, sampled every 0.5 s."""

    alive: list[bool] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # the daemon's open descriptors
    ages: list[float] = field(default_factory=list)  # the status file's age

    def sample(self, pid: int, status: Path, times: int) -> None:
        for _ in range(times):
            time.sleep(0.5)
            self.alive.append(alive(pid))
            self.ages.append(time.time() - status.stat().st_mtime)
            with contextlib.suppress(OSError):
                self.held.append(len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class Run:
    capped: Sampled  # 300 silent reals under RLIMIT_NOFILE 128
    connections: int  # the silent server's connections by then
    capped_log: str
    starved: Sampled  # with a soft limit of 3: out of descriptors
    recovered: Sampled  # the limit given back
    log: str


@pytest.fixture(scope="module")
def daemon_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
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
        # the checks hold as many silent connections as their budget allows (`start` returned
        # after their first round: up to checktimeout + 5 s)
        while len(silent.held) < BUDGET:
            assert time.monotonic() < began + 30, (len(silent.held), log.read_text()[-2000:])
            time.sleep(0.1)
        capped = Sampled()
        capped.sample(pid, status, 10)  # 5 s
        connections = len(silent.held)
        capped_log = log.read_text()

        limit(pid, 3)  # 0, 1 and 2 are open: every new descriptor fails with EMFILE
        try:
            took = wait_for(log, "cannot write the status file", 10)
            starved = Sampled()
            starved.sample(pid, status, 6)
        finally:
            limit(pid, NOFILE)
        wait_for(log, "written again", 10)
        recovered = Sampled()
        recovered.sample(pid, status, 6)
        text = log.read_text()
        print(
            f"\ncapped: daemon fds {capped.held}, the silent server saw {connections} "
            f"connection(s), status file ages {[round(a, 1) for a in capped.ages]} s\n"
            f"starved: logged {took and round(took, 1)} s after the limit fell, ages "
            f"{[round(a, 1) for a in starved.ages]} s\nrecovered: ages "
            f"{[round(a, 1) for a in recovered.ages]} s\n"
            + "\n".join(line for line in text.splitlines() if "status file" in line)
        )
        yield Run(capped, connections, capped_log, starved, recovered, text)
    finally:
        try:
            stopped = run(tmp, str(cf), "stop")
            assert stopped.returncode == 0, stopped.stderr
        finally:
            silent.close()


def test_the_checks_keep_to_their_budget_and_the_status_file_stays_fresh(
    daemon_run: Run,
) -> None:
    capped = daemon_run.capped
    # the checks are at their budget: the silent server holds that many (and not all 300)...
    assert BUDGET <= daemon_run.connections < REALS
    assert max(capped.held) >= BUDGET
    # ...which leaves the control server's share and the reserve: never out of descriptors
    assert max(capped.held) <= NOFILE - CONTROL - RESERVE // 2
    assert EMFILE_TEXT not in daemon_run.capped_log
    assert "cannot write the status file" not in daemon_run.capped_log
    assert max(capped.ages) < 3
    assert all(capped.alive)


def test_a_daemon_out_of_descriptors_logs_it_keeps_running_and_recovers(daemon_run: Run) -> None:
    lines = daemon_run.log.splitlines()
    failed = [line for line in lines if "cannot write the status file" in line]
    again = [line for line in lines if "written again" in line]
    # once per streak, with the error's words; once when it works again
    assert len(failed) == 1 and EMFILE_TEXT in failed[0], failed
    assert len(again) == 1, again
    assert lines.index(failed[0]) < lines.index(again[0])
    assert max(daemon_run.starved.ages) > 2  # it really could not write it
    assert all(daemon_run.starved.alive) and all(daemon_run.recovered.alive)
    assert max(daemon_run.recovered.ages) < 3
