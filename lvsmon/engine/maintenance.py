"""maintenancedir: a file named after a real forces it down, as ldirectord reads the directory.

Names tried, in ldirectord's order: `<ip>:<port>`, `<ip>`, `<fqdn>:<port>`, `<fqdn>`,
`<short>:<port>`, `<short>` (IPv6 ip bracketed). ldirectord did one reverse DNS lookup per real per
check; lvsmon looks names up once per config load and reads the directory once per scan, and a
scan resolves each file's name (a host or host:port) through an index by host: its cost is the
directory's, not the reals'.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Collection, Iterable, Iterator, Mapping

from lvsmon.addr import bracketed
from lvsmon.config.resolve import files_only, hosts_file_name
from lvsmon.engine.jobs import RealRef

_SHORTABLE = re.compile(r"^[a-z][a-z0-9\-]+\.")
MAX_DIR_ENTRIES = 100_000  # names read of maintenancedir per scan (each second)


def dir_names(path: str) -> list[str]:
    """The names in a directory, at most MAX_DIR_ENTRIES of them: a directory flooded with
    files costs a bounded scan (OSError as scandir raises it; not a directory: NotADirectoryError,
    never a wait)."""
    names = []
    with os.scandir(path) as entries:
        for entry in entries:
            names.append(entry.name)
            if len(names) >= MAX_DIR_ENTRIES:
                break
    return names


def reverse_name(address: str) -> str | None:
    if files_only():
        return hosts_file_name(address)
    try:
        name, _ = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, UnicodeError):
        return None
    return name


def candidate_names(ref: RealRef, fqdn: str | None) -> list[str]:
    ip = bracketed(ref.address)
    names = [f"{ip}:{ref.port}", ip]
    if fqdn:
        names += [f"{fqdn}:{ref.port}", fqdn]
        if _SHORTABLE.match(fqdn):
            short = fqdn.split(".", 1)[0]
            names += [f"{short}:{ref.port}", short]
    return names


def host_names(address: str, fqdn: str | None) -> list[str]:
    """The hosts of candidate_names, without a port: the ip (bracketed), the fqdn, the short."""
    hosts = [bracketed(address)]
    if fqdn:
        hosts.append(fqdn)
        if _SHORTABLE.match(fqdn):
            hosts.append(fqdn.split(".", 1)[0])
    return list(dict.fromkeys(hosts))


class HostIndex:
    """The reals a name stands for, as candidate_names has it, kept per host (ip, fqdn, short)
    and not per name: a name is a host or `host:port`. One entry per host, where a table of
    every real's names took some 170 bytes a real (400 with reverse names) and a pass over all
    of them on each scan."""

    __slots__ = ("_by_host",)

    def __init__(self, refs: Iterable[RealRef], fqdn: Mapping[str, str]) -> None:
        lists: dict[str, list[RealRef]] = {}
        for ref in refs:
            for host in host_names(ref.address, fqdn.get(ref.address)):
                lists.setdefault(host, []).append(ref)
        # a host is most often one real's: that ref itself, a tuple only for several
        self._by_host: dict[str, RealRef | tuple[RealRef, ...]] = {
            host: found[0] if len(found) == 1 else tuple(found) for host, found in lists.items()
        }

    def _at(self, host: str) -> tuple[RealRef, ...]:
        found = self._by_host.get(host)
        if found is None:
            return ()
        return found if isinstance(found, tuple) else (found,)

    def refs_named(self, name: str) -> list[RealRef]:
        """The reals `name` is one of the candidate_names of."""
        refs = self._at(name)  # a host has no ":" but bracketed, so never also host:port
        if refs:
            return list(refs)
        host, sep, port = name.rpartition(":")
        if not sep:
            return []
        return [r for r in self._at(host) if str(r.port) == port]


class RealNames(Mapping[RealRef, list[str]]):
    """Every name each real answers to (candidate_names), made when asked; `index` resolves a
    name to its reals without them."""

    __slots__ = ("_fqdn", "_refs", "index")

    def __init__(self, refs: Collection[RealRef], fqdn: Mapping[str, str]) -> None:
        self._refs = refs
        self._fqdn = fqdn
        self.index = HostIndex(refs, fqdn)

    def __getitem__(self, ref: RealRef) -> list[str]:
        if ref not in self._refs:
            raise KeyError(ref)
        return candidate_names(ref, self._fqdn.get(ref.address))

    def __iter__(self) -> Iterator[RealRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


class MaintenanceDir:
    def __init__(self, path: str, refs: Iterable[RealRef], *, reverse: bool = True) -> None:
        self.path = path
        kept = refs if isinstance(refs, (frozenset, set)) else frozenset(refs)
        addresses = {r.address for r in kept}
        fqdn: dict[str, str] = {}
        if reverse:
            for address in addresses:
                name = reverse_name(address)
                if name:
                    fqdn[address] = name
        self._names = RealNames(kept, fqdn)

    @property
    def names(self) -> RealNames:
        """Every name each real answers to (drain files use them too: one lookup per real,
        and its index)."""
        return self._names

    def scan(self) -> frozenset[RealRef]:
        try:
            present = dir_names(self.path)
        except OSError:
            return frozenset()
        # a pass over the directory's names (mostly none), not over every real's
        index = self._names.index
        found: set[RealRef] = set()
        for name in present:
            found.update(index.refs_named(name))
        return frozenset(found)
