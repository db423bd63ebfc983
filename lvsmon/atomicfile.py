"""Whole-file writes that readers never see half done and that never write through a symlink;
and the bounded, non-blocking read of a run-time file (read_regular).

The files lvsmon writes (pid file, status file) live in directories such as /run or /tmp where
another user may be able to plant a symlink. A fixed temporary name (`path + ".tmp"`,
`path.<pid>.tmp`) opened with a plain open() would follow a symlink planted there and truncate
its target as root. Here the temporary file gets a random name and is created with
O_CREAT|O_EXCL|O_NOFOLLOW (tempfile.mkstemp), so it is always a new regular file of ours; rename(2)
then replaces whatever sits at `path`, a symlink included, without following it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

MAX_STATE_BYTES = 4 * 1024 * 1024  # a run-time state file (the drain state) is far smaller


class NotReadable(ValueError):
    """A run-time file lvsmon refuses to read: not a regular file, or larger than its bound."""


def read_regular(path: str, limit: int = MAX_STATE_BYTES) -> bytes:
    """The bytes of the regular file at `path`, read as the config is: opened without blocking
    (a FIFO put there never holds the event loop), checked to be a regular file on the open
    descriptor, and no more than `limit` bytes read (a device or a huge file never fills
    memory). OSError as open(2) raises it; NotReadable for a FIFO, a device, a directory or a
    file larger than `limit`."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotReadable("not a regular file")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            left -= len(chunk)
        raise NotReadable(f"larger than {limit} bytes")
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes | str, mode: int = 0o644, *, fsync: bool = False) -> None:
    """Replace `path` with a regular file holding `data` (str is written as UTF-8) and
    permissions exactly `mode`, whatever the umask.

    `fsync=True` flushes the data to disk before the rename, so that after a power loss the file
    holds either the old or the new content, never an empty one. It is off by default because
    lvsmon's own files live in /run (tmpfs: nothing survives a reboot anyway) and the status file
    is rewritten every second, where a disk flush each time would be pure cost.

    Raises OSError (the temporary file is removed) if the directory is not writable, and so on.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory, name = os.path.split(path)
    # mkstemp: O_RDWR|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, a random name, mode 0600
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        try:
            # mkstemp's 0600 (and any umask) would make the pid file unreadable to non-root
            # `status` callers; fchmod sets the mode exactly, on the file we created
            os.fchmod(fd, mode)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
