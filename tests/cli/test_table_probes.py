"""purge and verify-table with probe services (issue 23): purge deletes the config's probe
services whoever programmed them and leaves every other service in the reserved block;
verify-table counts them apart."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import pytest

from lvsmon.cli import table
from lvsmon.cli.control import Control
from lvsmon.config import load_config
from lvsmon.engine.probepath import plan_probes, probe_service, with_probes
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Service, ServiceConf, ServiceKey, Table

BASE = 0x4C560000
CONFIG = (
    "virtual=10.30.0.100:80\n\tservice=http\n\tcheckpath=vip\n"
    "\treal=10.30.0.11:80 gate\n\treal=10.30.0.12:80 ipip\n"
)


def test_purge_deletes_the_probe_services_of_the_config_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lb.cf"
    path.write_text(CONFIG)
    config = load_config(str(path))
    probes = plan_probes(config)
    foreign: Table = {
        # in the block, not a real of this config: another daemon's, or an operator's
        ServiceKey.fwm(BASE + 100): probe_service("10.30.0.99", Forward.GATE),
        ServiceKey.fwm(7): Service(
            ServiceConf(), {DestKey("10.30.0.11", 0): DestConf(Forward.GATE, 1, 0, 0)}
        ),
    }
    backend = MemoryBackend({**with_probes({}, probes), **foreign})
    backend.table[config.virtuals[0].key] = Service(ServiceConf())
    monkeypatch.setattr(table, "_backend", lambda name, control: backend)
    control = Control(str(path), "lb.cf", backend="netlink", pid_file=str(tmp_path / "lb.pid"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert table.purge(control) == 0
    assert backend.table.keys() == foreign.keys()
    assert f"Deleted virtual server: fwm:{BASE}" in out.getvalue()


def test_verify_table_counts_probe_services_apart(tmp_path: Path) -> None:
    path = tmp_path / "lb.cf"
    path.write_text("checkmarkbase=5000\n" + CONFIG)
    control = Control(str(path), "lb.cf", backend="netlink", pid_file=str(tmp_path / "lb.pid"))
    assert table._is_probe_name("fwm:5000", 5000)
    assert table._is_probe_name("fwm:70535/inet6", 5000)
    assert not table._is_probe_name("fwm:70536", 5000)
    assert not table._is_probe_name("tcp:10.0.0.1:5000", 5000)
    assert table._markbase(control) == 5000
    assert table._markbase(Control(str(tmp_path / "none.cf"), "none.cf")) == BASE


def test_purge_with_an_unloadable_config_still_purges_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend({ServiceKey.fwm(BASE): probe_service("10.30.0.11", Forward.GATE)})
    monkeypatch.setattr(table, "_backend", lambda name, control: backend)
    control = Control(str(tmp_path / "gone.cf"), "gone.cf", backend="netlink")
    assert asyncio.run(table._purge(control, set(), None)) == 0
    assert len(backend.table) == 1  # nothing named, nothing of a config: left alone
