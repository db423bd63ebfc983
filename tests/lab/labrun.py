"""What the lab tests share: the running lab and the times they measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.lab.daemonctl import Lvsmon
from tests.lab.netlab import Lab

# Measured times, printed in the terminal summary: (what, seconds).
MEASURED: list[tuple[str, float]] = []


@dataclass
class LabRun:
    net: Lab
    daemon: Lvsmon
    # real number -> configured weight on VIP:80 (the tests edit the config)
    weights: dict[int, int] = field(default_factory=lambda: {1: 1, 2: 1, 3: 1})
