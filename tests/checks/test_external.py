"""checktype=external and external-perl: real programs, real process groups."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from lvsmon.checks import CheckSpec, run_check


def script(tmp_path: Path, body: str, name: str = "check") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def spec(command: str, **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {
        "kind": "external",
        "host": "192.0.2.10",
        "port": 8080,
        "timeout": 5,
        "checkcommand": command,
        "vip": "198.51.100.1",
        "vport": 80,
        "rport": 8080,
    }
    fields.update(kw)
    return CheckSpec(**fields)


def gone_soon(pid: int, within_s: float = 5.0) -> bool:
    """SIGKILL is delivered when the process next runs: on a busy machine that takes a moment."""
    deadline = time.monotonic() + within_s
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for whoever inherited it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


async def test_exit_zero_is_up_and_args_are_ldirectords(tmp_path: Path) -> None:
    out = tmp_path / "args"
    command = script(tmp_path, f'printf "%s|" "$@" > {out}\necho all good\n')
    result = await run_check(spec(command))
    assert (result.ok, result.reason) == (True, "external: exit 0: all good")
    assert out.read_text() == "198.51.100.1|80|192.0.2.10|8080|"


async def test_ipv6_addresses_are_bracketed(tmp_path: Path) -> None:
    out = tmp_path / "args"
    command = script(tmp_path, f'printf "%s|" "$@" > {out}\n')
    result = await run_check(spec(command, vip="2001:db8::1", host="2001:db8::10"))
    assert result.ok
    assert out.read_text() == "[2001:db8::1]|80|[2001:db8::10]|8080|"


async def test_fwmark_virtual_passes_the_mark(tmp_path: Path) -> None:
    out = tmp_path / "args"
    command = script(tmp_path, f'printf "%s|" "$@" > {out}\n')
    assert (await run_check(spec(command, vip="100", vport=0, rport=0))).ok
    assert out.read_text() == "100|0|192.0.2.10|0|"


async def test_nonzero_exit_is_down_with_first_output_line(tmp_path: Path) -> None:
    command = script(tmp_path, 'echo "" ; echo "backend says no" >&2; echo second; exit 3\n')
    result = await run_check(spec(command))
    assert (result.ok, result.reason) == (False, "external: exit 3: backend says no")


async def test_no_output(tmp_path: Path) -> None:
    result = await run_check(spec(script(tmp_path, "exit 1\n")))
    assert (result.ok, result.reason) == (False, "external: exit 1")


async def test_killed_by_signal(tmp_path: Path) -> None:
    result = await run_check(spec(script(tmp_path, "kill -TERM $$\n")))
    assert (result.ok, result.reason) == (False, "external: killed by SIGTERM")


async def test_missing_command() -> None:
    result = await run_check(spec("/nonexistent/check"))
    assert not result.ok
    assert result.reason == "external: cannot execute /nonexistent/check: No such file or directory"


async def test_not_executable(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_text("exit 0\n")
    result = await run_check(spec(str(path)))
    assert not result.ok and result.reason.endswith("Permission denied")


async def test_deadline_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the command starts a child that outlives it unless the group is killed, then hangs itself
    command = script(tmp_path, f"sleep 600 &\necho $$ $! > {pids}\nsleep 600\n")
    result = await run_check(spec(command, timeout=0.5))
    assert (result.ok, result.reason) == (False, "timeout after 0.5s during external")
    shell, child = (int(p) for p in pids.read_text().split())
    assert gone_soon(shell)
    assert gone_soon(child)


async def test_leftover_children_are_killed_after_exit(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # exits at once but leaves a child holding stdout open
    command = script(tmp_path, f"sleep 600 &\necho $! > {pids}\necho started\nexit 0\n")
    result = await run_check(spec(command))
    assert (result.ok, result.reason) == (True, "external: exit 0: started")
    assert gone_soon(int(pids.read_text()))


perl = pytest.mark.skipif(shutil.which("perl") is None, reason="perl not installed")


@perl
async def test_external_perl_exit_and_args(tmp_path: Path) -> None:
    path = tmp_path / "check.pl"
    path.write_text('print join("|", @ARGV), "\\n"; exit($ARGV[1] == 80 ? 0 : 2);\n')
    result = await run_check(spec(str(path), kind="external-perl"))
    assert result.ok
    assert result.reason == "external-perl: exit 0: 198.51.100.1|80|192.0.2.10|8080"
    result = await run_check(spec(str(path), kind="external-perl", vport=81))
    assert (result.ok, result.reason[:23]) == (False, "external-perl: exit 2: ")


@perl
async def test_external_perl_die_is_down(tmp_path: Path) -> None:
    path = tmp_path / "check.pl"
    path.write_text('die "backend gone\\n";\n')
    result = await run_check(spec(str(path), kind="external-perl"))
    assert (result.ok, result.reason) == (False, "external-perl: exit 255: backend gone")


@perl
async def test_external_perl_edits_take_effect(tmp_path: Path) -> None:
    path = tmp_path / "check.pl"
    path.write_text("exit 1;\n")
    assert not (await run_check(spec(str(path), kind="external-perl"))).ok
    path.write_text("exit 0;\n")
    assert (await run_check(spec(str(path), kind="external-perl"))).ok


def test_no_process_leaks() -> None:
    # the tests above must have reaped everything they started
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_our_zombie(int(p))]


def _is_our_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] == "Z" and int(fields[1]) == os.getpid()
