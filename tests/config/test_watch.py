"""ConfigWatcher: what autoreload applies, what it refuses, and what it logs (once).

Every test drives poll() directly against real files in a temporary directory; "the daemon" is
the small Harness below, which applies what poll() offers exactly as lvsmon's daemon does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon.config import Config, ConfigError, load_config, parse_config
from lvsmon.config.load import read_config_bytes
from lvsmon.config.watch import RACY_NS, Change, ConfigWatcher


def valid(weight: int, *, autoreload: bool = True, virtuals: int = 1) -> str:
    """A config with ``virtuals`` virtual services; ``weight`` makes contents differ."""
    lines = [f"autoreload={'yes' if autoreload else 'no'}", "checkinterval=5"]
    for i in range(virtuals):
        lines += [
            f"virtual=127.0.0.1:{8000 + i}",
            f"\treal=127.0.0.2:{8000 + i} masq {weight}",
            "\tchecktype=connect",
        ]
    return "\n".join(lines) + "\n"


GLOBALS_ONLY = "autoreload=yes\ncheckinterval=7\n"
INVALID = "autoreload=yes\nvirtual=127.0.0.1:80\n\treal=\n"  # exactly one error


def later() -> int:
    """A clock far enough ahead that every file counts as old: stats are trusted at once."""
    return time.time_ns() + 10 * RACY_NS


class Harness:
    """Applies what the watcher offers, as the daemon does, and counts reads and parses."""

    def __init__(self, path: Path, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self.config = load_config(str(path))
        self.reads = 0
        self.parses: list[str] = []  # digests parsed
        self.callbacks = 0
        self.watcher = ConfigWatcher(
            str(path), self.config.digest, read=self._read, parse=self._parse, clock=clock
        )

    def _read(self, path: str) -> bytes:
        self.reads += 1
        return read_config_bytes(path)

    def _parse(self, data: bytes, path: str) -> Config:
        self.parses.append(hashlib.sha256(data).hexdigest())
        return parse_config(data, path)

    def apply(self, config: Config) -> None:
        self.config = config
        self.watcher.applied(config.digest)

    async def poll(self) -> Change:
        # autoreload comes from the running config, never from the file on disk
        change = await self.watcher.poll(autoreload=self.config.settings.autoreload)
        if change.config is not None:
            self.apply(change.config)
        if change.changed:
            self.callbacks += 1
        return change

    async def polls(self, n: int) -> list[Change]:
        return [await self.poll() for _ in range(n)]


def put(path: Path, content: str | bytes) -> None:
    """Write in place (same inode), as an editor or `>` does."""
    data = content.encode() if isinstance(content, str) else content
    with open(path, "wb") as f:
        f.write(data)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def infos(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if word in r.getMessage()]


@pytest.fixture
def cf(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Path:
    caplog.set_level(logging.INFO, logger="lvsmon")
    path = tmp_path / "ldirectord.cf"
    put(path, valid(1))
    return path


async def test_truncated_file_is_kept_then_the_repaired_file_applies(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(cf)
    put(cf, b"")  # `> file`, or an editor writing in place
    assert await h.polls(4) == [Change(None, False)] * 4
    assert h.config.digest == sha(valid(1))
    [logged] = problems(caplog)
    assert "empty (0 bytes)" in logged and "keeping the running configuration" in logged
    assert h.parses == []

    # the empty file "said" autoreload=no (the default); it never ran, so it decides nothing
    put(cf, valid(2))
    assert (await h.poll()).config is None  # first sighting: may still be being written
    change = await h.poll()
    assert change.config is not None and change.changed
    assert h.config.digest == sha(valid(2)) == change.config.digest
    assert len(infos(caplog, "usable again")) == 1
    assert len(problems(caplog)) == 1
    assert await h.polls(3) == [Change(None, False)] * 3
    assert h.parses == [sha(valid(2))]


async def test_globals_only_file_is_not_autoreloaded_but_an_explicit_reload_applies_it(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(cf)
    put(cf, GLOBALS_ONLY)
    changes = await h.polls(5)
    assert all(c.config is None for c in changes)
    assert [c.changed for c in changes].count(True) == 1  # the callback still runs, once
    [warning] = problems(caplog)
    assert "no virtual service" in warning and "explicit reload" in warning
    assert h.config.digest == sha(valid(1))

    loaded = await h.watcher.load_now()
    assert isinstance(loaded, Config) and loaded.virtuals == ()
    h.apply(loaded)
    assert h.config.digest == sha(GLOBALS_ONLY)
    assert await h.polls(3) == [Change(None, False)] * 3
    assert len(problems(caplog)) == 1

    # from a running config without virtuals, autoreload applies a file that has some again
    put(cf, valid(3))
    assert [c.config is not None for c in await h.polls(2)] == [False, True]
    assert h.config.digest == sha(valid(3))


def _make_missing(p: Path) -> None:
    p.unlink()


def _make_directory(p: Path) -> None:
    p.unlink()
    p.mkdir()


def _make_symlink_loop(p: Path) -> None:
    p.unlink()
    other = p.with_name("other.cf")
    p.symlink_to(other)
    other.symlink_to(p)


def _make_fifo(p: Path) -> None:
    # opening a FIFO for reading would block the daemon until some writer shows up
    p.unlink()
    os.mkfifo(p)


def _make_invalid(p: Path) -> None:
    p.write_text(INVALID)


def _restore(p: Path) -> None:
    if p.is_symlink():
        p.with_name("other.cf").unlink()
        p.unlink()
    elif p.is_dir():
        p.rmdir()
    elif p.exists():
        p.unlink()
    p.write_text(valid(1))


@pytest.mark.parametrize(
    ("make", "wording"),
    [
        (_make_missing, "no such file"),
        (_make_directory, "is a directory"),
        (_make_symlink_loop, "symbolic link loop"),
        (_make_fifo, "not a regular file"),
        (_make_invalid, "invalid real server line"),
    ],
    ids=["missing", "directory", "symlink-loop", "fifo", "invalid"],
)
async def test_an_unusable_file_is_logged_once_and_changes_nothing(
    cf: Path,
    caplog: pytest.LogCaptureFixture,
    make: Callable[[Path], None],
    wording: str,
) -> None:
    h = Harness(cf)
    make(cf)
    async with asyncio.timeout(10):  # a FIFO must not hang the poll
        assert await h.polls(5) == [Change(None, False)] * 5
    [logged] = problems(caplog)
    assert wording in logged and "keeping the running configuration" in logged
    assert h.config.digest == sha(valid(1))
    assert len(h.parses) == (1 if make is _make_invalid else 0)

    _restore(cf)  # back to the running content: nothing to apply, nothing to call back
    assert await h.polls(3) == [Change(None, False)] * 3
    assert len(infos(caplog, "usable again")) == 1
    assert len(problems(caplog)) == 1


async def test_each_distinct_unusable_state_is_logged_once(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(cf)
    for make in (_make_missing, _restore, _make_directory, _restore, _make_invalid):
        make(cf)
        await h.polls(3)
    logged = problems(caplog)
    assert len(logged) == 3, logged
    assert len(infos(caplog, "usable again")) == 2
    assert h.config.digest == sha(valid(1))


_UNREADABLE_SCRIPT = """
import asyncio, json, logging, os, sys
from lvsmon.config.watch import ConfigWatcher

path, running = sys.argv[1], sys.argv[2]
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append([record.levelname, record.getMessage()])
logging.getLogger("lvsmon").addHandler(Keep())
logging.getLogger("lvsmon").setLevel(logging.INFO)

async def main():
    w = ConfigWatcher(path, running)
    out = [await w.poll(autoreload=True) for _ in range(4)]
    os.chmod(path, 0o644)
    out += [await w.poll(autoreload=True) for _ in range(2)]
    return [[c.config is not None, c.changed] for c in out]

print(json.dumps({"changes": asyncio.run(main()), "records": records}))
"""


def test_an_unreadable_file_is_logged_once_and_changes_nothing(cf: Path) -> None:
    """chmod 000. Root reads it anyway (CAP_DAC_OVERRIDE), so as root the watcher runs in a
    child whose capability bounding set lacks the two DAC overrides."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop CAP_DAC_OVERRIDE")
        prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    cf.chmod(0)
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _UNREADABLE_SCRIPT, str(cf), sha(valid(1))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(result.stdout)
    assert out["changes"] == [[False, False]] * 6
    levels = [level for level, _ in out["records"]]
    messages = [message for _, message in out["records"]]
    assert levels == ["ERROR", "INFO"], out["records"]
    assert "permission denied" in messages[0]
    assert "usable again" in messages[1]


async def test_a_half_written_file_is_applied_only_once_two_polls_agree(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(cf)
    full = valid(2, virtuals=3)
    # cut after the first virtual: it parses, and would delete the other two
    cut = full[: full.index("virtual=127.0.0.1:8001")]
    parse_config(cut, str(cf))
    put(cf, cut)
    assert (await h.poll()).config is None
    put(cf, full)
    assert (await h.poll()).config is None  # differs from what the previous poll saw
    assert h.parses == []
    change = await h.poll()
    assert change.config is not None and len(change.config.virtuals) == 3
    assert h.parses == [sha(full)]
    assert problems(caplog) == []


async def test_a_settled_unchanged_file_is_not_read_again(cf: Path) -> None:
    h = Harness(cf, clock=later)
    await h.polls(5)
    assert h.reads == 1  # the running content counts as seen once: settled at the first read
    assert h.parses == []

    put(cf, valid(22))  # another size: the stat changes whatever the timestamp tick
    await h.polls(5)
    assert h.reads == 3  # first sighting, second sighting (settles), then the stat decides
    assert h.parses == [sha(valid(22))]
    assert h.config.digest == sha(valid(22))

    os.utime(cf)  # a touch: read again (and hashed), not parsed again, nothing reported
    assert await h.polls(3) == [Change(None, False)] * 3
    assert h.reads == 4
    assert h.parses == [sha(valid(22))]


async def test_a_freshly_written_file_is_read_until_its_stat_can_be_trusted(cf: Path) -> None:
    """A write in the same timestamp tick as the one seen leaves the whole stat unchanged; a
    file changed within RACY_NS of the poll is therefore read every time (cheap; parsing only
    happens once per settled digest)."""
    h = Harness(cf)  # the real clock: cf was just written
    await h.polls(4)
    assert h.reads == 4
    assert h.parses == []
    put(cf, valid(2))  # the same size: only timestamps could tell
    await h.polls(3)
    assert h.config.digest == sha(valid(2))
    assert h.parses == [sha(valid(2))]


async def test_a_poll_cancelled_while_parsing_leaves_the_decision_to_the_next(cf: Path) -> None:
    started, gate = threading.Event(), threading.Event()

    def slow_parse(data: bytes, path: str) -> Config:
        started.set()
        gate.wait(10)
        return parse_config(data, path)

    w = ConfigWatcher(str(cf), sha(valid(1)), parse=slow_parse, clock=later)
    put(cf, valid(2))
    assert (await w.poll(autoreload=True)).config is None
    task = asyncio.create_task(w.poll(autoreload=True))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()  # e.g. the daemon stopping
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    change = await w.poll(autoreload=True)
    assert change.config is not None and change.config.digest == sha(valid(2))


async def test_an_offer_the_daemon_failed_to_apply_is_offered_again_less_and_less_often(
    cf: Path,
) -> None:
    h = Harness(cf, clock=later)
    put(cf, valid(2))
    offers: list[int] = []
    for i in range(40):  # the daemon's apply keeps failing: applied() is never called
        change = await h.watcher.poll(autoreload=True)
        if change.config is not None:
            assert change.config.digest == sha(valid(2))
            offers.append(i)
    assert offers == [1, 2, 4, 8, 16, 32]  # settled at poll 1, then after 1, 2, 4, 8, 16 polls
    assert h.parses == [sha(valid(2))]  # kept, not parsed again
    h.apply(await _next_offer(h))
    assert await h.polls(70) == [Change(None, False)] * 70


async def _next_offer(h: Harness) -> Config:
    for _ in range(100):
        if (change := await h.watcher.poll(autoreload=True)).config is not None:
            return change.config
    raise AssertionError("never offered again")


async def test_an_offer_not_applied_is_dropped_when_the_file_changes(cf: Path) -> None:
    h = Harness(cf, clock=later)
    put(cf, valid(2))
    assert [(await h.watcher.poll(autoreload=True)).config is None for _ in range(2)] == [
        True,
        False,
    ]
    put(cf, valid(33))
    changes = await h.polls(70)
    assert [c.config.digest for c in changes if c.config] == [sha(valid(33))]


async def test_callback_is_reported_once_per_settled_change(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put(cf, valid(1, autoreload=False))
    h = Harness(cf)
    put(cf, valid(2, autoreload=False))
    changes = await h.polls(4)
    assert [c.changed for c in changes] == [False, True, False, False]
    assert all(c.config is None for c in changes)  # autoreload=no: reported, never applied
    assert h.config.digest == sha(valid(1, autoreload=False))
    assert len(infos(caplog, "ignore new configuration")) == 1

    put(cf, valid(2, autoreload=False))  # rewritten, same content
    put(cf, INVALID)  # broken content is not "changed": it is not usable
    await h.polls(3)
    assert h.callbacks == 1
    put(cf, valid(1, autoreload=False))  # back to the running content: a change on disk
    await h.polls(3)
    assert h.callbacks == 2
    assert h.config.digest == sha(valid(1, autoreload=False))


async def test_autoreload_comes_from_the_running_config(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(cf)
    put(cf, valid(2, autoreload=False))
    await h.polls(2)
    assert h.config.digest == sha(valid(2, autoreload=False))  # applied: autoreload was on
    put(cf, valid(3, autoreload=True))
    await h.polls(3)
    assert h.config.digest == sha(valid(2, autoreload=False))  # now it is off
    assert h.callbacks == 2


async def test_load_now_reports_every_time_and_the_polls_do_not_repeat_it(
    cf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(cf)
    put(cf, b"")
    for _ in range(2):
        loaded = await h.watcher.load_now()
        assert isinstance(loaded, ConfigError)
        assert "empty (0 bytes)" in str(loaded)
    await h.polls(3)
    assert len(problems(caplog)) == 2  # each explicit reload is answered; the polls add none

    put(cf, INVALID)
    loaded = await h.watcher.load_now()
    assert isinstance(loaded, ConfigError)
    await h.polls(3)
    assert len(problems(caplog)) == 3
    assert len(h.parses) == 1  # the polls reuse the explicit reload's verdict

    put(cf, valid(5))
    loaded = await h.watcher.load_now()  # no settling for an explicit reload
    assert isinstance(loaded, Config) and loaded.digest == sha(valid(5))
    h.apply(loaded)
    assert len(infos(caplog, "usable again")) == 1
    await h.polls(3)
    assert h.config is loaded


# ---------------------------------------------------------------------------------------------
# property: over any sequence of file states, what poll() offers is settled, parses, and (under
# autoreload) has a virtual service

_FILE_STATES: list[str | None] = [
    valid(1),
    valid(2),
    valid(3, virtuals=2),
    valid(4, autoreload=False),
    GLOBALS_ONLY,
    INVALID,
    "",
    valid(5, virtuals=2)[:40],  # a write still going on
    None,  # missing
]
_DIRECTORY = len(_FILE_STATES)

_steps = st.lists(
    st.one_of(
        st.just("poll"),
        st.integers(min_value=0, max_value=_DIRECTORY),
    ),
    max_size=25,
)


def _put(path: Path, state: int) -> str | None:
    """Make ``path`` the given state; returns its content, None when not a readable file."""
    if path.is_dir():
        path.rmdir()
    elif path.exists():
        path.unlink()
    if state == _DIRECTORY:
        path.mkdir()
        return None
    text = _FILE_STATES[state]
    if text is not None:
        put(path, text)
    return text


def _usable(text: str | None) -> Config | None:
    if not text:
        return None
    try:
        return parse_config(text, "x")
    except ConfigError:
        return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=_steps)
def test_property_only_settled_usable_content_is_offered(steps: list[str | int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run_property(Path(tmp) / "lvsmon.cf", steps))


async def _run_property(path: Path, steps: list[str | int]) -> None:
    put(path, valid(1))
    h = Harness(path)
    current: str | None = valid(1)
    previous: str | None = valid(1)  # what the daemon started from counts as one sighting
    for step in [*steps, "poll", "poll"]:
        if step != "poll":
            assert isinstance(step, int)
            current = _put(path, step)
            continue
        running = h.config
        change = await h.poll()
        settled = current is not None and current == previous
        if change.config is not None:
            assert settled and current is not None
            assert change.config.digest == sha(current) != running.digest
            assert running.settings.autoreload
            assert change.config.virtuals
        if change.changed:
            assert settled and _usable(current) is not None
        previous = current
    # liveness: whatever happened, a good file is picked up within two polls
    if h.config.settings.autoreload:
        current = _put(path, 2)
        await h.polls(2)
        assert h.config.digest == sha(valid(3, virtuals=2))
    # every digest was parsed at most once in a row (never per poll)
    assert all(a != b for a, b in zip(h.parses, h.parses[1:], strict=False))
