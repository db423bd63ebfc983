"""Light resyncs (engine/reconciler.py LIGHT_FULL_EVERY): with a backend that reads the table one
request per service (KnownDump: netlink), the probe services' one destination each is read at
every 12th resync only; the other resyncs read their service record, so a probe service
deleted behind lvsmon's back is still put back by the next resync, and one whose destination
was changed by the 12th. The production service is read in full every time."""

from __future__ import annotations

from pathlib import Path

from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.probepath import probe_service
from lvsmon.engine.reconciler import LIGHT_FULL_EVERY
from lvsmon.ipvs.backend import KnownDump
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, Forward, Service, ServiceKey, Table
from tests.engine.test_engine_probes import BASE, PROBES, VKEY, write_cf


class PerService(MemoryBackend):
    """The memory backend, read as netlink reads the kernel: a request per service, the known
    services' destinations taken from what the caller knows when their record is the same."""

    def __init__(self) -> None:
        super().__init__()
        self.full = 0
        self.light = 0
        self.dest_reads: list[ServiceKey] = []

    async def dump(self) -> Table:
        self.full += 1
        table = await super().dump()
        self.dest_reads.extend(table)
        return table

    async def dump_known(self, known: Table) -> Table:
        self.light += 1
        out: Table = {}
        for key, service in (await super().dump()).items():
            hit = known.get(key)
            if hit is not None and hit.conf == service.conf:
                out[key] = hit
            else:
                out[key] = service
                self.dest_reads.append(key)
        return out


async def test_probe_destinations_are_read_every_twelfth_resync(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, "vip")
    backend = PerService()
    assert isinstance(backend, KnownDump)
    engine = Engine(load_config(str(cf)), backend)
    await engine.start()
    try:
        assert set(backend.table) == {VKEY, *PROBES}
        full, light = backend.full, backend.light
        backend.dest_reads.clear()
        for _ in range(LIGHT_FULL_EVERY):
            await engine.reconciler.resync()
        # one full read in 12 resyncs, the others light: the production service read each
        # time, each probe service's destination once
        assert (backend.full - full, backend.light - light) == (1, LIGHT_FULL_EVERY - 1)
        assert backend.dest_reads.count(VKEY) == LIGHT_FULL_EVERY
        assert all(backend.dest_reads.count(k) == 1 for k in PROBES), backend.dest_reads

        # a probe service deleted by hand: its record is missing, the next (light) resync
        # puts it back
        probe = ServiceKey.fwm(BASE)
        del backend.table[probe]
        await engine.reconciler.resync()
        assert backend.table[probe] == probe_service("127.0.0.11", Forward.GATE)

        # its destination edited by hand: not seen by a light resync, repaired by the full one
        edited = Service(backend.table[probe].conf, dict(backend.table[probe].dests))
        (dest,) = edited.dests
        edited.dests[dest] = DestConf(Forward.GATE, 5, 0, 0)
        backend.table = {**backend.table, probe: edited}
        for _ in range(LIGHT_FULL_EVERY):
            await engine.reconciler.resync()
            if backend.table[probe] == probe_service("127.0.0.11", Forward.GATE):
                break
        assert backend.table[probe] == probe_service("127.0.0.11", Forward.GATE)
    finally:
        await engine.stop(clean=True)


async def test_a_plain_backend_is_always_read_in_full(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, "vip")
    backend = MemoryBackend()
    engine = Engine(load_config(str(cf)), backend)
    await engine.start()
    try:
        assert not isinstance(backend, KnownDump)
        del backend.table[ServiceKey.fwm(BASE)]
        backend.table = dict(backend.table)
        await engine.reconciler.resync()
        assert ServiceKey.fwm(BASE) in backend.table
    finally:
        await engine.stop(clean=True)
