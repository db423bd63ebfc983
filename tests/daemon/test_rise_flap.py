"""risecount and flap damping end to end: an in-process daemon on the memory backend checking
real HTTP servers on loopback, watched through its status (what `lvsmon status` and GET /status
show) and the kernel table."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from lvsmon.engine.status import RealStatus, render_status
from tests.helpers import Web, wait_for

from .conftest import VKEY, Running, start


def cf_text(web: Web, extra: str) -> str:
    return (
        f"checktimeout=1\ncheckinterval=1\n{extra}virtual=127.0.0.100:80\n"
        f"\treal=127.0.0.1:{web.port} masq\n"
        '\tservice=http\n\treceive="alive"\n'
    )


def real_status(r: Running) -> RealStatus:
    status = json.loads(r.daemon.status_json(max_age=0.0))  # what clients get
    (real,) = status["virtuals"][0]["reals"]
    return real  # type: ignore[no-any-return]


def in_kernel(r: Running, web: Web) -> bool:
    return web.port in r.weights()


async def watch(r: Running, until: Any, within: float = 15.0) -> list[tuple[Any, ...]]:
    """Each distinct (state, rising, held) the real goes through until `until(real)` holds."""
    seen: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + within
    while True:
        real = real_status(r)
        shown = (real["state"], real["rising"], real["held_until"] is not None)
        if not seen or seen[-1] != shown:
            seen.append(shown)
        if until(real):
            return seen
        assert time.monotonic() < deadline, f"not reached; went through {seen}"
        await asyncio.sleep(0.02)


async def test_a_failed_real_comes_back_after_risecount_passes(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    web = webs[0]
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(web, "risecount=3\n"))
    r = await start(cf)
    stopper.append(r)
    # the first pass after start brings it in: no wait for a real no check had found down
    await wait_for(lambda: in_kernel(r, web))
    web.status = 500
    await wait_for(lambda: not in_kernel(r, web))
    web.status = 200
    back = time.monotonic()
    seen = await watch(r, lambda real: real["state"] == "up")
    assert seen == [
        ("down", None, False),
        ("down", "1/3", False),
        ("down", "2/3", False),
        ("up", None, False),
    ]
    assert time.monotonic() - back > 1.5  # three checks a second apart, not one
    await wait_for(lambda: in_kernel(r, web))

    # a failure during the rise starts the count again
    web.status = 500
    await wait_for(lambda: not in_kernel(r, web))
    web.status = 200
    await watch(r, lambda real: real["rising"] == "1/3")
    web.status = 500
    await watch(r, lambda real: real["rising"] is None and "500" in real["reason"])
    web.status = 200
    seen = await watch(r, lambda real: real["state"] == "up")
    assert [s for s in seen if s[1]] == [("down", "1/3", False), ("down", "2/3", False)]


async def test_a_flapping_real_is_held_down_until_stable(
    webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    web = webs[0]
    cf = tmp_path / "lb.cf"
    cf.write_text(cf_text(web, "flapcount=2\nflapwindow=60\nflaphold=3\n"))
    r = await start(cf)
    stopper.append(r)
    await wait_for(lambda: in_kernel(r, web))
    # down, up, down: three changes within the window, more than flapcount=2
    for status, wanted in ((500, False), (200, True), (500, False)):
        web.status = status
        await wait_for(lambda wanted=wanted: in_kernel(r, web) is wanted)  # type: ignore[misc]
    real = real_status(r)
    assert real["held_until"] is not None
    assert real["reason"].startswith("flapping: 3 state changes within 60 s, held down until")
    web.status = 200  # healthy again, but held
    await watch(r, lambda real: "checks say up" in real["reason"])
    real = real_status(r)
    assert real["state"] == "down" and not in_kernel(r, web)
    held_until = real["held_until"]
    assert held_until is not None and held_until > time.time()
    text = render_status(json.loads(r.daemon.status_json(max_age=0.0)))
    assert " down held until " in text and "flapping: 3 state changes" in text
    # stable for flaphold=3 s (from the change it saw last), then the next check brings it back
    seen = await watch(r, lambda real: real["state"] == "up")
    assert seen[-2:] == [("down", None, True), ("up", None, False)]
    assert time.time() >= held_until - 0.1
    await wait_for(lambda: in_kernel(r, web))
    assert "flapping" not in real_status(r)["reason"]
    (health,) = r.daemon.engine.health.values()
    assert health.flaps == () and health.hold is None  # a fresh start for the next flaps
    assert VKEY in (r.daemon.engine.actual or {})
