"""Weight steering: caps on the kernel weight of (virtual, real) pairs, from several sources.

A source (the agent check, slow start's ramp) may lower the weight of a real that is up; none
can raise it above the configured weight, and none decides up or down: the health check does.
Each source holds at most one cap per pair; the cap that reaches the desired table
(engine/desired.py) is the lowest of them ("the lower wins"). A cap of 0 keeps an up real in
the kernel at weight 0, as a drain does.

The merged caps are kept incrementally: a set() recomputes only its own pair, so that a ramp's
step at 10,000 reals costs one pair, not a pass over every cap. `version` counts the changes:
a reader that caches on the caps compares it, the mapping being the same object throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType

from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import ServiceKey


class Steering:
    """Per-source weight caps; `on_change` is called after every change of a merged cap
    (the engine marks its reconciler dirty)."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.on_change = on_change
        self._by_ref: dict[RealRef, dict[str, int]] = {}
        self._caps: dict[RealRef, int] = {}
        self._view: Mapping[RealRef, int] = MappingProxyType(self._caps)
        self.version = 0
        # per virtual, bumped on any change of a source's cap there (the status keeps a
        # virtual's text while its number stays)
        self._service_versions: dict[ServiceKey, int] = {}
        self.changes = 0  # any source's cap on any real: their sum

    def set(self, source: str, ref: RealRef, cap: int | None) -> bool:
        """Set (None: remove) `source`'s cap on `ref`; True when the stored caps changed."""
        if cap is not None and cap < 0:
            raise ValueError(f"a weight cap is not negative: {cap}")
        sources = self._by_ref.get(ref)
        if cap is None:
            if sources is None or source not in sources:
                return False
            del sources[source]
            if not sources:
                del self._by_ref[ref]
        else:
            if sources is None:
                sources = self._by_ref[ref] = {}
            elif sources.get(source) == cap:
                return False
            sources[source] = cap
        self._touch(ref)
        self._merge(ref)
        return True

    def _touch(self, ref: RealRef) -> None:
        self.changes += 1
        key = ref.service
        self._service_versions[key] = self._service_versions.get(key, 0) + 1

    def version_of(self, service: ServiceKey) -> int:
        """A number that changes whenever a cap of a real of `service` does (0: never had one)."""
        return self._service_versions.get(service, 0) if self._service_versions else 0

    def _merge(self, ref: RealRef) -> None:
        sources = self._by_ref.get(ref)
        old = self._caps.get(ref)
        new: int | None = None
        if sources:
            new = self._caps[ref] = min(sources.values())
        else:
            self._caps.pop(ref, None)
        if new == old:
            return  # a source changed under a lower one: the table does not move
        self.version += 1
        if self.on_change is not None:
            self.on_change()

    def caps(self) -> Mapping[RealRef, int]:
        """Per pair, the lowest cap of any source (a read-only view, kept up to date)."""
        return self._view

    def of(self, ref: RealRef) -> dict[str, int]:
        """Each source's cap on `ref` (for status: "weight 3/10 by agent")."""
        return dict(self._by_ref.get(ref, {}))

    def sources(self, ref: RealRef) -> Collection[str]:
        return tuple(self._by_ref.get(ref, ()))

    def drop_source(self, source: str, keep: Collection[RealRef] = ()) -> int:
        """Remove `source`'s caps on every pair not in `keep` (a reload removed them, or the
        source stopped); the number removed."""
        gone = [r for r, s in self._by_ref.items() if source in s and r not in keep]
        for ref in gone:
            self.set(source, ref, None)
        return len(gone)

    def keep_only(self, refs: Collection[RealRef]) -> int:
        """Forget every cap of pairs not in `refs` (a reload removed them); the number of
        pairs forgotten."""
        gone = [r for r in self._by_ref if r not in refs]
        for ref in gone:
            del self._by_ref[ref]
            self._touch(ref)
            self._merge(ref)
        return len(gone)
