"""From the effective config to the checks to run: which distinct check feeds which reals.

A real that sits in several virtual services with the same check is checked once; its result
feeds every (virtual, real) pair. Each pair keeps its own health (its virtual's failurecount).

Per real, a plan holds its ref, its job and a place in two dicts (`job_of` or `mode_of`); its
rules and failurecount are its virtual's, read through views. The refs are the very objects
the layout (engine/desired.py) and the adopted health use for the same config (`refs_of`): at
37,298 reals each copy of them was 2 MiB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

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

    def __str__(self) -> str:
        return f"{host_port(self.address, self.port)} ({self.service})"

    @property
    def dest(self) -> DestKey:
        return DestKey(self.address, self.port)


@dataclass(frozen=True, slots=True)
class CheckJob:
    """One distinct check. For `checktype = N` (combined), `spec` is the negotiate check and after
    each success `connect` runs `num_connects` times before negotiating again."""

    spec: CheckSpec
    interval: float
    connect: CheckSpec | None = None
    num_connects: int = 0
    # the hash, computed once: a job is a dict key in the plan, the runner and the reload, and
    # hashing every field of its spec(s) on each lookup made that the bulk of a reload's plan
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.spec, self.interval, self.connect, self.num_connects)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash


class Mode:
    """How a real's health is decided when no check job runs for it."""

    ALWAYS_UP = "always-up"  # checktype=on, or negotiate with service=none
    FROZEN = "frozen"  # checktype=off: nothing is checked, nothing changes


# one virtual's part of a plan: the virtual it was made from, its reals' refs, and per real its
# job (or its Mode), in the same order (two tuples: no pair object per real)
_Part = tuple[Virtual, tuple[RealRef, ...], tuple["CheckJob | str", ...]]


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


class RulesOf(Mapping[RealRef, HealthRules]):
    """A plan's health rules per real: its virtual's, looked up by the real's service; every real
    of the plan (those with a job and those with a mode), in config order, without a dict of
    its own (some 40 bytes a real)."""

    __slots__ = ("_by_service", "_job_of", "_mode_of", "_parts")

    def __init__(
        self,
        by_service: dict[ServiceKey, HealthRules],
        parts: dict[ServiceKey, _Part],
        job_of: Mapping[RealRef, object],
        mode_of: Mapping[RealRef, object],
    ) -> None:
        self._by_service = by_service
        self._parts = parts
        self._job_of = job_of
        self._mode_of = mode_of

    def __getitem__(self, ref: RealRef) -> HealthRules:
        if ref in self._job_of or ref in self._mode_of:
            return self._by_service[ref.service]
        raise KeyError(ref)

    def __contains__(self, ref: object) -> bool:
        return ref in self._job_of or ref in self._mode_of

    def __iter__(self) -> Iterator[RealRef]:
        for part in self._parts.values():
            yield from part[1]

    def __len__(self) -> int:
        return len(self._job_of) + len(self._mode_of)

    def __repr__(self) -> str:
        return f"RulesOf({dict(self)!r})"


@dataclass(frozen=True, slots=True)
class Plan:
    jobs: dict[CheckJob, tuple[RealRef, ...]]
    job_of: dict[RealRef, CheckJob]
    mode_of: dict[RealRef, str]  # reals without a job
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
        return CheckJob(
            spec=_spec(v, r, "negotiate"),
            interval=interval,
            connect=_spec(v, r, "connect"),
            num_connects=v.num_connects,
        )
    return CheckJob(spec=_spec(v, r, str(ct)), interval=interval)


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
    jobs: dict[CheckJob, list[RealRef]] = defaultdict(list)
    job_of: dict[RealRef, CheckJob] = {}
    mode_of: dict[RealRef, str] = {}
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
                tuple(RealRef(key, r.address, r.port) for r in v.reals),
                tuple(job_for(v, r, interval) for r in v.reals),
            )
        parts[key] = part
        refs_by_key[key] = (v, part[1])
        rules[key] = v_rules
        for ref, job in zip(part[1], part[2], strict=True):
            if isinstance(job, CheckJob):
                job_of[ref] = job
                refs = jobs[job]
                if ref not in refs:
                    refs.append(ref)
            else:
                mode_of[ref] = job
    _remember_refs(config, refs_by_key)
    rules_of_ref = RulesOf(rules, parts, job_of, mode_of)
    return Plan(
        {j: tuple(refs) for j, refs in jobs.items()},
        job_of,
        mode_of,
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
    return tuple(RealRef(key, r.address, r.port) for r in v.reals)
