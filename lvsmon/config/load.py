"""The entry points: text or a file → Config, or ConfigError holding every diagnostic."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import socket
import stat
from typing import Final

from lvsmon.config.effective import build_config
from lvsmon.config.errors import ConfigError, Diagnostic
from lvsmon.config.incremental import BlockCache, parse_incremental
from lvsmon.config.lexer import MAX_FILE_BYTES
from lvsmon.config.model import Config
from lvsmon.config.parser import parse_lines
from lvsmon.config.resolve import Resolver, SystemResolver
from lvsmon.config.support import service_warnings, unsupported

# the virtual blocks of the last parse with the system resolver: a reload parses what changed
BLOCKS: Final = BlockCache()


def parse_config(
    text: str | bytes,
    path: str,
    *,
    resolver: Resolver | None = None,
    hostname: str | None = None,
    check_support: bool = True,
    cache: BlockCache | None = BLOCKS,
) -> Config:
    """Parse ldirectord.cf content. ``path`` is only used in diagnostics and kept in the Config.

    Raises ConfigError with all errors of the file. With ``check_support`` (the default) a
    virtual whose check lvsmon does not implement is an error too. With the system resolver
    (no ``resolver``) the virtual blocks ``cache`` holds are reused where their text is the
    same (lvsmon/config/incremental.py; None: parse everything).
    """
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(data).hexdigest()
    host = socket.gethostname() if hostname is None else hostname
    found = None
    if cache is not None and resolver is None:
        found = parse_incremental(data, path, digest, host, cache)
    if isinstance(found, Config):
        config = found
    else:  # without the cache, or a file with an error: every diagnostic, in order
        raw = parse_lines(data, path)
        built = build_config(raw, digest, resolver or SystemResolver(), host, found)
        if built[0] is None:
            raise ConfigError(_sorted(built[1]))
        config = built[0]
    if check_support and (problems := unsupported(config)):
        raise ConfigError(_sorted(problems))
    if extra := service_warnings(config):
        config = dataclasses.replace(config, warnings=tuple(_sorted([*config.warnings, *extra])))
    return config


_KINDS = (
    (stat.S_ISDIR, "is a directory"),
    (stat.S_ISFIFO, "not a regular file (a FIFO)"),
    (stat.S_ISCHR, "not a regular file (a character device)"),
    (stat.S_ISBLK, "not a regular file (a block device)"),
    (stat.S_ISSOCK, "not a regular file (a socket)"),
)


def _not_regular(mode: int) -> str | None:
    for test, reason in _KINDS:
        if test(mode):
            return reason
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_config_bytes(path: str) -> bytes:
    """The file's bytes, or ConfigError naming the file (missing, unreadable, not a regular file,
    larger than MAX_FILE_BYTES).

    Only a regular file is read, and no more than MAX_FILE_BYTES + 1 bytes of it: a FIFO would
    block start-up until someone writes to it, and /dev/zero would fill memory before the size
    limit was ever checked.
    """
    try:
        # stat first: opening a socket fails with a less telling ENXIO
        reason = _not_regular(os.stat(path).st_mode)
        if reason is None:
            # O_NONBLOCK: should the path have become a FIFO since the stat, open does not wait
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                reason = _not_regular(os.fstat(fd).st_mode)
                if reason is None:
                    return _read_bounded(fd, path)
            finally:
                os.close(fd)
    except FileNotFoundError:
        reason = "no such file"
    except PermissionError:
        reason = "permission denied"
    except OSError as exc:
        reason = "is a directory" if exc.errno == errno.EISDIR else exc.strerror or str(exc)
    raise ConfigError([Diagnostic(path, None, f"cannot read configuration file: {reason}")])


def _read_bounded(fd: int, path: str) -> bytes:
    chunks: list[bytes] = []
    left = MAX_FILE_BYTES + 1
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        left -= len(chunk)
    # the lexer's wording: a file that grew past the limit reads the same either way
    raise ConfigError([Diagnostic(path, None, f"file is larger than {MAX_FILE_BYTES} bytes")])


def load_config(
    path: str, *, resolver: Resolver | None = None, check_support: bool = True
) -> Config:
    """Read and parse a configuration file; the digest is of exactly the bytes parsed."""
    return parse_config(
        read_config_bytes(path), path, resolver=resolver, check_support=check_support
    )


def load_new_config(path: str) -> Config:
    """The file as a reload would take it: ConfigError for what the reload refuses (an empty
    file too: `lvsmon reload` and the daemon's SIGHUP refuse it)."""
    data = read_config_bytes(path)
    if not data:
        raise ConfigError([Diagnostic(path, None, "file is empty: a reload refuses it")])
    return parse_config(data, path)


def _sorted(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: d.line or 0)
