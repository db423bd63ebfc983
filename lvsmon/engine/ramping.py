"""Slow start in the running daemon: the ramps (engine/slowstart.py) as "ramp" caps in the
engine's Steering, advanced by one timer.

The engine says when a real came up (`came_up`: a DOWN -> UP transition of its checks) or went
down (`went_down`), and hands each new config over (`configure`). One supervised task sleeps
until the earliest due step of any ramp (a heap, engine/slowstart.Ramps) or until a new ramp
wakes it: steps due within COALESCE_S of each other are one wake-up and one change of the table,
whatever the number of reals.

A reload keeps each ramp's start: a real whose weight or slowstart changed is set to the step
its start gives under the new values (or its ramp ends: "off"); a real the reload removed
ends its ramp ("removed").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from lvsmon.config.model import Config
from lvsmon.engine.events import Event, RampChanged
from lvsmon.engine.jobs import RealRef, refs_of
from lvsmon.engine.slowstart import SOURCE, Ramps, Step, ramps, steps_of
from lvsmon.engine.steering import Steering

# steps due within this long after the earliest are taken with it: at 10,000 reals whose ramps
# began over a check interval, each step its own wake-up would be a recompute of the whole
# table every few ms; so at most 1 / COALESCE_S of them a second, each step at most this early
COALESCE_S = 0.25


def ramp_settings(config: Config) -> dict[RealRef, tuple[int, int]]:
    """Per real that would ramp when it comes up: (its weight, its virtual's slowstart)."""
    out: dict[RealRef, tuple[int, int]] = {}
    for v in config.virtuals:
        if v.slowstart <= 0:
            continue
        for ref, r in zip(refs_of(config, v), v.reals, strict=True):
            if ramps(r.weight, v.slowstart):
                out[ref] = (r.weight, v.slowstart)
    return out


class SlowStart:
    def __init__(
        self,
        steering: Steering,
        publish: Callable[[Event], None],
        clock: Callable[[], float],
    ) -> None:
        self.steering = steering
        self.publish = publish
        self.clock = clock
        self.ramps = Ramps()
        self.settings: Mapping[RealRef, tuple[int, int]] = {}
        self._wake = asyncio.Event()

    def configure(self, config: Config) -> None:
        """Take a (new) config: which reals ramp, with what; ramps under way follow it."""
        old = self.settings
        self.settings = new = ramp_settings(config) if _any_slowstart(config) else {}
        if not len(self.ramps):
            return
        now = self.clock()
        known = {ref for v in config.virtuals for ref in refs_of(config, v)}
        for ref in list(self.ramps):
            ramp = self.ramps.get(ref)
            assert ramp is not None
            want = new.get(ref)
            if want is None:
                self._end(ref, ramp.weight, ramp.slowstart, "off" if ref in known else "removed")
            elif want != old.get(ref):
                weight, seconds = want
                step = self.ramps.start(ref, now, weight, seconds, since=ramp.start)
                if step is None:
                    self._end(ref, weight, seconds, "done")
                else:
                    self.steering.set(SOURCE, ref, step.weight)
        self._wake.set()

    def came_up(self, ref: RealRef) -> None:
        """A real's checks brought it up: its ramp begins (when its virtual has one)."""
        want = self.settings.get(ref)
        if want is None:
            return
        weight, seconds = want
        step = self.ramps.start(ref, self.clock(), weight, seconds)
        if step is None:
            return
        self.steering.set(SOURCE, ref, step.weight)
        self.publish(RampChanged(ref, True, weight, float(seconds), steps_of(weight)))
        self._wake.set()

    def went_down(self, ref: RealRef) -> None:
        """A real went down: a ramp under way ends (the real is out as usual)."""
        ramp = self.ramps.get(ref)
        if ramp is not None:
            self._end(ref, ramp.weight, ramp.slowstart, "down")

    def _end(self, ref: RealRef, weight: int, seconds: float, reason: str) -> None:
        self.ramps.stop(ref)
        self.steering.set(SOURCE, ref, None)
        self.publish(RampChanged(ref, False, weight, float(seconds), steps_of(weight), reason))

    def step_of(self, ref: RealRef) -> Step | None:
        """Where the ramp of `ref` is now (status); None: not ramping."""
        return self.ramps.step_of(ref, self.clock()) if len(self.ramps) else None

    def advance(self, now: float, ahead: float = 0.0) -> None:
        """Set the caps of every ramp whose next step is due at `now` (or `ahead` s later);
        end those that are over."""
        for ref, step in self.ramps.due(now, ahead):
            if step is not None:
                self.steering.set(SOURCE, ref, step.weight)
                continue
            weight, seconds = self.settings.get(ref, (0, 0))
            self.steering.set(SOURCE, ref, None)
            self.publish(RampChanged(ref, False, weight, float(seconds), steps_of(weight), "done"))

    async def run(self) -> None:
        """The timer: until cancelled, sleep to the earliest due step (or a new ramp), then
        advance."""
        while True:
            self._wake.clear()
            at = self.ramps.next_at()
            if at is None:
                await self._wake.wait()
                continue
            delay = at - self.clock()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # late: the others run first all the same
            self.advance(self.clock(), COALESCE_S)


def _any_slowstart(config: Config) -> bool:
    return any(v.slowstart > 0 for v in config.virtuals)
