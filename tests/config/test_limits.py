"""check-config on hostile input: every problem is one FILE:LINE line and exit 2, never a
traceback, a hang or memory exhaustion."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lvsmon.checks import CheckSpec
from lvsmon.cli.dispatch import main
from lvsmon.config import load_config
from lvsmon.config.checkconf import check_config
from lvsmon.config.dump import REDACTED, SECRET_FIELDS, redact
from lvsmon.config.lexer import MAX_FILE_BYTES
from lvsmon.config.load import read_config_bytes
from lvsmon.config.values import MAX_DIGITS
from lvsmon.engine.jobs import build_plan


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


# -- the file itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/dev/zero", "not a regular file (a character device)"),
        ("/dev/null", "not a regular file (a character device)"),
    ],
)
def test_devices_are_refused_before_reading(target: str, reason: str) -> None:
    proc = _run("check-config", target, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"{target}: cannot read configuration file: {reason}"]


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "ldirectord.cf"
    os.mkfifo(fifo)
    proc = _run("check-config", str(fifo), timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{fifo}: cannot read configuration file: not a regular file (a FIFO)"
    ]


def test_a_socket_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.cf"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert _errors(path, capsys) == [
            f"{path}: cannot read configuration file: not a regular file (a socket)"
        ]


def test_a_file_over_the_limit_is_not_read_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.cf"
    with big.open("wb") as f:
        f.truncate(1 << 40)  # sparse: a terabyte of NULs that would never fit in memory
    assert _errors(big, capsys) == [f"{big}: file is larger than {MAX_FILE_BYTES} bytes"]


def test_a_file_at_the_limit_is_read(tmp_path: Path) -> None:
    cf = tmp_path / "padded.cf"
    body = b"virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n"
    cf.write_bytes(body + b"#" * (MAX_FILE_BYTES - len(body)))
    assert read_config_bytes(str(cf)) == cf.read_bytes()


# -- numbers ------------------------------------------------------------------------------------

HUGE = "9" * 5000

# (config with NUMBER in it, the line of the expected error)
NUMBER_PLACES = [
    ("checkinterval=NUMBER\n", 1),
    ("checktimeout=NUMBER\n", 1),
    ("failurecount=NUMBER\n", 1),
    ("emailalertfreq=NUMBER\n", 1),
    ("virtual=127.0.0.1:NUMBER\n\treal=127.0.0.2:80 gate\n", 1),
    ("virtual=NUMBER\n\treal=127.0.0.2:80 gate\n", 1),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:NUMBER gate\n", 2),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate NUMBER\n", 2),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate 1 l:NUMBER\n", 2),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate 1 u:NUMBER\n", 2),
    ("virtual=127.0.0.1:80\n\treal=NUMBER:80 gate\n", 2),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2->NUMBER:80 gate\n", 2),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\tcheckport=NUMBER\n", 3),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\tchecktype=NUMBER\n", 3),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\tpersistent=NUMBER\n", 3),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\tnetmask=NUMBER.0.0.0\n", 3),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\tcheckcount=NUMBER\n", 3),
    ("virtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n\tfallback=127.0.0.9:NUMBER\n", 3),
    ("virtual6=[::1]:80\n\treal6=[::2]:80 gate\n\tpersistent=9\n\tnetmask=NUMBER\n", 4),
]


@pytest.mark.parametrize(("text", "line"), NUMBER_PLACES)
def test_a_5000_digit_number_is_one_error_line(
    text: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cf = tmp_path / "numbers.cf"
    cf.write_text(text.replace("NUMBER", HUGE))
    lines = _errors(cf, capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{cf}:{line}: ")
    assert len(lines[0]) < len(str(cf)) + 200


@pytest.mark.parametrize("digits", ["0" * 5000 + "10", "1" + "0" * 17])
def test_long_but_small_or_18_digit_numbers_are_read(digits: str, tmp_path: Path) -> None:
    out = io.StringIO()
    cf = tmp_path / "ok.cf"
    cf.write_text(f"checkinterval={digits}\nvirtual=127.0.0.1:80\n\treal=127.0.0.2:80 gate\n")
    assert check_config(str(cf), as_json=True, out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue())["global"]["checkinterval"] == int(digits.lstrip("0"))


def test_a_5000_digit_number_through_the_command_is_no_traceback(tmp_path: Path) -> None:
    cf = tmp_path / "n.cf"
    cf.write_text(f"checkinterval={HUGE}\n")
    proc = _run("check-config", str(cf))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{cf}:1: invalid check interval: {'9' * 24}... has more than {MAX_DIGITS} digits"
    ]


# -- a reader that leaves early -----------------------------------------------------------------


def _closed_early(args: list[str], *, merge: bool = False) -> tuple[int, str]:
    """Run lvsmon, read one line of its output, close the pipe; its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lvsmon", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge else subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    rc = proc.wait(timeout=60)
    err = b"" if proc.stderr is None else proc.stderr.read()
    if proc.stderr is not None:
        proc.stderr.close()
    return rc, err.decode()


def _big_valid(tmp_path: Path) -> Path:
    cf = tmp_path / "big.cf"
    reals = "".join(f"\treal=10.0.{i // 250}.{i % 250 + 1}:80 gate\n" for i in range(3000))
    cf.write_text("virtual=127.0.0.1:80\n" + reals)
    return cf  # its JSON is far more than a pipe holds


def test_json_to_a_reader_that_leaves_early_is_quiet(tmp_path: Path) -> None:
    rc, err = _closed_early(["check-config", "--json", str(_big_valid(tmp_path))])
    assert (rc, err) == (0, "")


def test_errors_to_a_reader_that_leaves_early_keep_the_verdict(tmp_path: Path) -> None:
    cf = tmp_path / "errors.cf"
    cf.write_text("".join(f"bogus{i}=1\n" for i in range(5000)))
    rc, err = _closed_early(["check-config", str(cf)], merge=True)
    assert (rc, err) == (2, "")


# -- secrets --------------------------------------------------------------------------------------

SECRETS = """\
virtual=127.0.0.1:3306
\treal=127.0.0.2:3306 gate
\tservice=mysql
\tchecktype=connect
\tlogin="monitor"
\tpasswd="pa55-Word-xyzzy"
\tdatabase="health"
virtual=127.0.0.1:1812
\tprotocol=udp
\treal=127.0.0.2:1812 gate
\tservice=radius
\tchecktype=connect
\tsecret="radius-Secret-plugh"
virtual=127.0.0.1:80
\treal=127.0.0.2:80 gate
\tservice=http
"""


def test_secrets_never_appear_in_the_json(tmp_path: Path) -> None:
    cf = tmp_path / "secrets.cf"
    cf.write_text(SECRETS)
    proc = _run("check-config", "--json", str(cf))
    assert proc.returncode == 0, proc.stderr
    for secret in ("pa55-Word-xyzzy", "radius-Secret-plugh", "xyzzy", "plugh"):
        assert secret not in proc.stdout
    virtuals = json.loads(proc.stdout)["virtuals"]
    shown = [(v["login"], v["passwd"], v["database"], v["secret"]) for v in virtuals]
    assert shown == [("monitor", "***", "health", ""), ("", "", "", "***"), ("", "", "", "")]


def test_redact() -> None:
    assert redact("passwd", "x") == redact("secret", "y") == REDACTED == "***"
    assert redact("passwd", "") == redact("secret", "") == ""
    assert redact("login", "monitor") == "monitor"
    assert {"passwd", "secret"} <= SECRET_FIELDS


def test_secrets_are_not_in_reprs(tmp_path: Path) -> None:
    cf = tmp_path / "secrets.cf"
    cf.write_text(SECRETS)
    config = load_config(str(cf))
    plan = build_plan(config)
    spec = CheckSpec(kind="negotiate", host="127.0.0.2", port=1, timeout=1, passwd="xyzzy")
    text = repr(config) + repr(plan) + repr(spec)
    assert "xyzzy" not in text and "plugh" not in text
    assert config.virtuals[0].passwd == "pa55-Word-xyzzy"  # still there for the check itself
