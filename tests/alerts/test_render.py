"""Rendering: ldirectord's body fields by default, template directories replacing the shipped
templates file by file, template faults found for check-config and never losing a mail."""

from __future__ import annotations

import logging
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from lvsmon.alerts.changes import reminder_of
from lvsmon.alerts.policy import Mail
from lvsmon.alerts.render import TEMPLATES, render, template_errors

from .helpers import cfg, quiesce, restore, svc

CONFIG = cfg(
    """
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    \treal=10.0.0.3:80 gate
    virtual=10.0.0.5:80
    \treal=10.0.0.6:80 gate
    \tservicename=web
    \tcomment=the shop
    """
)
TO = ("ops@example.com",)
Q2 = "Quiescent real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 0)"


def single(held_back: int = 0) -> Mail:
    return Mail(TO, Q2, (quiesce(CONFIG, "10.0.0.2"),), held_back, "running")


def test_single_body_is_ldirectords() -> None:
    subject, body = render(single(), CONFIG, "director1")
    assert subject == Q2
    assert body == f"ldirectord host: director1\nLog-Message: {Q2}\nDaemon-Status: running\n"


def test_single_body_with_service_name_and_comment() -> None:
    """ldirectord: the fields, then "\\n" + "Service name: ...\\nComment: ...\\n" + "\\n"."""
    change = quiesce(CONFIG, "10.0.0.6", "10.0.0.5")
    subject = "[web] " + change.subject
    _, body = render(Mail(TO, subject, (change,), 0, "starting"), CONFIG, "director1")
    assert body == (
        "ldirectord host: director1\n"
        f"Log-Message: {subject}\n"
        "Daemon-Status: starting\n"
        "\n"
        "Service name: web\n"
        "Comment: the shop\n"
        "\n"
    )


def test_single_held_back_says_so() -> None:
    _, body = render(single(held_back=1), CONFIG, "director1")
    assert "Held-Back: 1 mail(s) delayed by the rate limit\n" in body


def test_digest_lists_every_change() -> None:
    changes = (
        quiesce(CONFIG, "10.0.0.2"),
        restore(CONFIG, "10.0.0.3"),
        reminder_of(svc("10.0.0.5"), "10.0.0.6:80", "10.0.0.5:80", 0.0),
    )
    subject = "[lvsmon] 1 real server down, 1 restored, 1 still down on director1"
    mail = Mail(TO, subject, changes, 2, "running")
    got_subject, body = render(mail, CONFIG, "director1")
    assert got_subject == subject
    assert body == (
        "ldirectord host: director1\n"
        f"Log-Message: {subject}\n"
        "Daemon-Status: running\n"
        "Held-Back: 2 mail(s) delayed by the rate limit; all their changes are below\n"
        "\n"
        f"{Q2}\n"
        "Restored real server: 10.0.0.3:80 (10.0.0.1:80) (Weight set to 1)\n"
        "[web] Inaccessible real server: 10.0.0.6:80 (10.0.0.5:80)\n"
    )


def test_without_config_no_service_details() -> None:
    change = quiesce(CONFIG, "10.0.0.6", "10.0.0.5")
    _, body = render(Mail(TO, change.subject, (change,), 0, "running"), None, "h")
    assert "Service name" not in body


def test_directory_replaces_templates_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "single.txt").write_text(
        "{{ hostname }}: {{ changes[0].kind }} {{ changes[0].real }} in {{ changes[0].virtual }}\n"
    )
    (tmp_path / "subject.txt").write_text("ALERT\n{{ subject }}\r\nBcc: evil@example.com\n")
    subject, body = render(single(), CONFIG, "director1", str(tmp_path))
    assert body == "director1: down 10.0.0.2:80 in 10.0.0.1:80\n"
    assert subject == f"ALERT {Q2} Bcc: evil@example.com"  # one line: no header injection
    digest = Mail(TO, "x", (quiesce(CONFIG, "10.0.0.2"), quiesce(CONFIG, "10.0.0.3")), 0, "running")
    _, body = render(digest, CONFIG, "director1", str(tmp_path))
    assert body.startswith("ldirectord host: director1\n")  # the shipped digest.txt


def test_a_template_failing_at_send_time_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "single.txt").write_text("line one\n{{ no_such_variable }}\n")
    with caplog.at_level(logging.ERROR, logger="lvsmon"):
        subject, body = render(single(), CONFIG, "director1", str(tmp_path))
    assert subject == Q2
    assert body.startswith("ldirectord host: director1\n")
    assert f"{tmp_path / 'single.txt'}:2: UndefinedError" in caplog.text


def test_template_errors_clean(tmp_path: Path) -> None:
    for name in TEMPLATES:
        shipped = resources.files("lvsmon.alerts").joinpath("templates", name).read_text()
        (tmp_path / name).write_text(shipped)
    assert template_errors(str(tmp_path)) == []


def test_template_errors_missing_or_empty_directory(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    assert template_errors(missing) == [f"{missing}: not a directory"]
    (tmp_path / "README").write_text("x")
    (errors,) = template_errors(str(tmp_path))
    assert "none of subject.txt, single.txt, digest.txt" in errors


def test_template_errors_syntax_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.txt").write_text("ok\n\n{% for c in changes %}\n{{ c.subject }\n")
    (tmp_path / "single.txt").write_text("{% if %}\n")
    errors = template_errors(str(tmp_path))
    assert [e.split(": ", 1)[0] for e in errors] == [
        f"{tmp_path / 'digest.txt'}:4",
        f"{tmp_path / 'single.txt'}:1",
    ]


def test_template_errors_undefined_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "digest.txt").write_text(
        "{% for c in changes %}\n{{ c.subject }}\n{% if held_back %}\n{{ c.weight }}\n"
        "{% endif %}\n{% endfor %}\n"
    )
    (errors,) = template_errors(str(tmp_path))
    assert errors.startswith(f"{tmp_path / 'digest.txt'}:4: UndefinedError: ")
    assert "weight" in errors


def test_templates_ship_with_the_package() -> None:
    files = resources.files("lvsmon.alerts").joinpath("templates")
    assert {name for name in TEMPLATES if files.joinpath(name).is_file()} == set(TEMPLATES)
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())
    assert "alerts/templates/*.txt" in data["tool"]["setuptools"]["package-data"]["lvsmon"]


def test_the_sample_config_is_what_its_text_parses_to() -> None:
    """check-config renders templates against a sample built from the model (the config package
    must not be imported back by alerts): it is the virtual the text below parses to."""
    from lvsmon.alerts.render import _sample_config
    from lvsmon.config.load import parse_config

    parsed = parse_config(
        "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n\tchecktype=on\n"
        "\tservicename=sample\n\tcomment=a sample\n",
        "sample.cf",
    )
    built = _sample_config()
    assert built.virtuals == parsed.virtuals
    assert built.settings == parsed.settings


def test_a_daemon_that_sends_no_mail_does_not_import_jinja2_or_aiosmtplib() -> None:
    # Jinja2's modules are 1.8 MiB of RSS and aiosmtplib's 0.8 (issue 22: memory against
    # keepalived): the daemon imports them on the first mail or template check only
    code = (
        "import sys, lvsmon.daemon.daemon, lvsmon.cli.dispatch\n"
        "assert 'jinja2' not in sys.modules, 'jinja2 imported at start'\n"
        "assert 'aiosmtplib' not in sys.modules, 'aiosmtplib imported at start'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
