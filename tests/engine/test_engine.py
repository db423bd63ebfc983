"""The running engine against real HTTP servers on loopback and the in-memory IPVS backend."""

from __future__ import annotations

from pathlib import Path

from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestKey, ServiceKey
from lvsmon.ipvs.ops import AddDest, EditDest
from tests.helpers import Web, wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)


def write_cf(
    path: Path,
    webs: list[Web],
    fallback: Web | None,
    extra: str = "",
    weights: tuple[int, ...] = (3, 2, 1),
) -> None:
    reals = "".join(
        f"\treal=127.0.0.1:{w.port} masq {wt}\n" for w, wt in zip(webs, weights, strict=False)
    )
    fb = f"\tfallback=127.0.0.1:{fallback.port} masq\n" if fallback else ""
    path.write_text(
        f"checktimeout=1\ncheckinterval=1\n{extra}virtual=127.0.0.100:80\n{reals}{fb}"
        '\tservice=http\n\trequest="health"\n\treceive="alive"\n'
    )


def weights(backend: MemoryBackend, engine: Engine) -> dict[int, int]:
    table = engine.actual or {}
    return {d.port: c.weight for d, c in table[VKEY].dests.items()} if VKEY in table else {}


async def test_lifecycle(webs: list[Web], tmp_path: Path) -> None:
    sorry = Web(0, body="sorry")
    await sorry.start()
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs, sorry, extra="quiescent=yes\n")
    backend = MemoryBackend()
    engine = Engine(load_config(str(cf)), backend)
    await engine.start()
    # before any check: the service and the fallback, no real at full weight
    assert weights(backend, engine) == {sorry.port: 1}
    await engine.wait_programmed()
    p = [w.port for w in webs]
    assert weights(backend, engine) == {p[0]: 3, p[1]: 2, p[2]: 1}

    await webs[1].stop()  # dead server: quiesced
    await wait_for(lambda: weights(backend, engine).get(p[1]) == 0)
    webs[2].body = "wrong content"  # answers, but not what receive wants: quiesced too
    await wait_for(lambda: weights(backend, engine).get(p[2]) == 0)
    assert weights(backend, engine)[p[0]] == 3 and sorry.port not in weights(backend, engine)

    await webs[0].stop()  # all down: the fallback serves
    await wait_for(lambda: weights(backend, engine).get(sorry.port) == 1)
    await webs[1].start()  # one back: restored, the fallback leaves
    await wait_for(lambda: weights(backend, engine) == {p[0]: 0, p[1]: 2, p[2]: 0})

    await engine.stop(clean=True)
    assert await backend.dump() == {}
    await sorry.stop()


async def test_restart_adopts_the_table_with_no_kernel_change(
    webs: list[Web], tmp_path: Path
) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs, None)
    webs[2].status = 503
    backend = MemoryBackend()
    first = Engine(load_config(str(cf)), backend)
    await first.start()
    await first.wait_programmed()
    before = await backend.dump()
    await first.stop(clean=False)  # as after kill -9: the table stays

    second = Engine(load_config(str(cf)), backend)
    await second.start()
    await second.wait_programmed()
    assert second.stats.ops_applied == 0
    assert await backend.dump() == before
    await second.stop(clean=False)


async def test_reload_applies_exactly_the_change(webs: list[Web], tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:2], None)
    backend = MemoryBackend()
    engine = Engine(load_config(str(cf)), backend)
    await engine.start()
    await engine.wait_programmed()
    applied: list[object] = []
    real_apply = backend.apply

    async def spy(ops):  # type: ignore[no-untyped-def]
        applied.extend(ops)
        return await real_apply(ops)

    backend.apply = spy  # type: ignore[method-assign]
    write_cf(cf, webs, None, weights=(5, 2, 1))  # weight change on web0, web2 added
    await engine.reload(load_config(str(cf)))
    await wait_for(lambda: len(weights(backend, engine)) == 3)
    p = [w.port for w in webs]
    assert applied == [
        EditDest(VKEY, DestKey("127.0.0.1", p[0]), applied[0].conf),  # type: ignore[attr-defined]
        AddDest(VKEY, DestKey("127.0.0.1", p[2]), applied[1].conf),  # type: ignore[attr-defined]
    ]
    assert weights(backend, engine) == {p[0]: 5, p[1]: 2, p[2]: 1}
    await engine.stop()
