"""Which function runs which check: the one list of what lvsmon implements, and `run_check`.

`SERVICES` is the only place that says which negotiate services exist. check-config reads it
(through `config.support`) to accept or reject a virtual, the engine reads it to run the check,
docs/architecture.md says how to add one. Each service's code is one module under
`lvsmon.checks`, imported when a config first uses it (so `check-config` and a daemon without
database checks never import a database driver), with this interface:

* `async def check(spec: CheckSpec, step: Step) -> CheckResult`: the whole check; it sets
  `step.name` as it goes, raises `CheckFailed` (or lets OSError, TLS errors through) to fail;
* optionally `def probe_plan(spec: CheckSpec) -> ProbePlan | None`: a `Dialogue` the prober can
  run on plain TCP, the cheap path for the engine's hot loop.

`run_check` never raises for anything a server, a network or a check program can do: every
failure becomes `CheckResult(ok=False, reason)` with the failed step in the reason. Only
cancellation propagates (the scheduler stopping us), so the I/O stops with it.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Final

from lvsmon.checks.base import (
    RECEIVED,
    CheckFailed,
    CheckResult,
    CheckSpec,
    Received,
    describe_error,
)
from lvsmon.checks.connect import check_connect, connect_plan
from lvsmon.checks.external import check_external, check_external_perl
from lvsmon.checks.ping import check_ping
from lvsmon.checks.step import Step
from lvsmon.checks.viapath import check_both

if TYPE_CHECKING:
    from lvsmon.checks.prober import ProbePlan

CheckFn = Callable[[CheckSpec, Step], Awaitable[CheckResult]]
PlanFn = Callable[[CheckSpec], "ProbePlan | None"]


@dataclass(frozen=True, slots=True)
class Service:
    """One negotiate service: where its code is and what it cannot do without."""

    name: str
    module: str
    """Module under lvsmon.checks holding `check` (and maybe `probe_plan`)."""
    needs: tuple[str, ...] = ()
    """Settings without which the check can never be up (ldirectord logs an error and marks the
    real down): check-config warns, the check fails naming them."""
    library: str = ""
    """An optional library the module imports, and the pip extra that installs it."""
    extra: str = ""

    def available(self) -> bool:
        return not self.library or _library_present(self.library)

    def missing(self, spec: CheckSpec) -> list[str]:
        return [name for name in self.needs if not getattr(spec, name).lstrip("/")]


@functools.cache
def _library_present(name: str) -> bool:
    # find_spec searches sys.path (stat calls): asked per check it would be I/O on the hot path
    return importlib.util.find_spec(name) is not None


def _services(*entries: Service) -> dict[str, Service]:
    return {e.name: e for e in entries}


SQL_NEEDS: Final = ("login", "request")

SERVICES: Final[dict[str, Service]] = _services(
    Service("http", "http"),
    Service("https", "http"),
    Service("http_proxy", "http"),
    Service("smtp", "smtp"),
    Service("submission", "smtp"),
    Service("pop", "pop"),
    Service("pops", "pop"),
    Service("imap", "imap"),
    Service("imaps", "imap"),
    Service("nntp", "nntp"),
    Service("ldap", "ldap"),
    Service("ldaps", "ldap"),
    Service("dns", "dns", needs=("request",)),
    Service("radius", "radius", needs=("login", "secret")),
    Service("mysql", "mysql", needs=SQL_NEEDS),
    Service("pgsql", "pgsql", needs=SQL_NEEDS),
    Service("oracle", "oracle", needs=SQL_NEEDS, library="oracledb", extra="oracle"),
    Service("sip", "sip"),
    Service("simpletcp", "simpletcp"),
    Service("ftp", "ftp"),
    Service("none", "none"),
)

KINDS: Final[dict[str, CheckFn | None]] = {
    "connect": check_connect,
    "ping": check_ping,
    "external": check_external,
    "external-perl": check_external_perl,
    "negotiate": None,  # by service
}


async def _always_up(spec: CheckSpec, step: Step) -> CheckResult:
    return CheckResult(True, f"checktype={spec.kind}")


_modules: dict[str, ModuleType] = {}


def _module(service: Service) -> ModuleType:
    module = _modules.get(service.module)
    if module is None:
        module = _modules[service.module] = importlib.import_module(
            f"lvsmon.checks.{service.module}"
        )
    return module


def lookup(kind: str, service: str) -> CheckFn | None:
    """The function that runs this check, or None if lvsmon has none."""
    if kind in ("on", "off"):  # the engine never schedules off; answering keeps run_check total
        return _always_up
    if kind != "negotiate":
        return KINDS.get(kind)
    entry = SERVICES.get(service)
    if entry is None or not entry.available():
        return None
    fn: CheckFn = _module(entry).check
    return fn


def is_implemented(kind: str, service: str) -> bool:
    if kind != "negotiate":
        return kind in KINDS or kind in ("on", "off")
    entry = SERVICES.get(service)
    return entry is not None and entry.available()


def plan_probe(spec: CheckSpec) -> ProbePlan | None:
    """The prober's plan for `spec`, or None when it runs as a task of its own (run_check)."""
    if spec.checkpath == "both":
        return None  # two checks (viapath.check_both)
    if spec.kind == "connect":
        return connect_plan(spec)
    if spec.kind == "negotiate":
        return probe_plan(spec)
    return None


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    """The prober's plan for a negotiate check, when its module has one for this spec."""
    entry = SERVICES.get(spec.service)
    if entry is None or not entry.available() or entry.missing(spec):
        return None
    plan: PlanFn | None = getattr(_module(entry), "probe_plan", None)
    return plan(spec) if plan is not None else None


async def run_check(spec: CheckSpec) -> CheckResult:
    """Run the check `spec` describes under its one deadline; never raises but CancelledError."""
    path = spec.checkpath
    if path == "both":
        return await check_both(spec, run_check)
    if path == "vip" and plan_probe(spec) is None:
        # only the prober's connect is steered through the probe service (check-config refuses
        # the others): anything else would reach some real of the production service
        reason = f"checkpath=vip: this {spec.service} check cannot be sent through the VIP"
        return CheckResult(False, reason, 0.0)
    started = time.monotonic()
    entry = SERVICES.get(spec.service) if spec.kind == "negotiate" else None
    if entry is not None and (missing := entry.missing(spec)):
        reason = f"{spec.service}: {' and '.join(missing)} must be set for this check"
        return CheckResult(False, reason, 0.0)
    fn = lookup(spec.kind, spec.service)
    if fn is None:
        return CheckResult(
            False, f"checktype={spec.kind} service={spec.service} is not implemented", 0.0
        )
    step = Step()
    received = Received()  # what the check's readers count (base.Received): the lag rule
    token = RECEIVED.set(received)
    try:
        result = await _run(fn, spec, step)
    finally:
        RECEIVED.reset(token)
    # a dialogue run on the prober reports its own count
    got = max(received.count, result.received)
    return CheckResult(
        result.ok,
        result.reason,
        time.monotonic() - started,
        result.timed_out,
        got,
        cert_not_after=result.cert_not_after,
    )


async def _run(fn: CheckFn, spec: CheckSpec, step: Step) -> CheckResult:
    """`fn` under the spec's deadline, every failure as a result (run_check adds the latency
    and the bytes received)."""
    try:
        async with asyncio.timeout(spec.timeout):
            return await fn(spec, step)
    except TimeoutError as exc:
        if exc.errno is not None:  # ETIMEDOUT from the kernel, not our deadline
            return CheckResult(False, f"{step.name}: {describe_error(exc)}")
        reason = f"timeout after {spec.timeout:g}s during {step.name}"
        return CheckResult(False, reason, timed_out=True)
    except CheckFailed as exc:
        return CheckResult(False, exc.reason)
    except ssl.SSLError as exc:
        return CheckResult(False, f"tls: {describe_error(exc)}")
    except Exception as exc:
        # a bug of ours lands here too; as data, with its type, rather than killing the scheduler
        return CheckResult(False, f"{step.name}: {describe_error(exc)}")
