"""Pid files as ldirectord keeps them, with liveness proven by a lock instead of a guess.

ldirectord (and lvsmon before) called a pid "running" when /proc/<pid>/cmdline contained the
program's name: a recycled pid of any process whose command line mentions "lvsmon" (an editor
on the config, a `sleep` under a path containing it) counted as the daemon, so `status` said
running, `start` started nothing and `stop` signalled a stranger.

Here the daemon holds a POSIX record lock (fcntl F_SETLK, whole file, write) on a sibling lock
file `<pid file>.lock` for its whole life; the kernel drops the lock when the process dies, even
by SIGKILL. `state()` asks with F_GETLK, which tests without taking anything: held means running
(and the kernel names the holder's pid), free means any pid file left is stale.

Why this shape:
- A separate, stable lock file, because the pid file is replaced by rename (write_atomic): a
  lock on the pid file's inode would be lost on every rewrite, and two daemons could each lock
  their own inode. The lock file is created once (O_NOFOLLOW) and never removed: removing it
  would let a second daemon lock a fresh inode while a third still holds the unlinked one.
- F_GETLK rather than a try-lock-and-release (flock LOCK_NB) in `status`: a probe that takes the
  lock for an instant would make a daemon starting at that very moment believe another one runs.
- Two `start`s racing both pass the "not running" check and both fork a daemon; only one gets
  the lock (F_SETLK is atomic). The other learns the winner's pid from the lock, writes no pid
  file, touches no kernel table and its `start` exits 0 like a start of a running daemon.
- POSIX locks belong to the process, so children (external checks, hooks) never hold it and
  a child closing an inherited descriptor cannot release it; the descriptor is O_CLOEXEC too.
  The one trap of POSIX locks, that closing *any* descriptor of the file in the holder drops
  the lock, does not arise: only `acquire` opens the lock file in the daemon.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass

from lvsmon.atomicfile import NotReadable, read_regular, write_atomic

MAX_PID_BYTES = 64  # "<pid>\n"; anything longer is not a pid file lvsmon wrote
PID_MAX = 1 << 22  # Linux's PID_MAX_LIMIT: a larger number is no pid (os.kill would overflow)

# struct flock on Linux (x86_64, arm64): short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, padding
_FLOCK = "hhqqi4x"
_WHOLE_FILE_WRITE_LOCK = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class PidState:
    pid: int | None  # the daemon's pid if running, else the pid in the file, if any
    running: bool

    @property
    def stale(self) -> bool:
        return self.pid is not None and not self.running


class AlreadyRunning(Exception):
    """Another process holds the lock: the daemon for this pid file runs already."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"already running with pid {pid}")
        self.pid = pid


def lock_path(path: str) -> str:
    return f"{path}.lock"


def read_pid(path: str) -> int | None:
    """The pid in the pid file, or None: no file, or not one lvsmon wrote. Read as the config is
    (atomicfile.read_regular): a FIFO, a device or a directory at the name, or a huge file, is
    no pid, and never blocks `status` or `stop`."""
    try:
        text = read_regular(path, MAX_PID_BYTES).decode("ascii", errors="replace").strip()
    except (OSError, NotReadable):
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    pid = int(text)
    return pid if pid <= PID_MAX else None


def _query(fd: int) -> int | None:
    """The pid holding a write-conflicting lock on fd's file (0 if it is outside our pid
    namespace), or None if the file is not locked."""
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, _WHOLE_FILE_WRITE_LOCK)
    l_type, _, _, _, l_pid = struct.unpack(_FLOCK, answer)
    return None if l_type == fcntl.F_UNLCK else int(l_pid)


def holder(path: str) -> int | None:
    """The pid of the daemon holding the lock of pid file `path`, or None if none does."""
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        fd = os.open(lock_path(path), flags)
    except OSError:
        return None  # never created (no daemon ever ran) or not ours (a symlink)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # not a lock file acquire() made (it refuses anything else)
        return _query(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def state(path: str) -> PidState:
    locked_by = holder(path)
    in_file = read_pid(path)
    if locked_by is not None:
        # the kernel's answer wins over the file's; it is 0 only across pid namespaces
        return PidState(locked_by or in_file, True)
    if in_file is None:
        return PidState(None, False) if not os.path.lexists(path) else PidState(0, False)
    return PidState(in_file, False)


def acquire(path: str) -> int:
    """Lock the pid file `path` for this process; returns the lock's descriptor, to be kept open
    for the daemon's life (closing it, or the process ending, releases the lock).

    Raises AlreadyRunning with the holder's pid if another process holds it, OSError if the
    lock file cannot be created (e.g. a symlink sits at its name)."""
    fd = os.open(
        lock_path(path),
        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
        0o644,
    )
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "lock file is not a regular file", lock_path(path))
        for _ in range(3):
            try:
                fcntl.fcntl(fd, fcntl.F_SETLK, _WHOLE_FILE_WRITE_LOCK)
                break
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            other = _query(fd)
            # None: the holder exited between the two calls, so the lock is worth another try
            if other is not None:
                raise AlreadyRunning(other or read_pid(path) or 0)
        else:
            raise AlreadyRunning(read_pid(path) or 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_pid(path: str, pid: int) -> None:
    """Written whole through a rename (never through a symlink), so a racing `status` never reads
    an empty file; mode 0644 whatever the umask, so non-root tools can read it."""
    write_atomic(path, f"{pid}\n", 0o644)


def remove_pid(path: str, pid: int) -> None:
    if read_pid(path) == pid:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
