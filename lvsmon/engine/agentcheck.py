"""The agent check's runner (issue 25): one agent exchange per real on its own interval, and what
the agents said turned into weight caps (engine/steering.py, source "agent") and reals taken out.

Each real of a virtual with `agentport` gets an exchange (checks/agent.py) on the prober: plain
TCP, no task, one deadline, at most 256 bytes of line. Reals that share the address, port,
request, timeout and interval (one real in several virtuals) share one exchange, as checks do.
The exchanges run from their own `Timetable` (fixed rate, spread phases, the first at once), in
one loop beside the check runner's, so that an agent check never delays a health check.

How an answer counts (HAProxy's rules, checks/agent.py): the health check decides up and down;
the agent can only lower the weight (a cap: `75%`, `drain`) or take the real out (`maint`,
`down`). A failed exchange (refused, timed out, closed, garbage, too long) changes nothing at
first: the last state the agent gave is kept through `failkeep` failures in a row (`agentfail =
keep N`), then dropped (no cap, nothing taken out): an agent that breaks never takes a real out
nor raises a weight above the configured one, and a real is never held out by a dead agent.

What it gives the engine: caps through `steering.set("agent", ref, cap)`; `out`, the pairs the
agents take out (the engine counts them as maintained: out of the table or quiesced, not up for
the fallback); `on_out_change` when that set changed; one `AgentChanged` event per pair whose
agent state changed (published through `publish`); and per pair `status`, the words status,
the page and the log show ("weight 3/10", "drain", "down: disk full", "no answer ...").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from lvsmon.addr import host_port
from lvsmon.checks.agent import (
    NEUTRAL,
    NO_EFFECT,
    AgentState,
    Verdict,
    agent_plan,
    agent_spec,
    describe,
    fold,
    parse_reply,
    unescape_send,
    verdict,
)
from lvsmon.checks.base import CheckResult
from lvsmon.checks.prober import ProbePlan, Prober, hold_prober, release_prober
from lvsmon.config.model import Config
from lvsmon.engine.events import AgentChanged
from lvsmon.engine.jobs import RealRef, refs_of
from lvsmon.engine.steering import Steering
from lvsmon.engine.timetable import Timetable
from lvsmon.ipvs.model import ServiceKey
from lvsmon.text import clean

log = logging.getLogger("lvsmon")

SOURCE: Final = "agent"  # its name among the steering's sources
WAKE_QUANTUM_S: Final = 0.02  # as the check runner's: starts due within it go together


@dataclass(frozen=True, slots=True)
class AgentJob:
    """One distinct agent exchange."""

    host: str
    port: int
    send: bytes
    timeout: float
    interval: float
    failkeep: int


@dataclass(frozen=True, slots=True)
class AgentView:
    """One pair's agent as status, the page and metrics show it."""

    text: str  # "weight 3/10", "drain", "maint: upgrade", "down: disk full", "no answer yet"
    weight: int  # the weight the agent asks for (0 with drain, maint or down)
    out: str | None  # "maint" or "down" while the agent takes the real out
    answer: str  # the agent's last line (clean), or why the last exchange failed
    failures: int  # failed exchanges in a row


class _Track:
    """An exchange's running state: what its agent said so far, the failures since."""

    __slots__ = ("answer", "answered", "failures", "refs", "state")

    def __init__(self, refs: tuple[tuple[RealRef, int], ...]) -> None:
        self.refs = refs  # (pair, configured weight)
        self.state: AgentState = NEUTRAL
        self.answered = False  # a state holds (not dropped, not yet none)
        self.failures = 0
        self.answer = ""


Publish = Callable[[AgentChanged], None]


def plan_agents(config: Config) -> dict[AgentJob, tuple[tuple[RealRef, int], ...]]:
    """Every agent exchange the config asks for, with the pairs (and their weights) it feeds."""
    jobs: dict[AgentJob, list[tuple[RealRef, int]]] = {}
    for v in config.virtuals:
        agent = v.agent
        if agent is None:
            continue
        send = unescape_send(agent.send)
        for ref, r in zip(refs_of(config, v), v.reals, strict=True):
            job = AgentJob(
                r.address, agent.port, send, float(agent.timeout), float(agent.interval),
                agent.failkeep,
            )  # fmt: skip
            jobs.setdefault(job, []).append((ref, r.weight))
    return {job: tuple(refs) for job, refs in jobs.items()}


class AgentRunner:
    def __init__(
        self,
        steering: Steering,
        publish: Publish | None = None,
        *,
        on_out_change: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.steering = steering
        self.publish = publish
        self.on_out_change = on_out_change
        self._clock = clock
        self._tracks: dict[AgentJob, _Track] = {}
        self._plans: dict[AgentJob, ProbePlan] = {}
        self._timetable: Timetable[AgentJob] = Timetable()
        self._verdicts: dict[RealRef, Verdict] = {}
        self._views: dict[RealRef, AgentView] = {}
        # read-only and live: a copy per change would cost a pass over every agent's real per
        # answer that moved (10,000 reals whose agents report their load each interval)
        self.views: Mapping[RealRef, AgentView] = MappingProxyType(self._views)
        self.out: frozenset[RealRef] = frozenset()
        # the status view's cache keys: views changed in all, and per virtual
        self.changes = 0
        self._versions: dict[ServiceKey, int] = {}
        self.exchanges = 0  # exchanges done
        self.failures = 0  # of them failed (refused, timed out, garbage...)
        self._waiter: asyncio.Future[None] | None = None
        self._prober: Prober | None = None

    @property
    def jobs(self) -> int:
        return len(self._tracks)

    def version_of(self, key: ServiceKey) -> int:
        """How many times a view of a real of virtual `key` changed (the status view's key)."""
        return self._versions.get(key, 0)

    def text_of(self, ref: RealRef) -> str | None:
        """The agent's words for status ("weight 3/10", "maint: upgrade"); None: no agent."""
        view = self._views.get(ref)
        return None if view is None else view.text

    # ---- the plan -----------------------------------------------------------------------------

    def schedule(self, config: Config) -> None:
        """Run `config`'s agents from now on: an exchange that stays keeps its state and slot;
        the caps and outs of pairs no longer under an agent are dropped."""
        planned = plan_agents(config)
        tracks: dict[AgentJob, _Track] = {}
        # the same agent asked at another interval or timeout: what it said carries over
        same_agent = {(j.host, j.port, j.send): t for j, t in self._tracks.items()}
        for job, refs in planned.items():
            track = self._tracks.get(job)
            if track is None:
                track = _Track(refs)
                old = same_agent.get((job.host, job.port, job.send))
                if old is not None:
                    track.state, track.answered = old.state, old.answered
                    track.failures, track.answer = old.failures, old.answer
                self._plans[job] = agent_plan(agent_spec(job.host, job.port, job.timeout), job.send)
            track.refs = refs
            tracks[job] = track
        for job in [j for j in self._plans if j not in tracks]:
            del self._plans[job]
        self._tracks = tracks
        kept = {ref for track in tracks.values() for ref, _ in track.refs}
        gone = [r for r in self._views if r not in kept]
        for ref in gone:
            self._verdicts.pop(ref, None)
            del self._views[ref]
            self.steering.set(SOURCE, ref, None)  # only the caps it set itself
            self._versions[ref.service] = self._versions.get(ref.service, 0) + 1
        if gone:
            self.changes += 1
            out = self.out - set(gone)
            if out != self.out:
                self.out = out
                if self.on_out_change is not None:
                    self.on_out_change()
        for track in tracks.values():
            self._apply(track)  # a weight a reload changed gives another cap
        self._timetable.set_jobs({job: job.interval for job in tracks}, self._clock())
        self._wake()

    # ---- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start every exchange on its slot until cancelled."""
        loop = asyncio.get_running_loop()
        prober = self._prober = hold_prober(loop)
        tt = self._timetable
        try:
            while True:
                for start in tt.pop_due(self._clock()):
                    job = start.key
                    plan = self._plans.get(job)
                    if plan is None:  # gone with a reload since it was due
                        tt.finished(job)
                        continue
                    prober.start_with(plan, self._done, job)
                due = tt.next_due()
                self._waiter = loop.create_future()
                handle = None
                if due is not None:
                    delay = max(due - self._clock(), WAKE_QUANTUM_S)
                    handle = loop.call_later(delay, self._wake)
                await self._waiter
                if handle is not None:
                    handle.cancel()
        finally:
            self._prober = None
            release_prober(prober)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def run_once(self) -> None:
        """Every exchange once, now, awaited (tests and tools)."""
        prober = hold_prober(asyncio.get_running_loop())
        try:
            jobs = list(self._tracks)
            results = await asyncio.gather(*(prober.probe(self._plans[j]) for j in jobs))
            for job, result in zip(jobs, results, strict=True):
                self.take(job, result)
        finally:
            release_prober(prober)

    def _done(self, job: AgentJob, result: CheckResult) -> None:
        self._timetable.finished(job)
        self.take(job, result)

    # ---- what an exchange said ----------------------------------------------------------------

    def take(self, job: AgentJob, result: CheckResult) -> None:
        """One exchange's result: the agent's state, then each pair's cap and out."""
        track = self._tracks.get(job)
        if track is None:
            return  # a reload dropped it while it ran
        self.exchanges += 1
        reply = parse_reply(result.reason) if result.ok else None
        if reply is not None and not reply.empty:
            track.state = fold(track.state, reply)
            track.answered = True
            track.failures = 0
            track.answer = clean(result.reason.strip(), 120)
        else:
            self.failures += 1
            track.failures += 1
            why = clean(result.reason, 120) if reply is None else "no agent word in its reply"
            track.answer = why if reply is None else f"{why}: {clean(result.reason, 60)}"
            if track.answered and track.failures > job.failkeep:
                log.info(
                    "agent %s: %d failed exchanges in a row (%s): its last state is dropped",
                    host_port(job.host, job.port), track.failures, track.answer,
                )  # fmt: skip
                track.state = NEUTRAL
                track.answered = False
        self._apply(track)

    def _apply(self, track: _Track) -> bool:
        """Each pair's verdict and view from its track; True when a view changed."""
        changed = False
        out_changed = False
        for ref, weight in track.refs:
            v = verdict(track.state, weight) if track.answered else NO_EFFECT
            old = self._verdicts.get(ref)
            if old != v:
                self._verdicts[ref] = v
                self.steering.set(SOURCE, ref, v.cap)
                if (old is not None and old.out is not None) != (v.out is not None):
                    out_changed = True
            view = self._view(track, weight, v)
            previous = self._views.get(ref)
            if previous != view:
                self._views[ref] = view
                changed = True
                self.changes += 1
                self._versions[ref.service] = self._versions.get(ref.service, 0) + 1
                # not the "no answer yet" of a real just configured: nothing happened
                moved = track.answered if previous is None else _moved(previous, view)
                if self.publish is not None and moved:
                    self.publish(AgentChanged(ref, view.text, view.weight, weight, view.out))
        if out_changed:
            self.out = frozenset(r for r, v in self._verdicts.items() if v.out is not None)
            if self.on_out_change is not None:
                self.on_out_change()
        return changed

    @staticmethod
    def _view(track: _Track, weight: int, v: Verdict) -> AgentView:
        if not track.answered:
            text = "no answer yet" if not track.failures else f"no answer: {track.answer}"
            return AgentView(text, weight, None, track.answer, track.failures)
        text = describe(track.state, weight)
        if track.failures:
            text = f"{text} (kept: {track.failures} failed: {track.answer})"
        asked = 0 if v.out is not None else (weight if v.cap is None else v.cap)
        return AgentView(text, asked, v.out, track.answer, track.failures)


def _moved(old: AgentView, new: AgentView) -> bool:
    """A change worth an event: the weight asked, out or not, or the words of the state (not
    the failure count of a kept state, nor the same answer again)."""
    if (old.weight, old.out) != (new.weight, new.out):
        return True
    return old.text.split(" (kept", 1)[0] != new.text.split(" (kept", 1)[0]
