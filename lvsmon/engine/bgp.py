"""The announcer: one supervised task that keeps the speaker's routes equal to what
engine/announce.py decides from the engine's health (issue 24).

Edge and level, as the reconciler: a health event (a real up or down, a depool threshold, a
drain, a reload, the first round's end) wakes it within `batch_s`; a hold-down's end wakes it at
that time; and every `resync_s` it compares the speaker's routes with its own view and repairs
any difference (an operator's `ip route flush table 200`, a restarted ExaBGP). A failed
announce or withdrawal is published (RouteChanged with its error) and retried at the next
resync, which comes sooner after a failure.

The graceful stop (`stop(graceful=True)`: `lvsmon stop`, and the director's drain) re-announces
every announced VIP with GRACEFUL_SHUTDOWN and the worst MED, waits `bgpdrain` seconds (the
routers move the traffic to the other directors while this one still serves), then withdraws
everything; the engine stops after it, so IPVS keeps serving until the routes are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lvsmon.atomicfile import NotReadable, read_regular, write_atomic
from lvsmon.config.bgpsettings import BgpGlobal
from lvsmon.engine.announce import (
    Route,
    VipState,
    VirtualInput,
    graceful,
    step,
    withdraw_all,
)
from lvsmon.engine.desired import is_up
from lvsmon.engine.events import (
    ConfigLoaded,
    DepoolLimited,
    DrainChanged,
    EventBus,
    FallbackChanged,
    RealChanged,
    RouteChanged,
)
from lvsmon.engine.status import BgpStatus, BgpVipStatus
from lvsmon.routes.speaker import Speaker

if TYPE_CHECKING:
    from lvsmon.engine.engine import Engine

log = logging.getLogger("lvsmon")

WAKING = (RealChanged, DepoolLimited, FallbackChanged, DrainChanged, ConfigLoaded)
RETRY_S = 1.0
FIRST_ROUND_POLL_S = 0.25  # the first round's end has no event of its own


def make_speaker(bgp: BgpGlobal, base: str) -> Speaker:
    """The speaker of `bgp.mode`; `base`: the prefix of its run-time files (the pid file's
    path without .pid)."""
    if bgp.mode == "bird":
        from lvsmon.routes.kernel import KernelRoutes

        return KernelRoutes(bgp.table, bgp.protocol)
    if bgp.mode == "exabgp" and bgp.exabgpconf is not None:
        from lvsmon.routes.exabgp import ExaBgp

        return ExaBgp(bgp.exabgpconf, base)
    raise ValueError(f"no speaker for bgp = {bgp.mode}")


def inputs_of(engine: Engine) -> list[VirtualInput]:
    """Each announced virtual's part, as the engine sees it now."""
    config = engine.config
    health, maintained, drained = engine.health, engine.maintained, engine.drained
    tripped = engine.depool_limited
    out: list[VirtualInput] = []
    for v, lay in zip(config.virtuals, engine.layout(), strict=True):
        if v.bgp is None or v.address is None:
            continue
        healthy = sum(
            1 for ref in lay.refs if is_up(ref, health, maintained) and ref not in drained
        )
        out.append(VirtualInput(v.name, v.address, healthy, len(lay.refs), v.key in tripped, v.bgp))
    return out


class Announcer:
    def __init__(
        self,
        engine: Engine,
        speaker: Speaker,
        events: EventBus,
        *,
        batch_s: float = 0.02,
        resync_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        drained_path: str | None = None,
    ) -> None:
        """`drained_path`: the file that keeps `drain --director` across restarts (None: kept
        in memory only)."""
        self.engine = engine
        self.speaker = speaker
        self.events = events
        self.batch_s = batch_s
        self.resync_s = resync_s
        self.clock = clock
        self.states: dict[str, VipState] = {}
        self.failed = 0  # speaker operations that failed, in all (metrics)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_resync = 0.0
        self._settings = engine.config.settings.bgp
        self.on_crash: Callable[[str, BaseException], None] | None = None
        # `lvsmon drain --director`: nothing announced until undrain, across restarts too (an
        # operator drains a director to work on it, lvsmon's upgrade included: a restart that
        # announced the VIPs again would send the traffic back to it mid-work)
        self.director_drained = False
        self.drained_path = drained_path
        self._lock = asyncio.Lock()  # one pass, drain or stop talks to the speaker at a time

    # ---- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        since = self._drained_since()
        if since is not None:
            self.director_drained = True
            log.warning(
                "BGP: this director was drained%s (%s): nothing is announced until "
                "`lvsmon undrain --director`",
                since,
                self.drained_path,
            )
        stale = await self.speaker.start()
        if stale:
            log.warning(
                "BGP: removed %d route%s a previous run left (%s): %s",
                len(stale),
                "" if len(stale) == 1 else "s",
                self.speaker.name,
                ", ".join(stale),
            )
        self.events.subscribe("bgp", lambda _e: self._wake.set(), kinds=WAKING)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lvsmon-bgp")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception() or RuntimeError("lvsmon-bgp returned")
        log.critical(
            "lvsmon-bgp crashed; lvsmon stops so that it is restarted",
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if self.on_crash is not None:
            self.on_crash("lvsmon-bgp", exc)

    async def stop(self, left: float = 30.0, *, graceful_stop: bool = True) -> None:
        """Graceful: announce with GRACEFUL_SHUTDOWN, wait bgpdrain s (within `left`), then
        withdraw all; else withdraw all at once."""
        task, self._task = self._task, None
        if task is not None:
            task.remove_done_callback(self._ended)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        drain = min(float(self._settings.drain), max(0.0, left - 3.0))
        await self._drain_all(drain if graceful_stop else 0.0, "graceful stop", "lvsmon stopped")
        try:
            await self.speaker.stop()
        except Exception as exc:  # the speaker's own clean-up: logged, the stop goes on
            log.error("BGP: stopping %s: %s", self.speaker.name, exc)

    async def _drain_all(self, drain: float, why: str, reason: str) -> None:
        """GRACEFUL_SHUTDOWN for `drain` s (if anything is announced), then everything out."""
        async with self._lock:
            announced = [s.route for s in self.states.values() if s.announced and s.route]
            if drain > 0 and announced:
                for route in announced:
                    await self._send(route, f"{why}: draining", grace=True)
        if drain > 0 and announced:
            await asyncio.sleep(drain)
        async with self._lock:
            decision = withdraw_all(self.states, reason, self.clock())
            self.states = decision.states
            for vip in decision.withdraw:
                await self._withdraw(vip, reason)

    async def drain_director(self, on: bool) -> list[BgpVipStatus]:
        """`lvsmon drain --director`: the graceful stop's drain without stopping (answers once
        everything is withdrawn, bgpdrain s); `undrain --director`: the VIPs decided afresh,
        announced at once where their pools are healthy (no hold-down: nothing flapped)."""
        if on and not self.director_drained:
            self.director_drained = True
            self._keep_drained(True)  # first: a crash mid-drain still finds it drained
            reason = "director drained (lvsmon drain --director)"
            await self._drain_all(float(self.engine.config.settings.bgp.drain), "drain", reason)
        elif not on and self.director_drained:
            self._keep_drained(False)
            async with self._lock:
                self.director_drained = False
                self.states = {}
            self._wake.set()
            await self.pass_once()
        return self.status()

    def _keep_drained(self, on: bool) -> None:
        """The drain's file written or removed; a failure is logged and the drain goes on (it
        holds until the daemon stops, as before the file)."""
        path = self.drained_path
        if path is None:
            return
        try:
            if on:
                write_atomic(path, json.dumps({"drained_at": round(time.time(), 3)}) + "\n", 0o600)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        except OSError as exc:
            log.error(
                "BGP: %s %s: %s (the drain holds until the daemon stops)",
                "writing" if on else "removing",
                path,
                exc.strerror or exc,
            )

    def _drained_since(self) -> str | None:
        """None: not drained; else " since <UTC time>" (or "" when the file does not say when).
        The file is a run-time file: only its presence and a number are read from it."""
        path = self.drained_path
        if path is None:
            return None
        try:
            data = read_regular(path, 4096)
        except FileNotFoundError:
            return None
        except (OSError, NotReadable) as exc:
            log.error("BGP: %s: %s: taken as drained", path, exc)
            return ""
        try:
            at = float(json.loads(data)["drained_at"])
            return time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            return ""

    # ---- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            wake_at = await self.pass_once()
            now = self.clock()
            until = self._next_resync
            if wake_at is not None:
                until = min(until, wake_at)
            if not self.engine.first_round_done:
                until = min(until, now + FIRST_ROUND_POLL_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, until - now)):
                    await self._wake.wait()
            if self._wake.is_set():
                await asyncio.sleep(self.batch_s)  # what arrives together is one pass
            self._wake.clear()

    async def pass_once(self) -> float | None:
        """One decision and what it changes; the resync when due. When to look again."""
        async with self._lock:
            return await self._pass()

    async def _pass(self) -> float | None:
        settings = self.engine.config.settings.bgp
        if settings != self._settings and (settings.mode, settings.table, settings.protocol) != (
            self._settings.mode,
            self._settings.table,
            self._settings.protocol,
        ):
            log.warning("BGP: bgp, bgptable and bgpprotocol changes take effect at the next start")
        self._settings = settings
        now = self.clock()
        if self.director_drained:
            if now >= self._next_resync:
                # while draining, the announced routes carry the graceful attributes: not drift
                await self._resync(repair=False)
            return None
        decision = step(
            self.states,
            inputs_of(self.engine),
            require=settings.require,
            first_round_done=self.engine.first_round_done,
            now=now,
        )
        self.states = decision.states
        for route in decision.announce:
            await self._send(route, self.states[route.vip].reason)
        for vip in decision.withdraw:
            state = self.states.get(vip)
            await self._withdraw(vip, state.reason if state else "no virtual has it any more")
        if now >= self._next_resync:
            await self._resync()
        return decision.wake_at

    async def _resync(self, *, repair: bool = True) -> None:
        self._next_resync = self.clock() + self.resync_s
        try:
            present = await self.speaker.present()
        except Exception as exc:
            self._failed(exc)
            return
        if present is None:
            return
        for vip, state in self.states.items():
            route = state.route
            if repair and state.announced and route is not None and present.get(vip) != route.med:
                log.warning("BGP: %s was not announced as lvsmon wants it: repairing", vip)
                await self._send(route, state.reason)
        for vip in present:
            s = self.states.get(vip)
            if s is None or not s.announced:
                log.warning("BGP: %s was announced behind lvsmon's back: withdrawing", vip)
                await self._withdraw(vip, s.reason if s else "not lvsmon's", quiet=True)

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1
        # sooner than the next resync: a speaker that failed once is looked at again soon
        self._next_resync = min(self._next_resync, self.clock() + RETRY_S)

    async def _send(self, route: Route, reason: str, *, grace: bool = False) -> None:
        sent = graceful(route) if grace else route
        error = None
        try:
            await self.speaker.announce(sent.vip, sent.med, sent.communities)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            self._failed(exc)
        self.events.publish(
            RouteChanged(
                sent.vip,
                True,
                reason,
                self.speaker.name,
                sent.med,
                sent.communities,
                grace,
                error,
            )
        )

    async def _withdraw(self, vip: str, reason: str, *, quiet: bool = False) -> None:
        error = None
        try:
            await self.speaker.withdraw(vip)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            self._failed(exc)
        if not quiet or error is not None:
            self.events.publish(RouteChanged(vip, False, reason, self.speaker.name, error=error))

    # ---- views --------------------------------------------------------------------------------

    def summary(self) -> BgpStatus:
        """The status's `bgp` and GET /bgp."""
        return {
            "speaker": self.speaker.name,
            "drained": self.director_drained,
            "vips": self.status(),
        }

    def status(self) -> list[BgpVipStatus]:
        """Per VIP: announced or not, why, since when (wall clock), with what."""
        offset = time.time() - self.clock()
        return [
            {
                "vip": vip,
                "announced": s.announced,
                "reason": s.reason,
                "since": round(s.since + offset, 3),
                "med": s.route.med if s.route else None,
                "communities": list(s.route.communities) if s.route else [],
                "speaker": self.speaker.name,
            }
            for vip, s in self.states.items()
        ]
