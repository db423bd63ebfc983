"""Process helpers for the daemon tests."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """The process exists and has not exited. A killed daemon is an orphan whose zombie stays
    until whatever adopted it reaps it, so "has a /proc entry" is not enough."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return text.rpartition(")")[2].split()[0] != "Z"
