"""Cross checks of the e-mail alert directives: what one directive means depends on another.

Kept apart from effective.py, which only builds values: these turn a template directory that
would fail at send time, or SMTP settings that cannot do what they say, into FILE:LINE messages
of check-config (errors for the former, warnings for the latter).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import cast

from lvsmon.addr import host_port
from lvsmon.config.raw import Setting
from lvsmon.config.syntax import SmtpSpec

IMPLICIT_TLS_PORT = 465  # where relays serve SMTP over TLS from the first byte (RFC 8314)


def template_errors(directory: str) -> list[str]:
    """Every problem of the template directory, as lvsmon.alerts.render sees it.

    Imported here, not at the top: the config package must load without the alerts package
    and Jinja2, which only a configuration naming a template directory needs."""
    try:
        render = importlib.import_module("lvsmon.alerts.render")
        check = cast(Callable[[str], list[str]], render.template_errors)
    except (ImportError, AttributeError) as exc:
        return [f"cannot check the template directory {directory}: {exc}"]
    return list(check(directory))


def template_problems(settings: Mapping[str, Setting]) -> list[tuple[int, str]]:
    """(line, message) for each problem of ``emailalerttemplates``, at that directive's line."""
    setting = settings.get("emailalerttemplates")
    if setting is None:
        return []
    directory = cast(str, setting.value)
    return [(setting.line, f"emailalerttemplates: {m}") for m in template_errors(directory)]


def smtp_warnings(
    settings: Mapping[str, Setting], blocks: Iterable[Mapping[str, Setting]]
) -> list[tuple[int, str]]:
    """(line, message) for SMTP settings that have no effect or cannot work as written."""
    out: list[tuple[int, str]] = []
    relays = [s["smtp"] for s in (settings, *blocks) if "smtp" in s]
    if "smtppassword" in settings and "smtpuser" not in settings:
        out.append((settings["smtppassword"].line, "smtppassword has no effect without smtpuser"))
    if "smtpuser" in settings and not relays:
        out.append(
            (
                settings["smtpuser"].line,
                "smtpuser has no effect without smtp=: mails go through the local sendmail, "
                "which does not authenticate",
            )
        )
    tls = settings.get("smtptls")
    if tls is not None and tls.value == "tls":
        for relay in relays:
            spec = cast(SmtpSpec, relay.value)
            if spec.port is None:
                out.append(
                    (
                        relay.line,
                        f"smtptls=tls (line {tls.line}) speaks TLS from the first byte, which "
                        f"relays offer on port {IMPLICIT_TLS_PORT}, not 25: write "
                        f"smtp={host_port(spec.host, IMPLICIT_TLS_PORT)}",
                    )
                )
    return out
