"""service=none: nothing to negotiate, always up (ldirectord L3855). The engine does not even
schedule it (the real is always up); answering keeps `run_check` total."""

from __future__ import annotations

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.step import Step


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    return CheckResult(True, "service=none")
