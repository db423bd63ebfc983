"""The status file is rewritten when the status changed and only touched when it did not
(lvsmon/daemon/daemon.py StatusFile): an idle pool of 100,000 reals no longer writes 22 MB a
second, and readers that judge the daemon alive by the file's age (`lvsmon verify-table`, the
OCF agent's monitor) still see it at most a second old."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from lvsmon.config import load_config
from lvsmon.daemon import daemon as daemon_module
from lvsmon.daemon.daemon import Daemon, StatusFile
from lvsmon.engine.status import Status, StatusEncoder, pack
from lvsmon.ipvs.memory import MemoryBackend

OLD = 1_000_000_000  # a modification time long past (2001), in seconds


def age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def make_old(path: Path) -> None:
    os.utime(path, (OLD, OLD))


def test_an_unchanged_status_is_touched_not_written(tmp_path: Path) -> None:
    path = tmp_path / "lb.status.json"
    status = StatusFile(str(path))
    status.update(1, lambda: b'{"a":1}')
    before = path.stat()
    time.sleep(0.02)
    status.update(1, lambda: b'{"a":1}')  # the same version: no new file, a new time
    after = path.stat()
    assert after.st_ino == before.st_ino
    assert after.st_mtime_ns > before.st_mtime_ns
    assert path.read_bytes() == b'{"a":1}'


def test_a_changed_status_is_written(tmp_path: Path) -> None:
    path = tmp_path / "lb.status.json"
    status = StatusFile(str(path))
    status.update(1, lambda: b'{"a":1}')
    inode = path.stat().st_ino
    status.update(2, lambda: b'{"a":2}')
    assert path.read_bytes() == b'{"a":2}'
    assert path.stat().st_ino != inode  # a new file renamed over the old one, as always


@pytest.mark.parametrize("how", ["replaced", "edited", "removed"])
def test_a_file_that_is_not_as_written_is_written_again(tmp_path: Path, how: str) -> None:
    path = tmp_path / "lb.status.json"
    status = StatusFile(str(path))
    status.update(1, lambda: b'{"a":1}')
    if how == "replaced":
        (tmp_path / "other").write_bytes(b'{"a":1}')
        os.replace(tmp_path / "other", path)
    elif how == "edited":
        time.sleep(0.02)
        with open(path, "r+b") as f:
            f.write(b'{"b":1}')
    else:
        path.unlink()
    status.update(1, lambda: b'{"a":1}')
    assert path.read_bytes() == b'{"a":1}'
    assert age(path) < 5


def test_after_a_failed_write_the_file_is_not_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (out of descriptors, a full disk) leaves the file to age, so that
    verify-table sees a daemon that cannot keep it; the next write that works ends that."""
    path = tmp_path / "lb.status.json"
    status = StatusFile(str(path))
    status.update(1, lambda: b'{"a":1}')
    make_old(path)

    def failing(*_args: object, **_kwargs: object) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(daemon_module, "write_atomic", failing)
    status.update(2, lambda: b'{"a":2}')
    status.update(2, lambda: b'{"a":2}')
    assert path.stat().st_mtime == OLD
    # the text on disk again: still not touched, the daemon could not vouch for it meanwhile
    status.update(1, lambda: b'{"a":1}')
    assert path.stat().st_mtime == OLD
    monkeypatch.undo()
    status.update(1, lambda: b'{"a":1}')
    assert age(path) < 5


CONFIG = """checktimeout=3
checkinterval=1
virtual=127.0.0.100:80
\treal=127.0.0.2:80 masq
\treal=127.0.0.3:80 masq
\tchecktype=on
"""


async def wait_for(test: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not test():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


def states(path: Path) -> dict[str, str]:
    (virtual,) = json.loads(path.read_bytes())["virtuals"]
    return {r["address"]: r["state"] for r in virtual["reals"]}


async def test_an_idle_daemon_touches_its_status_file_and_writes_it_on_a_change(
    tmp_path: Path,
) -> None:
    (tmp_path / "lb.cf").write_text(CONFIG + f"maintenancedir={tmp_path}/maint\n")
    (tmp_path / "maint").mkdir()
    path = tmp_path / "lb.status.json"
    daemon = Daemon(load_config(str(tmp_path / "lb.cf")), MemoryBackend(), str(path))
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    try:
        assert await ready is None
        # nothing changes: the file is touched each housekeeping second, not written; a
        # figure that moves by itself (the loop lag's peak, a resync) is a change
        seen = path.stat()
        text = path.read_bytes()
        touched = 0
        deadline = time.monotonic() + 10
        while touched < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
            now = path.stat()
            if now.st_ino == seen.st_ino:
                touched += now.st_mtime_ns > seen.st_mtime_ns
            else:
                assert path.read_bytes() != text  # written: the status changed
                text = path.read_bytes()
            seen = now
        assert states(path) == {"127.0.0.2": "up", "127.0.0.3": "up"}
        first = path.stat()
        (tmp_path / "maint" / "127.0.0.3").touch()
        # the maintenance scan and then the status file, in the same housekeeping second
        changed = time.monotonic()
        await wait_for(lambda: path.stat().st_ino != first.st_ino, within=5)
        assert time.monotonic() - changed < 1.5 or os.getloadavg()[0] > 2
        assert states(path) == {"127.0.0.2": "up", "127.0.0.3": "maintenance"}
    finally:
        daemon.request_stop()
        await task


def test_the_encoder_tells_a_change_of_the_counters_alone() -> None:
    def head(phase: str, checks: int) -> Status:
        return cast(Status, {"phase": phase, "stats": {"checks_done": checks}})

    encoder = StatusEncoder()
    texts = [pack(b'{"name":"a"}')]
    first = encoder.update(head("running", 1), texts)
    assert encoder.body_version == first
    counters = encoder.update(head("running", 2), texts)
    assert counters > first and encoder.body_version == first  # the counters alone
    virtual = encoder.update(head("running", 2), list(texts))
    assert virtual == counters  # the very same texts: nothing changed
    changed = encoder.update(head("running", 2), [pack(b'{"name":"b"}')])
    assert changed > counters and encoder.body_version == changed
    phase = encoder.update(head("stopping", 2), [texts[0]])
    assert encoder.body_version == phase


async def test_a_big_pool_writes_new_counters_alone_at_most_every_10_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100,000 reals a status is 22 MB: a resync's counter (every resyncinterval) rewrote it
    each time. From BIG_STATUS_REALS on, the counters alone wait COUNTERS_ONLY_EVERY_S; a
    change of a real is written within the second."""
    monkeypatch.setattr(daemon_module, "BIG_STATUS_REALS", 2)
    (tmp_path / "lb.cf").write_text(CONFIG + f"maintenancedir={tmp_path}/maint\n")
    (tmp_path / "maint").mkdir()
    path = tmp_path / "lb.status.json"
    daemon = Daemon(load_config(str(tmp_path / "lb.cf")), MemoryBackend(), str(path))
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    try:
        assert await ready is None
        await asyncio.sleep(1.2)  # the start-up's writes
        first = path.stat()
        daemon.engine.stats.resyncs += 1  # a counter moves
        await asyncio.sleep(2.5)
        assert path.stat().st_ino == first.st_ino  # touched, not written
        assert path.stat().st_mtime_ns > first.st_mtime_ns
        (tmp_path / "maint" / "127.0.0.3").touch()  # a real changes
        await wait_for(lambda: path.stat().st_ino != first.st_ino, within=5)
        assert states(path) == {"127.0.0.2": "up", "127.0.0.3": "maintenance"}
        assert json.loads(path.read_bytes())["stats"]["resyncs"] >= 1  # the counters with it
    finally:
        daemon.request_stop()
        await task
