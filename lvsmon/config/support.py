"""What lvsmon can check today. The parser accepts the whole ldirectord language; a virtual
whose check lvsmon cannot perform is rejected here, never silently treated as up."""

from __future__ import annotations

from lvsmon.config.errors import Diagnostic
from lvsmon.config.model import CheckType, Config, Service

IMPLEMENTED_CHECKTYPES: frozenset[CheckType] = frozenset(
    {
        CheckType.CONNECT,
        CheckType.NEGOTIATE,
        CheckType.EXTERNAL,
        CheckType.EXTERNAL_PERL,
        CheckType.PING,
        CheckType.ON,
        CheckType.OFF,
        CheckType.COMBINED,
    }
)

IMPLEMENTED_SERVICES: frozenset[Service] = frozenset(
    {Service.HTTP, Service.HTTPS, Service.HTTP_PROXY, Service.NONE}
)

# Check types that run the negotiate protocol of the virtual's service.
NEGOTIATING: frozenset[CheckType] = frozenset({CheckType.NEGOTIATE, CheckType.COMBINED})


def unsupported(config: Config) -> list[Diagnostic]:
    """One diagnostic per virtual whose effective check lvsmon does not implement."""
    problems: list[Diagnostic] = []
    services = ", ".join(sorted(s.value for s in IMPLEMENTED_SERVICES))
    for v in config.virtuals:
        if v.checktype not in IMPLEMENTED_CHECKTYPES:
            problems.append(
                Diagnostic(
                    v.file, v.line, f"checktype={v.checktype} is not supported by lvsmon yet"
                )
            )
        elif v.checktype in NEGOTIATING and v.service not in IMPLEMENTED_SERVICES:
            problems.append(
                Diagnostic(
                    v.file,
                    v.line,
                    f"service={v.service} is not supported by lvsmon yet (supported: {services})"
                    f"; use checktype=connect or external meanwhile",
                )
            )
    return problems
