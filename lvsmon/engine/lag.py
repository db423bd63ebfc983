"""Lag-aware timeouts: a check that timed out while the daemon itself was late is unknown.

A check's deadline runs on the event loop. When the loop is starved (a CPU hog, a blocking call,
the process stopped, the host suspended), a healthy server's answer may sit unread in the socket
until the deadline has passed, and the daemon would take every real out at once. The
`LagMonitor` measures how much time the loop lost: a task that sleeps `TICK_S` and adds up how
late it wakes (plus any system suspend: CLOCK_BOOTTIME advancing beyond CLOCK_MONOTONIC). The
runner reads that running total when it starts a check (`lost_at`, once per round of starts)
and again when a check times out; the difference is the time the daemon lost during the check's
life. A timeout is unknown when that loss is at least `LAG_SHARE` of the check's timeout: the
server did not get its full timeout, so "it did not answer in time" is not established. Per
result that is two float subtractions and a comparison, and only for timeouts.

Only a check whose server did not have its time is forgiven: the prober reads every ready
socket before it looks at a deadline (as asyncio runs I/O before timers), so when a check on the
prober times out, nothing the server sent is waiting unread, and the prober says how long the
server had had its turn while the daemon was on time (since our last bytes went out, less the
lag meanwhile: a stall of the whole machine, a paused VM or a suspend, holds the answer up on
its way in too; `CheckResult.peer_turn_s`). A server that had all but `LAG_SHARE` of the timeout
and said nothing that ended the check is down, whatever the lag: a real that trickles its
answer while other reals flood the loop goes out at its first timeout. When our request itself
went out late (the loop stalled between the connect and the send), the server had less, and the
timeout stays unknown.

Only a check that was not busy is forgiven (issue 21): the lag must not be the check's own doing.
A real that floods its check (endless short lines, say) makes the loop late with the parsing it
causes; without this rule that lag would forgive the very timeouts the flood brought about, and
the real would stay in for `UNKNOWN_MAX_S`. Which callback caused a lag cannot be told in
asyncio, so the rule looks at the check instead: the runner counts the bytes fed to the check's
dialogue during the run (`JobRun.received`), and a check that received more than `BUSY_BYTES`
was not kept from its answer by a late loop (the loop was serving it, and the server sent all
that without a verdict): its timeout counts as a failure whatever the lag. A healthy server's
answer to a health check is far below the bound, so a stall (a CPU hog, a blocking call, a
suspend) is forgiven as before. Counted for every check: on the prober the runner counts what
it feeds a dialogue; a check run as a task (TLS and UDP dialogues, the library protocols)
reports the peer's bytes it received in `CheckResult.received` (lvsmon/checks/base.py
`Received`, added to by the stream and datagram drivers and by `budget.Budget`), and the
runner takes the larger of the two.

The bound (`forgiven`): under permanent overload every check could time out late, and a server
that truly hangs would never go down. So a check's late timeouts are forgiven only while its
run of unknowns is shorter than `UNKNOWN_MIN_RUNS` checks or `UNKNOWN_MAX_S` seconds, whichever
is longer; beyond it a late timeout counts as a failure again, and the log says loudly that
checks cannot be trusted. Any other result (a pass, another failure, a timeout without lag)
ends the run.

Wall-clock steps (time.time() against monotonic) are counted and logged, not counted as lag:
deadlines are on the monotonic clock, which a step does not move.

Admission (`AdmissionWindow`, issue 22): forgiving late timeouts is for a stall, not a cure for
overload. A daemon given less CPU than its checks need (a saturated host) would start every
check on its slot all the same; the answers then wait unread ever longer, the lag grows without
bound, the server's backlog overflows under the bursts, and once the bound above is passed
healthy reals go down. So the runner bounds the checks in flight by a window that follows the
lag, as TCP's congestion window follows loss: each tick whose lag exceeds `overload_lag` (a
third of LAG_SHARE of the smallest timeout: far from making a timeout unknown), or after which
more than SLOW_RESULTS of the good results took SLOW_SHARE of their timeout or more (`slow`:
the reals' side of a saturated host, their queues, as delay-based congestion control reads a
growing round trip), halves it, at most every `SHRINK_GAP_TICKS` ticks (the checks already in
flight drain first) and never below `WINDOW_FLOOR` (checks always progress); each tick on time
after the window held starts back grows it by a quarter of the checks that finished since the
previous tick, at most a quarter of itself: by a quarter per window of results, as TCP's window
grows per acknowledgement, so that it never outruns what the reals have shown they can take.
A check that is due while the window is full stays due: it starts late (its lateness shows in
status and /metrics, the runner counts it as deferred and says so in the log), its job's period
stretches as keepalived's does under the same load, and the checks that do run are read and
answered in time, so their verdicts hold. The first round (every job due at once at start-up)
is admitted the same way: tens of thousands of connects at once flooded the loop and the reals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

log = logging.getLogger("lvsmon")

TICK_S: Final = 0.1  # how often the monitor wakes: its resolution
LAG_SHARE: Final = 0.25  # a timeout is unknown when the daemon lost this share of the timeout
UNKNOWN_MIN_RUNS: Final = 3  # late timeouts in a row always forgiven, however long they take
UNKNOWN_MAX_S: Final = 30.0  # ...and for at least this long (s) since the first of them
LOG_EVERY_S: Final = 10.0  # the aggregated log line, at most this often
WINDOW_S: Final = 60.0  # the lag gauge: the largest lag within the last minute
CLOCK_STEP_S: Final = 1.0  # wall clock moving this much more or less than monotonic: a step
# a check fed more than this during its run is busy: its late timeout is not forgiven. Far above
# what a health check's answer takes, a quarter of the drivers' per-check budget (256 KiB, so
# that peers just under the budget cannot lag the loop together and be forgiven), one prober read
BUSY_BYTES: Final = 64 * 1024
# admission (AdmissionWindow): checks in flight at first, at least, at most
WINDOW_START: Final = 1024
WINDOW_FLOOR: Final = 256
WINDOW_CEILING: Final = 1 << 16
SHRINK_GAP_TICKS: Final = 3  # ticks between two halvings: what was in flight drains meanwhile
OVERLOAD_SHARE: Final = 1 / 3  # of LAG_SHARE x the smallest timeout: a tick this late shrinks
OVERLOAD_LAG_MIN_S: Final = 0.05  # ...clamped to these (a tick's own jitter; a long timeout)
OVERLOAD_LAG_MAX_S: Final = 0.5
# good results this slow (share of their timeout), more than this share of a tick's: congestion.
# Only good ones: a hung real's timeouts say nothing of the others' queue; and most of them: a
# queue at the reals slows every answer, a few slow backends are not congestion (pinned at its
# floor, the window would leave the healthy checks behind those waiting on hung reals)
SLOW_SHARE: Final = 0.5
SLOW_RESULTS: Final = 0.5


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def late_timeout(lost: float, timeout: float, received: int = 0, peer_turn: float = 0.0) -> bool:
    """Did the daemon lose enough of a timed-out check's life to make the timeout unknown?
    Never when the check received more than BUSY_BYTES meanwhile (the lag may be its own doing),
    nor when the server had its turn for all but LAG_SHARE of the timeout (`peer_turn`, from the
    prober, which reads every ready socket before it looks at a deadline): the lag kept nothing
    from it, it sent nothing that ended the check."""
    return (
        lost >= LAG_SHARE * timeout
        and received <= BUSY_BYTES
        and peer_turn < (1 - LAG_SHARE) * timeout
    )


def forgiven(runs: int, run_s: float) -> bool:
    """Is a late timeout still unknown, with `runs` late timeouts in a row before it, the first
    `run_s` seconds ago? Past the bound it is a failure: a hung real goes down even when the
    daemon is overloaded for good."""
    return runs < UNKNOWN_MIN_RUNS or run_s < UNKNOWN_MAX_S


def slow(good: int, slow_ones: int) -> bool:
    """Were a tick's good results slow enough to mean the reals' queues are long?"""
    return slow_ones > SLOW_RESULTS * good


def overload_lag(timeout: float) -> float:
    """The lag of one tick (s) that shrinks the admission window, for checks whose smallest
    timeout is `timeout`: well under what makes a timeout unknown (LAG_SHARE of it)."""
    return min(max(OVERLOAD_SHARE * LAG_SHARE * timeout, OVERLOAD_LAG_MIN_S), OVERLOAD_LAG_MAX_S)


class AdmissionWindow:
    """How many checks may be in flight: halved by a late tick, grown while on time and full.
    Pure: fed each lag tick, it never reads a clock."""

    __slots__ = ("ceiling", "floor", "since_shrink", "size")

    def __init__(
        self, size: int = WINDOW_START, floor: int = WINDOW_FLOOR, ceiling: int = WINDOW_CEILING
    ) -> None:
        self.floor, self.ceiling = floor, ceiling
        self.size = min(max(size, floor), ceiling)
        self.since_shrink = SHRINK_GAP_TICKS  # ticks since the last halving

    def tick(
        self, lag: float, limited: bool, late_s: float, slowed: bool = False, done: int = 0
    ) -> int:
        """One lag tick: `lag` its lateness (s), `limited` whether the window held a due check
        back since the previous tick, `late_s` the lag that means overload (overload_lag),
        `slowed` whether the answers were slow since the previous tick (`slow`), `done` the
        checks that finished meanwhile. Returns the new size."""
        self.since_shrink += 1
        if lag > late_s or slowed:
            if self.since_shrink >= SHRINK_GAP_TICKS:
                self.size = max(self.floor, self.size // 2)
                self.since_shrink = 0
        elif limited:
            # only while it is what holds checks back: a window never filled proves nothing,
            # and one grown idle would let the next burst flood the loop
            self.size = min(self.ceiling, self.size + min(self.size // 4, done // 4))
        return self.size


class LagMonitor:
    """Measures how late the event loop runs; keeps the total lost time and the recent peak."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        boot: Callable[[], float] = _boottime,
    ) -> None:
        self._clock, self._wall, self._boot = clock, wall, boot
        self.lost = 0.0  # seconds the loop ran late, in all (s), up to the last tick
        self.due = float("inf")  # when the next tick should run; inf while not running
        self.last = 0.0  # the last tick's lag (s)
        self._peaks: deque[tuple[float, float]] = deque()  # (when, lag), lags decreasing
        self.clock_steps = 0
        # results the runner judged: counted here so that one line can sum them up
        self.unknown = 0
        self.untrusted = 0  # late timeouts past the bound, counted as failures
        self._logged_at = -float("inf")
        self._logged = (0, 0)
        self._prev: tuple[float, float, float] | None = None
        # called with each tick's lag, after it is accounted (the runner's admission window)
        self.on_tick: Callable[[float, float], None] | None = None

    def lost_at(self, now: float) -> float:
        """The time lost up to `now`, counting the tick that is overdue now: a check that times
        out as the loop comes back from a stall runs before the monitor's own wake-up."""
        late = now - self.due
        return self.lost + late if late > 0 else self.lost

    @property
    def peak(self) -> float:
        """The largest lag within the last WINDOW_S (s)."""
        return self._peaks[0][1] if self._peaks else 0.0

    def tick(self) -> float:
        """One wake-up: account its lag (and a suspend), log; returns when to wake next."""
        now, wall, boot = self._clock(), self._wall(), self._boot()
        lag = max(0.0, now - self.due) if self.due != float("inf") else 0.0
        if self._prev is not None:
            mono_step = now - self._prev[0]
            # suspended: the loop's clock stood still while the world went on
            lag += max(0.0, boot - self._prev[2] - mono_step)
            if abs(wall - self._prev[1] - mono_step) >= CLOCK_STEP_S:
                self.clock_steps += 1
                log.warning(
                    "the wall clock stepped by %+.1f s (check deadlines use the monotonic clock"
                    " and are not affected)",
                    wall - self._prev[1] - mono_step,
                )
        self._prev = (now, wall, boot)
        self.lost += lag
        self.last = lag
        peaks = self._peaks
        while peaks and peaks[0][0] < now - WINDOW_S:
            peaks.popleft()
        while peaks and peaks[-1][1] <= lag:  # never the peak again
            peaks.pop()
        peaks.append((now, lag))
        self._report(now)
        self.due = now + TICK_S
        if self.on_tick is not None:
            self.on_tick(lag, now)
        return self.due

    def _report(self, now: float) -> None:
        if now - self._logged_at < LOG_EVERY_S or (self.unknown, self.untrusted) == self._logged:
            return
        unknown = self.unknown - self._logged[0]
        untrusted = self.untrusted - self._logged[1]
        self._logged_at, self._logged = now, (self.unknown, self.untrusted)
        peak_ms = self.peak * 1000
        if unknown:
            log.warning(
                "%d check timeouts counted as unknown, not as failures: the daemon itself was late"
                " (event loop lag up to %.0f ms in the last minute)",
                unknown,
                peak_ms,
            )
        if untrusted:
            log.error(
                "checks cannot be trusted: %d timeouts counted as failures although the daemon"
                " was late (lag up to %.0f ms), because their checks had timed out late for"
                " %d checks and %g s in a row; is the director overloaded?",
                untrusted,
                peak_ms,
                UNKNOWN_MIN_RUNS,
                UNKNOWN_MAX_S,
            )

    async def run(self) -> None:
        """Tick until cancelled."""
        try:
            while True:
                due = self.tick()
                await asyncio.sleep(max(0.0, due - self._clock()))
        finally:
            self.due = float("inf")
