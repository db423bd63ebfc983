"""Parts start in order and stop in reverse under one bound; a failing or hanging stop does not
keep the others from stopping; a part whose start was cut short is stopped too."""

from __future__ import annotations

import asyncio
import time

import pytest

from lvsmon.daemon.lifecycle import Lifecycle, Part


def recorder(log: list[str], name: str, *, hang: str = "", fail: bool = False) -> Part:
    async def start() -> None:
        log.append(f"start {name}")
        if hang == "start":
            await asyncio.Event().wait()

    async def stop(_left: float) -> None:
        log.append(f"stop {name}")
        if fail:
            raise RuntimeError(f"{name} cannot stop")
        if hang == "stop":
            await asyncio.Event().wait()

    return Part(name, start, stop)


async def test_start_in_order_stop_in_reverse() -> None:
    log: list[str] = []
    parts = Lifecycle([recorder(log, n) for n in "abc"])
    await parts.start()
    await parts.stop(5)
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_a_cancelled_start_stops_what_was_begun() -> None:
    log: list[str] = []
    parts = Lifecycle([recorder(log, "a"), recorder(log, "b", hang="start"), recorder(log, "c")])
    task = asyncio.create_task(parts.start())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await parts.stop(5)
    assert log == ["start a", "start b", "stop b", "stop a"]


async def test_one_bound_for_the_whole_stop(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    parts = Lifecycle(
        [recorder(log, "a"), recorder(log, "b", fail=True), recorder(log, "c", hang="stop")]
    )
    await parts.start()
    t0 = time.monotonic()
    await parts.stop(0.3)
    assert time.monotonic() - t0 < 2
    assert log[-3:] == ["stop c", "stop b", "stop a"]
    assert "c did not finish within the stop bound" in caplog.text
    assert "b failed" in caplog.text and "b cannot stop" in caplog.text
