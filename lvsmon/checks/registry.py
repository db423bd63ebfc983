"""Which function runs which check, and `run_check`: the one deadline and the error boundary.

`run_check` never raises for anything a server, a network or a check program can do: every
failure becomes `CheckResult(ok=False, reason)` with the failed step in the reason. Only
cancellation propagates (the scheduler stopping us), so the I/O stops with it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Final

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, describe_error
from lvsmon.checks.connect import check_connect
from lvsmon.checks.external import check_external, check_external_perl
from lvsmon.checks.http import check_http
from lvsmon.checks.ping import check_ping
from lvsmon.checks.step import Step

CheckFn = Callable[[CheckSpec, Step], Awaitable[CheckResult]]

ANY_SERVICE: Final = "*"
"""Registry key for kinds whose behaviour does not depend on `service`."""


async def _always_up(spec: CheckSpec, step: Step) -> CheckResult:
    return CheckResult(True, f"checktype={spec.kind}")


async def _service_none(spec: CheckSpec, step: Step) -> CheckResult:
    return CheckResult(True, "service=none")


REGISTRY: Final[dict[tuple[str, str], CheckFn]] = {
    ("connect", ANY_SERVICE): check_connect,
    ("ping", ANY_SERVICE): check_ping,
    ("external", ANY_SERVICE): check_external,
    ("external-perl", ANY_SERVICE): check_external_perl,
    ("on", ANY_SERVICE): _always_up,
    # the engine never schedules checktype=off; answering keeps run_check total
    ("off", ANY_SERVICE): _always_up,
    ("negotiate", "http"): check_http,
    ("negotiate", "https"): check_http,
    ("negotiate", "http_proxy"): check_http,
    ("negotiate", "none"): _service_none,
}

IMPLEMENTED: Final[frozenset[tuple[str, str]]] = frozenset(REGISTRY)
"""(kind, service) pairs that have an implementation; ANY_SERVICE where service does not matter."""


def lookup(kind: str, service: str) -> CheckFn | None:
    return REGISTRY.get((kind, ANY_SERVICE)) or REGISTRY.get((kind, service))


def is_implemented(kind: str, service: str) -> bool:
    return lookup(kind, service) is not None


async def run_check(spec: CheckSpec) -> CheckResult:
    """Run the check `spec` describes under its one deadline; never raises but CancelledError."""
    started = time.monotonic()
    fn = lookup(spec.kind, spec.service)
    if fn is None:
        return CheckResult(
            False, f"checktype={spec.kind} service={spec.service} is not implemented", 0.0
        )
    step = Step()
    try:
        async with asyncio.timeout(spec.timeout):
            result = await fn(spec, step)
    except TimeoutError as exc:
        if exc.errno is not None:  # ETIMEDOUT from the kernel, not our deadline
            reason = f"{step.name}: {describe_error(exc)}"
            return CheckResult(False, reason, time.monotonic() - started)
        reason = f"timeout after {spec.timeout:g}s during {step.name}"
        return CheckResult(False, reason, time.monotonic() - started)
    except CheckFailed as exc:
        return CheckResult(False, exc.reason, time.monotonic() - started)
    except ssl.SSLError as exc:
        return CheckResult(False, f"tls: {describe_error(exc)}", time.monotonic() - started)
    except Exception as exc:
        # a bug of ours lands here too; as data, with its type, rather than killing the scheduler
        return CheckResult(False, f"{step.name}: {describe_error(exc)}", time.monotonic() - started)
    return CheckResult(result.ok, result.reason, time.monotonic() - started)
