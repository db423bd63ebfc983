"""autoreload under a running daemon: a config truncated, emptied of virtuals, deleted or
broken changes nothing and is logged once per state; the repaired file is applied (even though
the broken one said autoreload=no). The status file is written 0644, not through symlinks."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import Web, wait_for

from .conftest import Running, start
from .test_features import cf_text


async def test_a_truncated_or_emptied_config_is_not_applied(
    webs: list[Web], tmp_path: Path, stopper: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    cf = tmp_path / "lb.cf"
    good = cf_text(webs[:2], extra="autoreload=yes\n")
    cf.write_text(good)
    r = await start(cf)
    stopper.append(r)
    running = r.daemon.config
    await wait_for(lambda: len(r.weights()) == 2)

    cf.write_text("")  # `> lb.cf`, an editor writing in place, a full disk
    await asyncio.sleep(3.5)
    assert r.daemon.config is running and len(r.weights()) == 2
    assert caplog.text.count("is unusable: empty") == 1

    cf.write_text("checktimeout=1\nautoreload=no\n")  # only globals: would delete everything
    await asyncio.sleep(3.5)
    assert r.daemon.config is running and len(r.weights()) == 2
    assert caplog.text.count("no virtual service") == 1

    cf.unlink()  # deleted
    await asyncio.sleep(2.5)
    assert r.daemon.config is running
    assert caplog.text.count("is unusable: no such file") == 1

    cf.write_text(cf_text(webs, extra="autoreload=yes\n"))  # repaired, with a third real
    await wait_for(lambda: len(r.weights()) == 3)
    assert r.daemon.config is not running
    assert "usable again" in caplog.text


async def test_an_explicit_reload_applies_a_config_without_virtuals(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:2]))
    r = await start(cf)
    stopper.append(r)
    await wait_for(lambda: len(r.weights()) == 2)
    cf.write_text("checktimeout=1\n")
    assert await r.daemon.reload()  # the operator asked: the virtual goes
    assert r.daemon.engine.actual == {}


async def test_the_status_file_is_0644_and_never_written_through_a_symlink(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    from lvsmon.config import load_config
    from lvsmon.daemon.daemon import Daemon
    from lvsmon.ipvs.memory import MemoryBackend

    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:1]))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    status = tmp_path / "lb.status.json"
    for name in (status, Path(f"{status}.tmp")):
        name.symlink_to(victim)
    old = os.umask(0o077)
    try:
        daemon = Daemon(load_config(str(cf)), MemoryBackend(), str(status))
        ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        r = Running(daemon, asyncio.create_task(daemon.run(ready.set_result)))
        stopper.append(r)
        assert await ready is None
        await wait_for(lambda: not status.is_symlink(), within=5)
    finally:
        os.umask(old)
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(status.stat().st_mode) == 0o644
