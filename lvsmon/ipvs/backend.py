"""The one interface every IPVS backend (netlink, ipvsadm, memory) implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from lvsmon.ipvs.errors import OpError, OpResult
from lvsmon.ipvs.model import Table
from lvsmon.ipvs.ops import Op

if TYPE_CHECKING:
    from lvsmon.ipvs.sync import SyncDaemon, SyncState


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


@runtime_checkable
class KnownDump(Protocol):
    """A backend that reads the table one request per service (netlink: IPVS has no request
    for every destination at once) and can skip the destinations it is told."""

    async def dump_known(self, known: Table) -> Table:
        """The whole table as dump() gives it, except that a service of `known` whose record in
        the kernel equals the known one's is `known`'s Service object, its destinations (and
        their counters) not asked for. Raises BackendError."""
        ...


def shares_dump(backend: object) -> bool:
    """True for a backend whose dump() hands out the Service objects it holds itself, each
    never changed once published (memory: lvsmon.ipvs.memory's contract): a caller may keep
    them as they are, and an object that is the same as before is a service unchanged. Other
    backends build new objects at every dump (netlink, ipvsadm: the kernel holds the table)."""
    return getattr(backend, "shared_dump", False) is True
