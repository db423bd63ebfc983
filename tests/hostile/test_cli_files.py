"""Issue 21, class 7, for the command line: the files `lvsmon status`, `stop`, `reload`,
`verify-table` and `purge` read (the pid file, its lock file, the status file) are read like the
config. A FIFO at the pid file's name never blocks a command (it is no pid: a stale or unknown
pid file in ldirectord's words); a status file that parses but is not one a daemon wrote (any
JSON value in place of any field, a field missing, huge numbers, lists for objects) is one line
on stderr, "lvsmon: status file PATH is malformed: ...", and the command's exit code for no
status, never a traceback."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon.cli import table
from lvsmon.cli.control import Control
from lvsmon.daemon import pidfile
from lvsmon.engine.status import MalformedStatus, load_status, render_status
from tests.helpers import lvsmon

TIMEOUT = 15.0  # a FIFO blocked the command forever before: this only bounds a hung test

BASE: dict[str, Any] = {
    "pid": 0,  # the lock holder's, set by the fixture
    "started_at": 1_700_000_000.5,
    "phase": "running",
    "config": "/etc/ha.d/lb.cf",
    "backend": "memory",
    "virtuals": [
        {
            "name": "127.0.0.100:80",
            "key": "tcp:127.0.0.100:80",
            "file": "/etc/ha.d/lb.cf",
            "line": 3,
            "depool_limited": False,
            "reals": [
                {
                    "address": "127.0.0.1",
                    "port": 8080,
                    "state": "up",
                    "drained": False,
                    "kept_by_threshold": False,
                    "checked": True,
                    "failcount": 0,
                    "reason": "http: 200",
                    "rising": None,
                    "held_until": None,
                    "kernel_weight": 1,
                    "weight": 1,
                    "steering": {
                        "caps": {"ramp": 3, "agent": 5},
                        "ramp": "3/10",
                        "ramp_until": 1_700_000_200.0,
                    },
                    "agent": "weight 5/10",
                },
                {
                    "address": "2001:db8::5",
                    "port": 80,
                    "state": "down",
                    "drained": True,
                    "kept_by_threshold": True,
                    "checked": True,
                    "failcount": 3,
                    "reason": "connect: refused",
                    "rising": "1/3",
                    "held_until": 1_700_000_100.0,
                    "kernel_weight": None,
                    "weight": 1,
                    "steering": None,
                    "agent": "down: disk full",
                },
            ],
        }
    ],
    "stats": {
        "jobs": 2,
        "checks_started": 10,
        "checks_done": 9,
        "checks_failed": 3,
        "checks_unknown": 1,
        "checks_untrusted": 0,
        "loop_lag_ms": 1.5,
        "checks_running": 1,
        "slots_skipped": 0,
        "slots_deferred": 0,
        "admission_window": 1024,
        "lateness_ms": {"p50": 0.1, "p99": 2.0, "max": 3.0},
        "reconciles": 1,
        "resyncs": 4,
        "ops_applied": 3,
        "ops_failed": 0,
        "drift_repairs": 0,
        "retry_pending": False,
        "events_published": 5,
        "events_dropped": 0,
    },
    "table": {"tcp:127.0.0.100:80": "0123456789abcdef0123456789abcdef", "fwm:7": "absent"},
    "resync_s": 5.0,
    "sync": [
        {"state": "master", "wanted": "master eth0 id 1", "running": "master eth0", "error": None},
        {"state": "backup", "wanted": "backup eth0 id 1", "running": None, "error": "EPERM"},
    ],
}

Path_ = tuple[str | int, ...]


def paths(value: object, at: Path_ = ()) -> Iterator[Path_]:
    """Every field of `value`, by its path of keys and indexes (the whole status is ())."""
    yield at
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, (*at, i))


FIELDS = [p for p in paths(BASE) if p]

HUGE = ["1" + "0" * 400, "-1e400", "1e308", "Infinity", "-Infinity", "NaN", "9" * 4000]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["up", "memory", "running", "absent", ""]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)

DELETE = object()
# what goes in place of a field: any JSON value, a huge or special number, or nothing at all
replacements = json_values | st.sampled_from(HUGE).map(lambda t: json.loads(t)) | st.just(DELETE)
edits = st.lists(st.tuples(st.sampled_from(FIELDS), replacements), min_size=1, max_size=3)


def edited(edits: list[tuple[Path_, object]]) -> dict[str, Any]:
    status = copy.deepcopy(BASE)
    for path, value in edits:
        parent: Any = status
        try:
            for step in path[:-1]:
                parent = parent[step]
            if value is DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this field's parent
    return status


@dataclass
class Running:
    """A pid file whose lock this test process holds: to the commands, a running daemon."""

    control: Control
    status_path: Path
    pid: int

    def write(self, text: str | bytes) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_bytes(text.encode() if isinstance(text, str) else text)
        os.replace(tmp, self.status_path)


HOLDER = (
    "import sys, time\n"
    "from lvsmon.daemon import pidfile\n"
    "fd = pidfile.acquire(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(1000)\n"
)


@contextlib.contextmanager
def locked(pid_path: Path) -> Iterator[int]:
    """Another process holding the lock of `pid_path`, as the daemon does (a process never
    conflicts with its own lock: F_GETLK in the holder says free); yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(pid_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    where = tmp_path_factory.mktemp("running")
    pid_path = where / "lb.pid"
    with locked(pid_path) as pid:
        pidfile.write_pid(str(pid_path), pid)
        BASE["pid"] = pid
        control = Control(str(where / "lb.cf"), "lb.cf", backend="memory", pid_file=str(pid_path))
        yield Running(control, Path(control.status_path), pid)


def run(fn: Any, *args: Any) -> tuple[Any, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn(*args)
    return rc, out.getvalue(), err.getvalue()


def assert_one_malformed_line_at_most(err: str, path: Path) -> bool:
    said = [line for line in err.splitlines() if "is malformed" in line]
    assert len(said) <= 1, err
    for line in said:
        assert line.startswith(f"lvsmon: status file {path} is malformed: "), line
        assert line.isprintable()
    return bool(said)


# ---- the status file: any value in any field --------------------------------------------

PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_the_base_status_is_well_formed(running: Running) -> None:
    running.write(json.dumps(BASE))
    rc, out, err = run(running.control.status)
    assert rc == 0 and "is malformed" not in err
    assert "[2001:db8::5]:80" in out and "down drained kept in by depool threshold" in out
    assert "sync backup: FAILED: EPERM" in out
    rc, out, err = run(table.verify_table, running.control, 0.0)
    assert (rc, err) == (0, "")
    assert table._purge_names(running.control) == set(BASE["table"])


@PROPERTY
@given(edits=edits)
def test_lvsmon_status_of_a_hostile_status_file(running: Running, edits: Any) -> None:
    status = edited(edits)
    running.write(json.dumps(status))
    rc, out, err = run(running.control.status)
    assert rc == 0  # running; a status file that is no status changes nothing of that
    lines = err.splitlines()
    assert lines[0] == f"lvsmon for {running.control.config_arg} is running with pid: {running.pid}"
    if assert_one_malformed_line_at_most(err, running.status_path):
        assert out == "" and len(lines) == 2
    else:
        assert len(lines) == 1 and all(line.isprintable() for line in out.splitlines())


@PROPERTY
@given(edits=edits)
def test_verify_table_and_purge_of_a_hostile_status_file(running: Running, edits: Any) -> None:
    running.write(json.dumps(edited(edits)))
    rc, out, err = run(table.verify_table, running.control, 0.0)
    assert rc in (0, 1)
    assert_one_malformed_line_at_most(err, running.status_path)
    assert all(line.startswith("lvsmon: ") and line.isprintable() for line in err.splitlines())
    if rc == 0:
        assert err == "" and out.startswith(("status file fresh", "kernel table matches"))
    names, _, err = run(table._purge_names, running.control)
    assert isinstance(names, set) and all(isinstance(n, str) for n in names)
    assert_one_malformed_line_at_most(err, running.status_path)


@settings(max_examples=300, deadline=None)
@given(status=st.dictionaries(st.text(max_size=10), json_values, max_size=6) | json_values)
def test_render_status_is_total(status: Any) -> None:
    """Anything JSON at all: rendered, or MalformedStatus; no KeyError, TypeError, ..."""
    candidates: list[Any] = [
        status,
        *({**BASE, key: status} for key in ("virtuals", "stats", "bgp", "arp_conflicts", "probes")),
    ]
    for candidate in candidates:
        try:
            text = render_status(candidate)
        except MalformedStatus as exc:
            assert str(exc).isprintable()
        else:
            assert all(line.isprintable() for line in text.split("\n"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '"running"',
        "null",
        "[" * 100_000 + "]" * 100_000,
        '{"virtuals": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"resync_s": ' + "9" * 5000 + "}",
        '{"phase": "running", "virtuals": [{"name": "v", "reals": [{"port": 1}]}]}',
        '{"virtuals": [{"name": "v", "reals": [{"address": "a", "port": 1, "state": "up",'
        ' "kernel_weight": 1, "reason": "", "held_until": 1e300}]}]}',
        b'{"phase": "\xff"}',
    ],
)
def test_status_files_that_are_no_status(running: Running, text: str | bytes) -> None:
    running.write(text)
    with pytest.raises(MalformedStatus):
        load_status(str(running.status_path))
    rc, out, err = run(running.control.status)
    assert rc == 0 and out == "" and assert_one_malformed_line_at_most(err, running.status_path)
    rc, out, err = run(table.verify_table, running.control, 0.0)
    assert rc == 1 and assert_one_malformed_line_at_most(err, running.status_path)


def test_a_status_file_that_is_a_fifo_or_a_directory(running: Running) -> None:
    running.status_path.unlink(missing_ok=True)
    os.mkfifo(running.status_path)
    try:
        rc, out, err = run(running.control.status)  # never blocks: opened O_NONBLOCK
        assert rc == 0 and out == ""
        assert err.splitlines()[1] == (
            f"lvsmon: status file {running.status_path} is malformed: not a regular file"
        )
        assert run(table.verify_table, running.control, 0.0)[0] == 1
    finally:
        running.status_path.unlink()
    # none at all: no line, as before
    rc, out, err = run(running.control.status)
    assert rc == 0 and out == "" and len(err.splitlines()) == 1


# ---- the pid file and its lock file: a FIFO blocks nothing --------------------------------


def commands(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    cf = tmp_path / "lb.cf"
    cf.write_text("virtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq\n\tchecktype=on\n")
    env = {"LVSMON_BACKEND": "memory", "LVSMON_PIDFILE": str(tmp_path / "lb.pid")}
    done = lvsmon(str(cf), *args, env=env, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr


def test_status_with_a_fifo_for_the_pid_file(tmp_path: Path) -> None:
    pid = tmp_path / "lb.pid"
    os.mkfifo(pid)
    cf = tmp_path / "lb.cf"
    # no daemon: ldirectord's stale pid file (status 1, the OCF agent's "not running")
    assert commands(tmp_path, "status") == (
        1,
        f"lvsmon is stopped for {cf}\n",
        f"lvsmon stale pid file {pid} for {cf}\n",
    )
    assert commands(tmp_path, "verify-table")[0] == 1
    # and a FIFO as the lock file too: nothing holds it, nothing blocks
    os.mkfifo(f"{pid}.lock")
    assert commands(tmp_path, "status")[0] == 1


def test_stop_and_reload_with_a_fifo_for_the_pid_file(tmp_path: Path) -> None:
    pid = tmp_path / "lb.pid"
    os.mkfifo(pid)
    assert commands(tmp_path, "stop") == (0, "", "")  # not running: stopped already
    assert commands(tmp_path, "try-restart") == (0, "", "")
    assert commands(tmp_path, "reload")[0] == 1
    assert commands(tmp_path, "purge")[0] == 0
    os.mkfifo(f"{pid}.lock")
    assert commands(tmp_path, "stop") == (0, "", "")


def test_a_fifo_for_the_pid_file_of_a_running_daemon(tmp_path: Path) -> None:
    """The lock names the daemon: status says running (the kernel's pid), though no pid file
    can be read."""
    pid = tmp_path / "lb.pid"
    with locked(pid) as holder:
        os.mkfifo(pid)
        rc, _, err = commands(tmp_path, "status")
        assert (rc, err) == (0, f"lvsmon for {tmp_path / 'lb.cf'} is running with pid: {holder}\n")
        rc, _, err = commands(tmp_path, "--verify-wait", "0", "verify-table")
        assert rc == 1 and "no readable status file" in err


@pytest.mark.parametrize("content", ["", "x\n", "99999999999999999999999\n", "1" * 100_000])
def test_a_pid_file_that_is_no_pid(tmp_path: Path, content: str) -> None:
    (tmp_path / "lb.pid").write_text(content)
    assert pidfile.read_pid(str(tmp_path / "lb.pid")) is None
    rc, _, err = commands(tmp_path, "status")
    assert rc == 1 and "stale pid file" in err
    assert commands(tmp_path, "stop") == (0, "", "")


def test_read_pid_of_a_directory_and_a_device(tmp_path: Path) -> None:
    (tmp_path / "d.pid").mkdir()
    assert pidfile.read_pid(str(tmp_path / "d.pid")) is None
    assert pidfile.read_pid("/dev/null") is None  # (/dev/zero: the old open() read it forever)
    os.mkfifo(tmp_path / "f.pid")
    assert pidfile.read_pid(str(tmp_path / "f.pid")) is None
    assert pidfile.state(str(tmp_path / "f.pid")) == pidfile.PidState(0, False)
