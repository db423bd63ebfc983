"""The reconciler: the only writer of the kernel table. It converges whatever fails.

- Edge-triggered: `mark_dirty()` (a health change, maintenance, a reload) brings the kernel to
  the desired table within a few ms; results landing together become one batch.
- Level-triggered: every `resync_s` it dumps the table and diffs again, so a failed op, a service
  deleted with `ipvsadm -C` or a real edited by hand is repaired (each repair is logged).
- A failed op (at start, reload or any time) is retried from a fresh dump with backoff until it
  succeeds; the reconciler never gives up and never stops on an error.
- A removed virtual stays owned until its delete succeeded, so a failed delete is retried too.
  Services lvsmon never owned are never touched.
- A reload's pass looks at the services it changed only (`reconcile(keys)`: the desired state
  of the others is what the last pass wrote); a whole pass when anything else is pending.

It asks one question upward, once per pass: what is wanted for the table as it is (a
`DesiredSource`, the engine). What it did goes out as events (`KernelOp`: the op and the facts
its wording needs; subscribers word it) and as the outcome of each pass: `passes()` yields after
every one, and whoever awaits `reconcile()` or iterates `passes()` reads the new state then.

It never changes a Service object it holds in place: its view (`actual`) may be a dump's own
objects (the memory backend shares them, lvsmon.ipvs.memory), and a pass's result is a new
object for each service it touched (`applied`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from lvsmon.engine.events import EventBus, KernelOp, WeightChanged
from lvsmon.engine.status import Stats
from lvsmon.engine.wording import is_fallback, virtual_label
from lvsmon.ipvs.apply import apply_ops
from lvsmon.ipvs.backend import IpvsBackend, KnownDump, shares_dump
from lvsmon.ipvs.diff import diff, service_order
from lvsmon.ipvs.errors import BackendError
from lvsmon.ipvs.model import DestKey, Service, ServiceKey, Table
from lvsmon.ipvs.ops import AddDest, DeleteDest, DeleteService, EditDest, Op

log = logging.getLogger("lvsmon")

DEFAULT_RESYNC_S = 5.0
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
# ops given to the backend at once, and whose events (two an op) are published between two
# turns of the event loop: a start-up's first full pass (37,298 destinations at keepalived
# #2318's shape) held every op's result, backend copy and two events at once, and the allocator
# keeps what such a peak touched (140 bytes of RSS a real for the daemon's life); without a
# turn for the subscribers (their queues hold events.DEFAULT_QUEUE each) a start-up at 100,000
# reals overflowed them (36,000 "Added real server" lines lost)
APPLY_CHUNK = 1024
FULL_EVERY = 12  # every this many resyncs, the desired table is recomputed even if nothing moved
# the services `light` names (checkpath's probe services: one destination each, one netlink
# request each to read it) have their destinations read at every this many resyncs; the others
# their service record only (a deleted or changed one is still seen at once): at 1,000 probe
# services a full read every 5 s made a check through the VIP cost 1.34 x one to the real
LIGHT_FULL_EVERY = 12


@dataclass(frozen=True, slots=True)
class Desired:
    """What one pass writes toward."""

    table: Table  # the table lvsmon wants
    # each virtual's fallback destination (None: it has none): the events say which op moved it
    fallbacks: Mapping[ServiceKey, DestKey | None]


class DesiredSource(Protocol):
    def desired_for(self, actual: Table, keys: Collection[ServiceKey] | None = None) -> Desired:
        """What is wanted, given the table as it is (`actual`: the quiesced reals an operator
        deleted stay deleted without readdquiescent); `keys`: of these services only."""
        ...


NOTHING = Desired({}, {})  # what a purge at stop is written toward: no fallback to name


class Reconciler:
    def __init__(
        self,
        backend: IpvsBackend,
        source: DesiredSource,
        events: EventBus,
        stats: Stats,
        *,
        batch_s: float = 0.005,
        resync_s: float = DEFAULT_RESYNC_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.source = source
        self._events = events
        self.stats = stats
        self.batch_s = batch_s
        self.resync_s = resync_s
        self._clock = clock
        self.actual: Table | None = None  # what lvsmon believes the kernel holds; None: unknown
        self._stale = False  # an op failed: dump before the next diff
        self.owned: set[ServiceKey] = set()  # the config's virtual services
        self.retiring: set[ServiceKey] = set()  # removed from the config, not yet deleted
        self.lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._backoff = RETRY_MIN_S
        self.retry_at: float | None = None
        self._resyncs = 0
        # the services whose destinations a resync may take as known (the engine's probe
        # services); only for a backend that reads per service (KnownDump)
        self.light: Callable[[], Collection[ServiceKey]] | None = None

    @property
    def managed(self) -> set[ServiceKey]:
        return self.owned | self.retiring

    def own(self, keys: Collection[ServiceKey]) -> None:
        """The config's services from now on; the ones it dropped are deleted, then forgotten."""
        new = set(keys)
        self.retiring = (self.retiring | (self.owned - new)) - new
        self.owned = new

    def mark_dirty(self) -> None:
        self._dirty.set()

    # ---- the loop ---------------------------------------------------------------------------

    async def passes(self) -> AsyncGenerator[bool, None]:
        """The loop: runs until cancelled, and yields each pass's outcome (True: every op
        succeeded) when it ends, a reconcile, a retry or a resync. An exception here is a bug,
        and the engine's supervisor stops the daemon on it (a half-alive reconciler is worse
        than a restart)."""
        next_resync = self._clock() + self.resync_s
        while True:
            wake_at = next_resync if self.retry_at is None else min(next_resync, self.retry_at)
            if not self._dirty.is_set():
                delay = wake_at - self._clock()
                if delay > 0:
                    try:
                        async with asyncio.timeout(delay):
                            await self._dirty.wait()
                    except TimeoutError:
                        pass
            if self._dirty.is_set():
                # results that land within a few ms of each other (a switch port dies) become
                # one batch
                await asyncio.sleep(self.batch_s)
                self._dirty.clear()
                yield await self.reconcile()
            elif self.retry_at is not None and self._clock() >= self.retry_at:
                yield await self.reconcile()
            # not an `elif`: a pool that flaps without pause must not starve the resync
            if self._clock() >= next_resync:
                yield await self.resync()
                next_resync = self._clock() + self.resync_s

    # ---- one pass ---------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """A pass is due besides any the caller asks for: a change was marked, an op failed,
        or the table is not known."""
        return (
            self._dirty.is_set() or self.retry_at is not None or self._stale or self.actual is None
        )

    async def reconcile(self, keys: Collection[ServiceKey] | None = None) -> bool:
        """Bring the kernel to the desired table; True when every op succeeded. On failure a
        retry from a fresh dump is scheduled. `keys`: only these services changed (a reload
        says which), the others are as the last pass left them; a whole pass all the same
        when one is pending."""
        async with self.lock:
            if keys is not None and self.pending:
                keys = None
            cached, dumped = self.actual, False
            if self.actual is None or self._stale:
                if not await self._refresh():
                    return False
                dumped = True
            assert self.actual is not None
            if keys is None:
                desired = self.source.desired_for(self.actual)
            else:
                desired = self.source.desired_for(self.actual, keys)
            managed = self.managed if keys is None else self.managed.intersection(keys)
            ops = diff(desired.table, self.actual, managed)
            drifted = self._drifted(cached, self.actual, ops) if dumped else set()
            ok = await self._apply(ops, desired, drifted=drifted) if ops else True
            self._settle(ok)
            return ok

    async def resync(self) -> bool:
        """Dump the kernel, diff against the desired table, repair."""
        async with self.lock:
            self.stats.resyncs += 1
            cached = self.actual
            if not await self._refresh(self._known(cached)):
                return False
            fresh = self.actual
            assert fresh is not None
            self._resyncs += 1
            # a backend that shares its objects (memory) is taken at its word: the dump's
            # objects stay unchanged while the service does, and keeping lvsmon's own would
            # keep a second copy of every destination (issue 22)
            shared = shares_dump(self.backend)
            if cached is not None and not shared:
                keep_services(cached, fresh, self.managed)
            # the kernel is exactly what the last successful pass left, and nothing is pending:
            # the desired table has not moved either (every change of health, maintenance or
            # config marks the reconciler dirty). Every FULL_EVERY-th pass recomputes anyway,
            # so that a missed edge cannot last.
            if (
                cached is not None
                and self.retry_at is None
                and not self._dirty.is_set()
                and self._resyncs % FULL_EVERY
                # the same object: kept above as equal, or shared and so unchanged; a shared
                # dump after an apply still differs by identity from the services the apply
                # touched (the reconciler's own copies): compared, those few, not recomputed
                and all(_same(cached.get(k), fresh.get(k), shared) for k in self.managed)
            ):
                self._settle(True)
                return True
            desired = self.source.desired_for(fresh)
            ops = diff(desired.table, fresh, self.managed)
            drifted = self._drifted(cached, fresh, ops)
            ok = await self._apply(ops, desired, drifted=drifted) if ops else True
            self._settle(ok)
            return ok

    def _drifted(self, cached: Table | None, fresh: Table, ops: Sequence[Op]) -> set[ServiceKey]:
        """The services the ops touch that a dump shows unlike what lvsmon believed it had
        programmed (what succeeded, failed ops excluded): changed behind its back. Logged."""
        if cached is None or not ops:
            return set()
        touched = {op.service for op in ops}
        drifted = {k for k in touched if cached.get(k) != fresh.get(k)}
        for key in sorted(drifted, key=service_order):
            log.warning(
                "IPVS table drift on %s: %s; repairing",
                virtual_label(key),
                _difference(cached, fresh, key),
            )
        return drifted

    def _known(self, cached: Table | None) -> Table | None:
        """What this resync may take as known instead of reading it (None: read everything)."""
        if (
            self.light is None
            or cached is None
            or self._stale
            or self._resyncs % LIGHT_FULL_EVERY == 0
            or not isinstance(self.backend, KnownDump)
        ):
            return None
        return {k: cached[k] for k in self.light() if k in cached} or None

    async def _refresh(self, known: Table | None = None) -> bool:
        try:
            if known is not None:
                assert isinstance(self.backend, KnownDump)
                self.actual = await self.backend.dump_known(known)
            else:
                self.actual = await self.backend.dump()
        except BackendError as exc:
            log.error("cannot read the IPVS table: %s", exc)
        except Exception as exc:  # a backend must not raise anything else; if one does, retry
            log.error("IPVS backend %s failed to dump: %r", self.backend.name, exc, exc_info=exc)
        else:
            self._stale = False
            self.retiring = {k for k in self.retiring if k in self.actual}
            return True
        self.actual = None
        self._settle(False)
        return False

    def _settle(self, ok: bool) -> None:
        self.stats.reconciles += 1
        if ok:
            self._backoff = RETRY_MIN_S
            self.retry_at = None
        else:
            self.retry_at = self._clock() + self._backoff
            log.info("retrying the IPVS table in %.1f s", self._backoff)
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)

    async def _apply(
        self,
        ops: Sequence[Op],
        desired: Desired,
        *,
        stopping: bool = False,
        drifted: Collection[ServiceKey] = (),
    ) -> bool:
        # the view is behind the kernel until the last chunk is in: should the pass be cancelled
        # at one of its yields, the next one (or the purge at stop) dumps first
        self._stale = True
        ok = True
        for at in range(0, len(ops), APPLY_CHUNK):
            if at:
                await asyncio.sleep(0)  # the last chunk's events reach their subscribers
            applied_ok = await self._apply_chunk(
                ops[at : at + APPLY_CHUNK], desired, stopping=stopping, drifted=drifted
            )
            if applied_ok is None:
                return False  # the backend raised: what it applied is unknown
            ok = applied_ok and ok
        self.retiring = {k for k in self.retiring if k in (self.actual or {})}
        self._stale = not ok
        return ok

    async def _apply_chunk(
        self,
        ops: Sequence[Op],
        desired: Desired,
        *,
        stopping: bool,
        drifted: Collection[ServiceKey],
    ) -> bool | None:
        """One chunk of a pass's ops: applied, published and taken into the view; None when
        the backend raised (the view is then dropped)."""
        before = self.actual or {}
        try:
            results = await self.backend.apply(ops)
        except Exception as exc:  # a backend must not raise; if one does, nothing is lost
            log.error("IPVS backend %s failed: %r", self.backend.name, exc, exc_info=exc)
            self.stats.ops_failed += len(ops)
            self.actual = None  # what it applied is unknown: dump, compare with nothing
            return None
        ok = len(results) == len(ops)
        fallbacks = desired.fallbacks
        for res in results:
            op = res.op
            drift = op.service in drifted
            error = None if res.error is None else res.error.message
            fallback = is_fallback(op, fallbacks)
            self._events.publish(KernelOp(op, error, drift, fallback=fallback, stopping=stopping))
            if error is None:
                self.stats.ops_applied += 1
                if drift:
                    self.stats.drift_repairs += 1
                self._publish_weight(before, op)
            else:
                ok = False
                self.stats.ops_failed += 1
        # what lvsmon now believes the kernel holds: what succeeded. After a failure the next
        # pass dumps first, and a dump unlike this belief is drift (`ipvsadm -C` made the op fail)
        done = [res.op for res in results if res.error is None]
        self.actual = applied(before, done)
        return ok

    def _publish_weight(self, before: Table, op: Op) -> None:
        if not isinstance(op, AddDest | EditDest | DeleteDest):
            return
        service = before.get(op.service)
        old_conf = service.dests.get(op.dest) if service is not None else None
        old = None if old_conf is None else old_conf.weight
        new = None if isinstance(op, DeleteDest) else op.conf.weight
        if old != new:
            self._events.publish(WeightChanged(op.service, op.dest, old, new))

    async def purge(self, keys: Collection[ServiceKey]) -> bool:
        """At stop: delete these services (cleanstop) and the retiring ones, if present. One
        attempt: the daemon is going away."""
        async with self.lock:
            if (self.actual is None or self._stale) and not await self._refresh():
                return False
            assert self.actual is not None
            wanted = set(keys) | self.retiring
            ops: list[Op] = [
                DeleteService(k) for k in sorted(wanted, key=service_order) if k in self.actual
            ]
            return await self._apply(ops, NOTHING, stopping=True) if ops else True


def applied(table: Table, ops: Sequence[Op]) -> Table:
    """`table` after `ops` (apply_ops' rules), as a new dict in which only the services the ops
    touch are new objects: the others are `table`'s own, so that what is kept by a service's
    identity (the status entries and their JSON, the table digests) stays valid. Copying the
    whole table made every apply cost O(table), and a status rebuild from scratch follow."""
    touched = {op.service for op in ops}
    part, _ = apply_ops({k: table[k] for k in touched if k in table}, ops)
    out = dict(table)
    for key in touched:
        service = part.get(key)
        if service is None:
            out.pop(key, None)
        else:
            out[key] = service
    return out


def _same(cached: Service | None, fresh: Service | None, shared: bool) -> bool:
    return cached is fresh or (shared and cached == fresh)


def keep_services(cached: Table, fresh: Table, keys: Collection[ServiceKey]) -> None:
    """Each service of `keys` that `fresh` (a dump) holds equal to `cached` (what lvsmon
    believed) takes the cached Service object back, with the dump's counters: what is kept by a
    service's identity (status entries and their JSON, table digests) stays valid, where a dump
    is new objects every resync. A service that differs keeps the dump's object. The cached
    object is given the dump's counters: never call this for a backend that shares its objects
    (`shares_dump`: the cached one may be one it published, never to be changed)."""
    for key in keys:
        old, new = cached.get(key), fresh.get(key)
        if old is not None and new is not None and old is not new and old == new:
            old.stats = new.stats
            fresh[key] = old


def _difference(cached: Table, actual: Table, key: ServiceKey) -> str:
    """What an operator changed: in words, for the drift log line."""
    was, now = cached.get(key), actual.get(key)
    if was is None:
        return "a service lvsmon had not programmed appeared"
    if now is None:
        return "the service was deleted"
    parts: list[str] = []
    if was.conf != now.conf:
        parts.append("service settings changed")
    for dest in sorted(was.dests.keys() | now.dests.keys(), key=str):
        a, b = was.dests.get(dest), now.dests.get(dest)
        if a == b:
            continue
        if b is None:
            parts.append(f"{dest} deleted")
        elif a is None:
            parts.append(f"{dest} added")
        elif a.weight != b.weight:
            parts.append(f"{dest} weight {a.weight} -> {b.weight}")
        else:
            parts.append(f"{dest} changed")
    return ", ".join(parts) or "changed"
