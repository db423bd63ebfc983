"""Every corpus configuration through `lvsmon check-config`, checked against its expected output."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lvsmon.cli.dispatch import main
from lvsmon.config.checkconf import check_config
from tests.config.corpus import CORPUS, Case, cases

CASES = cases()


def test_corpus_is_big_enough() -> None:
    assert sum(c.valid for c in CASES) >= 20
    assert sum(not c.valid for c in CASES) >= 20


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{'ok' if c.valid else 'bad'}-{c.name}" for c in CASES]
)
def test_check_config(case: Case) -> None:
    out, err = io.StringIO(), io.StringIO()
    shown = str(case.path)
    rc = check_config(shown, as_json=case.valid, out=out, err=err)
    assert err.getvalue().splitlines() == case.expected_err(shown)
    if case.valid:
        assert rc == 0
        assert json.loads(out.getvalue()) == case.expected_json(shown)
    else:
        assert rc == 2
        assert out.getvalue() == ""


def test_without_json_prints_nothing_on_stdout() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(CORPUS / "valid" / "minimal.cf"), as_json=False, out=out, err=err) == 0
    assert out.getvalue() == err.getvalue() == ""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsmon", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_subprocess_valid_json() -> None:
    case = next(c for c in CASES if c.name == "ipv6")
    proc = _run("check-config", "--json", "valid/ipv6.cf", cwd=CORPUS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout) == case.expected_json("valid/ipv6.cf")


def test_subprocess_errors_and_exit_code() -> None:
    case = next(c for c in CASES if c.name == "many_errors")
    proc = _run("-t", "invalid/many_errors.cf", cwd=CORPUS)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == case.expected_err("invalid/many_errors.cf")
    assert "Traceback" not in proc.stderr


def test_subprocess_binary_file() -> None:
    proc = _run("check-config", "invalid/binary.cf", cwd=CORPUS)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("target", ["/nonexistent/ldirectord.cf", "/tmp"])
def test_missing_file_or_directory_is_one_line(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", target]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{target}: cannot read configuration file: ")
    assert captured.out == ""


def test_example_configuration_is_valid() -> None:
    example = Path(__file__).parents[2] / "etc" / "ldirectord.cf.example"
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(example), as_json=True, out=out, err=err) == 0, err.getvalue()
    assert err.getvalue() == ""
    data = json.loads(out.getvalue())
    assert len(data["virtuals"]) >= 4
