"""What the bench programs share: the processes they start and stop, what /proc says about them,
free ports, the work folder and cleanup every run begins with, the log line, a quantile.

Standard library only. bench/ is scripts, not a package: the programs import this as `procs`
(their folder is sys.path[0]), and so do the tests (realservers/base.py takes `children_of`
from here: tests may import the bench, the bench does not import the tests' helpers).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- a run: cleanup and work folder


class Cleanup:
    """Callbacks run last-in first-out on exit, whatever happened."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, step: Callable[[], None]) -> None:
        self._steps.append((what, step))

    def run(self) -> None:
        while self._steps:
            what, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # cleanup goes on with the next step
                log(f"cleanup of {what} failed: {exc}")


def start_run(prefix: str, keep: bool, parent: str | None = None) -> tuple[Cleanup, str]:
    """What a bench's main does before it starts anything: SIGTERM raises KeyboardInterrupt (so a
    kill cleans up as Ctrl-C does), and a fresh work folder (mkdtemp `prefix` under `parent`),
    removed by the returned Cleanup unless `keep`."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    cleanup = Cleanup()
    workdir = tempfile.mkdtemp(prefix=prefix, dir=parent)
    if not keep:
        cleanup.add("work folder", lambda: shutil.rmtree(workdir, ignore_errors=True))
    return cleanup, workdir


# ---------------------------------------------------------------- processes and their cost


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmdline_has(pid: int, needle: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return needle.encode() in f.read()
    except OSError:
        return False


def kill_pid(pid: int | None, needle: str, grace: float = 5.0) -> None:
    """TERM, then KILL, a process we started (the needle guards against a recycled pid)."""
    if pid is None or not alive(pid) or not cmdline_has(pid, needle):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def wait_gone(pid: int, timeout: float) -> float | None:
    """time.time() when the process was seen gone (polled every 10 ms), None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return time.time()
        time.sleep(0.01)
    return None


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def children_of(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), deepest last."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: fields follow the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parent.items() if pp == current]
        found.extend(kids)
        frontier.extend(kids)
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime+stime, cutime+cstime) of a process, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime..cstime are fields 14..17
    own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    children = (int(fields[13]) + int(fields[14])) / CLK_TCK
    return own, children


def system_seconds(pid: int) -> float:
    """stime of a process (s): its CPU time in the kernel."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / CLK_TCK


def memory_mib(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


def children(pid: int) -> int:
    """How many children the process has now (of all its threads)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                total += len(f.read().split())
        except OSError:
            pass
    return total


def loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as f:
        return float(f.read().split()[0])


# ---------------------------------------------------------------- lvsmon and ports


def lvsmon_command(src: str | None = None) -> list[str]:
    """lvsmon as installed, or (`src`: a source tree, put first on PYTHONPATH) that tree's."""
    script = os.path.join(os.path.dirname(sys.executable), "lvsmon")
    if src is None and os.path.exists(script):
        return [script]
    # -P: `-m` would put the working directory first on sys.path, ahead of PYTHONPATH, and a
    # bench run from the checkout ran the checkout's lvsmon instead of `src`'s
    return [sys.executable, "-P", "-m", "lvsmon"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
