"""Pid files as ldirectord keeps them: running = the file names a live process that is ours."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PidState:
    pid: int | None  # the pid in the file, if any
    running: bool

    @property
    def stale(self) -> bool:
        return self.pid is not None and not self.running


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def is_lvsmon(pid: int) -> bool:
    """The process exists and is an lvsmon (not a recycled pid of something else); installed
    under ldirectord's name (for tools that expect it) it is one too."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"lvsmon" in cmdline or b"ldirectord" in cmdline


def state(path: str) -> PidState:
    pid = read_pid(path)
    if pid is None:
        return PidState(None, False) if not os.path.exists(path) else PidState(0, False)
    return PidState(pid, is_lvsmon(pid))


def write_pid(path: str, pid: int) -> None:
    """Written whole through a rename, so a racing `status` never reads an empty file."""
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def remove_pid(path: str, pid: int) -> None:
    if read_pid(path) == pid:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
