"""Probe services in the running engine (issue 23 point 2), with the in-memory backend: programmed
at start before the first check, their marks given to the checks, repaired by the resync,
added and removed by reloads with no production op, removed at a clean stop, adopted with no
change by a restart; a foreign service in the block is never touched."""

from __future__ import annotations

from pathlib import Path

from lvsmon.checks import viapath
from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.probepath import probe_service
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import Forward, ServiceKey, Table

BASE = 0x4C560000
VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)
PROBES = {ServiceKey.fwm(BASE), ServiceKey.fwm(BASE + 1)}
FOREIGN = ServiceKey.fwm(BASE + 500)


def write_cf(path: Path, checkpath: str) -> None:
    # nothing listens on the reals: every check fails fast, the probe services do not care
    path.write_text(
        "checktimeout=1\ncheckinterval=1\n"
        "virtual=127.0.0.100:80\n"
        "\treal=127.0.0.11:80 gate\n\treal=127.0.0.12:80 ipip\n"
        f"\tchecktype=connect\n\tcheckpath={checkpath}\n"
    )


def probe_keys(table: Table) -> set[ServiceKey]:
    return {k for k in table if k.is_fwmark and k != FOREIGN}


async def test_probe_services_through_the_life_of_an_engine(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, "vip")
    foreign = probe_service("127.0.0.99", Forward.GATE)
    backend = MemoryBackend({FOREIGN: foreign})
    engine = Engine(load_config(str(cf)), backend)
    await engine.start()
    try:
        # programmed by start, before any check ran; the checks have their marks
        assert probe_keys(backend.table) == PROBES
        assert backend.table[ServiceKey.fwm(BASE)] == probe_service("127.0.0.11", Forward.GATE)
        assert backend.table[ServiceKey.fwm(BASE + 1)] == probe_service("127.0.0.12", Forward.IPIP)
        assert viapath.mark_of("127.0.0.12", "ipip") == BASE + 1

        # deleted behind lvsmon's back: the resync puts it back
        del backend.table[ServiceKey.fwm(BASE)]
        await engine.reconciler.resync()
        assert probe_keys(backend.table) == PROBES

        # a reload to real: the probe services go, nothing else is touched
        log = len(backend.log)
        write_cf(cf, "real")
        await engine.reload(load_config(str(cf)))
        assert probe_keys(backend.table) == set()
        assert backend.log[log:] == [f"ipvsadm -D -f {BASE}", f"ipvsadm -D -f {BASE + 1}"]
        assert viapath.mark_of("127.0.0.12", "ipip") is None

        # back to vip: the same marks
        log = len(backend.log)
        write_cf(cf, "both")
        await engine.reload(load_config(str(cf)))
        assert probe_keys(backend.table) == PROBES
        assert all(" -f " in line for line in backend.log[log:]), backend.log[log:]
        assert backend.table[FOREIGN] == foreign
    finally:
        await engine.stop(clean=False)  # as after kill -9: the table stays

    before = await backend.dump()
    again = Engine(load_config(str(cf)), backend)
    await again.start()
    applied = again.stats.ops_applied
    await again.stop(clean=True)
    assert applied == 0  # the restart adopted its probe services as they were
    assert set(backend.table) == {FOREIGN}, backend.table.keys()
    assert before[FOREIGN] == backend.table[FOREIGN]
    viapath.use_marks({})


async def test_the_status_counts_the_probe_services(tmp_path: Path) -> None:
    """Shown apart from the virtuals: how many the config wants, how many the kernel holds."""
    from lvsmon.engine.status import render_status

    cf = tmp_path / "lb.cf"
    write_cf(cf, "vip")
    backend = MemoryBackend()
    engine = Engine(load_config(str(cf)), backend)
    await engine.start()
    try:
        assert engine.status_head()["probes"] == {
            "markbase": BASE, "services": 2, "in_kernel": 2,
        }  # fmt: skip
        del backend.table[ServiceKey.fwm(BASE)]
        await engine.reconciler.resync()  # read back (and repaired)
        assert engine.status_head()["probes"] == {"markbase": BASE, "services": 2, "in_kernel": 2}
        engine.reconciler.actual = {
            k: v for k, v in (engine.reconciler.actual or {}).items() if k != ServiceKey.fwm(BASE)
        }  # a table read without it
        assert engine.status_head()["probes"] == {"markbase": BASE, "services": 2, "in_kernel": 1}
        assert (
            f"probe services (checkpath): 2, 1 of them in the kernel (firewall marks from {BASE})"
            in render_status(engine.status())
        )
        write_cf(cf, "real")
        await engine.reload(load_config(str(cf)))
        assert engine.status_head()["probes"] is None
    finally:
        await engine.stop()
