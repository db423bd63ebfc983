"""The daemon runs the sync daemons its config names (memory backend): started at start, kept
when already running as configured, changed by a reload, stopped at stop; a failure is logged
and shown in `lvsmon status`, and the daemon carries on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.daemon.syncdaemons import SyncDaemons
from lvsmon.engine.events import Event, EventBus, SyncDaemonOp
from lvsmon.engine.status import render_status
from lvsmon.ipvs.errors import ErrorKind, OpError
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.sync import SyncDaemon, SyncState


def write_cf(path: Path, sync: str) -> None:
    path.write_text(
        f'logfile="{path.parent / "log"}"\n{sync}'
        "virtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq\n\tchecktype=on\n"
    )


class Started:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(daemon.run(self.ready.set_result))
        self.events: list[Event] = []
        daemon.events.subscribe("test", self.events.append, kinds=(SyncDaemonOp,))

    async def stop(self) -> int:
        self.daemon.request_stop()
        return await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def cf(tmp_path: Path) -> AsyncIterator[Path]:
    yield tmp_path / "lb.cf"


async def start(cf: Path, backend: MemoryBackend) -> Started:
    run = Started(Daemon(load_config(str(cf)), backend))
    assert await asyncio.wait_for(run.ready, 30) is None
    return run


async def test_start_reload_stop(cf: Path) -> None:
    write_cf(cf, "syncdaemon=both\nsyncinterface=eth1\nsyncid=7\n")
    backend = MemoryBackend()
    run = await start(cf, backend)
    master = SyncDaemon(SyncState.MASTER, "eth1", 7)
    backup = SyncDaemon(SyncState.BACKUP, "eth1", 7)
    assert await backend.sync_daemons() == (
        master.as_kernel_runs_it(),
        backup.as_kernel_runs_it(),
    )
    status = run.daemon.status()
    assert [(s["state"], s["error"]) for s in status["sync"]] == [
        ("master", None),
        ("backup", None),
    ]
    text = render_status(status)
    assert "sync master: running: master sync daemon (interface eth1, syncid 7" in text

    # a reload that changes the syncid restarts both with it
    write_cf(cf, "syncdaemon=both\nsyncinterface=eth1\nsyncid=8\n")
    assert await run.daemon.reload()
    assert [d.syncid for d in await backend.sync_daemons()] == [8, 8]
    # one that drops the backup stops it and leaves the master alone
    before = list(backend.log)
    write_cf(cf, "syncdaemon=master\nsyncinterface=eth1\nsyncid=8\n")
    assert await run.daemon.reload()
    assert [d.state for d in await backend.sync_daemons()] == [SyncState.MASTER]
    sync_lines = [line for line in backend.log[len(before) :] if "daemon" in line]
    assert sync_lines == ["ipvsadm --stop-daemon backup"]
    # and one without sync stops the master
    write_cf(cf, "")
    assert await run.daemon.reload()
    assert await backend.sync_daemons() == ()
    assert run.daemon.status()["sync"] == []

    write_cf(cf, "syncdaemon=backup\nsyncinterface=eth2\n")
    assert await run.daemon.reload()
    assert await run.stop() == 0
    assert await backend.sync_daemons() == ()  # stopped at stop
    # before the engine's clean stop (parts stop in reverse order)
    stopped = max(i for i, line in enumerate(backend.log) if line == "ipvsadm --stop-daemon backup")
    assert stopped < backend.log.index("ipvsadm -D -t 127.0.0.100:80")


async def test_a_running_daemon_as_configured_is_kept(cf: Path) -> None:
    """After a restart of lvsmon the sync goes on without a gap; a state the config does not
    name (a backup started at boot) is never touched."""
    write_cf(cf, "syncdaemon=master\nsyncinterface=eth1\n")
    backend = MemoryBackend()
    await backend.start_sync_daemon(SyncDaemon(SyncState.MASTER, "eth1"))
    await backend.start_sync_daemon(SyncDaemon(SyncState.BACKUP, "eth1"))
    started = len(backend.log)
    run = await start(cf, backend)
    assert [line for line in backend.log[started:] if "daemon" in line] == []
    assert await run.stop() == 0
    assert [d.state for d in await backend.sync_daemons()] == [SyncState.BACKUP]


class Refusing(MemoryBackend):
    async def start_sync_daemon(self, daemon: SyncDaemon) -> OpError | None:
        return OpError(ErrorKind.INVALID, f"cannot start the {daemon.state} sync daemon: no dev")


async def test_a_failure_is_loud_and_not_fatal(cf: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cf(cf, "syncdaemon=master\nsyncinterface=nosuch0\n")
    backend = Refusing()
    with caplog.at_level(logging.INFO, logger="lvsmon"):
        run = await start(cf, backend)
        assert backend.table  # the table is programmed all the same
        [entry] = run.daemon.status()["sync"]
        assert entry["error"] == "cannot start the master sync daemon: no dev"
        assert "sync master: FAILED: cannot start the master sync daemon: no dev" in (
            render_status(run.daemon.status())
        )
        assert await run.stop() == 0
    assert any(
        r.levelno == logging.ERROR and "connection sync: cannot start master" in r.getMessage()
        for r in caplog.records
    )
    [event] = [e for e in run.events if isinstance(e, SyncDaemonOp) and e.action == "start"]
    assert event.error is not None and "no dev" in event.error


async def test_between_reloads_a_vanished_daemon_is_started_again() -> None:
    backend = Refusing()
    published: list[SyncDaemonOp] = []
    sync = SyncDaemons(MemoryBackend(), EventBus(), check_s=0)
    sync._publish = lambda *args: published.append(SyncDaemonOp(*args))  # type: ignore[method-assign]
    master = SyncDaemon(SyncState.MASTER, "eth1", 3)
    await sync.use((master,))
    assert isinstance(sync.backend, MemoryBackend)
    await sync.backend.stop_sync_daemon(SyncState.MASTER)  # by hand, behind lvsmon's back
    await sync.maintain()
    assert await sync.backend.sync_daemons() == (master.as_kernel_runs_it(),)
    assert [e.action for e in published] == ["start", "start"]
    await sync.maintain()  # running as configured: nothing to do
    assert len(published) == 2

    # a failure that repeats is one event, not one per check; the status keeps showing it
    failing = SyncDaemons(backend, EventBus(), check_s=0)
    failing._publish = lambda *args: published.append(SyncDaemonOp(*args))  # type: ignore[method-assign]
    await failing.use((master,))
    await failing.maintain()
    await failing.maintain()
    assert [e.error for e in published[2:]] == ["cannot start the master sync daemon: no dev"]
    assert failing.status()[0]["error"] == "cannot start the master sync daemon: no dev"
    assert failing.status()[0]["running"] is None
