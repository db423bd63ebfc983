"""The sd_notify protocol without libsystemd: datagrams of KEY=VALUE lines to $NOTIFY_SOCKET.

The protocol is a few lines (an AF_UNIX datagram socket; a name starting with "@" is in the
abstract namespace), so no dependency: the PyPI `sdnotify` package does the same without
abstract-name or error handling, and `systemd-python` needs libsystemd's headers to build.

A notification must never hurt the daemon: a failed send is logged (once per kind of failure,
not once per watchdog ping) and dropped; nothing here raises.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("lvsmon")

NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# systemd drains its queue at once; a datagram it has not taken after this long means PID 1 is
# stuck, and dropping one message is better than stalling the checks
SEND_TIMEOUT_S = 1.0


def socket_address(value: str) -> str | bytes | None:
    """NOTIFY_SOCKET's value as an AF_UNIX address: "@name" is the abstract name "\\0name";
    an absolute path is a path. Anything else (systemd's vsock: form) is not supported."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_usec(environ: MutableMapping[str, str], pid: int) -> int | None:
    """sd_watchdog_enabled(): WATCHDOG_USEC when set, positive, and meant for this process
    (WATCHDOG_PID unset or equal to our pid)."""
    raw = environ.get("WATCHDOG_USEC", "")
    if not raw.isdigit() or int(raw) <= 0:
        return None
    target = environ.get("WATCHDOG_PID", "")
    if target and (not target.isdigit() or int(target) != pid):
        return None
    return int(raw)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in µs, what systemd 253+ wants with RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends notifications to the service manager; disabled (every call a no-op) when there is
    no NOTIFY_SOCKET."""

    def __init__(self, address: str | bytes | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None
        self._failing: str | None = None  # the last failure logged, until a send succeeds
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """From NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; with `unset` they are removed
        from the environment, so that fallbackcommand, callback and other children do not
        inherit them (sd_notify's unset_environment)."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("NOTIFY_SOCKET=%s: unsupported address; systemd is not notified", value)
        usec = watchdog_usec(env, os.getpid())
        if unset:
            for name in NOTIFY_ENV:
                env.pop(name, None)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_s(self) -> float | None:
        """The watchdog timeout in seconds (ping at half of it), or None without a watchdog."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 1e6

    def send(self, *fields: str) -> bool:
        """One datagram of KEY=VALUE lines; True when it was sent. Never raises."""
        if self.address is None or not fields:
            return False
        # a value with a newline would become a second, bogus field
        data = "\n".join(f.replace("\n", " ") for f in fields).encode(errors="replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(SEND_TIMEOUT_S)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            self.failed += 1
            reason = f"{type(exc).__name__}: {exc.strerror or exc}"
            if reason != self._failing:
                self._failing = reason
                log.warning("cannot notify systemd (%s): %s", self._shown(), reason)
            return False
        self.sent += 1
        if self._failing is not None:
            self._failing = None
            log.info("notifying systemd (%s) works again", self._shown())
        return True

    def _shown(self) -> str:
        a = self.address
        return "@" + a[1:].decode(errors="replace") if isinstance(a, bytes) else str(a)

    # ---- the messages lvsmon sends ----------------------------------------------------------

    def ready(self, status: str) -> bool:
        # MAINPID: a daemon started in the forking form under NotifyAccess=all is then tracked
        return self.send("READY=1", f"MAINPID={os.getpid()}", f"STATUS={status}")

    def reloading(self, status: str = "reloading the configuration") -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
