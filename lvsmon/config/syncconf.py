"""The connection synchronisation directives (lvsmon's own; ldirectord has none and rejects them).

    syncdaemon    = master | backup | both | none     (none: the default)
    syncinterface = IFNAME                            (required with syncdaemon)
    syncid        = 0..255                            (default 0: no filtering)
    syncmaxlen    = 1..65507                          (default: from the interface's MTU)
    syncgroup     = MULTICAST-ADDRESS                 (default 224.0.0.81)
    syncport      = 1..65535                          (default 8848)
    syncttl       = 1..255                            (default 1)

Value parsers for parser.py and the cross checks for effective.py: what one directive means
depends on the others (an interface is required, the rest has no effect without a daemon).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from lvsmon.config.values import Invalid, Warn, integer, shorten, word
from lvsmon.ipvs.sync import (
    BACKUP_MAXLEN_MIN,
    IFNAME_MAX,
    MAXLEN_MAX,
    SYNCID_MAX,
    SyncDaemon,
    SyncState,
    canonical_group,
)

if TYPE_CHECKING:
    from lvsmon.config.raw import Setting

MODES = ("master", "backup", "both", "none")
SETTINGS = ("syncinterface", "syncid", "syncmaxlen", "syncgroup", "syncport", "syncttl")
_STATES = {
    "master": (SyncState.MASTER,),
    "backup": (SyncState.BACKUP,),
    "both": (SyncState.MASTER, SyncState.BACKUP),
    "none": (),
}
# Linux refuses "/", ":" is an alias's separator (not a device), and blanks end the value.
_IFNAME = re.compile(r"[^\s/:]+")


def parse_mode(value: str, warn: Warn) -> str:
    wanted = "syncdaemon must be master, backup, both or none"
    mode = word(value, r"\w+", f"{wanted}, not {shorten(value)!r}", warn)
    if mode not in MODES:
        raise Invalid(f"{wanted}, not {shorten(mode)!r}")
    return mode


def parse_interface(value: str, warn: Warn) -> str:
    name = word(value, r"\S+", "syncinterface needs a device name", warn)
    if not _IFNAME.fullmatch(name):
        raise Invalid(f"invalid syncinterface {shorten(name)!r}: no device name has / or :")
    if len(name.encode()) > IFNAME_MAX:
        raise Invalid(f"invalid syncinterface {shorten(name)!r}: at most {IFNAME_MAX} bytes")
    return name


def parse_syncid(value: str, warn: Warn) -> int:
    return integer(value, "syncid", warn, minimum=0, maximum=SYNCID_MAX)


def parse_maxlen(value: str, warn: Warn) -> int:
    return integer(value, "syncmaxlen", warn, minimum=1, maximum=MAXLEN_MAX)


def parse_port(value: str, warn: Warn) -> int:
    return integer(value, "syncport", warn, minimum=1, maximum=65535)


def parse_ttl(value: str, warn: Warn) -> int:
    return integer(value, "syncttl", warn, minimum=1, maximum=255)


def parse_group(value: str, warn: Warn) -> str:
    text = word(value, r"\S+", "syncgroup needs a multicast address", warn)
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise Invalid(f"invalid syncgroup {shorten(text)!r}: not an IP address") from None
    if not address.is_multicast:
        raise Invalid(f"invalid syncgroup {address}: not a multicast address")
    return canonical_group(str(address))


def sync_daemons(
    settings: Mapping[str, Setting],
) -> tuple[tuple[SyncDaemon, ...], list[tuple[int, str]], list[tuple[int, str]]]:
    """The daemons the global settings ask for, and (line, message) errors and warnings."""
    errors: list[tuple[int, str]] = []
    warnings: list[tuple[int, str]] = []
    mode_setting = settings.get("syncdaemon")
    mode = cast(str, mode_setting.value) if mode_setting is not None else "none"
    states = _STATES[mode]
    if not states:
        for name in SETTINGS:
            if name in settings:
                warnings.append((settings[name].line, f"{name} has no effect without syncdaemon"))
        return (), errors, warnings
    assert mode_setting is not None
    interface = settings.get("syncinterface")
    if interface is None:
        errors.append(
            (
                mode_setting.line,
                f"syncdaemon = {mode} needs syncinterface (the device the sync messages use)",
            )
        )
        return (), errors, warnings

    def get(name: str) -> int | str | None:
        s = settings.get(name)
        return None if s is None else cast(int | str, s.value)

    maxlen = cast(int | None, get("syncmaxlen"))
    if maxlen is not None and maxlen < BACKUP_MAXLEN_MIN and SyncState.BACKUP in states:
        warnings.append(
            (
                settings["syncmaxlen"].line,
                f"syncmaxlen {maxlen}: the kernel makes a backup daemon's {BACKUP_MAXLEN_MIN}",
            )
        )
    daemons = tuple(
        SyncDaemon(
            state=state,
            interface=cast(str, interface.value),
            syncid=cast(int, get("syncid") or 0),
            maxlen=maxlen,
            group=cast(str | None, get("syncgroup")),
            port=cast(int | None, get("syncport")),
            ttl=cast(int | None, get("syncttl")),
        )
        for state in states
    )
    return daemons, errors, warnings
