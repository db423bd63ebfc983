"""Health checks: one module per check family or negotiate service, a registry, and `run_check`.

The engine builds a `CheckSpec` per distinct check and awaits `run_check(spec)`, which applies
the spec's single deadline and always returns a `CheckResult`. `registry.SERVICES` is the one
list of negotiate services lvsmon implements.
"""

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, CheckSpecError
from lvsmon.checks.registry import SERVICES, is_implemented, run_check

__all__ = [
    "SERVICES",
    "CheckFailed",
    "CheckResult",
    "CheckSpec",
    "CheckSpecError",
    "is_implemented",
    "run_check",
]
