"""Logging as ldirectord does it: a file (rotation-safe: reopened when the name points elsewhere),
a syslog facility, stdout when supervised, stderr with -d."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import time
from typing import TextIO


class _ReopeningFileHandler(logging.Handler):
    """Appends to a file kept open, and reopens it when its name points to another file (or to
    none: logrotate moved or removed it), so that logrotate needs no signal, as with
    ldirectord's open per line. Kept open because a daemon that ran out of file descriptors
    must still be able to say so: an open per line fails exactly then (issue 21). The check is
    a stat of the name per line, which needs no descriptor; when the reopen fails, lines go on
    to the file that is open."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._file: TextIO | None = None
        self._id: tuple[int, int] | None = None

    def _current(self) -> TextIO:
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self._id
        except OSError:
            moved = True
        if self._file is None or moved:
            try:
                new = open(  # noqa: SIM115 (kept open: see the class)
                    self.path, "a", encoding="utf-8", errors="backslashreplace"
                )
            except OSError:
                if self._file is None:
                    raise
                return self._file  # keep writing where we were
            if self._file is not None:
                self._file.close()
            self._file = new
            st = os.fstat(new.fileno())
            self._id = (st.st_dev, st.st_ino)
        return self._file

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with self.lock or contextlib.nullcontext():
                f = self._current()
                f.write(line + "\n")
                f.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()


class _LdirectordFormatter(logging.Formatter):
    def __init__(self, cfgname: str | None) -> None:
        super().__init__()
        self.cfgname = cfgname

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(record.created))
        msg = record.getMessage()
        # the traceback of log.exception() and exc_info=, on the lines after (operations.md)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            msg = f"{msg}\n{record.exc_text}"
        if record.stack_info:
            msg = f"{msg}\n{self.formatStack(record.stack_info)}"
        if self.cfgname is None:
            return f"[{stamp}] {msg}"
        return f"[{stamp}|{self.cfgname}|{os.getpid()}] {msg}"


def setup_logging(logfile: str, cfgname: str, *, debug: bool, supervised: bool) -> None:
    root = logging.getLogger("lvsmon")
    root.handlers.clear()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    root.propagate = False
    handler: logging.Handler
    if debug:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    elif supervised:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_LdirectordFormatter(None))
    elif logfile.startswith("/"):
        handler = _ReopeningFileHandler(logfile)
        handler.setFormatter(_LdirectordFormatter(cfgname))
    else:
        facility = logging.handlers.SysLogHandler.facility_names.get(
            logfile.lower(), logging.handlers.SysLogHandler.LOG_DAEMON
        )
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler = logging.handlers.SysLogHandler(address=address, facility=facility)
        handler.setFormatter(logging.Formatter(f"lvsmon[{os.getpid()}]: %(message)s"))
    root.addHandler(handler)
    # their errors (a task exception nobody retrieved, a housekeeping job that raised) must be
    # seen where lvsmon's own lines are, not lost on a stderr that a daemon sends to /dev/null
    for name in ("asyncio", "apscheduler"):
        other = logging.getLogger(name)
        other.handlers.clear()
        other.setLevel(logging.WARNING)
        other.propagate = False
        other.addHandler(handler)
