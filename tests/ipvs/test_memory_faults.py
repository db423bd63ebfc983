"""The memory backend's opt-in misbehaviour (lvsmon/ipvs/memory_faults.py), bench/soak.py's tool."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lvsmon.ipvs.apply import apply_ops
from lvsmon.ipvs.errors import BackendError, ErrorKind
from lvsmon.ipvs.factory import make_backend
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.memory_faults import FaultyMemoryBackend, wanted_from_env
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Proto, Service, ServiceConf, ServiceKey
from lvsmon.ipvs.ops import AddDest, AddService, Op

VIP = ServiceKey.inet(Proto.TCP, "127.100.0.1", 80)


def dests(n: int) -> list[Op]:
    return [
        AddDest(VIP, DestKey.of(f"127.88.0.{i + 1}", 80), DestConf(Forward.MASQ, 1))
        for i in range(n)
    ]


async def test_failed_ops_leave_the_table_as_the_kernel_would() -> None:
    backend = FaultyMemoryBackend({VIP: Service(ServiceConf())}, faults=0.3, seed=4)
    await backend.dump()  # no faults before the first successful dump
    ops = dests(40)
    results = await backend.apply(ops)
    assert [r.op for r in results] == ops
    failed = [r for r in results if r.error is not None]
    assert failed and len(failed) < len(ops)
    assert backend.faults_injected == len(failed)
    assert all(r.error is not None and r.error.kind is ErrorKind.OTHER for r in failed)
    # the same as applying only the ops that did not fail
    expected, _ = apply_ops({VIP: Service(ServiceConf())}, [r.op for r in results if r.ok])
    assert backend.table == expected


async def test_dump_faults_only_after_a_first_good_dump() -> None:
    backend = FaultyMemoryBackend(faults=0.99, seed=1)
    await backend.dump()
    with pytest.raises(BackendError):
        await backend.dump()


async def test_no_faults_by_default() -> None:
    backend = FaultyMemoryBackend(seed=1)
    await backend.dump()
    results = await backend.apply([AddService(VIP, ServiceConf()), *dests(50)])
    assert all(r.ok for r in results) and backend.faults_injected == 0


async def test_drift_changes_the_table_behind_the_callers_back(tmp_path: Path) -> None:
    start = {
        VIP: Service(
            ServiceConf(), {DestKey.of(f"127.88.0.{i}", 80): DestConf() for i in range(1, 9)}
        )
    }
    backend = FaultyMemoryBackend(start, drift_s=0.05, seed=2, dump_path=str(tmp_path / "t.json"))
    before = await backend.dump()
    await asyncio.sleep(0.5)
    assert backend.drifts_injected >= 3
    assert await backend.dump() != before
    assert sum(line.startswith("# drift: ") for line in backend.log) == backend.drifts_injected
    await backend.close()
    doc = json.loads((tmp_path / "t.json").read_text())
    assert doc["drifts_injected"] == backend.drifts_injected
    table = backend.table
    assert doc["table"] == {
        str(k): {str(d): c.weight for d, c in s.dests.items()} for k, s in table.items()
    }
    count = backend.drifts_injected
    await asyncio.sleep(0.2)
    assert backend.drifts_injected == count  # close() stopped the timers


def test_the_factory_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LVSMON_MEMORY_FAULTS", "LVSMON_MEMORY_DRIFT", "LVSMON_MEMORY_DUMP"):
        monkeypatch.delenv(name, raising=False)
    assert not wanted_from_env()
    plain = make_backend("memory")
    assert type(plain) is MemoryBackend
    monkeypatch.setenv("LVSMON_MEMORY_FAULTS", "0.05")
    monkeypatch.setenv("LVSMON_MEMORY_DRIFT", "3")
    monkeypatch.setenv("LVSMON_MEMORY_SEED", "9")
    monkeypatch.setenv("LVSMON_MEMORY_DUMP", str(tmp_path / "t.json"))
    faulty = make_backend("memory")
    assert isinstance(faulty, FaultyMemoryBackend)
    assert (faulty.faults, faulty.drift_s, faulty.dump_path) == (
        0.05,
        3.0,
        str(tmp_path / "t.json"),
    )
    assert faulty.name == "memory"  # verify-table and status treat it as the memory backend


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FaultyMemoryBackend(faults=1.5)
    with pytest.raises(ValueError):
        FaultyMemoryBackend(drift_s=0)
