"""Measured steps of the cluster tests: each has a deadline (it bounds a hung cluster; it is not
an assertion on speed) and a measured time, printed as it happens and as a table at the end of
the run (tests/cluster/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.cluster.lab import ClusterError


@dataclass(frozen=True)
class Step:
    scenario: str
    name: str
    seconds: float
    deadline: float


STEPS: list[Step] = []


class Timeline:
    """The steps of one scenario, in order."""

    def __init__(self, scenario: str, on_timeout: Callable[[], str] | None = None) -> None:
        self.scenario = scenario
        self.on_timeout = on_timeout  # extra context for a failure (the cluster's logs)
        self.started = time.monotonic()

    def record(self, name: str, seconds: float, deadline: float) -> float:
        STEPS.append(Step(self.scenario, name, seconds, deadline))
        total = time.monotonic() - self.started
        print(
            f"[{self.scenario} +{total:6.1f} s] {name}: {seconds:.2f} s (deadline {deadline:g} s)",
            flush=True,
        )
        return seconds

    def wait(
        self, name: str, probe: Callable[[], object], within: float, every: float = 0.1
    ) -> float:
        """Poll `probe` until it is truthy; record and return the seconds it took."""
        start = time.monotonic()
        while not probe():
            if time.monotonic() - start > within:
                context = self.on_timeout() if self.on_timeout else ""
                raise ClusterError(f"{self.scenario}: {name}: not within {within} s\n{context}")
            time.sleep(every)
        return self.record(name, time.monotonic() - start, within)


def table() -> list[str]:
    """The recorded steps as aligned text lines."""
    width = max((len(s.name) for s in STEPS), default=10)
    lines = [f"{'scenario':<22} {'step':<{width}} {'measured':>9} {'deadline':>9}"]
    for s in STEPS:
        lines.append(f"{s.scenario:<22} {s.name:<{width}} {s.seconds:>7.2f} s {s.deadline:>7g} s")
    return lines
