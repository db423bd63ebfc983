"""Health checks: one async function per check family, a registry, and `run_check`.

The engine builds a `CheckSpec` per distinct check and awaits `run_check(spec)`, which applies
the spec's single deadline and always returns a `CheckResult`.
"""

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, CheckSpecError
from lvsmon.checks.registry import ANY_SERVICE, IMPLEMENTED, is_implemented, run_check

__all__ = [
    "ANY_SERVICE",
    "IMPLEMENTED",
    "CheckFailed",
    "CheckResult",
    "CheckSpec",
    "CheckSpecError",
    "is_implemented",
    "run_check",
]
