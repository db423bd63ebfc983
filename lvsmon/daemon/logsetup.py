"""Logging as ldirectord does it: a file (rotation-safe: reopened per line), a syslog facility,
stdout when supervised, stderr with -d."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time


class _ReopeningFileHandler(logging.Handler):
    """Opens, appends and closes per record, like ldirectord: logrotate needs no signal."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except Exception:
            self.handleError(record)


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
