"""Stats.lateness_ms (lvsmon/engine/status.py): the start lateness percentiles of the status
are sorted anew only once a tenth of the window is new or LATENESS_EVERY_S have passed (the
sort of 20,000 starts each second was a twentieth of the daemon's CPU at 500 checks a second),
and are then exactly the window's."""

from __future__ import annotations

import random
import time

import pytest

from lvsmon.engine.status import LATENESS_EVERY_S, LATENESS_SORT_ALWAYS, LATENESS_WINDOW, Stats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)  # the module's: status.py reads time.monotonic
    return clock


def exact(stats: Stats) -> dict[str, float]:
    ordered = sorted(stats.lateness)
    n = len(ordered)
    return {
        "p50": round(ordered[n // 2] * 1000, 3),
        "p99": round(ordered[min(n - 1, int(0.99 * n))] * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
    }


def test_no_start_no_percentiles(clock: Clock) -> None:
    assert Stats().lateness_ms() == {}


def test_percentiles_are_kept_until_a_tenth_is_new_or_the_interval_passed(clock: Clock) -> None:
    rng = random.Random(7)
    stats = Stats()
    for _ in range(LATENESS_WINDOW):
        stats.record_lateness(rng.random() / 100)
    first = stats.lateness_ms()
    assert first == exact(stats)
    stats.record_lateness(5.0)  # a new worst start: less than a tenth new, within the interval
    assert stats.lateness_ms() == first
    clock.now += LATENESS_EVERY_S  # the interval passed
    assert stats.lateness_ms() == exact(stats) and stats.lateness_ms()["max"] == 5000.0
    kept = stats.lateness_ms()
    for _ in range(LATENESS_WINDOW // 10):  # a tenth of the window new, at once
        stats.record_lateness(1.0)
    assert stats.lateness_ms() != kept and stats.lateness_ms() == exact(stats)


def test_nothing_new_is_the_last_answer_however_late(clock: Clock) -> None:
    stats = Stats()
    for value in (0.001, 0.002, 0.003):
        stats.record_lateness(value)
    answer = stats.lateness_ms()
    clock.now += 10 * LATENESS_EVERY_S
    assert stats.lateness_ms() == answer == exact(stats)
    answer["p50"] = -1.0  # the caller's copy
    assert stats.lateness_ms() == exact(stats)


def test_a_small_window_is_sorted_anew_at_each_start(clock: Clock) -> None:
    """The first seconds of a small pool: the sort costs next to nothing, the answer is exact."""
    stats = Stats()
    for i in range(LATENESS_SORT_ALWAYS - 2):  # with the next one, one less than the bound
        stats.record_lateness(i / 1e6)
    stats.lateness_ms()
    stats.record_lateness(0.5)
    assert stats.lateness_ms() == exact(stats) and stats.lateness_ms()["max"] == 500.0
