"""Issue 21, class 5, on the real kernel (run in the VM by tests/vm/run): a start that cannot
bind its control socket or its --listen address fails with one line and leaves the table it
would adopt exactly as it was (never purged, never re-programmed), checked with the real
ipvsadm. A normal start and stop over the same table is the control case.

The table is programmed by hand to look like what a previous daemon on this config left behind
(cleanstop=no, a crash): one service, two direct-routing reals, one of them with a weight the
config does not give it, so even a re-programming would show."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

VIRTUAL = "10.0.0.1:80"
REALS = ["10.0.0.2:80", "10.0.0.3:80"]
TIMEOUT = 600  # under TCG one lvsmon process takes seconds, a start ~40 s or more


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


def table() -> dict[str, str]:
    """What the kernel shows, every way ipvsadm shows it."""
    return {
        "-Ln": ipvsadm("-Ln"),
        "-Ln --persistent-conn": ipvsadm("-Ln", "--persistent-conn"),
        "-Sn": ipvsadm("-Sn"),
    }


def lvsmon(cf: Path, pid: Path, word: str, *opts: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "lvsmon", "--backend", "netlink", "--pid-file", str(pid)]
    return subprocess.run(
        [*cmd, *opts, str(cf), word],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "LVSMON_RESOLVER": "files"},
        check=False,
    )


@pytest.fixture
def adopted(tmp_path: Path) -> Iterator[Path]:
    """The config, over a kernel table that matches it but for one weight."""
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        pytest.fail("kernel tests need root and IPVS: run them with tests/vm/run")
    ipvsadm("-C")
    ipvsadm("-A", "-t", VIRTUAL, "-s", "wrr", "-p", "300")
    ipvsadm("-a", "-t", VIRTUAL, "-r", REALS[0], "-g", "-w", "1")
    ipvsadm("-a", "-t", VIRTUAL, "-r", REALS[1], "-g", "-w", "3")
    cf = tmp_path / "lb.cf"
    cf.write_text(
        f'checkinterval=1\nchecktimeout=3\nlogfile="{tmp_path / "lb.log"}"\n'
        f"virtual={VIRTUAL}\n"
        + "".join(f"\treal={r} gate 1\n" for r in REALS)
        + "\tchecktype=on\n\tscheduler=wrr\n\tpersistent=300\n\tprotocol=tcp\n"
    )
    yield cf
    ipvsadm("-C")


def assert_failed_with_one_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode != 0, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0], lines[0]


def test_a_start_whose_socket_path_is_too_long_leaves_the_table_untouched(
    adopted: Path, tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    before = table()
    done = lvsmon(adopted, deep / "lb.pid", "start")
    assert table() == before  # first: the table is the point
    assert_failed_with_one_line(done, "cannot bind the control socket")
    assert str(deep / "lb.sock") in done.stderr
    assert not (deep / "lb.pid").exists()


def test_a_start_whose_listen_port_is_taken_leaves_the_table_untouched(
    adopted: Path, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        before = table()
        done = lvsmon(adopted, tmp_path / "lb.pid", "start", "--listen", f"127.0.0.1:{port}")
        assert table() == before
        assert_failed_with_one_line(done, f"cannot listen on 127.0.0.1:{port}")
    assert not (tmp_path / "lb.pid").exists()


def test_a_start_that_can_bind_adopts_and_a_stop_purges(adopted: Path, tmp_path: Path) -> None:
    """The control case: the same table, a start that can bind, then stop (cleanstop=yes)."""
    pid = tmp_path / "lb.pid"
    done = lvsmon(adopted, pid, "start")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    try:
        assert pid.exists()
        listed = ipvsadm("-Ln")
        assert f"TCP  {VIRTUAL} wrr persistent 300" in listed, listed
        for real in REALS:  # both at the configured weight now
            assert any(
                line.split()[1:4] == [real, "Route", "1"]
                for line in listed.splitlines()
                if line.strip().startswith("->")
            ), listed
    finally:
        stopped = lvsmon(adopted, pid, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert VIRTUAL not in ipvsadm("-Ln")
