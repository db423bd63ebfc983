"""A `Mail` as text: Jinja2 templates shipped in lvsmon/alerts/templates/, plain text.

Three templates: subject.txt (the Subject header), single.txt (the body of a mail about one
change) and digest.txt (the body of a mail listing several). The shipped ones keep ldirectord's
fields and wording ("ldirectord host:", "Log-Message:", "Daemon-Status:", "Service name:",
"Comment:"), since mail filters match on them. A directory named by `emailalerttemplates`
replaces them file by file; `template_errors` finds its faults for check-config, and a fault that
still shows at send time (the directory edited since) falls back to the shipped template with an
error logged: an alert is never lost to a template.

Variables: hostname, subject, status, held_back, to, and changes (each: subject, kind, real,
virtual, service, servicename, comment, reminder); servicename and comment are those of the first
change's virtual. Undefined variables are errors (StrictUndefined), never silently empty.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lvsmon.alerts.changes import Change
from lvsmon.alerts.policy import Mail
from lvsmon.config.model import (
    CheckType,
    Config,
    GlobalSettings,
    Real,
    Service,
    Virtual,
    VirtualProtocol,
)
from lvsmon.engine.wording import virtual_label
from lvsmon.ipvs.model import Family, Forward, ServiceKey

if TYPE_CHECKING:
    import jinja2

log = logging.getLogger("lvsmon")

SUBJECT = "subject.txt"
SINGLE = "single.txt"
DIGEST = "digest.txt"
TEMPLATES = (SUBJECT, SINGLE, DIGEST)


@dataclass(frozen=True, slots=True)
class ChangeView:
    """One change as templates see it."""

    subject: str
    kind: str
    real: str
    virtual: str  # "vip:port" (or the fwmark), as in ldirectord's subjects
    service: str  # lvsmon's "tcp:vip:port"
    servicename: str | None
    comment: str | None
    reminder: bool
    at: float


def _environment(directory: str | None) -> jinja2.Environment:
    # imported on the first mail or template check: a daemon that sends no mail does not carry
    # Jinja2's modules (1.8 MiB of RSS)
    import jinja2

    shipped = jinja2.PackageLoader("lvsmon.alerts", "templates")
    loader: jinja2.BaseLoader = shipped
    if directory is not None:
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(directory), shipped])
    return jinja2.Environment(
        loader=loader,
        autoescape=False,  # plain text mail, not HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_environments: dict[str | None, jinja2.Environment] = {}


def environment(directory: str | None) -> jinja2.Environment:
    """One Environment per template directory (it caches compiled templates)."""
    env = _environments.get(directory)
    if env is None:
        env = _environments[directory] = _environment(directory)
    return env


def _view(change: Change, virtuals: dict[ServiceKey, Virtual]) -> ChangeView:
    v = virtuals.get(change.service)
    return ChangeView(
        subject=change.subject,
        kind=change.kind,
        real=change.real,
        virtual=virtual_label(change.service),
        service=str(change.service),
        servicename=v.servicename if v is not None else None,
        comment=v.comment if v is not None else None,
        reminder=change.reminder,
        at=change.at,
    )


def context(mail: Mail, config: Config | None, hostname: str) -> dict[str, Any]:
    virtuals = {v.key: v for v in config.virtuals} if config is not None else {}
    changes = [_view(c, virtuals) for c in mail.changes]
    first = changes[0] if changes else None
    return {
        "hostname": hostname,
        "subject": mail.subject,
        "status": mail.status,
        "held_back": mail.held_back,
        "to": list(mail.to),
        "changes": changes,
        "servicename": first.servicename if first is not None else None,
        "comment": first.comment if first is not None else None,
    }


def _render_with(env: jinja2.Environment, mail: Mail, ctx: dict[str, Any]) -> tuple[str, str]:
    subject = " ".join(env.get_template(SUBJECT).render(ctx).split())  # no header injection
    body = env.get_template(SINGLE if len(mail.changes) == 1 else DIGEST).render(ctx)
    return subject, body


def render(
    mail: Mail, config: Config | None, hostname: str, directory: str | None = None
) -> tuple[str, str]:
    """(subject, body) of `mail`. `directory`: templates replacing the shipped ones (default:
    the config's `emailalerttemplates`, when the config has that setting)."""
    if directory is None and config is not None:
        directory = getattr(config.settings, "emailalerttemplates", None)
    ctx = context(mail, config, hostname)
    if directory is not None:
        try:
            return _render_with(environment(directory), mail, ctx)
        except Exception as exc:
            log.error(
                "e-mail alert template in %s failed (%s); using lvsmon's own for %r",
                directory,
                _describe(exc, directory),
                mail.subject,
            )
    return _render_with(environment(None), mail, ctx)


# -- check-config ----------------------------------------------------------------------------


def _samples() -> list[Mail]:
    """Mails that take every branch of the shipped templates, to find undefined variables."""
    from lvsmon.alerts.changes import reminder_of

    key = ServiceKey.inet("tcp", "192.0.2.1", 80)
    down = Change(
        "down",
        "Quiescent real server: 192.0.2.2:80 (192.0.2.1:80) (Weight set to 0)",
        key,
        "192.0.2.2:80",
        0.0,
    )
    up = Change(
        "up",
        "Restored real server: 192.0.2.3:80 (192.0.2.1:80) (Weight set to 1)",
        key,
        "192.0.2.3:80",
        0.0,
    )
    remind = reminder_of(key, "192.0.2.4:80", "192.0.2.1:80", 0.0)
    to = ("root@localhost",)
    return [
        Mail(to, down.subject, (down,), 0, "running"),
        Mail(to, down.subject, (down,), 1, "running"),
        Mail(
            to,
            "[lvsmon] 1 real server down, 1 restored, 1 still down",
            (down, up, remind),
            2,
            "running",
        ),
        Mail(to, "[lvsmon] 1 real server down, 1 restored", (down, up), 0, "starting"),
    ]


def _sample_config() -> Config:
    """A config whose sample virtual has a servicename and a comment (their branches too).

    Built from the model, not parsed: the config package checks templates with this module, so
    this module must not need the config loader (an import cycle)."""
    real = Real("192.0.2.2", 80, Forward.GATE, 1, 0, 0, "/", "", "sample.cf", 2)
    virtual = Virtual(
        Family.INET,
        VirtualProtocol.TCP,
        "192.0.2.1",
        80,
        0,
        "sample.cf",
        1,
        (real,),
        checktype=CheckType.ON,
        service=Service.HTTP,
        service_from_port=True,
        servicename="sample",
        comment="a sample",
    )
    return Config("sample.cf", "", GlobalSettings(), (virtual,))


def _describe(exc: BaseException, directory: str) -> str:
    """`exc` with the template file and line it happened at, when the traceback has them."""
    where = _template_line(exc.__traceback__, directory)
    text = f"{type(exc).__name__}: {exc}"
    return f"{where[0]}:{where[1]}: {text}" if where else text


def _template_line(tb: TracebackType | None, directory: str) -> tuple[str, int] | None:
    """The deepest traceback frame in a template of `directory` (Jinja2 rewrites tracebacks
    so that template frames carry the template's file name and line)."""
    found = None
    root = os.path.abspath(directory)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if os.path.abspath(filename).startswith(root + os.sep):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def template_errors(directory: str) -> list[str]:
    """Every problem of a template directory, as "file:line: message" where there is a line."""
    if not os.path.isdir(directory):
        return [f"{directory}: not a directory"]
    present = [name for name in TEMPLATES if os.path.isfile(os.path.join(directory, name))]
    if not present:
        return [f"{directory}: none of {', '.join(TEMPLATES)} in it (it replaces nothing)"]
    import jinja2

    env = _environment(directory)  # a fresh one: nothing cached from a previous check
    errors: list[str] = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.endswith(".txt") or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
            env.parse(source, name, path)
        except jinja2.TemplateSyntaxError as exc:
            errors.append(f"{path}:{exc.lineno}: {exc.message}")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{path}: {exc}")
    if errors:
        return errors
    config = _sample_config()
    seen: set[str] = set()
    for mail in _samples():
        for ctx in (context(mail, config, "director1"), context(mail, None, "director1")):
            try:
                _render_with(env, mail, ctx)
            except Exception as exc:
                message = _describe(exc, directory)
                if message not in seen:
                    seen.add(message)
                    errors.append(message)
    return errors
