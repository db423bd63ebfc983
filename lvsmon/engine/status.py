"""The daemon's state as an operator sees it: one typed status that the status file holds,
`lvsmon status` prints, and later endpoints serve.

TypedDicts, not dataclasses: at 10,000 reals the status is built every second, and plain dicts
go to json.dumps as they are, with no conversion pass while checks wait.
"""

from __future__ import annotations

import hashlib
import json
import operator
import time
import zlib
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Final, TypedDict

from lvsmon.addr import bracketed
from lvsmon.atomicfile import NotReadable, read_regular
from lvsmon.ipvs.ipvsadm_format import op_line
from lvsmon.ipvs.model import Service, ServiceKey, Table
from lvsmon.ipvs.ops import AddDest, AddService
from lvsmon.text import LIMIT, clean


class SteeringStatus(TypedDict):
    caps: dict[str, int]  # each source's cap ("ramp": slow start; "agent")
    ramp: str | None  # slow start's step: "3/10"
    ramp_until: float | None  # when the ramp ends (unix time)


class RealStatus(TypedDict):
    address: str
    port: int
    state: str  # up, down, maintenance
    drained: bool  # `lvsmon drain`: weight 0 while up (maintenance wins)
    kept_by_threshold: bool  # down by its checks, kept in service by the depool threshold
    checked: bool
    failcount: int
    reason: str
    rising: str | None  # down, with passes toward risecount: "2/3"; else None
    held_until: float | None  # held down by flap damping until (unix time); else None
    kernel_weight: int | None  # None: not in the kernel
    weight: int
    # while a source caps its weight (engine/steering.py): {"caps": {source: cap}, "ramp": "3/10"
    # or None, "ramp_until": unix time or None}; None otherwise
    steering: SteeringStatus | None
    # the agent check's words for the real ("weight 3/10", "drain", "maint: upgrade", "down: disk
    # full", "no answer: ..."); None without an agent check (engine/agentcheck.py)
    agent: str | None


class VirtualStatus(TypedDict):
    name: str  # ldirectord's id (fwm6:7)
    key: str  # str(ServiceKey), as events name the virtual (fwm:7/inet6)
    file: str
    line: int
    depool_limited: bool  # its depool threshold keeps reals in although their checks fail
    reals: list[RealStatus]


class StatsStatus(TypedDict):
    jobs: int
    checks_started: int
    checks_done: int
    checks_failed: int
    checks_unknown: int  # timeouts while the daemon was late: neither pass nor failure
    checks_untrusted: int  # such timeouts past the bound (lvsmon/engine/lag.py): failures
    loop_lag_ms: float  # the event loop's largest lag within the last minute
    checks_running: int
    slots_skipped: int
    slots_deferred: int  # starts the admission window held back: they began late (overload)
    admission_window: int  # the checks the runner lets be in flight now
    lateness_ms: dict[str, float]
    reconciles: int
    resyncs: int
    ops_applied: int
    ops_failed: int
    drift_repairs: int
    retry_pending: bool
    events_published: int
    events_dropped: int


class SyncStatus(TypedDict):
    """One connection sync daemon the config names (lvsmon.daemon.syncdaemons)."""

    state: str  # master or backup
    wanted: str  # the configured daemon, as text
    running: str | None  # what the kernel reported last; None: not running
    error: str | None  # the last attempt's failure


class BgpVipStatus(TypedDict):
    """One VIP's BGP announcement (engine/bgp.py)."""

    vip: str
    announced: bool
    reason: str
    since: float  # Unix time `announced` last changed
    med: int | None
    communities: list[str]
    speaker: str


class BgpStatus(TypedDict):
    speaker: str  # bird or exabgp
    drained: bool  # lvsmon drain --director
    vips: list[BgpVipStatus]


class ArpConflictStatus(TypedDict):
    """A conflict the ARP guard sees now (engine/arpguard.py)."""

    vip: str
    mac: str  # formatted by lvsmon from the reply's bytes
    interface: str
    since: float  # Unix time it was first heard


class ProbesStatus(TypedDict):
    """The probe services of checks through the VIP (checkpath, engine/probepath.py)."""

    markbase: int  # checkmarkbase: the first mark of the reserved block
    services: int  # probe services the config wants
    in_kernel: int  # of them, as wanted in the table lvsmon last read or programmed


class LeavingStatus(TypedDict):
    """A real a reload removed, at weight 0 until it has no connection (removedrain,
    engine/leaving.py)."""

    virtual: str  # str(ServiceKey): tcp:192.0.2.1:80, fwm:7
    real: str  # the kernel's destination, ip:port
    since: float  # Unix time it started leaving
    deadline: float  # Unix time it is deleted at the latest
    connections: int | None  # at the last reading of the counters; None: not read yet


class Status(TypedDict, total=False):
    pid: int
    started_at: float
    phase: str
    config: str
    backend: str
    virtuals: list[VirtualStatus]
    stats: StatsStatus
    # per managed virtual service (str(ServiceKey)), a digest of the rules lvsmon last
    # programmed, or "absent"; None while lvsmon does not know the kernel table (a failed dump)
    table: dict[str, str] | None
    resync_s: float  # the resync interval in force: verify-table waits that long for a repair
    sync: list[SyncStatus]  # connection sync daemons (syncdaemon); empty when none configured
    bgp: BgpStatus | None  # BGP announcements (bgp = bird|exabgp); None without
    arp_conflicts: list[ArpConflictStatus]  # the ARP guard's conflicts now (arpguard)
    probes: ProbesStatus | None  # checkpath's probe services; None when there are none
    leaving: list[LeavingStatus]  # reals a reload removed that still drain (removedrain)


LATENESS_WINDOW = 20000  # starts whose lateness the status's percentiles are of
# the percentiles are sorted anew (1-2 ms for a full window) once a tenth of the window is new,
# or this long after the last sort if less is: each second, at 500 checks a second, the sort
# was a twentieth of the daemon's CPU, for figures that moved by a fortieth of their window
LATENESS_EVERY_S = 5.0
LATENESS_SORT_ALWAYS = 2000  # a window this small is sorted anew each time (< 0.1 ms)


@dataclass(slots=True)
class Stats:
    """The engine's counters."""

    checks_started: int = 0
    checks_done: int = 0
    checks_failed: int = 0
    checks_unknown: int = 0
    checks_untrusted: int = 0
    # how late checks started (s) against their slot: the most recent ones, a bounded window
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=LATENESS_WINDOW))
    lateness_total: float = 0.0  # every start's lateness, summed (s): /metrics' summary _sum
    lateness_recorded: int = 0  # every start's lateness, counted
    reconciles: int = 0
    resyncs: int = 0
    ops_applied: int = 0
    ops_failed: int = 0
    drift_repairs: int = 0
    # lateness_ms's last answer: (lateness_recorded, monotonic time, the answer)
    _percentiles: tuple[int, float, dict[str, float]] | None = None

    def record_lateness(self, value: float) -> None:
        self.lateness.append(value)
        self.lateness_total += value
        self.lateness_recorded += 1

    def lateness_ms(self) -> dict[str, float]:
        """p50, p99 and max of the window, in ms; {} before the first start. Sorted anew when
        starts were recorded since the last sort and a tenth of the window is new, or
        LATENESS_EVERY_S have passed, or the window is small: otherwise the last answer."""
        if not self.lateness:
            return {}
        now = time.monotonic()
        last = self._percentiles
        if last is not None:
            new, size = self.lateness_recorded - last[0], len(self.lateness)
            if new == 0 or (
                size >= LATENESS_SORT_ALWAYS
                and new * 10 < size
                and now - last[1] < LATENESS_EVERY_S
            ):
                return dict(last[2])
        ordered = sorted(self.lateness)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

        answer = {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 3)}
        self._percentiles = (self.lateness_recorded, now, answer)
        return dict(answer)


ABSENT = "absent"


def service_digest(key: ServiceKey, service: Service) -> str:
    """A digest of one service's rules as `ipvsadm -S` would list them (the service line, then
    its destinations sorted): equal digests mean the kernel behaves the same for it."""
    lines = [op_line(AddService(key, service.conf))]
    lines += sorted(op_line(AddDest(key, dest, conf)) for dest, conf in service.dests.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def table_digests(table: Table, keys: Collection[ServiceKey]) -> dict[str, str]:
    """Every key's digest in `table` (ABSENT when the table does not hold it)."""
    return {str(k): service_digest(k, table[k]) if k in table else ABSENT for k in keys}


class TableDigests:
    """The status file's `table`: what the daemon last programmed, per managed service, for
    `lvsmon verify-table` (the resource agent's deep monitor) to compare with the kernel.

    Computed at each status write, but a service whose rules are equal to the last write's is
    not hashed again: a resync replaces the table every few seconds with an equal one, and
    hashing 10,000 destinations each time would stall the checks for tens of ms."""

    def __init__(self) -> None:
        self._table: Table | None = None
        self._digests: dict[ServiceKey, str] = {}
        self._keys: frozenset[ServiceKey] = frozenset()
        self._named: dict[str, str] = {}

    def of(self, table: Table | None, keys: Collection[ServiceKey]) -> dict[str, str] | None:
        if table is None:
            return None
        old_table, old = self._table, self._digests
        if table is old_table and self._keys == keys:
            # the same table object (nothing applied or dumped since) and the same services:
            # the last answer, without hashing a ServiceKey in Python (a status write a second)
            return dict(self._named)
        new: dict[ServiceKey, str] = {}
        for key in keys:
            service = table.get(key)
            if (
                key in old
                and old_table is not None
                and (
                    old_table is table
                    or (kept := old_table.get(key)) is service  # a resync keeps equal ones
                    or kept == service
                )
            ):
                new[key] = old[key]
            else:
                new[key] = ABSENT if service is None else service_digest(key, service)
        if new != old:  # the names only when a digest changed: str(ServiceKey) is Python
            self._named = {str(k): d for k, d in new.items()}
        self._table, self._digests = table, new
        self._keys = frozenset(keys)
        return dict(self._named)


MAX_STATUS_BYTES = 256 * 1024 * 1024  # ~300 bytes a real: far above 10,000 reals


def read_status(path: str) -> Status | None:
    """The status file as the daemon wrote it; None when it is not there or not one (read as
    the config is: a regular file only, without blocking, bounded; any JSON, nesting included)."""
    try:
        data = json.loads(read_regular(path, MAX_STATUS_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None  # type: ignore[return-value]


class MalformedStatus(ValueError):
    """Something at the status file's name that is not a status file a daemon wrote: not a
    regular file, too large, not JSON, not an object, or a field of the wrong type or out of
    range. The message says which (fields by path: `virtuals[0].reals[2].port`)."""


_BOUND = float(1 << 53)  # numbers beyond are no counter, time or weight a daemon writes


def _integer(value: object) -> bool:
    return type(value) is int and -_BOUND <= value <= _BOUND


def _number(value: object) -> bool:
    return _integer(value) or (type(value) is float and -_BOUND <= value <= _BOUND)  # not NaN


_KINDS: dict[str, Callable[[object], bool]] = {
    "a string": lambda v: type(v) is str,
    "an integer": _integer,
    "a number": _number,
    "true or false": lambda v: type(v) is bool,
    "a list": lambda v: type(v) is list,
    "an object": lambda v: type(v) is dict,
}


def _check_time(
    obj: dict[str, object], key: str, where: str, *, required: bool, null: bool = False
) -> None:
    """obj[key] as _check's "a number", and a Unix time that local time can show."""
    value = _check(obj, key, where, "a number", required=required, null=null)
    if isinstance(value, int | float):
        try:
            time.localtime(value)
        except (OverflowError, OSError, ValueError):
            raise MalformedStatus(f"{where}.{key}: out of range") from None


def _check(
    obj: dict[str, object], key: str, where: str, kind: str, *, required: bool, null: bool = False
) -> object:
    """obj[key] if it is of `kind` (or None, with null=True); raises MalformedStatus if not, or
    if it is missing and `required`. Returns None for an optional key that is missing."""
    name = f"{where}.{key}" if where else key
    if key not in obj:
        if required:
            raise MalformedStatus(f"{name}: missing")
        return None
    value = obj[key]
    if (value is None and null) or _KINDS[kind](value):
        return value
    raise MalformedStatus(f"{name}: not {kind}" + (" or null" if null else ""))


def _entries(value: object, where: str) -> list[dict[str, object]]:
    """The objects of a list field (checked a list before)."""
    entries: list[dict[str, object]] = []
    for i, entry in enumerate(value if type(value) is list else []):
        if type(entry) is not dict:
            raise MalformedStatus(f"{where}[{i}]: not an object")
        entries.append(entry)
    return entries


def check_status(data: object) -> Status:
    """`data` (a parsed status file) as a Status, after checking the type of every field that
    `lvsmon status`, `verify-table` and `purge` use; raises MalformedStatus naming the first
    that is wrong. Missing optional fields are fine (a daemon from before them wrote it); fields
    nothing reads are not looked at."""
    if type(data) is not dict:
        raise MalformedStatus("not a JSON object")
    top: dict[str, object] = data
    _check(top, "pid", "", "an integer", required=False)
    _check(top, "started_at", "", "a number", required=False)
    for key in ("phase", "config", "backend"):
        _check(top, key, "", "a string", required=False)
    resync = _check(top, "resync_s", "", "a number", required=False)
    if isinstance(resync, int | float) and resync < 0:
        raise MalformedStatus("resync_s: negative")
    table = _check(top, "table", "", "an object", required=False, null=True)
    if isinstance(table, dict):
        for name, digest in table.items():
            if type(digest) is not str:
                raise MalformedStatus(f"table[{json.dumps(str(name)[:64])}]: not a string")
    virtuals = _check(top, "virtuals", "", "a list", required=False)
    for i, v in enumerate(_entries(virtuals, "virtuals")):
        at = f"virtuals[{i}]"
        _check(v, "name", at, "a string", required=True)
        _check(v, "depool_limited", at, "true or false", required=False)
        reals = _check(v, "reals", at, "a list", required=True)
        for j, r in enumerate(_entries(reals, f"{at}.reals")):
            rat = f"{at}.reals[{j}]"
            for key in ("address", "state", "reason"):
                _check(r, key, rat, "a string", required=True)
            _check(r, "port", rat, "an integer", required=True)
            _check(r, "kernel_weight", rat, "an integer", required=True, null=True)
            for key in ("drained", "kept_by_threshold"):
                _check(r, key, rat, "true or false", required=False)
            _check(r, "rising", rat, "a string", required=False, null=True)
            _check_time(r, "held_until", rat, required=False, null=True)
            steer = _check(r, "steering", rat, "an object", required=False, null=True)
            if isinstance(steer, dict):
                sat = f"{rat}.steering"
                caps = _check(steer, "caps", sat, "an object", required=True)
                for name, cap in caps.items() if isinstance(caps, dict) else ():
                    if type(cap) is not int:
                        raise MalformedStatus(
                            f"{sat}.caps[{json.dumps(str(name)[:64])}]: not an integer"
                        )
                _check(steer, "ramp", sat, "a string", required=False, null=True)
                _check_time(steer, "ramp_until", sat, required=False, null=True)
            _check(r, "agent", rat, "a string", required=False, null=True)
    sync = _check(top, "sync", "", "a list", required=False)
    for i, d in enumerate(_entries(sync, "sync")):
        at = f"sync[{i}]"
        for key in ("state", "wanted"):
            _check(d, key, at, "a string", required=True)
        for key in ("running", "error"):
            _check(d, key, at, "a string", required=True, null=True)
    bgp = _check(top, "bgp", "", "an object", required=False, null=True)
    if isinstance(bgp, dict):
        _check(bgp, "speaker", "bgp", "a string", required=True)
        _check(bgp, "drained", "bgp", "true or false", required=True)
        vips = _check(bgp, "vips", "bgp", "a list", required=True)
        for i, d in enumerate(_entries(vips, "bgp.vips")):
            at = f"bgp.vips[{i}]"
            for key in ("vip", "reason"):
                _check(d, key, at, "a string", required=True)
            _check(d, "announced", at, "true or false", required=True)
            _check(d, "med", at, "an integer", required=False, null=True)
            _check_time(d, "since", at, required=True)
    arp = _check(top, "arp_conflicts", "", "a list", required=False)
    for i, c in enumerate(_entries(arp, "arp_conflicts")):
        at = f"arp_conflicts[{i}]"
        for key in ("vip", "mac", "interface"):
            _check(c, key, at, "a string", required=True)
        _check_time(c, "since", at, required=True)
    probes = _check(top, "probes", "", "an object", required=False, null=True)
    if isinstance(probes, dict):
        for key in ("markbase", "services", "in_kernel"):
            _check(probes, key, "probes", "an integer", required=True)
    leaving = _check(top, "leaving", "", "a list", required=False)
    for i, e in enumerate(_entries(leaving, "leaving")):
        at = f"leaving[{i}]"
        for key in ("virtual", "real"):
            _check(e, key, at, "a string", required=True)
        for key in ("since", "deadline"):
            _check_time(e, key, at, required=True)
        _check(e, "connections", at, "an integer", required=True, null=True)
    stats = _check(top, "stats", "", "an object", required=False)
    if isinstance(stats, dict):
        for key in (
            "checks_done",
            "checks_failed",
            "checks_unknown",
            "loop_lag_ms",
            "ops_applied",
            "ops_failed",
            "drift_repairs",
        ):
            _check(stats, key, "stats", "a number", required=False)
        _check(stats, "retry_pending", "stats", "true or false", required=False)
        late = _check(stats, "lateness_ms", "stats", "an object", required=False)
        if isinstance(late, dict):
            for key in ("p50", "p99"):
                _check(late, key, "stats.lateness_ms", "a number", required=False)
    return data  # type: ignore[return-value]


def load_status(path: str) -> Status | None:
    """The status file, checked (check_status); None when there is none to read (missing, or
    unreadable to us: read_status's answer). Raises MalformedStatus when what is there is no
    status file: not a regular file, too large, not UTF-8 JSON, nested too deep, not an object,
    a field of the wrong type. Read as the config is (atomicfile.read_regular)."""
    try:
        raw = read_regular(path, MAX_STATUS_BYTES)
    except NotReadable as exc:
        raise MalformedStatus(str(exc)) from None
    except OSError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedStatus("not UTF-8") from None
    except RecursionError:
        raise MalformedStatus("nested too deep") from None
    except ValueError as exc:
        raise MalformedStatus(f"not JSON ({str(exc).partition(';')[0]})") from None
    return check_status(data)


def render_status(status: Status) -> str:
    """`lvsmon status`'s lines after the ldirectord-compatible first one: one per real. The
    status file may have been edited: every line is clean (lvsmon/text.py), bounded at twice
    a reason's bound, so that no field of it reaches the terminal raw; and every field is
    checked first (check_status): a hostile one raises MalformedStatus, nothing else."""
    check_status(status)
    lines: list[str] = []
    if status.get("phase"):
        lines.append(f"phase: {status['phase']}")
    for v in status.get("virtuals", []):
        lines.append(v["name"] + (" (depool threshold reached)" if v.get("depool_limited") else ""))
        for r in v["reals"]:
            kw = r["kernel_weight"]
            weight = "absent" if kw is None else f"weight {kw}"
            # .get: a status file written by a daemon from before drains
            state = r["state"] + (" drained" if r.get("drained") else "")
            if r.get("kept_by_threshold"):
                state += " kept in by depool threshold"
            if r.get("rising"):
                state += f" rising {r['rising']}"
            if r.get("held_until") is not None:
                state += " held until " + time.strftime("%H:%M:%S", time.localtime(r["held_until"]))
            state += _steering_words(r.get("steering"))
            state += _agent_words(r.get("agent"))
            where = f"{bracketed(r['address'])}:{r['port']:<6}"
            lines.append(f"  {where} {state:<11} {weight:<10} {r['reason']}")
    for sync in status.get("sync", []):
        if sync["error"]:
            lines.append(f"sync {sync['state']}: FAILED: {sync['error']}")
        elif sync["running"]:
            lines.append(f"sync {sync['state']}: running: {sync['running']}")
        else:
            lines.append(f"sync {sync['state']}: not running (wanted: {sync['wanted']})")
    bgp = status.get("bgp")
    if bgp is not None:
        drained = " (director drained: lvsmon undrain --director)" if bgp["drained"] else ""
        lines.append(f"bgp ({bgp['speaker']}){drained}:")
        for d in bgp["vips"]:
            since = time.strftime("%H:%M:%S", time.localtime(d["since"]))
            if d["announced"]:
                state = f"announced (MED {d.get('med')}) since {since}"
            else:
                state = f"withdrawn since {since}"
            lines.append(f"  {bracketed(d['vip'])} {state}: {d['reason']}")
    probes = status.get("probes")
    if probes:
        lines.append(
            f"probe services (checkpath): {probes['services']}, {probes['in_kernel']} of them"
            f" in the kernel (firewall marks from {probes['markbase']})"
        )
    for e in status.get("leaving", []):
        conns = e["connections"]
        counted = "connections not read yet" if conns is None else f"{conns} connections"
        lines.append(
            f"leaving: {e['real']} of {e['virtual']}: weight 0, {counted}, deleted at"
            f" {time.strftime('%H:%M:%S', time.localtime(e['deadline']))} at the latest"
        )
    for c in status.get("arp_conflicts", []):
        since = time.strftime("%H:%M:%S", time.localtime(c["since"]))
        lines.append(
            f"ARP conflict: {c['mac']} answers ARP for VIP {c['vip']} on {c['interface']}"
            f" since {since}"
        )
    stats = status.get("stats")
    if stats is not None:
        late = stats.get("lateness_ms", {})
        lines.append(
            f"checks: {stats.get('checks_done', 0)} done, {stats.get('checks_failed', 0)} failed;"
            + (
                f" {stats['checks_unknown']} unknown (the daemon was late; loop lag up to"
                f" {stats.get('loop_lag_ms', 0)} ms);"
                if stats.get("checks_unknown")
                else ""
            )
            + f" start lateness p50 {late.get('p50', 0)} ms, p99 {late.get('p99', 0)} ms;"
            f" kernel ops: {stats.get('ops_applied', 0)} applied,"
            f" {stats.get('ops_failed', 0)} failed;"
            f" drift repairs: {stats.get('drift_repairs', 0)}"
            + ("; a failed op is being retried" if stats.get("retry_pending") else "")
        )
    return "\n".join(clean(line, 2 * LIMIT) for line in lines)


def _agent_words(agent: object) -> str:
    """ " weight 3/10 by agent" below the configured weight, " agent: drain" (maint, down, no
    answer, a state kept through failures); "" without an agent or at the full weight."""
    if not isinstance(agent, str) or not agent:
        return ""
    if agent.startswith("weight ") and "(" not in agent:
        got, _, of = agent.removeprefix("weight ").partition("/")
        return "" if got == of else f" {agent} by agent"
    return f" agent: {agent}"


def _steering_words(steer: SteeringStatus | None) -> str:
    """ " ramping 3/10 (slow start, 12 s left)" while slow start ramps the real, else "". The
    other sources say their own words (the agent check: its `agent` entry)."""
    if not steer or not steer.get("ramp"):
        return ""
    until = steer.get("ramp_until")
    left = "" if until is None else f", {max(0, round(until - time.time()))} s left"
    return f" ramping {steer['ramp']} (slow start{left})"


# what a virtual's text is made of (raw deflate's preset dictionary): its keys, and a real's
# entry down and up. Only the ratio depends on it (the texts live in this process only): a
# virtual of 17 reals packed to 293 bytes alone and to 134 with it, faster both ways
_PACK_DICT: Final = (
    b'{"name":"tcp:127.0.0.1:80","key":"fwm:","file":"/etc/ha.d/ldirectord.cf","line":1,'
    b'"depool_limited":false,"reals":[{"address":"10.0.0.1","port":80,"state":"down",'
    b'"drained":true,"kept_by_threshold":true,"checked":false,"failcount":1,'
    b'"reason":"connection refused","rising":"1/2","held_until":null,"kernel_weight":0,'
    b'"weight":0,"steering":null,"agent":null},{"address":"127.0.0.1","port":8080,"state":"up",'
    b'"drained":false,"kept_by_threshold":false,"checked":true,"failcount":0,"reason":"ok",'
    b'"rising":null,"held_until":null,"kernel_weight":1,"weight":1,"steering":null,"agent":null}'
)


def pack(text: bytes) -> bytes:
    """A virtual's status text as kept between builds: compressed. Its reals' entries repeat
    the same keys and words: 212 bytes a real as JSON, 8 packed (at 37,298 reals 7.5 MiB
    less held; 20 without the preset dictionary); unpacking all of them for a write of the
    status file is some ms at 2,284 virtuals, done only when the status changed."""
    packer = zlib.compressobj(
        1, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, _PACK_DICT
    )
    return packer.compress(text) + packer.flush()


def unpack(packed: bytes) -> bytes:
    """The text `pack` packed."""
    unpacker = zlib.decompressobj(-zlib.MAX_WBITS, _PACK_DICT)
    return unpacker.decompress(packed) + unpacker.flush()


def _without_stats(head: Status) -> dict[str, object]:
    return {k: v for k, v in head.items() if k != "stats"}


class StatusEncoder:
    """A status as compact JSON: the daemon's figures (a small dict) and each virtual's text,
    packed (Engine.status_texts: kept while nothing of that virtual changed, the very object).

    update() says whether the status differs from the last one: a new version when any
    virtual's text is not the last one's very object or the figures differ. The whole text is
    joined only when asked for (text()) and not kept: at 37,298 reals it is 8 MB, held for
    nothing between writes of the status file, which only needs to know whether it changed
    (at 100,000 reals the text is 22 MB; joining it was 3 ms and writing it 30 ms a second)."""

    def __init__(self) -> None:
        self.version = 0
        # the last version in which more than the counters changed (`stats`: checks done,
        # resyncs...): a virtual, the table digests, the phase
        self.body_version = 0
        self._head: Status = {}
        self._texts: list[bytes] = []

    def update(self, head: Status, texts: list[bytes]) -> int:
        """The version of this status: the last one's when nothing changed."""
        old_head, old_texts = self._head, self._texts
        same_texts = len(old_texts) == len(texts) and all(
            map(operator.is_, old_texts, texts)  # C speed: 2,284 pointer tests
        )
        if not (same_texts and old_head == head):
            self.version += 1
            if not same_texts or _without_stats(old_head) != _without_stats(head):
                self.body_version = self.version
            # `head` is the caller's to change no more: the daemon builds a new one each time
            self._head, self._texts = head, texts
        return self.version

    def text(self) -> bytes:
        """The last status, whole: the figures, then `"virtuals":[...]`."""
        head = json.dumps(self._head, separators=(",", ":")).encode()
        # one join: at 100,000 reals the text is 20 MB, and each concatenation more was one
        # more copy of it
        parts = [head[:-1], b',"virtuals":[' if self._head else b'"virtuals":[']
        for text in self._texts:
            parts += (unpack(text), b",")
        if self._texts:
            parts.pop()  # the last comma
        parts.append(b"]}")
        return b"".join(parts)

    def encode(self, status: Status) -> bytes:
        """A whole status built with its entries (Engine.status), as the daemon writes it."""
        head: Status = {k: v for k, v in status.items() if k != "virtuals"}  # type: ignore[assignment]
        texts = [
            pack(json.dumps(v, separators=(",", ":")).encode()) for v in status.get("virtuals", [])
        ]
        self.update(head, texts)
        return self.text()
