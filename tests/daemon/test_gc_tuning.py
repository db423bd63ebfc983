"""The daemon process raises the cyclic collector's first threshold before its loop runs
(lvsmon/daemon/runner.py tune_gc): the checks' short-lived objects must not set off young
collections every few milliseconds. And it keeps one malloc arena (cap_malloc_arenas): the
threads that parse a reloaded config must not each keep an arena's worth of freed memory."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.config.load import parse_config
from lvsmon.daemon import runner
from lvsmon.daemon.runner import GC_YOUNG_THRESHOLD, Launch, serve, tune_gc


@pytest.fixture
def gc_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


@pytest.mark.usefixtures("gc_threshold")
def test_tune_gc_raises_only_the_young_threshold() -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 11, 12)
    assert GC_YOUNG_THRESHOLD >= 10_000


@pytest.mark.usefixtures("gc_threshold")
def test_serve_tunes_the_collector_before_the_daemon_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []

    async def fake_run_daemon(*_args: object, **_kwargs: object) -> int:
        seen.append(gc.get_threshold())
        return 0

    import lvsmon.daemon.daemon as daemon_module
    import lvsmon.daemon.logsetup as logsetup

    monkeypatch.setattr(daemon_module, "run_daemon", fake_run_daemon)
    monkeypatch.setattr(logsetup, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(runner, "raise_fd_limit", lambda: None)
    monkeypatch.setattr(runner, "cap_malloc_arenas", lambda: None)  # not in pytest's process
    config = parse_config(
        "virtual=127.0.0.1:80\n\treal=127.0.0.2:80 masq\n", str(tmp_path / "ld.cf")
    )
    launch = Launch(
        cfgname="ld.cf",
        pid_path=str(tmp_path / "lvsmon.pid"),
        status_path=str(tmp_path / "status.json"),
        socket_path=str(tmp_path / "lvsmon.sock"),
        drain_state=str(tmp_path / "drain.json"),
        backend="memory",
        debug=True,
    )
    assert serve(config, launch, lambda _error: None) == 0
    assert seen == [(GC_YOUNG_THRESHOLD, 10, 10)]


ARENAS = """
import ctypes, sys, threading
from lvsmon.daemon.runner import cap_malloc_arenas
if sys.argv[1] == "capped":
    cap_malloc_arenas()
held = []
def parse_like() -> None:  # big objects come from malloc, in the thread's arena
    held.append([bytearray(200_000) for _ in range(20)])
threads = [threading.Thread(target=parse_like) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


def arenas_after_four_threads(how: str) -> int:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ARENAS, how], capture_output=True, text=True, check=True
    )
    return done.stderr.count("Arena ")


def test_the_daemon_keeps_one_malloc_arena() -> None:
    assert arenas_after_four_threads("default") >= 2  # each thread its own: what the cap prevents
    assert arenas_after_four_threads("capped") == 1


TRIM = """
import sys
from lvsmon.daemon.daemon import release_free_memory

def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

# a peak of C-heap blocks (bytes over 512 come from malloc), then all but every 64th freed:
# what stays pins the heap's top, so glibc cannot give the free pages back by itself
held = [bytes(2000) for _ in range(40_000)]
kept = held[::64]
del held
before = rss()
if sys.argv[1] == "trim":
    release_free_memory()
print(before - rss())
"""


def test_settling_gives_the_c_heaps_free_pages_back() -> None:
    """After a start-up or a reload (settle_memory): the peak's pages go back to the kernel."""
    import subprocess
    import sys

    def freed(how: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", TRIM, how], capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    assert freed("none") < 10_000  # KiB: glibc keeps them
    assert freed("trim") > 40_000  # most of the 80 MB peak


THRESHOLD = """
import sys
from lvsmon.daemon.runner import cap_malloc_arenas
if sys.argv[1] == "capped":
    cap_malloc_arenas()

def heap_kib() -> int:
    size, seen = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "[heap]" in line:
                seen = True
            elif seen and line.startswith("Size:"):
                size += int(line.split()[1])
                seen = False
    return size

big = bytes(4_000_000)
del big  # glibc would now raise its mmap threshold to 4 MB
before = heap_kib()
held = [bytes(200_000) for _ in range(100)]  # the status text, zlib states...
print(heap_kib() - before)
"""


def test_large_blocks_keep_mappings_of_their_own() -> None:
    """cap_malloc_arenas fixes glibc's mmap threshold: after a large block is freed, blocks of
    200 KB no longer come from (and fragment) the heap."""
    import subprocess
    import sys

    def heap_growth(how: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", THRESHOLD, how], capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    assert heap_growth("default") > 15_000  # KiB: 20 MB of them in the heap
    assert heap_growth("capped") < 2_000


async def test_housekeeping_gives_free_memory_back_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import lvsmon.daemon.daemon as daemon_module
    from lvsmon.config import load_config
    from lvsmon.daemon.daemon import Daemon
    from lvsmon.ipvs.memory import MemoryBackend

    trims: list[int] = []
    monkeypatch.setattr(daemon_module, "TRIM_EVERY_TICKS", 2)
    monkeypatch.setattr(daemon_module, "release_free_memory", lambda: trims.append(1))
    (tmp_path / "lb.cf").write_text(
        "virtual=127.0.0.100:80\n\treal=127.0.0.2:80 masq\n\tchecktype=on\n"
    )
    daemon = Daemon(load_config(str(tmp_path / "lb.cf")), MemoryBackend())
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    try:
        assert await ready is None
        await asyncio.sleep(4.5)  # housekeeping: once a second
        assert len(trims) >= 2  # 1 at start-up's settling, then every second tick
    finally:
        daemon.request_stop()
        await task
