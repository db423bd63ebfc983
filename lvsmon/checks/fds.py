"""The file descriptors the checks may hold at once (issue 21): the one rule, and its account.

The process has RLIMIT_NOFILE descriptors (the daemon raised the soft limit to the hard one
before its loop started). The control server keeps itself to `CONTROL_SHARE` of them
(lvsmon/api/guard.py); `RESERVE` more stay for the daemon's own files: the status file written
every second, the log file reopened on HUP, config and state files read, the pid file, netlink,
alert mails, hook commands. The checks get the rest (`check_budget`), so however many reals
accept and never answer, the daemon can still write its status file and its log.

One `FdBudget` per event loop, the prober's: its plain-TCP probes take one descriptor each, and
the checks that run as tasks (TLS, UDP, library protocols, external commands) take
`task_fds(spec)` each through the check runner's gate. A check that finds the budget spent
waits, first come first served, and its deadline starts once it has its descriptors. A task's
own probes (an http check that resolved a host name) are counted in its share (`HELD`).
"""

from __future__ import annotations

import asyncio
import contextvars
import resource
from collections import deque
from collections.abc import Callable
from typing import Final

from lvsmon.checks.base import CheckSpec

# lvsmon/api/guard.py's FD_SHARE (tests/checks/test_fds.py holds them equal)
CONTROL_SHARE: Final = 0.2
CONTROL_MIN: Final = 8  # the guard's share is never less than this
RESERVE: Final = 64  # for the daemon's own files, whatever the limit
TASK_FDS: Final = 2  # a check run as a task: its socket, and a name lookup's or a library's one
# an external command: our output pipe, the child's /dev/null and the spawn's error pipe for a
# moment, a pidfd; its own descriptors are the child's, not ours
EXTERNAL_FDS: Final = 6
UNLIMITED: Final = 1 << 20  # RLIM_INFINITY, as the guard counts it

# set in a check task that holds its descriptors from the budget: its probes are not counted again
HELD: contextvars.ContextVar[bool] = contextvars.ContextVar("lvsmon_fds_held", default=False)


def fd_limit() -> int:
    """The process's RLIMIT_NOFILE soft limit now."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return UNLIMITED
    return soft


def check_budget(limit: int) -> int:
    """The descriptors the checks may hold at once under RLIMIT_NOFILE `limit`: the limit less
    the control server's share and the reserve; under a small limit, never less than a quarter
    of it (some checks must run)."""
    control = max(CONTROL_MIN, int(limit * CONTROL_SHARE))
    return max(limit // 4, limit - control - RESERVE, 1)


def task_fds(spec: CheckSpec) -> int:
    """The descriptors a check run as a task is counted for."""
    return EXTERNAL_FDS if spec.kind in ("external", "external-perl") else TASK_FDS


Grant = Callable[[], bool]  # called once its descriptors are taken: False gives them back


class FdBudget:
    """`total` descriptors, taken and given back; whoever finds them spent waits in one FIFO
    (probes and tasks alike, so neither starves the other). A need larger than the total runs
    alone."""

    __slots__ = ("_granting", "queue", "total", "used")

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.queue: deque[tuple[int, Grant]] = deque()
        self._granting = False

    def take(self, fds: int) -> bool:
        """Take `fds` now if they are free and nobody waits."""
        if self.queue or (self.used + fds > self.total and self.used):
            return False
        self.used += fds
        return True

    def wait(self, fds: int, grant: Grant) -> None:
        """Queue for `fds`: `grant` is called once they are taken for it."""
        self.queue.append((fds, grant))

    def give(self, fds: int) -> None:
        self.used -= fds
        if self.queue:
            self.admit()

    def admit(self) -> None:
        """Grant what the free descriptors allow, oldest first."""
        if self._granting:  # a grant gave back at once (a refused connect): the loop goes on
            return
        self._granting = True
        try:
            queue = self.queue
            while queue:
                fds, grant = queue[0]
                if self.used + fds > self.total and self.used:
                    break
                queue.popleft()
                self.used += fds
                if not grant():
                    self.used -= fds
        finally:
            self._granting = False

    async def acquire(self, fds: int) -> None:
        """Take `fds`, waiting for them if need be (cancellable)."""
        if self.take(fds):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def grant() -> bool:
            if future.done():  # cancelled while it waited
                return False
            future.set_result(None)
            return True

        self.wait(fds, grant)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.give(fds)  # granted, then cancelled before it could use them
            raise
