"""The e-mail alert directives: ldirectord's (emailalert*, smtp) and lvsmon's extensions
(emailalertwindow, emailalertrate, emailalerttemplates, smtpuser, smtppassword, smtptls,
smtp=host:port), their values, overrides, diagnostics and how check-config --json shows them."""

from __future__ import annotations

import io
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from lvsmon.config.dump import REDACTED, SECRET_FIELDS, config_to_dict, redact
from lvsmon.config.model import Config, GlobalSettings
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n"


def _warnings(config: Config) -> list[str]:
    return [f"{w.line}: {w.message}" for w in config.warnings]


# -- defaults and values ------------------------------------------------------------------------


def test_defaults() -> None:
    g = _parse(VIRTUAL).settings
    assert g == GlobalSettings()
    assert (g.smtp, g.smtpport, g.smtpuser, g.smtppassword, g.smtptls) == (
        None,
        25,
        "",
        "",
        "starttls",
    )
    assert (g.emailalertwindow, g.emailalertrate, g.emailalerttemplates) == (5, 60, None)
    (v,) = _parse(VIRTUAL).virtuals
    assert (v.smtp, v.smtpport, v.emailalert, v.emailalertfreq) == (None, 25, (), 0)


def test_ldirectord_directives_keep_their_meaning() -> None:
    config = _parse(
        'emailalert="ops@example.com, noc@example.com"\n'
        "emailalertfreq=600\n"
        "emailalertstatus=starting,running\n"
        "emailalertfrom=lvs@example.com\n"
        "smtp=mail.example.com\n"
        "virtual=192.0.2.1:80\n"
        "\treal=192.0.2.2:80 gate\n"
        "\temailalert=web@example.com\n"
        "\temailalertfreq=0\n"
        "\temailalertstatus=none\n"
        "virtual=192.0.2.1:443\n"
        "\treal=192.0.2.2:443 gate\n"
    )
    g = config.settings
    assert g.emailalert == ("ops@example.com", "noc@example.com")
    assert (g.emailalertfreq, g.emailalertstatus) == (600, ("starting", "running"))
    assert (g.emailalertfrom, g.smtp, g.smtpport) == ("lvs@example.com", "mail.example.com", 25)
    own, inherited = config.virtuals
    assert (own.emailalert, own.emailalertfreq, own.emailalertstatus) == (
        ("web@example.com",),
        0,
        (),
    )
    assert (inherited.emailalert, inherited.emailalertfreq) == (g.emailalert, 600)
    assert inherited.emailalertstatus == ("starting", "running")
    assert (inherited.smtp, inherited.smtpport) == ("mail.example.com", 25)


def test_extensions() -> None:
    g = _parse(
        "emailalertwindow=0\n"
        "emailalertrate=0\n"
        "smtp=relay.example.com:587\n"
        "smtpuser=lvsmon\n"
        'smtppassword="s3cret # not a comment"\n'
        "smtptls=none\n" + VIRTUAL
    ).settings
    assert (g.emailalertwindow, g.emailalertrate) == (0, 0)
    assert (g.smtp, g.smtpport) == ("relay.example.com", 587)
    assert (g.smtpuser, g.smtptls) == ("lvsmon", "none")
    assert g.smtppassword == "s3cret # not a comment"
    assert "s3cret" not in repr(g)


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("mail.example.com", "mail.example.com", 25),  # ldirectord's form
        ("192.0.2.25", "192.0.2.25", 25),
        ("mail+relay_1.example", "mail+relay_1.example", 25),  # ldirectord's character set
        ("192.0.2.25:2525", "192.0.2.25", 2525),
        ("mail.example.com:465", "mail.example.com", 465),
        ("[2001:db8::25]", "2001:db8::25", 25),
        ("[2001:db8::25]:587", "2001:db8::25", 587),
        ("2001:db8::25", "2001:db8::25", 25),  # a bare literal: unambiguous, no port
        ("localhost:00025", "localhost", 25),
        ("h:65535", "h", 65535),
    ],
)
def test_smtp_host_and_port(value: str, host: str, port: int) -> None:
    config = _parse(f"smtp={value}\n" + VIRTUAL)
    assert (config.settings.smtp, config.settings.smtpport) == (host, port)
    assert config.warnings == ()


def test_smtp_trailing_text_is_a_warning_as_before() -> None:
    config = _parse("smtp=mail.example.com:25 relay\n" + VIRTUAL)
    assert (config.settings.smtp, config.settings.smtpport) == ("mail.example.com", 25)
    assert _warnings(config) == ["1: ignoring trailing text 'relay'"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mail:", "invalid SMTP port '': a number 1..65535 is required"),
        ("mail:smtp", "invalid SMTP port 'smtp': a number 1..65535 is required"),
        ("mail:0", "invalid SMTP port 0: a number 1..65535 is required"),
        ("mail:65536", "invalid SMTP port 65536: a number 1..65535 is required"),
        ("mail:-1", "invalid SMTP port '-1': a number 1..65535 is required"),
        ("mail:25x", "invalid SMTP port '25x': a number 1..65535 is required"),
        ("mail:" + "9" * 5000, "invalid SMTP port: 999999999999999999999999... has more than"),
        ("[2001:db8::25]:x", "invalid SMTP port 'x': a number 1..65535 is required"),
        ("[mail.example]:25", "invalid SMTP server address: [mail.example] is not an IPv6"),
        ("2001:db8::zz", "IPv6 addresses must be written in brackets"),
        ("@mail", "invalid SMTP server address: expected host, host:port or [ipv6]:port"),
        ("", "invalid SMTP server address"),
    ],
)
def test_bad_smtp_is_an_error_at_its_line(value: str, message: str) -> None:
    (error,) = _errors("\n" + f"smtp={value}\n" + VIRTUAL)
    assert error.startswith(f"a.cf:2: {message}")


def test_virtual_smtp_overrides_host_and_port_as_a_whole() -> None:
    config = _parse(
        "smtp=global.example:2525\n"
        "virtual=192.0.2.1:80\n"
        "\treal=192.0.2.2:80 gate\n"
        "\tsmtp=own.example\n"  # port 25: the global's port belongs to the global host
        "virtual=192.0.2.1:81\n"
        "\treal=192.0.2.2:81 gate\n"
        "\tsmtp=[2001:db8::1]:587\n"
        "virtual=192.0.2.1:82\n"
        "\treal=192.0.2.2:82 gate\n"
    )
    assert config.settings.smtpport == 2525
    assert [(v.smtp, v.smtpport) for v in config.virtuals] == [
        ("own.example", 25),
        ("2001:db8::1", 587),
        ("global.example", 2525),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("emailalertwindow=-1\n", "invalid email alert window: '-1' is not a number"),
        ("emailalertwindow=soon\n", "invalid email alert window: 'soon' is not a number"),
        ("emailalertrate=x\n", "invalid email alert rate: 'x' is not a number"),
        ("smtptls=ssl\n", "smtptls must be starttls, tls or none, not 'ssl'"),
        ("smtptls=\n", "smtptls must be starttls, tls or none, not ''"),
        ("smtpuser=\n", "smtpuser must not be empty"),
        ('smtppassword=""\n', "smtppassword must not be empty"),
        ("emailalerttemplates=\n", "emailalerttemplates must not be empty"),
    ],
)
def test_bad_extension_values(text: str, message: str) -> None:
    assert _errors(text + VIRTUAL) == [f"a.cf:1: {message}"]


@pytest.mark.parametrize(
    "name",
    [
        "emailalertwindow=5",
        "emailalertrate=5",
        "emailalerttemplates=/etc/lvsmon/mail",
        "smtpuser=u",
        "smtppassword=p",
        "smtptls=tls",
        "emailalertfrom=a@b",
    ],
)
def test_extensions_are_global_only(name: str) -> None:
    directive = name.split("=")[0]
    assert _errors(VIRTUAL + f"\t{name}\n") == [
        f"a.cf:3: {directive} is a global directive; it cannot be used inside a virtual block"
    ]


def test_misspelt_extension_gets_a_suggestion() -> None:
    assert _errors("smtppasword=x\n" + VIRTUAL) == [
        'a.cf:1: unknown directive "smtppasword"; did you mean "smtppassword"?'
    ]


# -- warnings for settings that cannot do what they say ----------------------------------------


def test_password_without_user_warns() -> None:
    config = _parse("smtp=mail\nsmtppassword=p\n" + VIRTUAL)
    assert _warnings(config) == ["2: smtppassword has no effect without smtpuser"]


def test_user_without_any_relay_warns() -> None:
    config = _parse("smtpuser=u\nsmtppassword=p\n" + VIRTUAL)
    assert _warnings(config) == [
        "1: smtpuser has no effect without smtp=: mails go through the local sendmail, "
        "which does not authenticate"
    ]
    # a relay in one virtual is enough
    assert _parse("smtpuser=u\n" + VIRTUAL + "\tsmtp=mail\n").warnings == ()


def test_implicit_tls_on_the_default_port_warns() -> None:
    config = _parse("smtptls=tls\nsmtp=mail.example\n" + VIRTUAL + "\tsmtp=[::1]\n")
    assert _warnings(config) == [
        "2: smtptls=tls (line 1) speaks TLS from the first byte, which relays offer on port "
        "465, not 25: write smtp=mail.example:465",
        "5: smtptls=tls (line 1) speaks TLS from the first byte, which relays offer on port "
        "465, not 25: write smtp=[::1]:465",
    ]
    assert _parse("smtptls=tls\nsmtp=mail.example:465\n" + VIRTUAL).warnings == ()


# -- emailalerttemplates: checked by lvsmon.alerts.render at load -------------------------------


def _fake_render(monkeypatch: pytest.MonkeyPatch, check: Callable[[str], list[str]]) -> list[str]:
    """Stand in for lvsmon.alerts.render; returns the directories it was asked about."""
    asked: list[str] = []

    def template_errors(directory: str) -> list[str]:
        asked.append(directory)
        return check(directory)

    fake = types.ModuleType("lvsmon.alerts.render")
    fake.template_errors = template_errors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lvsmon.alerts.render", fake)
    return asked


def test_template_errors_are_errors_at_the_directive_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _fake_render(
        monkeypatch,
        lambda d: [f"{d}/subject.txt:1: unexpected '}}'", f"{d}/body.txt: 'nosuch' is undefined"],
    )
    text = "emailalert=ops@example.com\n\nemailalerttemplates=/etc/lvsmon/mail\n" + VIRTUAL
    assert _errors(text) == [
        "a.cf:3: emailalerttemplates: /etc/lvsmon/mail/subject.txt:1: unexpected '}'",
        "a.cf:3: emailalerttemplates: /etc/lvsmon/mail/body.txt: 'nosuch' is undefined",
    ]
    assert asked == ["/etc/lvsmon/mail"]


def test_good_templates_and_quotes(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fake_render(monkeypatch, lambda d: [])
    config = _parse('emailalerttemplates="/etc/lvsmon/mail templates"\n' + VIRTUAL)
    assert config.settings.emailalerttemplates == "/etc/lvsmon/mail templates"
    assert asked == ["/etc/lvsmon/mail templates"]


def test_templates_not_checked_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fake_render(monkeypatch, lambda d: ["never"])
    _parse(VIRTUAL)
    assert asked == []


def test_templates_without_the_checker_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("lvsmon.alerts.render")  # no template_errors in it
    monkeypatch.setitem(sys.modules, "lvsmon.alerts.render", fake)
    (error,) = _errors("emailalerttemplates=/x\n" + VIRTUAL)
    assert error.startswith("a.cf:1: emailalerttemplates: cannot check the template directory /x")


def test_real_renderer_reports_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nosuch"
    assert _errors(f"emailalerttemplates={missing}\n" + VIRTUAL) == [
        f"a.cf:1: emailalerttemplates: {missing}: not a directory"
    ]


def test_check_config_names_the_template_file_and_line(tmp_path: Path) -> None:
    """The issue's "a bad template -> check-config error with file:line", with the real renderer:
    the config's FILE:LINE, then the template's file:line."""
    templates = tmp_path / "mail"
    templates.mkdir()
    (templates / "subject.txt").write_text("{{ subject }}\n{% if %}\n")
    cf = tmp_path / "alerts.cf"
    cf.write_text(f"emailalert=ops@example.com\nemailalerttemplates={templates}\n" + VIRTUAL)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=True, out=out, err=err) == 2
    assert out.getvalue() == ""
    (line,) = err.getvalue().splitlines()
    assert line.startswith(f"{cf}:2: emailalerttemplates: {templates / 'subject.txt'}:2: ")


def test_an_undefined_variable_is_found_at_load(tmp_path: Path) -> None:
    templates = tmp_path / "mail"
    templates.mkdir()
    (templates / "single.txt").write_text("host {{ hostname }}\n{{ no_such_field }}\n")
    (error,) = _errors(f"emailalerttemplates={templates}\n" + VIRTUAL)
    assert error.startswith("a.cf:1: emailalerttemplates: ")
    assert "no_such_field" in error


def test_good_template_directory(tmp_path: Path) -> None:
    templates = tmp_path / "mail"
    templates.mkdir()
    (templates / "subject.txt").write_text("[alert] {{ subject }}\n")
    config = _parse(f"emailalerttemplates={templates}\n" + VIRTUAL)
    assert config.settings.emailalerttemplates == str(templates)


# -- check-config --json --------------------------------------------------------------------------


def test_json_shows_every_alert_setting_and_hides_the_password(tmp_path: Path) -> None:
    cf = tmp_path / "alerts.cf"
    cf.write_text(
        "emailalert=ops@example.com\n"
        "emailalertwindow=10\n"
        "emailalertrate=30\n"
        "smtp=[::1]:2525\n"
        "smtpuser=lvsmon\n"
        "smtppassword=hunter2\n"
        "smtptls=tls\n"
        "virtual=192.0.2.1:80\n"
        "\treal=192.0.2.2:80 gate\n"
        "\tsmtp=relay.example:587\n"
    )
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=True, out=out, err=err) == 0, err.getvalue()
    assert "hunter2" not in out.getvalue() + err.getvalue()
    data = json.loads(out.getvalue())
    g = data["global"]
    assert {k: g[k] for k in g if k.startswith(("smtp", "emailalert"))} == {
        "emailalert": ["ops@example.com"],
        "emailalertfreq": 0,
        "emailalertstatus": ["starting", "running", "stopping", "reloading"],
        "emailalertfrom": None,
        "smtp": "::1",
        "smtpport": 2525,
        "emailalertwindow": 10,
        "emailalertrate": 30,
        "emailalerttemplates": None,
        "smtpuser": "lvsmon",
        "smtppassword": REDACTED,
        "smtptls": "tls",
    }
    (v,) = data["virtuals"]
    assert (v["smtp"], v["smtpport"]) == ("relay.example", 587)


def test_redaction() -> None:
    assert "smtppassword" in SECRET_FIELDS
    assert redact("smtppassword", "x") == "***"
    assert redact("smtppassword", "") == ""  # unset still reads as unset
    assert redact("smtpuser", "lvsmon") == "lvsmon"
    assert config_to_dict(_parse(VIRTUAL))["global"]["smtppassword"] == ""
