"""How many of a peer's bytes one check may take, and the counters that hold a library to it.

A real server that is compromised or broken must not be able to grow the daemon (issue 21,
class 1): whatever it announces or streams, a check takes at most `PEER_BYTES` of its bytes on
a connection (beyond a library's own fixed buffers) and ends down with "<service>: response too
large (over 256 KiB)". The checks that speak through a library put a counter under it:

* `CountingSocket`: a socket whose `recv`/`recv_into` count what the kernel hands over and raise
  `OverBudget` (a `ConnectionAbortedError`, so asyncio's transports and blocking libraries treat
  it as a lost connection, quietly) once the budget is spent. It sits under TLS as well, so the
  count is of the peer's raw bytes. For a library that takes a connected socket (aiosmtplib).
* `RecvCounter`: the same count in front of a socket a blocking library already owns (ldap3).
* `Budget.take`, for a library whose reads pass through code of ours (aiomysql's `_read_bytes`,
  aioftp's `parse_line`) or whose protocol we subclass (asyncpg, python-oracledb): it refuses an
  announced length before the bytes are read, so nothing past the budget is ever buffered.

The library then fails in its own words ("connection lost"); the check asks `Budget.exceeded`
and gives the one reason instead (`Budget.check`).
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
from typing import Any, Final

from lvsmon.checks.base import CheckFailed, received_counter

PEER_BYTES: Final = 256 * 1024
"""A peer's bytes one check takes at most on a connection (a file an FTP check retrieves is
bounded on its own: ftp.MAX_DOWNLOAD)."""


def too_large(service: str, limit: int = PEER_BYTES) -> str:
    """The reason of a check stopped at its budget: "mysql: response too large (over 256 KiB)"."""
    size = f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
    return f"{service}: response too large (over {size})"


class ResponseTooLarge(CheckFailed):
    """A check stopped at its budget."""

    def __init__(self, service: str, limit: int = PEER_BYTES) -> None:
        super().__init__(too_large(service, limit))


class OverBudget(ConnectionAbortedError):
    """Raised where the peer's bytes are read once the budget is spent: an OSError, so that the
    library under the check gives up as on a lost connection."""


class Budget:
    """The peer's bytes one check has taken, against its limit."""

    __slots__ = ("limit", "received", "service", "taken")

    def __init__(self, service: str, limit: int = PEER_BYTES) -> None:
        self.service = service
        self.limit = limit
        self.taken = 0
        # the check's count of the peer's bytes (base.Received, for the lag rule): made in the
        # check's task, so that a pool thread's reads count into the right check
        self.received = received_counter()

    @property
    def exceeded(self) -> bool:
        return self.taken > self.limit

    def take(self, count: int, *, read: bool = True) -> None:
        """Count `count` more bytes (read, or announced and about to be read: `read=False`, and
        `got` once they are); past the limit raise OverBudget, and keep raising it."""
        if read:
            self.received.count += count
        self.taken += count
        if self.taken > self.limit:
            raise OverBudget(too_large(self.service, self.limit))

    def got(self, count: int) -> None:
        """Count `count` bytes received that the budget already took (announced), or that it
        does not bound (an FTP file, MAX_DOWNLOAD)."""
        self.received.count += count

    def error(self) -> ResponseTooLarge:
        return ResponseTooLarge(self.service, self.limit)

    def check(self) -> None:
        """Raise the check's reason if the budget was spent: call it where a library's own
        error (a lost connection, a parse error) is turned into a reason."""
        if self.exceeded:
            raise self.error() from None


class CountingSocket(socket.socket):
    """A socket that counts what it receives against a budget (see the module's doc)."""

    budget: Budget

    @classmethod
    def create(cls, family: int, budget: Budget) -> CountingSocket:
        sock = cls(family, socket.SOCK_STREAM)
        sock.budget = budget
        return sock

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data = super().recv(bufsize, flags)
        self.budget.take(len(data))
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0, /) -> int:
        count = super().recv_into(buffer, nbytes, flags)
        self.budget.take(count)
        return count


class RecvCounter:
    """Stands for a socket a blocking library owns (plain or TLS), counting what its `recv`
    returns; everything else is the socket's. `raw` is the socket itself."""

    def __init__(self, raw: socket.socket, budget: Budget) -> None:
        self.raw = raw
        self.budget = budget

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = self.raw.recv(bufsize, flags)
        self.budget.take(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


CHECK_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "lvsmon_check_budget", default=None
)
"""The budget of the check running in this task, for a protocol a library builds (read when it
is built, in the check's own task): set it around the library's connect."""


class BudgetedProtocol:
    """Put first in the bases of a library's asyncio protocol (asyncpg, python-oracledb): the
    peer's bytes count against CHECK_BUDGET as the protocol was built, and past it the transport
    is aborted, which the library sees as a lost connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lvsmon_budget = CHECK_BUDGET.get()
        self._lvsmon_transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._lvsmon_transport = transport
        super().connection_made(transport)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        budget = self._lvsmon_budget
        if budget is not None:
            try:
                budget.take(len(data))
            except OverBudget:
                if self._lvsmon_transport is not None:
                    self._lvsmon_transport.abort()
                return
        super().data_received(data)  # type: ignore[misc]
