"""Chaos: the daemon over a backend that refuses a random share of ops and raises now and then,
while reals flap and the table is changed behind its back. After each fault the kernel converges
to exactly what the servers' health says, and nothing is lost on the way."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.model import ServiceKey
from tests.helpers import Web, wait_for

from ..engine.faulty import FaultyBackend

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)
SEED = 8


async def test_the_table_converges_after_every_fault(webs: list[Web], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    cf = tmp_path / "lb.cf"
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq {i + 1}\n" for i, w in enumerate(webs))
    cf.write_text(
        "checktimeout=1\ncheckinterval=1\nquiescent=yes\n"
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
        f'virtual=127.0.0.101:80\n{reals}\tservice=http\n\treceive="alive"\n'
    )
    backend = FaultyBackend(seed=SEED)
    daemon = Daemon(load_config(str(cf)), backend, resync_s=1.0)
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    engine = daemon.engine
    weight_of = {w.port: i + 1 for i, w in enumerate(webs)}

    def as_health_says(key: ServiceKey) -> bool:
        """Up reals at their weight; down reals quiesced, or absent where they were deleted
        by hand while down (without readdquiescent, ldirectord's rule: they stay deleted)."""
        service = backend.table.get(key)
        if service is None:
            return False
        weights = {d.port: c.weight for d, c in service.dests.items()}
        for w in webs:
            if w.status == 200 and weights.get(w.port) != weight_of[w.port]:
                return False
            if w.status != 200 and weights.get(w.port, 0) != 0:
                return False
        return True

    def converged() -> bool:
        return (
            not diff(engine.desired(), backend.table, engine.managed)
            and as_health_says(VKEY)
            and as_health_says(ServiceKey.inet("tcp", "127.0.0.101", 80))
        )

    times: list[float] = []
    for episode in range(8):
        backend.fail_share, backend.raise_share = 0.6, 0.2
        for w in rng.sample(webs, rng.randint(1, 2)):  # reals flap
            w.status = 503 if w.status == 200 else 200
        if episode % 3 == 2:  # and someone edits the table by hand
            service = backend.table.get(VKEY)
            if service and service.dests:
                del service.dests[rng.choice(sorted(service.dests, key=str))]
        if episode % 4 == 3:
            backend.table.clear()  # ipvsadm -C
        await asyncio.sleep(2.5)
        backend.fail_share = backend.raise_share = 0.0
        t0 = time.monotonic()
        await wait_for(converged, within=20)
        times.append(time.monotonic() - t0)
    print(f"converged after each fault episode in {[round(t, 2) for t in times]} s")
    assert backend.faults > 10 and engine.stats.ops_failed > 0
    assert engine.crashed is None and not task.done()
    assert daemon.events.dropped == 0
    for w in webs:
        w.status = 200
    await wait_for(converged, within=20)
    daemon.request_stop()
    assert await task == 0
    assert backend.table == {}  # cleanstop, after all that
