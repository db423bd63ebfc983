"""Operator forcing: the (virtual, real) pairs an operator took out of the checks' hands, as one
rule for the running daemon, the reload preview of POST /plan and the offline `lvsmon plan`.

- maintenancedir: a file named after a real forces it down (lvsmon.engine.maintenance);
- drains (`lvsmon drain`): weight 0 while up, the entries kept in maintenancedir or the drain
  state file (lvsmon.engine.drain), resolved with maintenancedir's names where it is set (one
  reverse lookup per real), else with the names lvsmon itself writes.

`Forcing` is the running daemon's: it keeps its maintenance directory's names while the set of
reals stays, and its drain state follows the running config. `Preview` answers for a config that
does not run (a reload's plan; a daemon about to start, when none runs): it reuses the running
side's name lookups and drain store where they apply, and changes nothing of them.
"""

from __future__ import annotations

from lvsmon.config.model import Config
from lvsmon.engine.drain import DrainIndex, DrainState, DrainStore, store_for
from lvsmon.engine.jobs import Plan, RealRef
from lvsmon.engine.maintenance import MaintenanceDir

_DirKey = tuple[str, frozenset[RealRef]]  # (maintenancedir, the reals it names)


class Forcing:
    """The running daemon's maintenance scan and drain state. `state_path`: the drain state
    file, used without maintenancedir (None: kept in memory)."""

    def __init__(self, state_path: str | None) -> None:
        self.drains = DrainState(state_path)
        self._maint: MaintenanceDir | None = None
        self._maint_for: tuple[str | None, frozenset[RealRef]] | None = None
        self._seen: tuple[str | None, Plan] | None = None

    # names are looked up when the set of reals changes, not per scan
    def maintenance_dir(self, config: Config, plan: Plan) -> MaintenanceDir | None:
        path = config.settings.maintenancedir
        seen = self._seen
        # the same plan (by identity) has the same reals: this runs every second, and a set of
        # 100,000 RealRefs cost some 40 ms to build and hash each time
        if seen is not None and seen[1] is plan and seen[0] == path:
            return self._maint
        self._seen = (path, plan)
        refs = frozenset(plan.failurecount) if path else frozenset()
        if self._maint_for != (path, refs):
            self._maint_for = (path, refs)
            self._maint = MaintenanceDir(path, refs) if path else None
        return self._maint

    def maintained(self, config: Config, plan: Plan) -> frozenset[RealRef]:
        maint = self.maintenance_dir(config, plan)
        return maint.scan() if maint else frozenset()

    def drain_index(self, config: Config, plan: Plan) -> DrainIndex:
        maint = self.maintenance_dir(config, plan)
        return self.drains.index(config, plan.failurecount, maint.names if maint else {})

    def drained(self, config: Config, plan: Plan) -> frozenset[RealRef]:
        """The drained pairs; an entry naming no real of `config` is logged once."""
        # the index (a pass over every real, for a new plan) only when some drain is there
        return self.drains.drained(config, lambda: self.drain_index(config, plan))

    def preview(self, running: Config) -> Preview:
        """For configs that do not run, while `running` does (call it in the loop; the
        preview's methods may then run in a thread)."""
        maint = None
        if self._maint is not None and self._maint_for is not None:
            maint = ((self._maint.path, self._maint_for[1]), self._maint)
        store = (running.settings.maintenancedir, self.drains.store(running))
        return Preview(self.drains.state_path, running_dir=maint, running_store=store)


class Preview:
    """The maintained and the drained pairs of a config that does not run, as a daemon reloading
    to it (or starting on it) would find them. Without running parts: as a daemon started now
    would read them (the drain state file at `state_path`, or maintenancedir). A running
    maintenance directory for the same directory and reals is reused (its names were looked
    up), as is the running drain store for the same maintenancedir (the only copy of drains
    kept in memory); nothing running is changed, nothing is logged."""

    def __init__(
        self,
        state_path: str | None,
        *,
        running_dir: tuple[_DirKey, MaintenanceDir] | None = None,
        running_store: tuple[str | None, DrainStore] | None = None,
    ) -> None:
        self.state_path = state_path
        self._dirs: dict[_DirKey, MaintenanceDir] = dict([running_dir] if running_dir else [])
        self._running_store = running_store

    def _dir(self, config: Config, plan: Plan) -> MaintenanceDir | None:
        path = config.settings.maintenancedir
        if not path:
            return None
        key = (path, frozenset(plan.failurecount))
        if key not in self._dirs:
            self._dirs[key] = MaintenanceDir(path, key[1])
        return self._dirs[key]

    def store(self, config: Config) -> DrainStore:
        """Where `config` keeps its drains."""
        running = self._running_store
        if running is not None and running[0] == config.settings.maintenancedir:
            return running[1]
        return store_for(config, self.state_path)

    def maintained(self, config: Config, plan: Plan) -> frozenset[RealRef]:
        maint = self._dir(config, plan)
        return maint.scan() if maint else frozenset()

    def drain_index(self, config: Config, plan: Plan) -> DrainIndex:
        """The names `config`'s reals answer to in drain entries: with maintenancedir, also the
        hand-touched ones (`<fqdn>.drain`: its reverse lookups)."""
        maint = self._dir(config, plan)
        return DrainIndex(maint.names) if maint else DrainIndex.plain(plan.failurecount)

    def drained(self, config: Config, plan: Plan) -> frozenset[RealRef]:
        entries = self.store(config).read()
        if not entries:
            return frozenset()
        return self.drain_index(config, plan).resolve(entries)[0]
