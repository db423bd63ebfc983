"""GET /metrics: the engine's state and counters in the Prometheus text format (version 0.0.4).

A scrape reads what the engine keeps anyway (health, the table lvsmon believes the kernel holds,
the per-job check counters of lvsmon.engine.checkstats) and owns nothing. At 10,000 reals the
body is some 165,000 lines (16 MB), so:
- labels are formatted once per config (Layout), and health is read by position, not hashed;
- the lines of a real's state (up, weight, maintenance, drain, transitions) are kept per slice of
  reals and reused while none of those reals changed: a scrape formats mostly the histograms;
- the build lets the event loop run whenever it has held it for HOLD_S, so that checks due
  meanwhile start on time; scrapes that arrive during a build share it;
- the body goes out in the pieces it was built in, never joined into one 16 MB string;
- a client that accepts gzip (Prometheus always does) gets it: 16 MB become some 0.7 MB, and the
  compression runs in a worker thread (zlib lets go of the GIL), once per build however many
  clients share it;
- Prometheus scrapes on a steady beat, so the body is built just before the scrape it expects
  (PREBUILD_LEAD_S ahead, and never more than FRESH_S before it is served): the scrape itself is
  only a copy. Built while it is asked for, a body takes its CPU (some 30 ms at 10,000 reals)
  stretched over the checks that run between its slices, and the scrape waits for all of it.
  The body names when its build began (lvsmon_metrics_built_timestamp_seconds). A client without
  a beat (a person with curl, the first scrapes) gets a body built for it.

Check figures are per check job: a real that sits in several virtuals with the same check is
checked once, and each of its (virtual, real) series shows that one job's figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from aiohttp import web

from lvsmon import __version__
from lvsmon.addr import host_port
from lvsmon.api.guard import REASONS, Guard
from lvsmon.api.metricdefs import FAMILIES
from lvsmon.engine.checkstats import DURATION_BUCKETS, REASON_CLASSES, CheckCounts
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import Service, ServiceKey, Table

if TYPE_CHECKING:
    from lvsmon.api.app import DaemonView
    from lvsmon.engine.engine import Engine
    from lvsmon.engine.health import RealHealth
    from lvsmon.engine.runner import JobRun

log = logging.getLogger("lvsmon.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SLICE = 200  # reals formatted between two looks at the clock
HOLD_S = 0.004  # the build holds the event loop this long at most before checks may run
RATE_WINDOW_S = 60.0  # lvsmon_checks_per_second: over at most the last minute of scrapes
LATENESS_QUANTILES = (0.5, 0.9, 0.99, 1.0)
FRESH_S = 1.0  # a body whose build began at most this long ago is served as it is
PREBUILD_LEAD_S = 0.3  # a build for the expected scrape begins this long before it, or...
PREBUILD_LEAD_BUILDS = 2  # ...this many times the longest of the last builds, the longer
BEAT_SCRAPES = 4  # scrapes whose gaps must agree (within BEAT_SPREAD) before one is expected
BEAT_SPREAD = 0.25


EXPORTER: web.AppKey[Exporter] = web.AppKey("metrics exporter")


async def handler(request: web.Request) -> web.StreamResponse:
    exporter = request.app[EXPORTER]
    gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    parts = await exporter.serve(gzipped)
    # written piece by piece: 17 MB at 10,000 reals is neither joined nor buffered whole
    response = web.StreamResponse(
        headers={
            "Content-Type": CONTENT_TYPE,
            "Vary": "Accept-Encoding",
            **({"Content-Encoding": "gzip"} if gzipped else {}),
        }
    )
    response.content_length = sum(map(len, parts))
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header value takes gzip (`gzip;q=0` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower()
            return not q.startswith("q=") or q[2:].strip().rstrip("0.") != ""
    return False


def gzip_parts(parts: list[bytes]) -> bytes:
    """The parts as one gzip member; in a worker thread: zlib runs without the GIL. Level 1:
    the body is very repetitive, and level 6 takes three times as long to save another 15 %."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(part) for part in parts]
    out.append(packer.flush())
    return b"".join(out)


# ---- text format --------------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def family_header(name: str) -> bytes:
    kind, help_text = FAMILIES[name]
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n".encode()


def family(out: list[str], name: str) -> None:
    out.append(family_header(name).decode())


def agent_family(out: list[str], engine: Engine, layout: Layout) -> None:
    """lvsmon_real_agent_weight: a sample per real with an agent check (engine/agentcheck.py),
    read from the runner's views (a few reals, not a pass over all of them)."""
    family(out, "lvsmon_real_agent_weight")
    agents = getattr(engine, "agents", None)
    if agents is None:
        return
    index_of, reals = layout.index_of, layout.reals
    for ref, view in agents.views.items():
        i = index_of.get(ref)
        if i is not None:
            out.append(f"lvsmon_real_agent_weight{{{reals[i].labels}}} {view.weight}\n")


def cert_family(out: list[str], engine: Engine, layout: Layout, now: float) -> None:
    """lvsmon_real_certificate_expiry_seconds: a sample per real whose certificate a check read
    (sslexpirywarn, engine/certexpiry.py): the watched few, not a pass over all reals."""
    family(out, "lvsmon_real_certificate_expiry_seconds")
    certs = getattr(engine, "certs", None)
    if certs is None:
        return
    index_of, reals = layout.index_of, layout.reals
    for ref, not_after in certs.expiry.items():
        i = index_of.get(ref)
        if i is not None:
            value = number(round(not_after - now, 3))
            out.append(f"lvsmon_real_certificate_expiry_seconds{{{reals[i].labels}}} {value}\n")


def ramp_family(out: list[str], engine: Engine, layout: Layout) -> None:
    """lvsmon_real_ramping: a sample per real slow start ramps now (engine/ramping.py), read
    from its ramps (a few reals, not a pass over all of them)."""
    family(out, "lvsmon_real_ramping")
    slowstart = getattr(engine, "slowstart", None)
    if slowstart is None:
        return
    index_of, reals = layout.index_of, layout.reals
    for ref in slowstart.ramps:
        i = index_of.get(ref)
        if i is not None:
            out.append(f"lvsmon_real_ramping{{{reals[i].labels}}} 1\n")


def number(value: float) -> str:
    """Integers as integers, other floats in Python's shortest round-trip form."""
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def real_label(ref: RealRef) -> str:
    """The real as events and /status name it: address:port, an IPv6 address in brackets."""
    return host_port(ref.address, ref.port)


def _le(bound: float) -> str:
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"


# label suffixes of the histogram's bucket lines, "+Inf" last
_LE_SUFFIXES = (*(f',le="{_le(b)}"}} ' for b in DURATION_BUCKETS), ',le="+Inf"} ')
_NO_TRANSITIONS = (0, 0)

# ---- what the labels are, once per config -------------------------------------------------


@dataclass(slots=True)
class _Real:
    ref: RealRef
    health_at: int  # its place in engine.health's order (-1: none); see Layout
    labels: str  # virtual="...",real="..." (no braces: the histogram adds `le`)
    dest: tuple[str, int]  # the kernel's key, as (address, port): a tuple hashes in C
    run: JobRun | None  # its check job's running state; None: not checked (checktype on/off)
    virtual: int  # index in Layout.virtuals


@dataclass(slots=True)
class _Virtual:
    key: ServiceKey
    labels: str  # virtual="..."
    has_fallback: bool
    reals: int


class Layout:
    """The series of one config and one schedule of check jobs; `build` fills it."""

    def __init__(self, engine: Engine) -> None:
        self.config = engine.config
        self.runs = engine.runner.runs
        self.health: dict[RealRef, RealHealth] = engine.health
        self.reals: list[_Real] = []
        self.virtuals: list[_Virtual] = []
        self.index_of: dict[RealRef, int] = {}
        # per virtual: the kernel's weights by (address, port), and the table entry they are of
        self.weights: list[tuple[Service | None, dict[tuple[str, int], int]]] = []
        # per slice (its first real's index): the reals' states and their lines, last scrape's
        self.states: dict[int, tuple[list[_RealState], tuple[bytes, ...]]] = {}

    async def build(self, engine: Engine, pause: Callable[[], Awaitable[None]]) -> None:
        """At 10,000 reals this hashes some 40,000 keys: `pause` lets the checks run."""
        run_of: dict[RealRef, JobRun] = {}
        for run in self.runs.values():
            for ref in run.refs:
                run_of.setdefault(ref, run)
        await pause()
        # health by place (Engine.health_places); a new health dict makes a new Layout
        self.health = engine.health
        places = engine.health_places()
        await pause()
        index_of, reals = self.index_of, self.reals
        for v, v_places in zip(engine.layout(), places, strict=True):
            vlabel = escape_label(str(v.key))
            vindex = len(self.virtuals)
            first = len(reals)
            for ref, kdest, at in zip(v.refs, v.dests, v_places, strict=True):
                n = len(reals)
                if index_of.setdefault(ref, n) != n:
                    continue  # one series per (virtual, real)
                labels = f'virtual="{vlabel}",real="{escape_label(real_label(ref))}"'
                dest = (kdest.address, kdest.port)
                reals.append(_Real(ref, at, labels, dest, run_of.get(ref), vindex))
            self.virtuals.append(
                _Virtual(v.key, f'virtual="{vlabel}"', v.fallback is not None, len(reals) - first)
            )
            self.weights.append((None, {}))
            await pause()

    def flags(self, refs: Iterable[RealRef]) -> bytearray:
        """1 at the index of each of `refs` that has a series."""
        out = bytearray(len(self.reals))
        index_of = self.index_of
        for ref in refs:
            i = index_of.get(ref)
            if i is not None:
                out[i] = 1
        return out


# ---- one scrape -----------------------------------------------------------------------------

# the per-real families, in the order of the body
REAL_FAMILIES = (
    "lvsmon_real_up",
    "lvsmon_real_weight",
    "lvsmon_real_maintenance",
    "lvsmon_real_drained",
    "lvsmon_real_transitions_total",
    "lvsmon_real_check_failures_total",
    "lvsmon_check_duration_seconds",
)
_FAILURES, _DURATION = 5, 6  # the families after the state ones (_state_text's)


class _Scrape:
    """One build's state while it runs slice by slice."""

    def __init__(self, engine: Engine, layout: Layout) -> None:
        self.layout = layout
        # each family's text, one piece per slice (encoded there: no 20 MB encode at the end)
        self.parts: list[list[bytes]] = [[] for _ in REAL_FAMILIES]
        self.serving = [0] * len(layout.virtuals)  # per virtual: up, not maintained, not drained
        # every real's health, in the order of engine.health (Layout.health_at)
        self.health: list[RealHealth | None] = list(engine.health.values())
        self.maintained = layout.flags(engine.maintained)
        self.drained = layout.flags(getattr(engine, "drained", ()))
        self.depool_kept = {key: len(kept) for key, kept in engine.depool_limited.items()}
        # few reals ever change state: their counts by index, not a lookup per real
        index_of = layout.index_of
        self.transitions: dict[int, tuple[int, int]] = {}
        for ref, pair in engine.transitions.items():
            i = index_of.get(ref)
            if i is not None:
                self.transitions[i] = pair


def _weights(layout: Layout, vindex: int, table: Table) -> dict[tuple[str, int], int]:
    """A virtual's kernel weights: rebuilt when the reconciler replaced its table entry (a
    change, a resync's dump), else the last scrape's."""
    service = table.get(layout.virtuals[vindex].key)
    cached = layout.weights[vindex]
    if cached[0] is not service:
        dests = service.dests if service is not None else {}
        cached = layout.weights[vindex] = (
            service,
            {(d.address, d.port): conf.weight for d, conf in dests.items()},
        )
    return cached[1]


# up, kernel weight (None: absent), maintenance, drained, transitions up, transitions down
_RealState = tuple[int, int | None, int, int, int, int]


def _state_text(reals: list[_Real], state: list[_RealState]) -> tuple[bytes, ...]:
    """The lines of the state families (REAL_FAMILIES[:5]) for these reals."""
    up_l: list[str] = []
    weight_l: list[str] = []
    maint_l: list[str] = []
    drained_l: list[str] = []
    trans_l: list[str] = []
    for real, (up, weight, maint, drain, ups, downs) in zip(reals, state, strict=True):
        labels = real.labels
        up_l.append(f"lvsmon_real_up{{{labels}}} {up}\n")
        if weight is not None:
            weight_l.append(f"lvsmon_real_weight{{{labels}}} {weight}\n")
        maint_l.append(f"lvsmon_real_maintenance{{{labels}}} {maint}\n")
        drained_l.append(f"lvsmon_real_drained{{{labels}}} {drain}\n")
        trans_l.append(
            f'lvsmon_real_transitions_total{{{labels},direction="up"}} {ups}\n'
            f'lvsmon_real_transitions_total{{{labels},direction="down"}} {downs}\n'
        )
    return tuple("".join(lines).encode() for lines in (up_l, weight_l, maint_l, drained_l, trans_l))


@dataclass(slots=True)
class Body:
    """One build's body, in pieces, and its gzip form once a client asked for it."""

    began: float  # time.monotonic() when the build began: its values are at least this recent
    parts: list[bytes]
    gzipped: asyncio.Future[bytes] | None = None


class Exporter:
    """The metrics of one daemon."""

    def __init__(self, daemon: DaemonView, guard: Guard | None = None) -> None:
        """`guard`: the control server's, whose refusals /metrics counts (none: zeros)."""
        self.daemon = daemon
        self.guard = guard
        self._layout: Layout | None = None
        self._building: asyncio.Task[Body] | None = None
        self._last: Body | None = None  # the newest body built ahead of a scrape
        # when clients asked (monotonic), and whether the last one took gzip: the beat the next
        # body is built for
        self._asked: deque[float] = deque(maxlen=BEAT_SCRAPES + 1)
        self._want_gzip = False
        self._timer: asyncio.TimerHandle | None = None
        self._ahead: asyncio.Task[None] | None = None
        self._closed = False
        # (monotonic time, checks done) at earlier scrapes, one a second at most, the first at
        # the daemon's start: lvsmon_checks_per_second
        since_start = max(0.0, time.time() - daemon.started_at)
        self._samples: list[tuple[float, int]] = [(time.monotonic() - since_start, 0)]
        self._build_times: deque[float] = deque(maxlen=4)  # the last builds' durations, s
        self.built_ahead = 0  # bodies built for an expected scrape (tests, the docs' claim)
        self._ran_since = 0.0  # when the build last let the event loop run

    @property
    def last_build_s(self) -> float:
        return self._build_times[-1] if self._build_times else 0.0

    async def layout(self) -> Layout:
        engine = self.daemon.engine
        layout = self._layout
        if (
            layout is None
            or layout.config is not engine.config
            or layout.runs is not engine.runner.runs
            or layout.health is not engine.health
        ):
            layout = Layout(engine)
            await layout.build(engine, self._pause)
            self._layout = layout
        return layout

    async def _pause(self) -> None:
        """Let the checks due run if the build has held the event loop for HOLD_S."""
        if time.perf_counter() - self._ran_since > HOLD_S:
            await asyncio.sleep(0)
            self._ran_since = time.perf_counter()

    # ---- what a client gets ------------------------------------------------------------------

    async def serve(self, gzipped: bool) -> list[bytes]:
        """A client's body: the one built ahead for this scrape if it began at most FRESH_S
        ago, else one built now (a client off the beat sees what it did a moment ago: a reload,
        a drain); then the next scrape of the beat is expected."""
        asked = time.monotonic()
        body = self._last
        if (
            body is None
            or asked - body.began > FRESH_S
            or not (body.gzipped if gzipped else body.parts)
        ):
            body = await self._body()
        self._expect(asked, gzipped)
        return [await self._gzip(body)] if gzipped else body.parts

    async def scrape(self) -> list[bytes]:
        """A body built now, in pieces. A scrape that comes while another builds gets the same
        body; the build is a task of its own, so a client that goes away does not end it for the
        others."""
        return (await self._body()).parts

    async def scrape_gzip(self) -> bytes:
        """A body built now, gzipped: compressed once per build, off the event loop."""
        return await self._gzip(await self._body())

    async def close(self) -> None:
        """The daemon stops: no build ahead any more."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._ahead, self._building):
            if task is not None:
                task.cancel()

    async def _body(self) -> Body:
        building = self._building
        if building is None:
            building = self._building = asyncio.get_running_loop().create_task(
                self._build(), name="lvsmon-metrics"
            )
            building.add_done_callback(self._built)
        return await asyncio.shield(building)

    async def _gzip(self, body: Body) -> bytes:
        if body.gzipped is None:
            loop = asyncio.get_running_loop()
            body.gzipped = loop.run_in_executor(None, gzip_parts, body.parts)
        return await asyncio.shield(body.gzipped)

    # ---- building ahead of a beat ------------------------------------------------------------

    def _expect(self, asked: float, gzipped: bool) -> None:
        """After a scrape: if the last BEAT_SCRAPES gaps agree, build the next body a lead ahead
        of the next beat. The lead covers a build twice as slow as the slowest of the last few,
        up to 0.8 FRESH_S (a slower build is still under way when the scrape comes, which then
        waits for the rest of it only). A beat hardly longer than the lead is not built ahead:
        the body of one scrape is then still fresh for the next."""
        self._want_gzip = gzipped
        self._asked.append(asked)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closed or len(self._asked) <= BEAT_SCRAPES:
            return
        gaps = [b - a for a, b in pairwise(self._asked)]
        beat = sorted(gaps)[len(gaps) // 2]
        slowest = max(self._build_times, default=0.0)
        lead = min(max(PREBUILD_LEAD_S, PREBUILD_LEAD_BUILDS * slowest), 0.8 * FRESH_S)
        if max(gaps) - min(gaps) > BEAT_SPREAD * beat or beat < 1.25 * lead:
            return
        delay = asked + beat - lead - time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._build_ahead)

    def _build_ahead(self) -> None:
        self._timer = None
        if self._closed or (self._ahead is not None and not self._ahead.done()):
            return
        self._ahead = asyncio.get_running_loop().create_task(
            self._ahead_of_scrape(), name="lvsmon-metrics-ahead"
        )

    async def _ahead_of_scrape(self) -> None:
        try:
            body = await self._body()
            if self._want_gzip:
                await self._gzip(body)
                body.parts = []  # 16 MB at 10,000 reals, and the beat's scraper takes gzip
            self._last = body
            self.built_ahead += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            # the scrape it was for builds on its own, and answers 500 if that fails too
            log.exception("building /metrics ahead of the next scrape failed")

    def _built(self, task: asyncio.Task[Body]) -> None:
        self._building = None
        if not task.cancelled():
            task.exception()  # retrieved, whoever waited or not

    async def _build(self) -> Body:
        began, began_wall = time.monotonic(), time.time()
        started = self._ran_since = time.perf_counter()
        scrape = None
        for attempt in range(3):
            scrape = await self._per_real(restartable=attempt < 2)
            if scrape is not None:
                break
            # a reload replaced the config while the build let the checks run: start again
        assert scrape is not None
        out: list[bytes] = []
        for name, parts in zip(REAL_FAMILIES, scrape.parts, strict=True):
            out.append(family_header(name))
            out += parts
        await self._pause()
        text: list[str] = []
        self._virtual_families(text, scrape)
        agent_family(text, self.daemon.engine, scrape.layout)
        ramp_family(text, self.daemon.engine, scrape.layout)
        cert_family(text, self.daemon.engine, scrape.layout, time.time())
        await self._pause()
        self._daemon_families(text, began_wall)
        out.append("".join(text).encode())
        self._build_times.append(time.perf_counter() - started)
        return Body(began, out)

    async def _per_real(self, *, restartable: bool) -> _Scrape | None:
        engine = self.daemon.engine
        layout = await self.layout()
        scrape = _Scrape(engine, layout)
        total = len(layout.reals)
        for start in range(0, total, SLICE):
            if time.perf_counter() - self._ran_since > HOLD_S:
                await self._pause()
                if restartable and engine.config is not layout.config:
                    return None
            self._slice(engine, scrape, start, min(start + SLICE, total))
        return scrape

    @staticmethod
    def _slice(engine: Engine, scrape: _Scrape, start: int, end: int) -> None:
        health = scrape.health
        table = engine.actual or {}
        serving, transitions = scrape.serving, scrape.transitions
        maintained, drained = scrape.maintained, scrape.drained
        reals = scrape.layout.reals[start:end]
        state: list[_RealState] = []
        fail_l: list[str] = []
        dur_l: list[str] = []
        layout = scrape.layout
        vindex = -1
        weights: dict[tuple[str, int], int] = {}
        i = start
        for real in reals:
            h = health[real.health_at] if real.health_at >= 0 else None
            up = 1 if h is not None and h.up else 0
            maint, drain = maintained[i], drained[i]
            if up and not maint and not drain:
                serving[real.virtual] += 1
            if real.virtual != vindex:
                vindex = real.virtual
                weights = _weights(layout, vindex, table)
            ups, downs = transitions.get(i, _NO_TRANSITIONS)
            state.append((up, weights.get(real.dest), maint, drain, ups, downs))
            i += 1
            run = real.run
            if run is None:
                continue
            labels = real.labels
            counts: CheckCounts = run.counts
            total = 0
            for suffix, n in zip(_LE_SUFFIXES, counts.buckets, strict=True):
                total += n
                dur_l.append(f"lvsmon_check_duration_seconds_bucket{{{labels}{suffix}{total}\n")
            dur_l.append(
                f"lvsmon_check_duration_seconds_sum{{{labels}}} {counts.seconds!r}\n"
                f"lvsmon_check_duration_seconds_count{{{labels}}} {total}\n"
            )
            if not any(counts.failures):
                continue
            for cls, n in enumerate(counts.failures):
                if n:
                    fail_l.append(
                        "lvsmon_real_check_failures_total"
                        f'{{{labels},reason="{REASON_CLASSES[cls]}"}} {n}\n'
                    )
        # a real's state rarely changes: the text of a slice whose states did not is kept
        cached = scrape.layout.states.get(start)
        if cached is None or cached[0] != state:
            cached = scrape.layout.states[start] = (state, _state_text(reals, state))
        parts = scrape.parts
        for k, text in enumerate(cached[1]):
            if text:
                parts[k].append(text)
        if fail_l:
            parts[_FAILURES].append("".join(fail_l).encode())
        if dur_l:
            parts[_DURATION].append("".join(dur_l).encode())

    @staticmethod
    def _virtual_families(out: list[str], scrape: _Scrape) -> None:
        virtuals = scrape.layout.virtuals
        family(out, "lvsmon_virtual_reals")
        out += [f"lvsmon_virtual_reals{{{v.labels}}} {v.reals}\n" for v in virtuals]
        family(out, "lvsmon_virtual_reals_up")
        out += [
            f"lvsmon_virtual_reals_up{{{v.labels}}} {n}\n"
            for v, n in zip(virtuals, scrape.serving, strict=True)
        ]
        kept = scrape.depool_kept
        family(out, "lvsmon_virtual_fallback_active")
        out += [
            f"lvsmon_virtual_fallback_active{{{v.labels}}}"
            f" {1 if v.has_fallback and not n and v.key not in kept else 0}\n"
            for v, n in zip(virtuals, scrape.serving, strict=True)
        ]
        family(out, "lvsmon_virtual_depool_limited")
        out += [
            f"lvsmon_virtual_depool_limited{{{v.labels}}} {kept.get(v.key, 0)}\n" for v in virtuals
        ]

    def _checks_per_second(self, done: int) -> float:
        now = time.monotonic()
        samples = self._samples
        # the oldest sample kept is the newest one at least a minute old (or the first)
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW_S:
            samples.pop(0)
        then, done_then = samples[0]
        rate = (done - done_then) / (now - then) if now > then else 0.0
        if now - samples[-1][0] >= 1.0:
            samples.append((now, done))
        return rate

    def _daemon_families(self, out: list[str], began_wall: float) -> None:
        daemon = self.daemon
        engine = daemon.engine
        stats, runner, feed = engine.stats, engine.runner, daemon.feed

        def one(name: str, value: float) -> None:
            family(out, name)
            out.append(f"{name} {number(value)}\n")

        def labelled(name: str, label: str, values: dict[str, int]) -> None:
            family(out, name)
            out.extend(f'{name}{{{label}="{k}"}} {v}\n' for k, v in values.items())

        family(out, "lvsmon_build_info")
        out.append(f'lvsmon_build_info{{version="{escape_label(__version__)}"}} 1\n')
        one("lvsmon_start_time_seconds", daemon.started_at)
        one("lvsmon_check_jobs", len(runner.runs))
        one("lvsmon_checks_total", stats.checks_done)
        one("lvsmon_check_failures_total", stats.checks_failed)
        one("lvsmon_checks_unknown_total", stats.checks_unknown)
        one("lvsmon_checks_untrusted_total", stats.checks_untrusted)
        one("lvsmon_event_loop_lag_seconds", runner.lag.peak)
        one("lvsmon_event_loop_lost_seconds_total", runner.lag.lost)
        one("lvsmon_checks_per_second", round(self._checks_per_second(stats.checks_done), 3))
        one("lvsmon_checks_running", runner.running)
        one("lvsmon_check_slots_skipped_total", runner.skipped)
        one("lvsmon_check_slots_deferred_total", runner.deferred)
        one("lvsmon_check_admission_window", runner.window.size)
        family(out, "lvsmon_check_start_lateness_seconds")
        recent = sorted(stats.lateness)
        if recent:
            for q in LATENESS_QUANTILES:
                value = recent[min(len(recent) - 1, int(q * len(recent)))]
                out.append(f'lvsmon_check_start_lateness_seconds{{quantile="{q}"}} {value!r}\n')
        out.append(f"lvsmon_check_start_lateness_seconds_sum {stats.lateness_total!r}\n")
        out.append(f"lvsmon_check_start_lateness_seconds_count {stats.checks_started}\n")
        one("lvsmon_reconciles_total", stats.reconciles)
        one("lvsmon_resyncs_total", stats.resyncs)
        labelled(
            "lvsmon_reconcile_ops_total",
            "result",
            {"applied": stats.ops_applied, "failed": stats.ops_failed},
        )
        one("lvsmon_reconcile_drift_repairs_total", stats.drift_repairs)
        one("lvsmon_reconcile_retry_pending", int(engine.reconciler.retry_at is not None))
        labelled("lvsmon_config_reloads_total", "result", daemon.reload_counts)
        one("lvsmon_config_last_reload_success_timestamp_seconds", daemon.last_good_config_at)
        labelled("lvsmon_alert_mails_total", "result", daemon.alert_mails)
        one("lvsmon_alert_mails_queued", daemon.alert_mails_queued)
        one("lvsmon_events_published_total", engine.events.published)
        one("lvsmon_events_dropped_total", engine.events.dropped)
        one("lvsmon_control_sse_clients", feed.clients)
        one("lvsmon_control_sse_cut_off_total", feed.cut_off)
        refused = self.guard.refused if self.guard is not None else {}
        labelled("lvsmon_control_refused_total", "reason", {k: refused.get(k, 0) for k in REASONS})
        arp = daemon.arpguard
        one("lvsmon_arp_conflicts_active", len(arp.conflicts))
        one("lvsmon_arp_conflicts_total", arp.detected)
        one("lvsmon_arp_guard_rounds_total", arp.rounds)
        one("lvsmon_arp_guard_failures_total", arp.failures)
        one("lvsmon_metrics_build_seconds", self.last_build_s)
        one("lvsmon_metrics_built_timestamp_seconds", round(began_wall, 3))
        bgp = daemon.bgp
        family(out, "lvsmon_bgp_announced")
        if bgp is not None:
            out.extend(
                f'lvsmon_bgp_announced{{vip="{escape_label(vip)}"}} {int(state.announced)}\n'
                for vip, state in bgp.states.items()
            )
        family(out, "lvsmon_bgp_director_drained")
        if bgp is not None:
            out.append(f"lvsmon_bgp_director_drained {int(bgp.director_drained)}\n")
        family(out, "lvsmon_bgp_speaker_failures_total")
        if bgp is not None:
            out.append(f"lvsmon_bgp_speaker_failures_total {bgp.failed}\n")
