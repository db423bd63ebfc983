"""Drained reals (`lvsmon drain`): which (virtual, real) pairs an operator set to weight 0, where
that is kept, and the drain and undrain commands' rules.

The state is a set of entries, each a real's name (`ip:port` as lvsmon writes it; by hand any name
maintenancedir would take for the real: `ip`, `fqdn:port`, `fqdn`, ...) and optionally a virtual
(`tcp:192.168.1.10:80`, `fwm:7`, `fwm6:7`): without one, the real is drained in every virtual. It
lives in one of two places, so that it survives reloads and restarts:

- with `maintenancedir`: a file per entry in that directory, `<name>.drain` or
  `<name>@<virtual>.drain`. ldirectord looks for exact names only, so it ignores these, and a
  directory shared with it stays compatible; an operator may touch such a file by hand (read
  with the maintenance scan, every second);
- otherwise a JSON file next to the pid file (`/run/lvsmon.<config>.drain.json`), written by the
  daemon, or by `lvsmon drain` when no daemon runs.

An entry naming no real of the running config is kept (the real may come back with the next
config) and ignored, with one log line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from lvsmon.addr import host_port
from lvsmon.atomicfile import read_regular, write_atomic
from lvsmon.config.model import Config
from lvsmon.config.resolve import SystemResolver
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.maintenance import HostIndex, RealNames, dir_names
from lvsmon.ipvs.model import Family, ServiceKey
from lvsmon.text import clean

log = logging.getLogger("lvsmon")

SUFFIX = ".drain"
MAX_NAME_BYTES = 200  # an entry's name, `.drain` added, is one file name (255 bytes at most)


def plain_name(text: str) -> bool:
    """`text` can be a drain file's name as it is: no `/` (a `../x` from a state file must never
    become a path outside maintenancedir), no control character (a newline would forge log
    lines), not `.` or `..`, not too long. Every name lvsmon writes is one."""
    return (
        0 < len(text.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES
        and text not in (".", "..")
        and "/" not in text
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    )


def real_label(address: str, port: int) -> str:
    """A real as maintenancedir names it: `10.0.0.5:80`, `[2001:db8::5]:80`."""
    return host_port(address, port)


def virtual_label(key: ServiceKey) -> str:
    """A virtual as ldirectord names it (`tcp:192.168.1.10:80`, `fwm:7`, `fwm6:7`): a file name
    can hold it (str(ServiceKey) writes an IPv6 fwmark `fwm:7/inet6`)."""
    if key.fwmark and key.family is Family.INET6:
        return f"fwm6:{key.fwmark}"
    return str(key)


@dataclass(frozen=True, slots=True, order=True)
class DrainEntry:
    real: str  # a name of the real, as maintenancedir's names go
    virtual: str | None  # virtual_label; None: every virtual the real is in

    @property
    def name(self) -> str:
        return self.real if self.virtual is None else f"{self.real}@{self.virtual}"

    @classmethod
    def parse(cls, name: str) -> DrainEntry | None:
        real, at, virtual = name.partition("@")
        if at and not virtual:
            return None
        return cls.checked(real, virtual or None)

    @classmethod
    def checked(cls, real: str, virtual: str | None) -> DrainEntry | None:
        """An entry from outside (a state file, a file name), or None when its name is not a
        plain file name (plain_name)."""
        entry = cls(real, virtual)
        return entry if real and plain_name(entry.name) else None

    @classmethod
    def of(cls, ref: RealRef, *, everywhere: bool) -> DrainEntry:
        real = real_label(ref.address, ref.port)
        return cls(real, None if everywhere else virtual_label(ref.service))


# ---- where the entries live -----------------------------------------------------------------


class DrainStore(Protocol):
    where: str  # for messages: the directory or the file

    def read(self) -> set[DrainEntry]: ...

    def change(self, add: Collection[DrainEntry], remove: Collection[DrainEntry]) -> None:
        """Raises OSError when the change cannot be made."""
        ...


class DrainDir:
    """maintenancedir's form: one empty file per entry."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path

    def read(self) -> set[DrainEntry]:
        try:
            names = dir_names(self.path)
        except OSError:
            return set()
        found = set()
        for name in names:
            if name.endswith(SUFFIX) and not name.startswith("."):
                entry = DrainEntry.parse(name.removesuffix(SUFFIX))
                if entry is not None:
                    found.add(entry)
        return found

    def change(self, add: Collection[DrainEntry], remove: Collection[DrainEntry]) -> None:
        # added first: an interrupted undrain that splits an entry leaves more drained, not less
        for entry in add:
            if not plain_name(entry.name):  # never a path outside the directory
                raise OSError(f"{entry.name!r} is not a file name")
            path = os.path.join(self.path, entry.name + SUFFIX)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            os.close(fd)
        for entry in remove:
            if not plain_name(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, entry.name + SUFFIX))


class StateFile:
    """A JSON list of {"real": "ip:port", "virtual": label or null}, replaced whole."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path
        self._seen: tuple[int, int, int] | None = None
        self._entries: set[DrainEntry] = set()
        self._failed: str | None = None  # the last error logged: one line per state of the file

    def read(self) -> set[DrainEntry]:
        """The entries; when the file cannot be read or parsed, one error line and the last
        good entries (read each second by the daemon: parsed again only when it changed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._entries, self._failed = None, set(), None
            return set()
        except OSError as exc:
            self._error(exc.strerror or str(exc))
            return set(self._entries)
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen != self._seen:
            self._seen = seen
            try:
                self._entries, self._failed = self._load(), None
            except (OSError, ValueError, RecursionError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                self._error(str(reason) or type(exc).__name__)
        return set(self._entries)

    def _error(self, reason: str) -> None:
        if reason != self._failed:
            self._failed = reason
            log.error(
                "cannot read the drain state %s: %s; the last good state is kept",
                self.path,
                reason,
            )

    def _load(self) -> set[DrainEntry]:
        """ValueError (UnicodeDecodeError, JSONDecodeError, NotReadable, a wrong shape) or
        RecursionError (deep nesting) when the file is not a drain state."""
        data = json.loads(read_regular(self.path).decode("utf-8"))
        if not isinstance(data, list):
            raise ValueError("not a JSON list")
        entries = set()
        for item in data:
            real = item.get("real") if isinstance(item, dict) else None
            virtual = item.get("virtual") if isinstance(item, dict) else None
            if not isinstance(real, str) or not (virtual is None or isinstance(virtual, str)):
                raise ValueError(f"not a drain entry: {_shown(item)}")
            entry = DrainEntry.checked(real, virtual or None)
            if entry is None:
                raise ValueError(f"not a drain name: {_shown(real)}")
            entries.add(entry)
        return entries

    def change(self, add: Collection[DrainEntry], remove: Collection[DrainEntry]) -> None:
        entries = (self.read() - set(remove)) | set(add)
        if not entries and not os.path.exists(self.path):
            return
        data = [{"real": e.real, "virtual": e.virtual} for e in sorted(entries, key=_sort_key)]
        write_atomic(self.path, json.dumps(data, indent=1) + "\n", 0o644)
        self._seen, self._entries = None, entries


def _shown(value: object) -> str:
    """A value of a state file in an error line: printable, bounded."""
    return ascii(value)[:80]


class MemoryStore:
    """No pid file to keep a state file beside (in-process daemons of the tests, the demo)."""

    where = "memory"

    def __init__(self) -> None:
        self._entries: set[DrainEntry] = set()

    def read(self) -> set[DrainEntry]:
        return set(self._entries)

    def change(self, add: Collection[DrainEntry], remove: Collection[DrainEntry]) -> None:
        self._entries = (self._entries - set(remove)) | set(add)


def _sort_key(entry: DrainEntry) -> tuple[str, str]:
    return (entry.real, entry.virtual or "")


def store_for(config: Config, state_path: str | None) -> DrainStore:
    if config.settings.maintenancedir:
        return DrainDir(config.settings.maintenancedir)
    if state_path:
        return StateFile(state_path)
    return MemoryStore()


def carry_over(old: DrainStore, new: DrainStore) -> None:
    """A reload turned maintenancedir on or off, or moved it: the drains move with it (left
    behind, they would come back when it is turned back, undrained or not)."""
    entries = old.read()
    if not entries:
        return
    names = ", ".join(sorted(clean(e.name) for e in entries))
    try:
        new.change(entries - new.read(), ())
    except OSError as exc:
        log.error("cannot move the drains %s from %s to %s: %s", names, old.where, new.where, exc)
        return
    try:
        old.change((), entries)
    except OSError as exc:
        log.warning("drains copied to %s, but not removed from %s: %s", new.where, old.where, exc)
    log.info("drains moved from %s to %s: %s", old.where, new.where, names)


# ---- entries to (virtual, real) pairs -------------------------------------------------------


class DrainIndex:
    """The names one config's reals answer to: built once per config, so that resolving the
    entries each second costs a lookup per entry, not a pass over 10,000 reals."""

    def __init__(self, names: Mapping[RealRef, Sequence[str]] | HostIndex) -> None:
        """`names`: an index by host, maintenancedir's names (RealNames: its index by host is
        this one's too), or any names per real."""
        self._hosts: HostIndex | None = None
        self._by_name: dict[str, RealRef | tuple[RealRef, ...]] = {}
        if isinstance(names, HostIndex):
            self._hosts = names
            return
        if isinstance(names, RealNames):
            self._hosts = names.index
            return
        # a name most often names one real: that ref itself, a tuple only for several (a list
        # per name was some 200 bytes a real at 10,000); the lists are only built here
        lists: dict[str, list[RealRef]] = {}
        for ref, ref_names in names.items():
            for name in ref_names:
                lists.setdefault(name, []).append(ref)
        self._by_name = {
            name: refs[0] if len(refs) == 1 else tuple(refs) for name, refs in lists.items()
        }

    @classmethod
    def plain(cls, refs: Iterable[RealRef]) -> DrainIndex:
        """Names without reverse lookups (`ip:port`, `ip`): what lvsmon itself writes; indexed
        by host, no name kept per real."""
        return cls(HostIndex(refs, {}))

    def refs_of(self, entry: DrainEntry) -> list[RealRef]:
        if self._hosts is not None:
            refs = self._hosts.refs_named(entry.real)
        else:
            found = self._by_name.get(entry.real)
            if found is None:
                return []
            refs = list(found) if isinstance(found, tuple) else [found]
        if entry.virtual is None:
            return refs
        return [r for r in refs if virtual_label(r.service) == entry.virtual]

    def resolve(self, entries: Iterable[DrainEntry]) -> tuple[frozenset[RealRef], list[DrainEntry]]:
        """(the drained pairs, the entries that name none of this config's reals)."""
        drained: set[RealRef] = set()
        unknown: list[DrainEntry] = []
        for entry in entries:
            refs = self.refs_of(entry)
            if refs:
                drained.update(refs)
            else:
                unknown.append(entry)
        return frozenset(drained), unknown


# ---- the commands ---------------------------------------------------------------------------


class DrainError(Exception):
    """What the operator asked for names nothing of the config (exit 2, HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    ref: RealRef
    changed: bool  # False: it already was (drain) or was not (undrain) drained

    def json(self) -> dict[str, object]:
        return {
            "virtual": virtual_label(self.ref.service),
            "real": real_label(self.ref.address, self.ref.port),
            "changed": self.changed,
        }


def _split_real(text: str) -> tuple[str, str | None]:
    """`host:port`, `[v6]:port`, a bare IPv6 address, or a host (address or name)."""
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise ValueError
        return host, rest[1:] if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, None


def _addresses(host: str) -> set[str]:
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    resolver = SystemResolver()
    found = {resolver.host(host, family) for family in (Family.INET, Family.INET6)}
    return {a for a in found if a is not None}


def _parse_address(text: str) -> tuple[set[str], int | None]:
    """(the addresses `text` names, its port or None); ValueError when it names nothing."""
    host, port_text = _split_real(text)
    if not host or port_text == "":
        raise ValueError
    port: int | None = None
    if port_text is not None:
        port = SystemResolver().port(port_text, None)
        if port is None:
            raise ValueError
    addresses = _addresses(host)
    if not addresses:
        raise ValueError
    return addresses, port


def _virtuals(config: Config, text: str) -> list[ServiceKey]:
    keys = [v.key for v in config.virtuals]
    exact = [k for k in keys if text in (str(k), virtual_label(k))]
    if exact:
        return exact
    proto, sep, rest = text.partition(":")
    if not sep or proto not in ("tcp", "udp", "sctp"):
        proto, rest = "", text
    try:
        addresses, port = _parse_address(rest)
    except ValueError:
        return []
    return [
        k
        for k in keys
        if not k.fwmark
        and k.address in addresses
        and k.port == port
        and (not proto or str(k.protocol) == proto)
    ]


def select(config: Config, real: str, virtual: str | None = None) -> list[RealRef]:
    """The (virtual, real) pairs `real` (and `virtual`) name in `config`, in config order;
    DrainError when none."""
    keys: list[ServiceKey] | None = None
    if virtual is not None:
        keys = _virtuals(config, virtual)
        if not keys:
            raise DrainError(f"{virtual} is not a virtual service of {config.path}")
    try:
        addresses, port = _parse_address(real)
    except ValueError:
        raise DrainError(
            f"{real} is neither a real server's address nor ADDRESS:PORT (nor a name)"
        ) from None
    refs = []
    for v in config.virtuals:
        key = v.key
        if keys is not None and key not in keys:
            continue
        for r in v.reals:
            if r.address in addresses and (port is None or r.port == port):
                refs.append(RealRef(key, r.address, r.port))
    if not refs:
        where = config.path if virtual is None else f"virtual {virtual} in {config.path}"
        raise DrainError(f"{real} is not a real server of {where}")
    return list(dict.fromkeys(refs))


def drain(
    store: DrainStore, index: DrainIndex, targets: Sequence[RealRef], *, everywhere: bool
) -> list[Outcome]:
    """Drain `targets`: `everywhere` keeps one entry per real for all its virtuals (a real the
    next config adds to another virtual is drained there too), else one per (virtual, real)."""
    drained, _ = index.resolve(store.read())
    add = {DrainEntry.of(ref, everywhere=everywhere) for ref in targets if ref not in drained}
    if add:
        store.change(add, ())
    return [Outcome(ref, ref not in drained) for ref in targets]


def undrain(store: DrainStore, index: DrainIndex, targets: Sequence[RealRef]) -> list[Outcome]:
    """Undrain `targets`: every entry that drains one of them goes; a pair such an entry also
    drained that is not a target stays drained, by an entry of its own."""
    entries = store.read()
    drained, _ = index.resolve(entries)
    wanted = set(targets)
    remove = {e for e in entries if any(ref in wanted for ref in index.refs_of(e))}
    still = {ref for e in remove for ref in index.refs_of(e)} - wanted
    add = {DrainEntry.of(ref, everywhere=False) for ref in still}
    add -= entries
    if remove:
        store.change(add, remove)
    return [Outcome(ref, ref in drained) for ref in targets]


def listing(store: DrainStore, index: DrainIndex) -> dict[str, object]:
    """GET /drains, `lvsmon drain` without REAL: the drained pairs and the ignored entries."""
    entries = store.read()
    drained, unknown = index.resolve(entries)
    pairs = sorted((virtual_label(r.service), real_label(r.address, r.port)) for r in drained)
    return {
        "where": store.where,
        "drained": [{"virtual": v, "real": r} for v, r in pairs],
        "ignored": sorted(clean(e.name) for e in unknown),  # a file's name: shown clean
    }


class DrainState:
    """The daemon's drain state: its store follows the running config (maintenancedir or the
    state file), its index the running plan."""

    def __init__(self, state_path: str | None) -> None:
        self.state_path = state_path
        self._store: DrainStore | None = None
        self._store_for: tuple[str | None, str | None] | None = None
        self._index: DrainIndex | None = None
        self._index_for: tuple[object, DrainStore] | None = None
        self._logged: set[DrainEntry] = set()

    def store(self, config: Config) -> DrainStore:
        want = (config.settings.maintenancedir, self.state_path)
        if self._store is None or self._store_for != want:
            old, self._store = self._store, store_for(config, self.state_path)
            self._store_for = want
            if old is not None:
                carry_over(old, self._store)
        return self._store

    def index(
        self, config: Config, refs: Collection[RealRef], names: Mapping[RealRef, Sequence[str]]
    ) -> DrainIndex:
        """`names`: every name a real answers to in maintenancedir (its reverse lookups are
        done once per config, by the maintenance scan's table); built again when `refs` is
        another object (a new plan) or the store changed."""
        store = self.store(config)
        built = self._index_for
        # by identity: comparing 10,000 refs each second is what the index is there to avoid
        if self._index is None or built is None or built[0] is not refs or built[1] is not store:
            self._index = DrainIndex(names) if names else DrainIndex.plain(refs)
            self._index_for = (refs, store)
        return self._index

    def drained(
        self, config: Config, index: DrainIndex | Callable[[], DrainIndex]
    ) -> frozenset[RealRef]:
        """The pairs drained now (`index`: this state's index() for the config's plan, or what
        builds it: only asked for when some entry is there)."""
        store = self.store(config)
        entries = store.read()
        if not entries:
            return frozenset()
        if not isinstance(index, DrainIndex):
            index = index()
        found, unknown = index.resolve(entries)
        for entry in unknown:
            if entry not in self._logged:
                self._logged.add(entry)
                log.warning(
                    "drain state %s: %s names no real server of %s; kept, ignored",
                    store.where,
                    clean(entry.name),
                    config.path,
                )
        return found
