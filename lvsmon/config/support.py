"""What lvsmon can check, as `checks.registry` says. The parser accepts the whole ldirectord
language; a virtual whose check lvsmon cannot perform is rejected here, never silently treated as
up, and one that can never be up (a SQL check without login) is warned about."""

from __future__ import annotations

from lvsmon.checks.registry import SERVICES, is_implemented
from lvsmon.config.errors import Diagnostic
from lvsmon.config.model import CheckType, Config, Virtual

# Check types that run the negotiate protocol of the virtual's service.
NEGOTIATING: frozenset[CheckType] = frozenset({CheckType.NEGOTIATE, CheckType.COMBINED})


def _kind(checktype: CheckType) -> str:
    return "negotiate" if checktype in NEGOTIATING else str(checktype)


def describe_service(v: Virtual) -> str:
    """ "service smtp", or "service smtp (from port 25)" when the port chose it."""
    if v.service_from_port:
        return f"service {v.service} (from port {v.port})"
    return f"service {v.service}"


def unsupported(config: Config) -> list[Diagnostic]:
    """One diagnostic per virtual whose effective check lvsmon does not implement."""
    problems: list[Diagnostic] = []
    for v in config.virtuals:
        kind = _kind(v.checktype)
        if is_implemented(kind, str(v.service)):
            continue
        entry = SERVICES.get(str(v.service))
        if kind != "negotiate":
            message = f"checktype={v.checktype} is not supported by lvsmon"
        elif entry is not None and entry.library:
            message = (
                f"{describe_service(v)} needs the Python package {entry.library}: "
                f"pip install 'lvsmon[{entry.extra}]'"
            )
        else:
            message = f"{describe_service(v)} is not supported by lvsmon"
        problems.append(Diagnostic(v.file, v.line, message))
    return problems


def service_warnings(config: Config) -> list[Diagnostic]:
    """Virtuals whose negotiate check can never be up for want of a setting (ldirectord logs an
    error at every check and keeps the reals down)."""
    warnings: list[Diagnostic] = []
    for v in config.virtuals:
        entry = SERVICES.get(str(v.service))
        if entry is None or _kind(v.checktype) != "negotiate":
            continue
        unset = [name for name in entry.needs if not _setting(v, name)]
        if unset:
            warnings.append(
                Diagnostic(
                    v.file,
                    v.line,
                    f"{describe_service(v)} needs {' and '.join(unset)}; "
                    "its reals will be down until they are set",
                )
            )
    return warnings


def _setting(v: Virtual, name: str) -> bool:
    if name == "request":
        return all(r.request.lstrip("/") for r in v.reals) and bool(v.reals)
    value = getattr(v, name, "")
    return bool(value)
