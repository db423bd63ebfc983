"""The kernel's IPVS connection synchronisation daemons, as every backend sees them.

Each network namespace can run one *master* daemon (it multicasts the state of the
connections this director handles) and one *backup* daemon (it receives another director's
messages and creates the same connections here), both inside the kernel. lvsmon starts the
ones its config asks for (``syncdaemon``), changes them when a reload changes their settings
and stops them at stop; the kernel threads themselves do the work.

What the kernel fills in when a setting is not given (net/netfilter/ipvs/ip_vs_sync.c):
group 224.0.0.81, port 8848, TTL 1, and a message length from the interface MTU (1500 - IP
and UDP headers for a master; the MTU clamped to 1500..65535 for a backup).
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import os
import re
from dataclasses import dataclass, replace

from lvsmon.ipvs.errors import ErrorKind, OpError
from lvsmon.ipvs.ipvsadm_format import error_kind

DEFAULT_GROUP = "224.0.0.81"
DEFAULT_GROUP6 = "ff02::81"  # not a kernel default: what an IPv6 group is usually spelt as
DEFAULT_PORT = 8848
DEFAULT_TTL = 1
IFNAME_MAX = 15  # IP_VS_IFNAME_MAXLEN - 1
SYNCID_MAX = 255  # the id travels in one byte of each sync message
MAXLEN_MAX = 65535 - 20 - 8  # a UDP payload over IPv4
BACKUP_MAXLEN_MIN = 1024  # the kernel raises a backup's smaller length to this
_HEADERS_V4 = 20 + 8
_HEADERS_V6 = 40 + 8
_MTU = 1500


class SyncState(enum.StrEnum):
    """The two kinds of daemon; the kernel's IP_VS_STATE_MASTER (1) and _BACKUP (2)."""

    MASTER = "master"
    BACKUP = "backup"

    @property
    def kernel(self) -> int:
        return 1 if self is SyncState.MASTER else 2


@dataclass(frozen=True, slots=True)
class SyncDaemon:
    """One sync daemon: as configured (None = the kernel's default) or as read back (the kernel
    reports every value, defaults filled in)."""

    state: SyncState
    interface: str
    syncid: int = 0
    maxlen: int | None = None  # UDP payload of a sync message
    group: str | None = None  # multicast group, IPv4 or IPv6
    port: int | None = None
    ttl: int | None = None

    def __str__(self) -> str:
        parts = [f"interface {self.interface}", f"syncid {self.syncid}"]
        for name in ("maxlen", "group", "port", "ttl"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {value}")
        return f"{self.state} sync daemon ({', '.join(parts)})"

    @property
    def group_v6(self) -> bool:
        return self.group is not None and ":" in self.group

    def as_kernel_runs_it(self) -> SyncDaemon:
        """The values the kernel reports for this daemon once started with an interface of
        the usual MTU (1500): the defaults filled in, the length clamped."""
        headers = _HEADERS_V6 if self.group_v6 else _HEADERS_V4
        if self.maxlen is None:
            maxlen = _MTU - headers
        else:
            low = BACKUP_MAXLEN_MIN if self.state is SyncState.BACKUP else 1
            maxlen = min(max(self.maxlen, low), 65535 - headers)
        return replace(
            self,
            maxlen=maxlen,
            group=DEFAULT_GROUP if self.group is None else canonical_group(self.group),
            port=DEFAULT_PORT if self.port is None else self.port,
            ttl=DEFAULT_TTL if self.ttl is None else self.ttl,
        )

    def satisfied_by(self, running: SyncDaemon) -> bool:
        """Whether the running daemon does what this configured one asks: every value given
        here is the running one's (the length as the kernel clamps it); an unset length is
        taken from the MTU, so any running length does. A value the running one does not
        report (ipvsadm before 1.28 lists only interface and syncid) is not held against it."""
        if running.state is not self.state or running.interface != self.interface:
            return False
        wanted = self.as_kernel_runs_it()
        if running.syncid != self.syncid:
            return False
        if self.maxlen is not None and running.maxlen not in (None, wanted.maxlen):
            return False
        return (
            (running.group is None or canonical_group(running.group) == wanted.group)
            and (running.port is None or running.port == wanted.port)
            and (running.ttl is None or running.ttl == wanted.ttl)
        )


def canonical_group(group: str) -> str:
    return str(ipaddress.ip_address(group))


def check_daemon(daemon: SyncDaemon) -> None:
    """Raises ValueError for settings the kernel would refuse or silently cut."""
    if not daemon.interface or len(daemon.interface.encode()) > IFNAME_MAX:
        raise ValueError(f"interface name must be 1..{IFNAME_MAX} bytes: {daemon.interface!r}")
    if not 0 <= daemon.syncid <= SYNCID_MAX:
        raise ValueError(f"syncid must be 0..{SYNCID_MAX}: {daemon.syncid}")
    if daemon.maxlen is not None and not 1 <= daemon.maxlen <= MAXLEN_MAX:
        raise ValueError(f"maxlen must be 1..{MAXLEN_MAX}: {daemon.maxlen}")
    if daemon.port is not None and not 1 <= daemon.port <= 65535:
        raise ValueError(f"port must be 1..65535: {daemon.port}")
    if daemon.ttl is not None and not 1 <= daemon.ttl <= 255:
        raise ValueError(f"ttl must be 1..255: {daemon.ttl}")
    if daemon.group is not None and not ipaddress.ip_address(daemon.group).is_multicast:
        raise ValueError(f"{daemon.group} is not a multicast group")


@dataclass(frozen=True, slots=True)
class SyncChange:
    """What makes the running daemons the configured ones: stop these states, start these."""

    stop: tuple[SyncState, ...] = ()
    start: tuple[SyncDaemon, ...] = ()
    keep: tuple[SyncDaemon, ...] = ()  # already running as configured


def sync_change(wanted: tuple[SyncDaemon, ...], running: tuple[SyncDaemon, ...]) -> SyncChange:
    """From what runs to what is wanted. A state the config does not name is left alone (an
    operator or another tool may run it); a daemon with other settings is stopped, then
    started again (the kernel cannot change a running one)."""
    by_state = {d.state: d for d in running}
    stop: list[SyncState] = []
    start: list[SyncDaemon] = []
    keep: list[SyncDaemon] = []
    for daemon in wanted:
        current = by_state.get(daemon.state)
        if current is not None and daemon.satisfied_by(current):
            keep.append(daemon)
            continue
        if current is not None:
            stop.append(daemon.state)
        start.append(daemon)
    return SyncChange(tuple(stop), tuple(start), tuple(keep))


# ---- the kernel's words --------------------------------------------------------------------


def sync_error(state: SyncState, starting: bool, code_or_message: int | str) -> OpError:
    """An OpError for a failed start or stop, from an errno (netlink) or ipvsadm's words."""
    action = "start" if starting else "stop"
    if isinstance(code_or_message, int):
        code = code_or_message
        kinds = {
            errno.EEXIST: ErrorKind.EXISTS,
            errno.ESRCH: ErrorKind.NOT_FOUND,
            errno.ENODEV: ErrorKind.INVALID,
            errno.EINVAL: ErrorKind.INVALID,
            errno.EPERM: ErrorKind.PERMISSION,
            errno.EACCES: ErrorKind.PERMISSION,
        }
        words = {
            errno.EEXIST: "already running",
            errno.ESRCH: "not running",
            errno.ENODEV: "no such interface",
        }.get(code, os.strerror(code))
        kind = kinds.get(code, ErrorKind.OTHER)
        return OpError(kind, f"cannot {action} the {state} sync daemon: {words} (errno {code})")
    message = code_or_message.strip()
    text = message.lower()
    if "already run" in text:  # libipvs: "Daemon has already run"
        kind = ErrorKind.EXISTS
    elif "no daemon is running" in text:
        kind = ErrorKind.NOT_FOUND
    elif "no such device" in text:
        kind = ErrorKind.INVALID
    else:
        kind = error_kind(message)
    return OpError(kind, f"cannot {action} the {state} sync daemon: {message}")


# ---- ipvsadm -------------------------------------------------------------------------------


def ipvsadm_start_args(daemon: SyncDaemon) -> list[str]:
    """``ipvsadm --start-daemon ...`` arguments (ipvsadm 1.28+ for the optional ones)."""
    args = [
        "--start-daemon",
        str(daemon.state),
        "--mcast-interface",
        daemon.interface,
        "--syncid",
        str(daemon.syncid),
    ]
    if daemon.maxlen is not None:
        args += ["--sync-maxlen", str(daemon.maxlen)]
    if daemon.group is not None:
        args += ["--mcast-group", daemon.group]
    if daemon.port is not None:
        args += ["--mcast-port", str(daemon.port)]
    if daemon.ttl is not None:
        args += ["--mcast-ttl", str(daemon.ttl)]
    return args


def ipvsadm_stop_args(state: SyncState) -> list[str]:
    return ["--stop-daemon", str(state)]


# "master sync daemon (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
# (ipvsadm before 1.28 prints only mcast and syncid)
_DAEMON_LINE = re.compile(r"\s*(master|backup) sync daemon \((.*)\)\s*\Z")


def parse_ipvsadm_daemons(text: str) -> tuple[SyncDaemon, ...]:
    """The daemons ``ipvsadm -L --daemon`` lists. Raises ValueError on a line it cannot read."""
    found: list[SyncDaemon] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _DAEMON_LINE.match(line)
        if m is None:
            raise ValueError(f"unexpected line {line!r}")
        fields = dict(part.strip().split("=", 1) for part in m.group(2).split(",") if "=" in part)
        if "mcast" not in fields or "syncid" not in fields:
            raise ValueError(f"no interface or syncid in {line!r}")
        found.append(
            SyncDaemon(
                state=SyncState(m.group(1)),
                interface=fields["mcast"],
                syncid=int(fields["syncid"]),
                maxlen=int(fields["maxlen"]) if "maxlen" in fields else None,
                group=canonical_group(fields["group"]) if "group" in fields else None,
                port=int(fields["port"]) if "port" in fields else None,
                ttl=int(fields["ttl"]) if "ttl" in fields else None,
            )
        )
    return tuple(found)


def ipvsadm_line(daemon: SyncDaemon) -> str:
    """How ipvsadm 1.28+ lists a running daemon (the memory backend shows it the same way)."""
    shown = daemon.as_kernel_runs_it()
    return (
        f"{shown.state} sync daemon (mcast={shown.interface}, syncid={shown.syncid}, "
        f"maxlen={shown.maxlen}, group={shown.group}, port={shown.port}, ttl={shown.ttl})"
    )
