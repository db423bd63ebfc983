"""Health of one real server inside one virtual service: a pure state machine.

ldirectord's rule, kept: `failurecount` consecutive failures take a real down, one success brings it
back. Unlike ldirectord, the count lives per (virtual, real): a real shared by several virtuals is
checked once, and each virtual counts that one result once (ldirectord counted it once per virtual
per failure, so shared reals fell faster than configured).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Transition(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class RealHealth:
    up: bool
    failcount: int = 0  # consecutive failures seen while up (the "soft failures")
    checked: bool = False  # has any check result arrived since start or (re)adoption
    reason: str = ""  # the last check's own words

    def observe(
        self, ok: bool, reason: str, failurecount: int
    ) -> tuple[RealHealth, Transition | None]:
        """Feed one check result; returns the new state and the transition it caused, if any."""
        if ok:
            state = RealHealth(up=True, failcount=0, checked=True, reason=reason)
            return state, (None if self.up else Transition.UP)
        if not self.up:
            return replace(self, failcount=self.failcount + 1, checked=True, reason=reason), None
        failcount = self.failcount + 1
        if failcount >= failurecount:
            return RealHealth(up=False, failcount=failcount, checked=True, reason=reason), (
                Transition.DOWN
            )
        return replace(self, failcount=failcount, checked=True, reason=reason), None

    @property
    def soft_failing(self) -> bool:
        return self.up and self.failcount > 0


DOWN = RealHealth(up=False)
ADOPTED_UP = RealHealth(up=True)
