"""The one interface every IPVS backend (netlink, ipvsadm, memory) implements."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lvsmon.ipvs.model import Table
from lvsmon.ipvs.ops import Op

if TYPE_CHECKING:  # sync.py builds its errors from this module
    from lvsmon.ipvs.sync import SyncDaemon, SyncState


class ErrorKind(enum.StrEnum):
    """Why an operation or a dump failed, in terms an operator can act on."""

    EXISTS = "exists"  # EEXIST: the service or destination is already there
    NOT_FOUND = "not-found"  # ENOENT / ESRCH: it is not there
    PERMISSION = "permission"  # EPERM / EACCES: not root / no CAP_NET_ADMIN
    NO_IPVS = "no-ipvs"  # the kernel has no IPVS (module not loaded / not built)
    INVALID = "invalid"  # EINVAL and friends: e.g. unknown scheduler
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class OpError:
    kind: ErrorKind
    message: str  # the kernel's or tool's own words


@dataclass(frozen=True, slots=True)
class OpResult:
    op: Op
    error: OpError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class BackendError(Exception):
    """A whole call failed (e.g. dump() without IPVS); carries a typed reason."""

    def __init__(self, error: OpError) -> None:
        super().__init__(f"{error.kind}: {error.message}")
        self.error = error


class IpvsBackend(Protocol):
    name: str

    async def dump(self) -> Table:
        """The whole current table, with counters. Raises BackendError."""
        ...

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply ops in order; one result per op. Never raises for a failed op.
        After a failed op the caller re-dumps before computing the next diff."""
        ...

    async def sync_daemons(self) -> tuple[SyncDaemon, ...]:
        """The connection sync daemons running (lvsmon.ipvs.sync). Raises BackendError."""
        ...

    async def start_sync_daemon(self, daemon: SyncDaemon) -> OpError | None:
        """Starts one sync daemon; None when done, else why not (EXISTS: one of that state
        already runs). Never raises."""
        ...

    async def stop_sync_daemon(self, state: SyncState) -> OpError | None:
        """Stops the sync daemon of that state; NOT_FOUND when none runs. Never raises."""
        ...

    async def close(self) -> None: ...
