"""lvsmon's sslverify, sslcafile, sslname and sslexpirywarn (issue 25, point 4): off by default,
global with per-virtual overrides, into every TLS check's spec; FILE:LINE errors (check-config
exit 2) for a bad mode or a CA file that cannot serve."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from lvsmon.config.tlssettings import NO_TLS, TlsCheck
from lvsmon.engine.jobs import build_plan
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:443\n\treal=192.0.2.2:443 gate\n\tservice=https\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=test CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(d / "ca.pem")


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert config.settings.tls is NO_TLS
    assert config.virtuals[0].tls is NO_TLS
    (job,) = build_plan(config).jobs
    assert (job.spec.sslverify, job.spec.sslcafile, job.spec.sslname) == ("no", "", "")
    assert job.spec.sslexpiry is False


def test_global_and_per_virtual(ca: str) -> None:
    config = _parse(
        f"sslverify = chain\nsslcafile = {ca}\nsslexpirywarn = 14\n"
        + VIRTUAL
        + VIRTUAL.replace(":443", ":8443")
        + "\tsslverify = NAME\n\tsslname = www.example.com\n\tsslexpirywarn = 0\n"
    )
    assert config.settings.tls == TlsCheck("chain", ca, "", 14)
    assert [v.tls for v in config.virtuals] == [
        TlsCheck("chain", ca, "", 14),
        TlsCheck("name", ca, "www.example.com", 0),
    ]
    specs = sorted((job.spec for job in build_plan(config).jobs), key=lambda s: s.port)
    assert [(s.sslverify, s.sslcafile, s.sslname, s.sslexpiry) for s in specs] == [
        ("chain", ca, "", True),
        ("name", ca, "www.example.com", False),
    ]


def test_bad_mode_is_file_line() -> None:
    assert _errors(VIRTUAL + "\tsslverify = yes\n") == [
        "a.cf:4: sslverify must be no, chain or name, not 'yes'"
    ]
    assert _errors("sslexpirywarn = -1\n" + VIRTUAL) == [
        "a.cf:1: invalid sslexpirywarn days: '-1' is not a number"
    ]


def test_cafile_must_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    assert _errors(f"sslcafile = {missing}\n" + VIRTUAL) == [
        f"a.cf:1: sslcafile {missing}: No such file or directory"
    ]
    assert _errors(VIRTUAL + f"\tsslcafile = {junk}\n") == [
        f"a.cf:4: sslcafile {junk}: no PEM certificate in it"
    ]
    assert _errors(VIRTUAL + "\tsslcafile = ca.pem\n") == [
        "a.cf:4: sslcafile must be an absolute path, not 'ca.pem'"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_cafile(ca: str, tmp_path: Path) -> None:
    locked = tmp_path / "locked.pem"
    locked.write_bytes(Path(ca).read_bytes())
    locked.chmod(0)
    assert _errors(f"sslcafile = {locked}\n" + VIRTUAL) == [
        f"a.cf:1: sslcafile {locked}: Permission denied"
    ]


def test_unreadable_cafile_as_a_directory(tmp_path: Path) -> None:
    """Root reads any file; a directory is unreadable as a file for root too."""
    assert _errors(f"sslcafile = {tmp_path}\n" + VIRTUAL) == [
        f"a.cf:1: sslcafile {tmp_path}: Is a directory"
    ]


def test_check_config_exit_2_one_line(tmp_path: Path) -> None:
    path = tmp_path / "l.cf"
    path.write_text(VIRTUAL + "\tsslverify = maybe\n" + f"\tsslcafile = {tmp_path}/none.pem\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=False, out=out, err=err) == 2
    assert err.getvalue().splitlines() == [
        f"{path}:4: sslverify must be no, chain or name, not 'maybe'",
        f"{path}:5: sslcafile {tmp_path}/none.pem: No such file or directory",
    ]


def test_settings_that_do_nothing_warn(ca: str) -> None:
    config = _parse(VIRTUAL + f"\tsslcafile = {ca}\n\tsslname = x.test\n")
    assert [str(w) for w in config.warnings] == [
        "a.cf:4: sslcafile has no effect with sslverify = no",
        "a.cf:5: sslname has no effect with sslverify = no",
    ]


def test_appended_global_line_serves_a_copy_of_a_shared_file() -> None:
    """compatibility.md: lvsmon's copy of a file shared with ldirectord, the line appended at
    the end (a global directive counts wherever it stands)."""
    shared = "checktimeout = 5\n" + VIRTUAL
    config = _parse(shared + "sslverify = chain\n")
    assert config.settings.tls.verify == "chain"
    assert config.virtuals[0].tls.verify == "chain"
