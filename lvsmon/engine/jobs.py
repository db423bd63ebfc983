"""From the effective config to the checks to run: which distinct check feeds which reals.

A real that sits in several virtual services with the same check is checked once; its result
feeds every (virtual, real) pair. Each pair keeps its own health (its virtual's failurecount).

Per real, a plan holds its ref (which knows its place in its virtual) and its job (the job is
its check spec: one object) or mode, in its virtual's part; `job_of` and `mode_of` read the
parts at the ref's place, its jobs with the refs each feeds (`jobs`, where a job that feeds one
real keeps that ref without a tuple) are made from its parts when read, and its rules and
failurecount are its virtual's, read through views: no dict by real. The refs
are the very objects the layout (engine/desired.py) and the adopted health use for the same
config (`refs_of`): at 37,298 reals each copy of them was 2 MiB.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Final, TypeVar

from lvsmon.addr import host_port
from lvsmon.checks.base import CheckSpec
from lvsmon.config.checkpathconf import path_of
from lvsmon.config.model import (
    CheckPath,
    CheckType,
    Config,
    Real,
    Service,
    Virtual,
    VirtualProtocol,
)
from lvsmon.engine.health import LDIRECTORD, Damping, HealthRules
from lvsmon.ipvs.model import DestKey, ServiceKey


@dataclass(frozen=True, slots=True, order=True)
class RealRef:
    """One real server line inside one virtual service, by its configured address and port."""

    service: ServiceKey
    address: str
    port: int
    # its place among its virtual's reals in the plan that made it (-1: made elsewhere, found
    # by a scan): the plan's job and mode of a real are read there (JobsByRef), where a dict by
    # ref was 35 bytes a real for a slot of 8. Not part of what the ref is: equal refs of two
    # plans may sit at different places
    at: int = field(default=-1, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{host_port(self.address, self.port)} ({self.service})"

    @property
    def dest(self) -> DestKey:
        return DestKey(self.address, self.port)


class CheckJob(CheckSpec):
    """One distinct check: the spec it runs, and how often. The job is its spec (a CheckSpec
    with one slot more), one object per real: a spec, a job and the job's stored hash were three
    (180 bytes a real, 80 now). Equal jobs are equal specs with equal intervals; a spec and a job
    never compare equal. Its hash is the spec's (the real and the kind: cheap, and no settings).

    For `checktype = N` (combined), a CombinedJob: the spec is the negotiate check, and after
    each success `connect` runs `num_connects` times before negotiating again."""

    __slots__ = ("interval",)
    interval: float

    def __init__(self, spec: CheckSpec, interval: float) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "kind", spec.kind)
        setattr_(self, "host", spec.host)
        setattr_(self, "port", spec.port)
        setattr_(self, "timeout", spec.timeout)
        setattr_(self, "settings", spec.settings)
        setattr_(self, "interval", interval)

    @property
    def spec(self) -> CheckSpec:
        """The check it runs (the negotiate one of a combined job): the job itself."""
        return self

    @property
    def connect(self) -> CheckSpec | None:
        return None

    @property
    def num_connects(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.interval == other.interval and CheckSpec.__eq__(self, other)

    __hash__ = CheckSpec.__hash__

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        return f"CheckJob(spec={CheckSpec.__repr__(self)}, interval={self.interval!r})"


class CombinedJob(CheckJob):
    """`checktype = N`: the negotiate check, then `num_connects` connect checks after each
    success (rare: the two slots are its own)."""

    __slots__ = ("_connect", "_num_connects")
    _connect: CheckSpec
    _num_connects: int

    def __init__(
        self, spec: CheckSpec, interval: float, connect: CheckSpec, num_connects: int
    ) -> None:
        super().__init__(spec, interval)
        object.__setattr__(self, "_connect", connect)
        object.__setattr__(self, "_num_connects", num_connects)

    @property
    def connect(self) -> CheckSpec | None:
        return self._connect

    @property
    def num_connects(self) -> int:
        return self._num_connects

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (
            self._num_connects == other._num_connects
            and self._connect == other._connect
            and CheckJob.__eq__(self, other)
        )

    __hash__ = CheckSpec.__hash__

    def __repr__(self) -> str:
        return (
            f"CombinedJob(spec={CheckSpec.__repr__(self)}, interval={self.interval!r},"
            f" connect={self._connect!r}, num_connects={self._num_connects!r})"
        )


class Mode:
    """How a real's health is decided when no check job runs for it."""

    ALWAYS_UP = "always-up"  # checktype=on, or negotiate with service=none
    FROZEN = "frozen"  # checktype=off: nothing is checked, nothing changes


# one virtual's part of a plan: the virtual it was made from, its reals' refs, and per real its
# job (or its Mode), in the same order (two tuples: no pair object per real)
_Part = tuple[Virtual, tuple[RealRef, ...], tuple["CheckJob | str", ...]]
T = TypeVar("T")


class FailureCounts(Mapping[RealRef, int]):
    """A plan's failurecount per real, read from its rules: every real of the plan, in config
    order, without a dict of its own (some 40 bytes a real)."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Mapping[RealRef, HealthRules]) -> None:
        self._rules = rules

    def __getitem__(self, ref: RealRef) -> int:
        return self._rules[ref].failurecount

    def __contains__(self, ref: object) -> bool:
        return ref in self._rules

    def __iter__(self) -> Iterator[RealRef]:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    def __repr__(self) -> str:
        return f"FailureCounts({dict(self)!r})"


_MISSING: Final = object()


def _item_of(parts: Mapping[ServiceKey, _Part], ref: object) -> object:
    """What `ref`'s part holds for it (its CheckJob or its Mode), _MISSING if not a real of
    `parts`: read at the ref's place; a ref made elsewhere (or equal to one at another place)
    is found by a scan of its virtual."""
    if not isinstance(ref, RealRef):
        return _MISSING
    part = parts.get(ref.service)
    if part is None:
        return _MISSING
    at = place_in(part[1], ref)
    return _MISSING if at is None else part[2][at]


def place_in(refs: tuple[RealRef, ...], ref: RealRef) -> int | None:
    """`ref`'s place among its virtual's `refs` (None: not there): its own `at` when that holds
    it, else found by a scan (a ref made elsewhere, or by another plan)."""
    at = ref.at
    if 0 <= at < len(refs) and ((known := refs[at]) is ref or known == ref):
        return at
    try:
        return refs.index(ref)
    except ValueError:
        return None


class JobsByRef(Mapping[RealRef, T]):
    """A plan's job (`CheckJob`) or mode (`str`) per real, as `kind` says: read from its parts at
    each real's place (RealRef.at), in config order, not kept as a dict (35 bytes a real). Its
    length is counted when the plan is made."""

    __slots__ = ("_kind", "_len", "_parts")

    def __init__(self, parts: Mapping[ServiceKey, _Part], kind: type[T], count: int) -> None:
        self._parts, self._kind, self._len = parts, kind, count

    def __getitem__(self, ref: RealRef) -> T:
        item = _item_of(self._parts, ref)
        if isinstance(item, self._kind):
            return item
        raise KeyError(ref)

    def __contains__(self, ref: object) -> bool:
        return isinstance(_item_of(self._parts, ref), self._kind)

    def __iter__(self) -> Iterator[RealRef]:
        kind = self._kind
        for part in self._parts.values():
            for ref, item in zip(part[1], part[2], strict=True):
                if isinstance(item, kind):
                    yield ref

    def __len__(self) -> int:
        return self._len

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JobsByRef({dict(self)!r})"


class RulesOf(Mapping[RealRef, HealthRules]):
    """A plan's health rules per real: its virtual's, looked up by the real's service; every real
    of the plan (those with a job and those with a mode), in config order, without a dict of
    its own (some 40 bytes a real)."""

    __slots__ = ("_by_service", "_len", "_parts")

    def __init__(
        self,
        by_service: dict[ServiceKey, HealthRules],
        parts: dict[ServiceKey, _Part],
        count: int,
    ) -> None:
        self._by_service = by_service
        self._parts = parts
        self._len = count

    def __getitem__(self, ref: RealRef) -> HealthRules:
        if _item_of(self._parts, ref) is not _MISSING:
            return self._by_service[ref.service]
        raise KeyError(ref)

    def __contains__(self, ref: object) -> bool:
        return _item_of(self._parts, ref) is not _MISSING

    def __iter__(self) -> Iterator[RealRef]:
        for part in self._parts.values():
            yield from part[1]

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"RulesOf({dict(self)!r})"


# the refs a job feeds: most jobs feed one real, kept without a tuple of its own (a 1-tuple was
# 48 bytes a job); a job shared by several virtuals has a tuple
Refs = RealRef | tuple[RealRef, ...]


def unpack_refs(refs: Refs) -> tuple[RealRef, ...]:
    return (refs,) if isinstance(refs, RealRef) else refs


def _grouped(parts: Iterable[_Part]) -> dict[CheckJob, Refs]:
    """The jobs of `parts`, in config order, each with the refs it feeds (packed)."""
    jobs: dict[CheckJob, Refs] = {}
    for part in parts:
        for ref, job in zip(part[1], part[2], strict=True):
            if isinstance(job, CheckJob):
                refs = jobs.get(job)
                if refs is None:
                    jobs[job] = ref
                elif isinstance(refs, RealRef):
                    if refs != ref:
                        jobs[job] = (refs, ref)
                elif ref not in refs:
                    jobs[job] = (*refs, ref)
    return jobs


class JobRefs(Mapping[CheckJob, tuple[RealRef, ...]]):
    """A plan's jobs and the refs each one feeds, in config order, made from the plan's parts
    each time they are read: kept with the plan, their dict was 35 bytes a job, for readers
    that read it once a plan (the runner, which keeps each job's refs in its JobRun; the
    watchdog's shortest interval). `packed` is a new dict, a job's refs packed (Refs); a lookup
    here makes one too (tests and tools) and gives a tuple; the number of jobs is kept."""

    __slots__ = ("_len", "_parts")

    def __init__(self, parts: Mapping[ServiceKey, _Part], count: int) -> None:
        self._parts = parts
        self._len = count

    @property
    def packed(self) -> dict[CheckJob, Refs]:
        return _grouped(self._parts.values())

    def __getitem__(self, job: CheckJob) -> tuple[RealRef, ...]:
        return unpack_refs(self.packed[job])

    def __contains__(self, job: object) -> bool:
        return job in self.packed

    def __iter__(self) -> Iterator[CheckJob]:
        return iter(self.packed)

    def __len__(self) -> int:
        return self._len

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JobRefs):
            return self.packed == other.packed
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JobRefs({dict(self)!r})"


def packed_refs(jobs: Mapping[CheckJob, tuple[RealRef, ...]]) -> Mapping[CheckJob, Refs]:
    """A plan's jobs with their refs packed: a dict made from its parts, or (a plan made by
    hand) its own."""
    return jobs.packed if isinstance(jobs, JobRefs) else jobs


@dataclass(frozen=True, slots=True)
class Plan:
    jobs: Mapping[CheckJob, tuple[RealRef, ...]]  # a JobRefs, but for a plan made by hand
    job_of: Mapping[RealRef, CheckJob]  # JobsByRef, but for a plan made by hand
    mode_of: Mapping[RealRef, str]  # reals without a job
    failurecount: Mapping[RealRef, int]  # every real of the config, in its order
    # failurecount, risecount and flap damping; one object per distinct set of values
    rules: Mapping[RealRef, HealthRules] = field(default_factory=dict)
    # per virtual (by key), its part: the next plan reuses it for an equal virtual
    parts: dict[ServiceKey, _Part] = field(default_factory=dict, compare=False, repr=False)


def _spec(v: Virtual, r: Real, kind: str) -> CheckSpec:
    negotiate = kind == "negotiate"
    external = kind in ("external", "external-perl")
    timeout = v.negotiatetimeout if negotiate else v.checktimeout
    if kind == "ping":
        timeout = v.checktimeout * v.checkcount  # ldirectord waited checktimeout per attempt
    checkpath, pathvip, pathforward = _path(v, r, kind)
    return CheckSpec(
        kind=kind,  # type: ignore[arg-type]
        host=r.address,
        port=v.check_port(r),
        timeout=float(timeout),
        service=str(v.service) if negotiate else "none",
        protocol=str(v.protocol),  # type: ignore[arg-type]
        request=r.request if negotiate else "/",
        receive=r.receive if negotiate else "",
        virtualhost=(v.virtualhost or "") if negotiate else "",
        httpmethod=str(v.httpmethod) if negotiate else "GET",  # type: ignore[arg-type]
        login=v.login if negotiate else "",
        passwd=v.passwd if negotiate else "",
        database=v.database if negotiate else "",
        secret=v.secret if negotiate else "",
        # only an external command sees the virtual: every other check of the same real in
        # another virtual is the same check and must compare equal, so it runs once
        checkcommand=v.checkcommand if external else "",
        vip=_vip(v) if external else "",
        vport=v.port if external else 0,
        rport=r.port if external else 0,
        checkcount=v.checkcount if kind == "ping" else 1,
        checkpath=checkpath,
        pathvip=pathvip,
        pathforward=pathforward,
        # TLS verification (config/tlsconf.py): the TLS services read them, the others not
        sslverify=v.tls.verify if negotiate else "no",
        sslcafile=v.tls.cafile if negotiate else "",
        sslname=v.tls.name if negotiate else "",
        sslexpiry=negotiate and v.tls.expirywarn > 0,
    )


_RIP: Final = ("real", "", "")


def _path(v: Virtual, r: Real, kind: str) -> tuple[str, str, str]:
    """Checks through the VIP (config/checkpathconf.py path_of: gate/ipip reals only): the
    path, the VIP and the real's forwarding, which pick its probe service."""
    if v.checkpath is CheckPath.REAL or kind not in ("connect", "negotiate"):
        return _RIP
    path = path_of(v, r)
    if path is CheckPath.REAL:
        return _RIP
    return str(path), v.address or "", str(r.forward)


def _vip(v: Virtual) -> str:
    return str(v.fwmark) if v.protocol is VirtualProtocol.FWM else (v.address or "")


def job_for(v: Virtual, r: Real, interval: float | None = None) -> CheckJob | str:
    """The check job for a real, or the Mode when it needs none. `interval`: the virtual's
    checkinterval as a float, when the caller made it once for all its reals."""
    ct = v.checktype
    if interval is None:
        interval = float(v.checkinterval)
    if ct is CheckType.OFF:
        return Mode.FROZEN
    if ct is CheckType.ON:
        return Mode.ALWAYS_UP
    if ct in (CheckType.NEGOTIATE, CheckType.COMBINED) and v.service is Service.NONE:
        return Mode.ALWAYS_UP  # ldirectord: service "none" is never checked and always up
    if ct is CheckType.COMBINED:
        return CombinedJob(
            _spec(v, r, "negotiate"), interval, _spec(v, r, "connect"), v.num_connects
        )
    return CheckJob(_spec(v, r, str(ct)), interval)


def rules_of(v: Virtual) -> HealthRules:
    if v.failurecount == 1 and v.risecount == 1 and v.flapcount == 0:
        return LDIRECTORD
    damping = Damping(v.flapcount, float(v.flapwindow), float(v.flaphold)) if v.flapcount else None
    return HealthRules(v.failurecount, v.risecount, damping)


def build_plan(config: Config, previous: Plan | None = None) -> Plan:
    """`previous`: the running plan (a reload): a virtual equal to one it was built from
    takes that one's refs and jobs, the very objects, instead of building each real's check
    spec again (a reload's cost then grows with what changed, and unchanged jobs compare
    equal by identity first)."""
    jobs: dict[CheckJob, RealRef] = {}  # the first ref of each job, to count them
    with_job = with_mode = 0
    rules: dict[ServiceKey, HealthRules] = {}
    parts: dict[ServiceKey, _Part] = {}
    refs_by_key: dict[ServiceKey, tuple[Virtual, tuple[RealRef, ...]]] = {}
    old_parts = previous.parts if previous is not None else {}
    for v in config.virtuals:
        v_rules = rules_of(v)
        key = v.key
        old = old_parts.get(key)
        if old is not None and (old[0] is v or old[0] == v):
            part = old
        else:
            interval = float(v.checkinterval)  # one float for all its jobs, not one each
            part = (
                v,
                tuple(RealRef(key, r.address, r.port, i) for i, r in enumerate(v.reals)),
                tuple(job_for(v, r, interval) for r in v.reals),
            )
        parts[key] = part
        refs_by_key[key] = (v, part[1])
        rules[key] = v_rules
        for ref, job in zip(part[1], part[2], strict=True):
            if isinstance(job, CheckJob):
                with_job += 1
                jobs.setdefault(job, ref)
            else:
                with_mode += 1
    _remember_refs(config, refs_by_key)
    rules_of_ref = RulesOf(rules, parts, with_job + with_mode)
    return Plan(
        # the jobs' dict for their number alone: the plan makes it again (_grouped) when read
        JobRefs(parts, len(jobs)),
        JobsByRef(parts, CheckJob, with_job),
        JobsByRef(parts, str, with_mode),
        FailureCounts(rules_of_ref),
        rules_of_ref,
        parts,
    )


# The refs of the last plans' configs, per virtual: the layout and the adopted health of the
# same config take these very objects (a RealRef is 56 bytes, and each of them made its own).
# Two configs: the running one and a reload's or `lvsmon plan`'s (read once per call: a plan
# may be built in a thread).
_recent_refs: tuple[tuple[Config, dict[ServiceKey, tuple[Virtual, tuple[RealRef, ...]]]], ...] = ()


def _remember_refs(
    config: Config, refs: dict[ServiceKey, tuple[Virtual, tuple[RealRef, ...]]]
) -> None:
    global _recent_refs
    kept = tuple(entry for entry in _recent_refs if entry[0] is not config)[:1]
    _recent_refs = ((config, refs), *kept)


def refs_of(config: Config, v: Virtual) -> tuple[RealRef, ...]:
    """The refs of `v`'s reals (a virtual of `config`), in its order: the plan's own objects
    when a plan of `config` was built, else new ones (equal either way)."""
    for known, by_key in _recent_refs:
        if known is config:
            hit = by_key.get(v.key)
            if hit is not None and hit[0] is v:
                return hit[1]
            break
    key = v.key
    return tuple(RealRef(key, r.address, r.port, i) for i, r in enumerate(v.reals))
