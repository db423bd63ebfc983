"""Health of one real server inside one virtual service: a pure state machine.

ldirectord's rule, kept: `failurecount` consecutive failures take a real down, one success brings it
back. Unlike ldirectord, the count lives per (virtual, real): a real shared by several virtuals is
checked once, and each virtual counts that one result once (ldirectord counted it once per virtual
per failure, so shared reals fell faster than configured).

lvsmon's two extensions, both off by default (then the machine is ldirectord's, state for state):

- `risecount`: a real that checks found down comes back only after that many passes in a row; a
  failure in between starts the count again. A real no check has spoken for yet (at start, after
  a reload that changed its check) comes up on its first pass, as before: the count guards against
  a real that just failed, and holding a whole pool out at start would put the fallback in front
  of every user for `risecount` intervals.
- flap damping (`Damping`): a real whose checks changed its state more than `count` times within
  `window` seconds is held down, whatever its checks say, until they have not changed its state
  for `hold` seconds; the first check after that decides. A change during the hold starts it
  again.

Time is the caller's (the engine's clock, in seconds); nothing here reads a clock. States are
immutable values, so equal ones may be one object: the settled up state is shared per reason
(`settled_up`), as a healthy pool's reals all have it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Transition(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Damping:
    """Flap damping: more than `count` state changes within `window` s hold a real down until its
    state has not changed for `hold` s. `count` is at least 1 (0 in the config: no damping)."""

    count: int
    window: float
    hold: float


@dataclass(frozen=True, slots=True)
class HealthRules:
    """How check results become health for one (virtual, real): its virtual's settings."""

    failurecount: int = 1
    risecount: int = 1
    damping: Damping | None = None


LDIRECTORD = HealthRules()


@dataclass(frozen=True, slots=True)
class Hold:
    """A real held down by flap damping."""

    until: float  # on the caller's clock: the first check from then on ends the hold
    passing: bool  # the state the checks alone give it (failurecount and risecount applied)
    changes: int  # state changes within the window when it (last) started


@dataclass(frozen=True, slots=True)
class RealHealth:
    up: bool
    failcount: int = 0  # consecutive failures seen while up (the "soft failures")
    checked: bool = False  # has any check result arrived since start or (re)adoption
    reason: str = ""  # the last check's own words (with the hold's, while held)
    passcount: int = 0  # consecutive passes of a down real still short of risecount
    flaps: tuple[float, ...] = ()  # when its recent state changes were (damping on)
    hold: Hold | None = None
    # when checks took it down, on the engine's clock (the engine sets it at the transition;
    # None while up, or while down since start or adoption): the depool threshold keeps the
    # latest failures in (engine/desired.py)
    down_at: float | None = None

    def observe(
        self,
        ok: bool,
        reason: str,
        failurecount: int,
        risecount: int = 1,
        damping: Damping | None = None,
        now: float = 0.0,
    ) -> tuple[RealHealth, Transition | None]:
        """Feed one check result; returns the new state and the transition it caused, if any.
        `now`: the caller's clock, read only with `damping`."""
        hold = self.hold
        up = self.up if hold is None else hold.passing  # what the checks alone say
        if ok:
            failcount = 0
            if up:
                passcount, changed = 0, False
            else:
                passcount = self.passcount + 1
                changed = passcount >= risecount or not self.checked
                if changed:
                    passcount = 0
        else:
            passcount = 0
            failcount = self.failcount + 1
            changed = up and failcount >= failurecount
        if changed:
            up = not up

        if hold is None and damping is None:  # ldirectord's machine, with risecount
            if up and not failcount:
                # passcount is 0 when up: the settled state, one object per reason
                state = settled_up(reason)
            else:
                state = RealHealth(
                    up, failcount, True, reason, passcount, down_at=None if up else self.down_at
                )
            if not changed:
                return state, None
            return state, Transition.UP if up else Transition.DOWN

        flaps = self.flaps
        if damping is None:  # switched off by a reload while held: the checks decide again
            hold, flaps = None, ()
        else:
            if hold is not None and now >= hold.until:
                hold, flaps = None, ()  # stable for the hold time (a change now is a new one)
            # the first result after start or adoption is no change of a state checks had found
            if changed and self.checked:
                cutoff = now - damping.window
                # the last `count` are all that can still matter: one more holds it
                flaps = (*[t for t in flaps[-damping.count :] if t > cutoff], now)
                if hold is not None or len(flaps) > damping.count:
                    hold = Hold(now + damping.hold, up, len(flaps))
            if hold is not None:
                reason = (
                    f"flapping: {hold.changes} state changes within {damping.window:g} s, held"
                    f" down until stable for {damping.hold:g} s (checks say"
                    f" {'up' if up else 'down'}: {reason})"
                )
        effective = up and hold is None
        state = RealHealth(
            effective,
            failcount,
            True,
            reason,
            passcount,
            flaps,
            hold,
            None if effective else self.down_at,
        )
        if effective == self.up:
            return state, None
        return state, Transition.UP if effective else Transition.DOWN

    @property
    def soft_failing(self) -> bool:
        return self.up and self.failcount > 0

    @property
    def rising(self) -> bool:
        """Down, with passes toward risecount."""
        return not self.up and self.passcount > 0

    @property
    def held_until(self) -> float | None:
        return None if self.hold is None else self.hold.until


DOWN = RealHealth(up=False)
ADOPTED_UP = RealHealth(up=True)

# A healthy pool's reals are all in one state, but for the last check's words, which are
# mostly the same ("ok", "http: 200"): one object per reason, not 96 bytes a real.
_SETTLED_UP: dict[str, RealHealth] = {}
_SETTLED_UP_MAX = 4096  # distinct reasons remembered (reasons quoting varying server output)


def settled_up(reason: str) -> RealHealth:
    """RealHealth(up, checked, reason) with no failure, pass or flap counted: shared."""
    state = _SETTLED_UP.get(reason)
    if state is None:
        if len(_SETTLED_UP) >= _SETTLED_UP_MAX:
            _SETTLED_UP.clear()
        state = _SETTLED_UP[reason] = RealHealth(True, 0, True, reason)
    return state
