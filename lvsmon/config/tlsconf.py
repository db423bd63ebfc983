"""TLS verification of the checks (issue 25, point 4): lvsmon's `sslverify`, `sslcafile`,
`sslname` and `sslexpirywarn` directives, global and per virtual (a virtual's own line wins).

    sslverify     = no | chain | name    (default no: as lvsmon always did)
    sslcafile     = /etc/ssl/our-ca.pem  (default: the system store)
    sslname       = www.example.com      (default: virtualhost, else the real's address)
    sslexpirywarn = 14                   (days; default 0: off)

They apply to the checks that speak TLS: https, pops, imaps, ldaps (checks/tlsverify.py).
A CA file is read at config load (a missing, unreadable or non-PEM file is `file:line`, exit
2); the checks read it again when it changes.
"""

from __future__ import annotations

from collections.abc import Mapping

from lvsmon.checks.tlsverify import VERIFY_MODES, cafile_problem
from lvsmon.config.raw import Setting
from lvsmon.config.tlssettings import NO_TLS, TlsCheck
from lvsmon.config.values import Invalid, Warn, integer, shorten, word

MAX_EXPIRYWARN = 3650  # days: ten years


def parse_verify(value: str, warn: Warn) -> str:
    wanted = "sslverify must be no, chain or name"
    mode = word(value, r"\w+", f"{wanted}, not {shorten(value)!r}", warn).lower()
    if mode not in VERIFY_MODES:
        raise Invalid(f"{wanted}, not {shorten(mode)!r}")
    return mode


def parse_cafile(value: str, warn: Warn) -> str:
    path = value.strip().strip('"')
    problem = cafile_problem(path)
    if problem is not None:
        raise Invalid(problem)
    return path


def parse_name(value: str, warn: Warn) -> str:
    name = value.strip().strip('"')
    if not name or any(c.isspace() or not c.isprintable() for c in name):
        raise Invalid(f"sslname must be one host name or address, not {shorten(value)!r}")
    return name


def parse_expirywarn(value: str, warn: Warn) -> int:
    return integer(value, "sslexpirywarn days", warn, minimum=0, maximum=MAX_EXPIRYWARN)


def _merged(settings: Mapping[str, Setting], base: TlsCheck) -> TlsCheck:
    def get(name: str, default: object) -> object:
        s = settings.get(name)
        return default if s is None else s.value

    tls = TlsCheck(
        verify=str(get("sslverify", base.verify)),
        cafile=str(get("sslcafile", base.cafile)),
        name=str(get("sslname", base.name)),
        expirywarn=int(get("sslexpirywarn", base.expirywarn)),  # type: ignore[call-overload]
    )
    return NO_TLS if tls == NO_TLS else tls


def tls_global(settings: Mapping[str, Setting]) -> TlsCheck:
    """The global lines: every virtual's defaults."""
    return _merged(settings, NO_TLS)


def tls_of(settings: Mapping[str, Setting], base: TlsCheck) -> TlsCheck:
    """A virtual's effective settings: its own lines over the global ones (`base`)."""
    return _merged(settings, base)


def warnings(settings: Mapping[str, Setting], tls: TlsCheck) -> list[tuple[int, str]]:
    """(line, message) for settings written where they do nothing."""
    out = []
    if tls.verify == "no":
        for name in ("sslcafile", "sslname"):
            if name in settings:
                out.append((settings[name].line, f"{name} has no effect with sslverify = no"))
    elif tls.verify == "chain" and "sslname" in settings:
        out.append((settings["sslname"].line, "sslname has no effect with sslverify = chain"))
    return out
