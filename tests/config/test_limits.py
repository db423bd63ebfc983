"""check-config on hostile input: every problem is one FILE:LINE line and exit 2, never a
traceback, a hang or memory exhaustion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lvsmon.cli import main


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsmon", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _errors(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.splitlines()


# -- receive regexes ----------------------------------------------------------------------------

BAD_RECEIVES = """\
virtual=127.0.0.1:80
\treal=127.0.0.2:80 gate
\tservice=http
\treceive="(?:(?:a{1000}){1000}){1000}"
virtual=127.0.0.1:81
\tservice=http
\treal=127.0.0.2:80 gate 1 "/", "(unclosed"
virtual=127.0.0.1:82
\tservice=http
\treal=127.0.0.3:80 gate
\treceive="NESTED"
"""


def test_unusable_receive_regexes_name_their_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cf = tmp_path / "receive.cf"
    cf.write_text(BAD_RECEIVES.replace("NESTED", "(" * 2000 + "a" + ")" * 2000))
    lines = _errors(cf, capsys)
    assert [line.split(": ", 1)[0] for line in lines] == [f"{cf}:4", f"{cf}:7", f"{cf}:11"]
    assert all(": receive regex " in line and " is not usable: " in line for line in lines)
    assert all(len(line) < 300 for line in lines)  # the pattern is shortened, not repeated whole


def test_deep_receive_regex_is_no_traceback(tmp_path: Path) -> None:
    cf = tmp_path / "deep.cf"
    deep = "(" * 2000 + "a" + ")" * 2000
    cf.write_text(f'virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\treceive="{deep}"\n')
    proc = _run("check-config", str(cf))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"{cf}:3: receive regex {'(' * 60!r}... is not usable: groups nested 2000 deep "
        "(at most 100)".replace("'...", "...'")
    ]
