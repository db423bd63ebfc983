"""The daemon process raises the cyclic collector's first threshold before its loop runs
(lvsmon/daemon/runner.py tune_gc): the checks' short-lived objects must not set off young
collections every few milliseconds."""

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
