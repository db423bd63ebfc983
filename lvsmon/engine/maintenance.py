"""maintenancedir: a file named after a real forces it down, as ldirectord reads the directory.

Names tried, in ldirectord's order: `<ip>:<port>`, `<ip>`, `<fqdn>:<port>`, `<fqdn>`,
`<short>:<port>`, `<short>` (IPv6 ip bracketed). ldirectord did one reverse DNS lookup per real per
check; lvsmon looks names up once per config load and reads the directory once per scan.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable

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


class MaintenanceDir:
    def __init__(self, path: str, refs: Iterable[RealRef], *, reverse: bool = True) -> None:
        self.path = path
        fqdn = {a: (reverse_name(a) if reverse else None) for a in {r.address for r in refs}}
        self._names = {r: candidate_names(r, fqdn[r.address]) for r in refs}

    @property
    def names(self) -> dict[RealRef, list[str]]:
        """Every name each real answers to (drain files use them too: one lookup per real)."""
        return self._names

    def scan(self) -> frozenset[RealRef]:
        try:
            present = set(dir_names(self.path))
        except OSError:
            return frozenset()
        return frozenset(r for r, names in self._names.items() if any(n in present for n in names))
