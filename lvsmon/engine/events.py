"""One typed event stream: everything that reacts to health, the kernel or the daemon's phase
(the log, fallbackcommand, monitorfile, next e-mail alerts and metrics) subscribes here.

Publishing never waits: each subscriber has its own bounded queue and its own task, so a slow or
failing subscriber (an SMTP relay that hangs, a full disk under the monitorfile) delays neither the
checks nor the reconciler. A full queue drops the newest events of that subscriber only, counts
them and says so in the log. A subscriber that raises is logged with its traceback and keeps
receiving the events after that one.

Per-result events (`CheckDone`) cost a queue entry for every check; the engine publishes them only
while someone subscribed to them (`EventBus.wants`), so a healthy pool's steady state does no
per-result work.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import DestKey, ServiceKey
from lvsmon.ipvs.ops import Op

log = logging.getLogger("lvsmon")

DEFAULT_QUEUE = 65_536  # a start-up at 10,000 reals publishes two events per real at once


class Phase(enum.StrEnum):
    """The daemon's phase, with ldirectord's names (its emailalertstatus uses them)."""

    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class RealChanged:
    """A real went up or down (after failurecount failures, or one success)."""

    ref: RealRef
    up: bool
    reason: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class FirstCheckDown:
    """A real's very first check (since start, or since a reload added it or changed its check)
    failed while it was down: no transition (it never was up), but the reason is worth a line.
    A real adopted from the kernel starts up and goes down by RealChanged instead."""

    ref: RealRef
    reason: str


@dataclass(frozen=True, slots=True)
class SoftFailure:
    """A real that is still up failed a check (failcount of failurecount)."""

    ref: RealRef
    failcount: int
    failurecount: int
    reason: str


@dataclass(frozen=True, slots=True)
class SoftReset:
    """A real with soft failures passed a check: its count starts again."""

    ref: RealRef


@dataclass(frozen=True, slots=True)
class CheckDone:
    """One check result for one (virtual, real): published only while subscribed to."""

    ref: RealRef
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class KernelOp:
    """One op the reconciler sent to the backend; `error` is None when it was applied. With
    the facts its wording needs: subscribers word it (wording.kernel_op_text: ldirectord's
    "Quiescent real server: ...")."""

    op: Op
    error: str | None = None
    drift: bool = False  # it repairs a change made behind lvsmon's back (drift repaired)
    fallback: bool = False  # its destination is the virtual's fallback server
    stopping: bool = False  # a purge as the daemon stops (cleanstop)


@dataclass(frozen=True, slots=True)
class WeightChanged:
    """A destination's weight in the kernel changed (None: absent)."""

    service: ServiceKey
    dest: DestKey
    old: int | None
    new: int | None


@dataclass(frozen=True, slots=True)
class FallbackChanged:
    """A virtual's "no real is up" state changed: True when the fallback (and fallbackcommand
    start) takes over, False when a real serves again."""

    service: ServiceKey
    active: bool


@dataclass(frozen=True, slots=True)
class DrainChanged:
    """An operator drained a real (`lvsmon drain`: weight 0, its connections go on) or undrained
    it; also published at start for every real found drained."""

    ref: RealRef
    drained: bool


@dataclass(frozen=True, slots=True)
class AgentChanged:
    """What a real's agent says changed (the agent check, engine/agentcheck.py): `text` in its
    words ("weight 3/10", "drain", "maint: upgrade", "down: disk full", "no answer: ..."),
    `weight` the weight it asks for of the configured `configured` (0 with drain, maint or
    down), `out` "maint" or "down" while it takes the real out."""

    ref: RealRef
    text: str
    weight: int
    configured: int
    out: str | None = None


@dataclass(frozen=True, slots=True)
class RampChanged:
    """Slow start (engine/slowstart.py): a real's ramp to its configured `weight` began
    (`started`; over `seconds` in `steps` steps) or ended (`reason`: "done" at its weight, or
    "down", "removed", "off" when it was cut short)."""

    ref: RealRef
    started: bool
    weight: int
    seconds: float
    steps: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RealLeaving:
    """Graceful removal (engine/leaving.py, `removedrain`): a real a reload removed started
    leaving (`started`, `reason` "removed" or "virtual removed": at weight 0 for at most
    `seconds`), or stopped (`reason`: "no active connections", "time up", "added again", "gone
    from the kernel"; `seconds`: how long it was leaving). The delete is a KernelOp of its own."""

    service: ServiceKey
    dest: DestKey
    started: bool
    reason: str
    seconds: float


@dataclass(frozen=True, slots=True)
class DepoolLimited:
    """A virtual's depool threshold started keeping reals in although their checks took them
    down (`active`, `kept`: those reals, in config order), or stopped (`active` False, `kept`
    empty). Published when the state starts and ends, not for changes of `kept` in between
    (status shows the current ones)."""

    service: ServiceKey
    kept: tuple[RealRef, ...]
    active: bool


@dataclass(frozen=True, slots=True)
class ConfigLoaded:
    path: str
    digest: str
    virtuals: int


@dataclass(frozen=True, slots=True)
class ConfigFileChanged:
    """The config file settled on new usable content (applied or not: that is autoreload's
    business); ldirectord's `callback` runs on it."""

    path: str
    digest: str


@dataclass(frozen=True, slots=True)
class ConfigRejected:
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    phase: Phase


@dataclass(frozen=True, slots=True)
class SyncDaemonOp:
    """A connection sync daemon started or stopped (lvsmon.daemon.syncdaemons), or the attempt that
    failed."""

    action: str  # "start", "stop" or "read"
    daemon: str  # e.g. "master sync daemon (interface eth1, syncid 7)"
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ArpConflict:
    """The ARP guard (engine/arpguard.py) saw a MAC that is not the director's answer ARP for a
    VIP on `interface`: a real without arp_ignore/arp_announce takes the VIP's traffic.
    `services`: the guarded virtuals on that VIP. `mac` is formatted by lvsmon from the bytes."""

    vip: str
    mac: str
    interface: str
    services: tuple[ServiceKey, ...]
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ArpConflictCleared:
    """A conflict the guard reported is over: a round on `interface` heard no answer from `mac`
    for the VIP, or the VIP is no longer guarded (`reason` says which)."""

    vip: str
    mac: str
    interface: str
    services: tuple[ServiceKey, ...]
    reason: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class RouteChanged:
    """A VIP's BGP announcement changed (engine/bgp.py): announced (or announced again with
    other attributes: `med`, `communities`; `graceful` at a graceful stop) or withdrawn, and
    why. `speaker`: "bird" or "exabgp"; `error`: the speaker refused it (retried)."""

    vip: str
    announced: bool
    reason: str
    speaker: str
    med: int | None = None
    communities: tuple[str, ...] = ()
    graceful: bool = False
    error: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class CertificateExpiring:
    """A real's TLS certificate expires within its virtual's sslexpirywarn days, or has
    expired (`not_after` in the past): published when first seen so, then at most once a day
    per real (engine/certexpiry.py), also while sslverify is no."""

    ref: RealRef
    not_after: float  # seconds since the epoch
    days: int  # the virtual's sslexpirywarn
    at: float = field(default_factory=time.time)


Event = (
    RealChanged
    | FirstCheckDown
    | SoftFailure
    | SoftReset
    | CheckDone
    | KernelOp
    | WeightChanged
    | FallbackChanged
    | DrainChanged
    | RampChanged
    | AgentChanged
    | RealLeaving
    | DepoolLimited
    | ConfigLoaded
    | ConfigFileChanged
    | ConfigRejected
    | PhaseChanged
    | SyncDaemonOp
    | ArpConflict
    | ArpConflictCleared
    | RouteChanged
    | CertificateExpiring
)
Handler = Callable[[Event], Awaitable[None] | None]


class Subscription:
    """One subscriber: its filter, its queue, its task."""

    __slots__ = (
        "_idle",
        "_task",
        "_wake",
        "dropped",
        "handler",
        "kinds",
        "maxlen",
        "name",
        "queue",
    )

    def __init__(
        self, name: str, handler: Handler, kinds: tuple[type, ...] | None, maxlen: int
    ) -> None:
        self.name = name
        self.handler = handler
        self.kinds = kinds
        self.maxlen = maxlen
        self.queue: deque[Event] = deque()
        self.dropped = 0  # events lost to a full queue, in all
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while everything queued has been handled
        self._idle.set()

    def offer(self, event: Event) -> bool:
        if len(self.queue) >= self.maxlen:
            if not self.dropped or self.dropped % 1000 == 0:
                log.error(
                    "event subscriber %s is behind: its queue holds %d events; dropping"
                    " (%d dropped so far)",
                    self.name,
                    self.maxlen,
                    self.dropped + 1,
                )
            self.dropped += 1
            return False
        self.queue.append(event)
        self._idle.clear()
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        return True

    async def _deliver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.queue:
                event = self.queue.popleft()
                try:
                    outcome = self.handler(event)
                    if outcome is not None:
                        await outcome
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("event subscriber %s failed on %r", self.name, event)
            self._idle.set()
            self._wake = loop.create_future()
            await self._wake
            self._wake = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._deliver(), name=f"lvsmon-events-{self.name}"
            )

    async def stop(self, bound: float) -> None:
        """Deliver what is queued (within `bound` seconds), then end the task."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await self._idle.wait()
        if self.queue:
            log.error(
                "event subscriber %s: %d events not delivered at stop", self.name, len(self.queue)
            )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._wanted: set[type] = set()
        self._running = False
        self.published = 0

    def subscribe(
        self,
        name: str,
        handler: Handler,
        *,
        kinds: tuple[type, ...] | None = None,
        maxlen: int = DEFAULT_QUEUE,
    ) -> Subscription:
        """`kinds`: only these event classes (None: all but CheckDone, which must be asked for
        by name because it costs work per check)."""
        sub = Subscription(name, handler, kinds, maxlen)
        self._subs.append(sub)
        self._wanted.update(kinds or ())
        if self._running:
            sub.start()
        return sub

    def wants(self, kind: type) -> bool:
        """Does any subscriber ask for this kind by name (cheap: for per-result events)?"""
        return kind in self._wanted

    @property
    def dropped(self) -> int:
        return sum(sub.dropped for sub in self._subs)

    def publish(self, event: Event) -> None:
        self.published += 1
        kind = type(event)
        for sub in self._subs:
            kinds = sub.kinds
            if kinds is None:
                if kind is CheckDone:
                    continue
            elif kind not in kinds:
                continue
            sub.offer(event)

    async def start(self) -> None:
        self._running = True
        for sub in self._subs:
            sub.start()

    async def stop(self, bound: float = 5.0) -> None:
        self._running = False
        await asyncio.gather(*(sub.stop(bound) for sub in self._subs))
