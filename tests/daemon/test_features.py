"""Daemon features against real servers and the memory backend, in-process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey
from tests.helpers import Web, wait_for

from .conftest import Running, start

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)


def cf_text(
    webs: list[Web], extra: str = "", block: str = "", weights: tuple[int, ...] = (1, 1, 1)
) -> str:
    reals = "".join(
        f"\treal=127.0.0.1:{w.port} masq {wt}\n" for w, wt in zip(webs, weights, strict=False)
    )
    return (
        f"checktimeout=1\ncheckinterval=1\n{extra}virtual=127.0.0.100:80\n{reals}"
        f'\tservice=http\n\treceive="alive"\n{block}'
    )


async def test_autoreload_follows_content_and_keeps_a_bad_config_out(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:2], extra="autoreload=yes\n"))
    config = load_config(str(cf))
    # an edit made between parsing and the daemon's first look is still noticed
    cf.write_text(cf_text(webs, extra="autoreload=yes\n"))
    daemon = Daemon(config, MemoryBackend())
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    r = Running(daemon, asyncio.create_task(daemon.run(ready.set_result)))
    stopper.append(r)
    await ready
    await wait_for(lambda: len(r.weights()) == 3)

    # a bad edit: logged, nothing changes, the old config keeps running
    cf.write_text(cf_text(webs, extra="autoreload=yes\n") + "\tfrobnicate=1\n")
    await asyncio.sleep(1.5)
    assert len(r.weights()) == 3 and r.daemon.config.digest == load_config_digest(webs)
    # the fix brings back the running content: nothing to reload
    before = r.daemon.config
    cf.write_text(cf_text(webs, extra="autoreload=yes\n"))
    await asyncio.sleep(2.5)
    assert r.daemon.config is before
    # a real edit is applied once it has settled; touching the file is not a reload
    cf.write_text(cf_text(webs, extra="autoreload=yes\n", weights=(1, 2, 3)))
    await wait_for(lambda: r.daemon.config is not before)
    after = r.daemon.config
    os.utime(cf)
    await asyncio.sleep(1.5)
    assert r.daemon.config is after


def load_config_digest(webs: list[Web]) -> str:
    import hashlib

    return hashlib.sha256(cf_text(webs, extra="autoreload=yes\n").encode()).hexdigest()


async def test_callback_runs_on_change_without_autoreload(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    marker = tmp_path / "called"
    script = tmp_path / "cb.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {marker}\n')
    script.chmod(0o755)
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs, extra=f'callback="{script}"\n'))
    r = await start(cf)
    stopper.append(r)
    first = r.daemon.config
    cf.write_text(cf_text(webs, extra=f'callback="{script}"\n', weights=(2, 2, 2)))
    await wait_for(lambda: marker.exists())
    assert marker.read_text().split() == [str(cf)]
    assert r.daemon.config is first  # autoreload=no: the change is not applied


async def test_maintenancedir_forces_down_and_release(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    maint = tmp_path / "maint"
    maint.mkdir()
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs, extra=f"maintenancedir={maint}\nquiescent=yes\n"))
    r = await start(cf)
    stopper.append(r)
    p = webs[1].port
    assert r.weights()[p] == 1
    (maint / f"127.0.0.1:{p}").touch()
    await wait_for(lambda: r.weights()[p] == 0)
    assert r.daemon.engine.status()["virtuals"][0]["reals"][1]["state"] == "maintenance"
    (maint / f"127.0.0.1:{p}").unlink()
    await wait_for(lambda: r.weights()[p] == 1)
    (maint / "localhost").touch()  # by name (/etc/hosts): every real on 127.0.0.1
    await wait_for(lambda: set(r.weights().values()) == {0})


async def test_fallbackcommand_start_and_stop(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    log = tmp_path / "fb.log"
    script = tmp_path / "fb.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:1], extra=f"fallbackcommand={script}\n"))
    r = await start(cf)
    stopper.append(r)
    await wait_for(lambda: log.exists() and "stop" in log.read_text())
    await webs[0].stop()
    await wait_for(lambda: "start" in log.read_text())
    assert log.read_text().splitlines() == ["stop 127.0.0.100:80 tcp", "start 127.0.0.100:80 tcp"]


async def test_monitorfile_gets_a_line_per_check(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    mon = tmp_path / "mon.log"
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(webs[:1], block=f"\tmonitorfile={mon}\n"))
    r = await start(cf)
    stopper.append(r)
    await wait_for(lambda: mon.exists() and len(mon.read_text().splitlines()) >= 2)
    line = mon.read_text().splitlines()[0]
    assert f"127.0.0.1 {webs[0].port}" in line and "[up]" in line
