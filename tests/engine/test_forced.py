"""Operator forcing (lvsmon/engine/forced.py): the running daemon's maintenance scan and drain
state, and the preview of a config that does not run (POST /plan, offline `lvsmon plan`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from lvsmon.config import Config
from lvsmon.engine import maintenance
from lvsmon.engine.drain import drain, select
from lvsmon.engine.forced import Forcing, Preview
from lvsmon.engine.jobs import Plan, RealRef, build_plan
from lvsmon.ipvs.model import ServiceKey

from .conftest import cfg

POOL = """\
{globals}
virtual=10.0.0.1:80
\treal=10.0.0.5:80 masq
\treal=10.0.0.6:80 masq
\tchecktype=on
"""
MORE = """\
virtual=10.0.0.2:80
\treal=10.0.0.5:80 masq
\tchecktype=on
"""
V1 = ServiceKey.inet("tcp", "10.0.0.1", 80)
V2 = ServiceKey.inet("tcp", "10.0.0.2", 80)
R5, R6 = RealRef(V1, "10.0.0.5", 80), RealRef(V1, "10.0.0.6", 80)
R5_V2 = RealRef(V2, "10.0.0.5", 80)


def config_plan(text: str) -> tuple[Config, Plan]:
    config = cfg(text)
    return config, build_plan(config)


def test_a_preview_without_running_parts_reads_as_a_daemon_started_now(tmp_path: Path) -> None:
    """The offline `lvsmon plan`: the drain state file, or maintenancedir's files."""
    state = tmp_path / "drain.json"
    state.write_text(json.dumps([{"real": "10.0.0.5:80", "virtual": None}]))
    preview = Preview(str(state))
    config, plan = config_plan(POOL.format(globals="") + MORE)
    assert preview.drained(config, plan) == {R5, R5_V2}
    assert preview.maintained(config, plan) == frozenset()

    mdir = tmp_path / "maint"
    mdir.mkdir()
    (mdir / "10.0.0.6:80").touch()
    (mdir / "10.0.0.5:80@tcp:10.0.0.1:80.drain").touch()
    config, plan = config_plan(POOL.format(globals=f"maintenancedir={mdir}") + MORE)
    # with maintenancedir the state file is not the store
    assert preview.drained(config, plan) == {R5}
    assert preview.maintained(config, plan) == {R6}
    assert Preview(None).drained(*config_plan(POOL.format(globals=""))) == frozenset()


def test_the_running_side_and_its_preview_apply_one_rule(tmp_path: Path) -> None:
    """Drains kept in memory (no state file) are seen by the preview; a real drained in every
    virtual is drained in a virtual the new config adds."""
    forcing = Forcing(None)
    config, plan = config_plan(POOL.format(globals=""))
    store = forcing.drains.store(config)
    drain(store, forcing.drain_index(config, plan), select(config, "10.0.0.5:80"), everywhere=True)
    assert forcing.drained(config, plan) == {R5}
    preview = forcing.preview(config)
    assert preview.drained(config, plan) == {R5}
    assert preview.drained(*config_plan(POOL.format(globals="") + MORE)) == {R5, R5_V2}

    mdir = tmp_path / "maint"
    mdir.mkdir()
    (mdir / "10.0.0.6").touch()
    config, plan = config_plan(POOL.format(globals=f"maintenancedir={mdir}"))
    forcing = Forcing(None)
    assert forcing.maintained(config, plan) == {R6}
    assert forcing.preview(config).maintained(config, plan) == {R6}


def test_a_preview_changes_nothing_of_the_running_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    def reverse_name(address: str) -> str | None:
        lookups.append(address)
        return None

    monkeypatch.setattr(maintenance, "reverse_name", reverse_name)
    running_dir, other_dir = tmp_path / "a", tmp_path / "b"
    running_dir.mkdir()
    other_dir.mkdir()
    (running_dir / "10.0.0.5:80.drain").touch()
    (other_dir / "10.0.0.6:80.drain").touch()
    (other_dir / "10.0.0.5").touch()
    config, plan = config_plan(POOL.format(globals=f"maintenancedir={running_dir}"))
    forcing = Forcing(str(tmp_path / "drain.json"))
    assert forcing.drained(config, plan) == {R5}
    running_maint = forcing.maintenance_dir(config, plan)
    assert sorted(lookups) == ["10.0.0.5", "10.0.0.6"]

    # the running config again: its names are reused, not looked up again
    preview = forcing.preview(config)
    assert preview.drained(config, plan) == {R5}
    assert len(lookups) == 2
    # another maintenancedir: read there, and the drains stay where they are (a reload moves
    # them; a preview does not)
    other, other_plan = config_plan(POOL.format(globals=f"maintenancedir={other_dir}"))
    assert preview.drained(other, other_plan) == {R6}
    assert preview.maintained(other, other_plan) == {R5}
    assert (running_dir / "10.0.0.5:80.drain").exists()
    assert not (other_dir / "10.0.0.5:80.drain").exists()
    assert forcing.maintenance_dir(config, plan) is running_maint
    assert forcing.drains.store(config).where == str(running_dir)


def test_unknown_entries_are_logged_once_by_the_running_side_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "drain.json"
    state.write_text(json.dumps([{"real": "10.0.0.99:80", "virtual": None}]))
    config, plan = config_plan(POOL.format(globals=""))
    caplog.set_level(logging.WARNING, logger="lvsmon")
    assert Preview(str(state)).drained(config, plan) == frozenset()
    assert not caplog.records
    forcing = Forcing(str(state))
    for _ in range(2):
        assert forcing.drained(config, plan) == frozenset()
    assert [r.getMessage() for r in caplog.records] == [
        f"drain state {state}: 10.0.0.99:80 names no real server of test.cf; kept, ignored"
    ]
