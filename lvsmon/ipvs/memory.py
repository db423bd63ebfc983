"""An IPVS table kept in the process, with the kernel's rules: for dry runs, demos and tests.

backend = MemoryBackend()
await backend.apply(ops)
print(backend.render())        # like `ipvsadm -Ln`
print("\\n".join(backend.log))  # every op as the ipvsadm line that would do it

dump() hands out the backend's own Service objects (in a new dict), not copies: the reconciler
keeps the last dump as its view of the table, and a second copy of every destination cost some
70 bytes a real at keepalived #2318's 37,298 (issue 22). The price is one contract: a Service
the backend has published is never changed afterwards, by anyone. apply() builds new Service
objects for the services its ops touch; whatever else changes the table (set_connections,
edit_dest, memory_faults' drift, a test) replaces the Service in `table` as well, never edits
one in place: an edit in place would change the reconciler's view with it, and the drift it
stands for would go unseen. Callers of dump() only read what it returns. Deleting a key from
`table`, or setting one to a new Service, is fine: dumps are dicts of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lvsmon.ipvs.apply import apply_ops, copy_table
from lvsmon.ipvs.errors import BackendError, ErrorKind, OpError, OpResult
from lvsmon.ipvs.ipvsadm_format import op_line, render_list
from lvsmon.ipvs.model import DestConf, DestKey, DestStats, Service, ServiceKey, Table
from lvsmon.ipvs.ops import Op
from lvsmon.ipvs.sync import (
    SyncDaemon,
    SyncState,
    check_daemon,
    ipvsadm_start_args,
    ipvsadm_stop_args,
)

LOG_KEEP = 10_000  # op log lines kept: a demo that runs for weeks must not grow without end
# lines over LOG_KEEP before a trim: dropping LOG_KEEP lines at once freed a megabyte of small
# strings in one go, whose pools the allocator kept, at every 10,000 ops of a start-up
LOG_SLACK_SHARE = 8


class MemoryBackend:
    name = "memory"

    def __init__(self, table: Table | None = None, *, available: bool = True) -> None:
        """`table`: the starting table (copied). `available=False` behaves like a kernel
        without IPVS: dump() raises and every op fails with NO_IPVS."""
        self.table: Table = copy_table(table) if table else {}
        self.available = available
        # "ipvsadm <args>" per applied op, "# failed: ..." after a failure; the last LOG_KEEP
        # lines and up to an eighth more (trimmed in one go, so that a slice by index stays cheap)
        self.log: list[str] = []
        self.applies = 0  # apply() calls that carried at least one op
        self.sync: dict[SyncState, SyncDaemon] = {}  # running sync daemons, as the kernel reports

    def _unavailable(self) -> OpError:
        return OpError(ErrorKind.NO_IPVS, "IPVS not available (memory backend set unavailable)")

    # dump() returns the published Service objects themselves (the module's contract); the
    # reconciler takes them over as they are (lvsmon.ipvs.backend.shares_dump)
    shared_dump = True

    async def dump(self) -> Table:
        if not self.available:
            raise BackendError(self._unavailable())
        return dict(self.table)

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        if not ops:
            return []
        self.applies += 1
        if not self.available:
            return [OpResult(op, self._unavailable()) for op in ops]
        # only the services the ops touch are copied (apply_ops copies the table it is given):
        # an apply costs O(its ops), not O(table), and a failed op still changes nothing
        touched = {op.service for op in ops}
        part, results = apply_ops({k: self.table[k] for k in touched if k in self.table}, ops)
        table = dict(self.table)
        for key in touched:
            if key in part:
                table[key] = part[key]
            else:
                table.pop(key, None)
        self.table = table
        for result in results:
            self.log.append(f"ipvsadm {op_line(result.op)}")
            if result.error is not None:
                self.log.append(f"# failed: {result.error.kind}: {result.error.message}")
        if len(self.log) > LOG_KEEP + LOG_KEEP // LOG_SLACK_SHARE:
            del self.log[:-LOG_KEEP]
        return results

    def set_connections(
        self, service: ServiceKey, dest: DestKey, active: int, inactive: int = 0
    ) -> None:
        """A destination's connection counters, as traffic would set them in the kernel (tests,
        the demo): the next dump shows them. KeyError when the service is not there."""
        old = self.table[service]
        self.replace(service, stats={**old.stats, dest: DestStats(active, inactive)})

    def edit_dest(self, service: ServiceKey, dest: DestKey, conf: DestConf | None) -> None:
        """A destination set to `conf`, or deleted (None), behind the reconciler's back, as
        `ipvsadm -a/-e/-d` by hand would (tests, memory_faults' drift). KeyError when the
        service is not there, or a destination to delete is not."""
        old = self.table[service]
        dests, stats = dict(old.dests), old.stats
        if conf is None:
            del dests[dest]
            if dest in stats:
                stats = {d: s for d, s in stats.items() if d != dest}
        else:
            dests[dest] = conf
        self.replace(service, dests=dests, stats=stats)

    def replace(
        self,
        service: ServiceKey,
        *,
        dests: Mapping[DestKey, DestConf] | None = None,
        stats: Mapping[DestKey, DestStats] | None = None,
    ) -> None:
        """The one way to change a service besides apply(): a new Service object in its place,
        with these destinations or counters (the others the old one's), never an edit of the
        published one (the module's contract). KeyError when the service is not there."""
        old = self.table[service]
        self.table[service] = Service(
            old.conf,
            old.dests if dests is None else dict(dests),
            old.stats if stats is None else dict(stats),
        )

    def render(self) -> str:
        """The table the way `ipvsadm -Ln` shows it."""
        return render_list(self.table)

    # The kernel's rules for sync daemons: one per state, filled with its defaults (an interface
    # of MTU 1500 assumed: the memory backend has no interfaces to look at).

    async def sync_daemons(self) -> tuple[SyncDaemon, ...]:
        if not self.available:
            raise BackendError(self._unavailable())
        return tuple(self.sync[s] for s in SyncState if s in self.sync)

    async def start_sync_daemon(self, daemon: SyncDaemon) -> OpError | None:
        self.log.append("ipvsadm " + " ".join(ipvsadm_start_args(daemon)))
        error = self._sync_refusal(daemon)
        if error is None:
            self.sync[daemon.state] = daemon.as_kernel_runs_it()
        else:
            self.log.append(f"# failed: {error.kind}: {error.message}")
        return error

    def _sync_refusal(self, daemon: SyncDaemon) -> OpError | None:
        if not self.available:
            return self._unavailable()
        what = f"cannot start the {daemon.state} sync daemon"
        if daemon.state in self.sync:
            return OpError(ErrorKind.EXISTS, f"{what}: already running")
        try:
            check_daemon(daemon)
        except ValueError as exc:
            return OpError(ErrorKind.INVALID, f"{what}: {exc}")
        return None

    async def stop_sync_daemon(self, state: SyncState) -> OpError | None:
        self.log.append("ipvsadm " + " ".join(ipvsadm_stop_args(state)))
        error: OpError | None = None
        if not self.available:
            error = self._unavailable()
        elif self.sync.pop(state, None) is None:
            error = OpError(
                ErrorKind.NOT_FOUND, f"cannot stop the {state} sync daemon: not running"
            )
        if error is not None:
            self.log.append(f"# failed: {error.kind}: {error.message}")
        return error

    async def close(self) -> None:
        return None
