"""Per check job counters for /metrics: how many checks ran, how long they took (histogram
buckets), how many failed and why (a small fixed set of reason classes); and per (virtual, real)
health transitions.

The check figures are kept per job, not per (virtual, real): a job runs once whatever the number
of reals it feeds, and at 10,000 checks a second the runner may only afford a few list index
increments per result. The metrics endpoint expands them to each (virtual, real) label set at
scrape time.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Container, Iterable, Iterator
from typing import Final

from lvsmon.checks.base import CheckResult
from lvsmon.engine.jobs import RealRef, place_in
from lvsmon.ipvs.model import ServiceKey

# Upper bounds (s) of the check duration histogram. A check on a LAN takes well under a
# millisecond to a few; the top ones catch slow servers and timeouts (checktimeout is seconds).
# Few buckets on purpose: at 10,000 reals each one is 10,000 more lines per scrape.
DURATION_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0)

# Why checks fail, coarsely: the `reason` label of lvsmon_check_failures_total.
REASON_CLASSES: Final = (
    "refused",  # connection refused (also an ICMP port unreachable for UDP)
    "timeout",  # the check's deadline, or the kernel's connect timeout
    "reset",  # connection reset, aborted, or closed by the server before the check ended
    "unreachable",  # no route to host, network or host unreachable, host down
    "tls",  # the TLS handshake or certificate
    "dns",  # resolving the name the check connects to
    "response",  # the server answered, but not as the check wants (status, receive, login)
    "other",  # anything else: a setting the check cannot use, a command that cannot run
)
REFUSED, TIMEOUT, RESET, UNREACHABLE, TLS, DNS, RESPONSE, OTHER = range(len(REASON_CLASSES))

# (text found in the reason, class), tried in order; a reason's words come from the checks
# (lvsmon/checks: "connect: connection refused", "timeout after 3s during http", ...)
_RULES: Final = (
    ("timeout after", TIMEOUT),
    ("timed out", TIMEOUT),
    ("no reply", TIMEOUT),  # radius: every resend within the deadline went unanswered
    ("connection refused", REFUSED),
    ("connection reset", RESET),
    ("broken pipe", RESET),
    ("connection abort", RESET),
    ("connection closed", RESET),
    ("closed by the server", RESET),
    ("no route to host", UNREACHABLE),
    ("unreachable", UNREACHABLE),
    ("host is down", UNREACHABLE),
    ("name resolution failed", DNS),
    ("did not resolve", DNS),
    ("certificate", TLS),
    ("handshake", TLS),
    ("ssl", TLS),
    # not the server's doing: a check that cannot be run as configured
    ("must be set for this check", OTHER),
    ("is not implemented", OTHER),
    ("cannot execute", OTHER),
    ("cannot build", OTHER),
    ("check failed:", OTHER),
)
# steps whose own failures are not an answer of the server
_TRANSPORT_STEPS: Final = frozenset({"connect", "start", "tls"})


def classify(reason: str) -> int:
    """The index in REASON_CLASSES of a failed check's reason."""
    text = reason.lower()
    for needle, cls in _RULES:
        if needle in text:
            return cls
    step, sep, _ = text.partition(": ")
    if not sep:
        return OTHER
    if step == "tls":
        return TLS
    if step in _TRANSPORT_STEPS or " " in step:
        return OTHER  # an errno we do not class ("cannot assign requested address"...)
    return RESPONSE  # "http: status 503", "smtp: ehlo: 554 ...", "external: exit 1"


_class_of: dict[str, int] = {}
_CLASS_CACHE: Final = 4096  # distinct failure reasons remembered (most repeat exactly)


def classify_cached(reason: str) -> int:
    cls = _class_of.get(reason)
    if cls is None:
        if len(_class_of) >= _CLASS_CACHE:
            _class_of.clear()  # reasons quoting varying server output: start again
        cls = _class_of[reason] = classify(reason)
    return cls


# Every job's duration buckets live in one array('I') (4 bytes a counter however large it grows,
# where a list holds an int object of its own past 256), _WIDTH counters a job: an array of its
# own per job cost some 110 bytes of headers. A job's place is taken when it is made and given
# back when it is dropped. Their sum is in _SECONDS at the place's row: as a slot it was a
# float object per job (24 bytes, and a slot of 8), for some 30 ns more a check in the array.
# A place is kept as its block's start (one int object for the block's 32 jobs) and its offset
# in the block (at most 248: Python's cached small ints), not as an int object per job (28 B).
_WIDTH: Final = len(DURATION_BUCKETS) + 1  # the last one is +Inf
_BLOCK: Final = 32 * _WIDTH  # counters a block
_BUCKETS: Final = array("I")
_SECONDS: Final = array("d")  # per place, at base // _WIDTH: the sum of its durations
# per place, at base // _WIDTH: its job's phase in the timetable (engine/timetable.py Entry;
# the runner's JobRun is both): a slot held a float object of its own (24 bytes and 8, a job)
_PHASES: Final = array("d")
# per place: the lag monitor's lost time when its job's check in flight started (the runner's
# JobRun.lag_mark): a slot held a float object a check start made (24 bytes and 8, a job)
_LAG_MARKS: Final = array("d")
_FREE: Final[list[int]] = []  # places of dropped jobs, zeroed, to be taken again
_STARTS: Final[list[int]] = []  # each block's start: the one int object its places share
_ZEROS: Final = array("I", bytes(4 * _WIDTH))
# failures only on the first one (a copy of this)
_NO_FAILURES: Final = array("I", bytes(4 * len(REASON_CLASSES)))


def _take_place() -> tuple[int, int]:
    """A fresh run of _WIDTH zeroed counters in _BUCKETS: its block's start and its offset."""
    if _FREE:
        base = _FREE.pop()
    else:
        base = len(_BUCKETS)
        _BUCKETS.extend(_ZEROS)
        _SECONDS.append(0.0)
        _PHASES.append(0.0)
        _LAG_MARKS.append(0.0)
        if base % _BLOCK == 0:
            _STARTS.append(base)
    start = _STARTS[base // _BLOCK]
    return start, base - start


class CheckCounts:
    """One check job's figures since it was scheduled (a job changed by a reload starts again
    from zero: Prometheus reads that as a counter reset). Kept per job at 10,000 jobs and more:
    its buckets and the sum of the durations are its place in the shared arrays; its own slots
    that place (its block's start, shared, and its offset) and the failures (made on the first
    one)."""

    __slots__ = ("_at", "_failures", "_start")

    def __init__(self) -> None:
        self._start, self._at = _take_place()
        self._failures: array[int] | None = None  # made on the first failure

    def __del__(self) -> None:
        start = getattr(self, "_start", None)
        if start is None or _BUCKETS is None:  # a failed __init__, or the interpreter's exit
            return
        base = start + self._at
        _BUCKETS[base : base + _WIDTH] = _ZEROS
        _SECONDS[base // _WIDTH] = 0.0
        _PHASES[base // _WIDTH] = 0.0
        _LAG_MARKS[base // _WIDTH] = 0.0
        _FREE.append(base)

    @property
    def _base(self) -> int:
        return self._start + self._at

    @property
    def phase(self) -> float:
        """Its job's phase in the timetable (Entry's), kept at its place: the timetable reads it
        when it places the job and on a start off its ring (the ring's own array otherwise)."""
        return _PHASES[(self._start + self._at) // _WIDTH]

    @phase.setter
    def phase(self, value: float) -> None:
        _PHASES[(self._start + self._at) // _WIDTH] = value

    @property
    def lag_mark(self) -> float:
        """The lag monitor's lost time when its job's check in flight started (the runner's
        late-timeout judgement, engine/lag.py), kept at its place."""
        return _LAG_MARKS[(self._start + self._at) // _WIDTH]

    @lag_mark.setter
    def lag_mark(self, value: float) -> None:
        _LAG_MARKS[(self._start + self._at) // _WIDTH] = value

    @property
    def seconds(self) -> float:
        """The sum of all durations."""
        return _SECONDS[self._base // _WIDTH]

    @property
    def buckets(self) -> array[int]:
        """Checks per duration bucket, not cumulative; the last one is +Inf. Their sum is the
        number of checks. A copy."""
        base = self._base
        return _BUCKETS[base : base + _WIDTH]

    @property
    def failures(self) -> array[int]:
        """Failed checks per REASON_CLASSES (read only: the zeros may be shared)."""
        failures = self._failures
        return _NO_FAILURES if failures is None else failures

    def record(self, result: CheckResult) -> None:
        """One finished check: the runner's only per-result cost here."""
        latency = result.latency_s
        start, at = self._start, self._at
        # the offset plus the bucket stays a cached small int: one int made, as with one base
        _BUCKETS[start + (at + bisect_left(DURATION_BUCKETS, latency))] += 1
        _SECONDS[(start + at) // _WIDTH] += latency
        if not result.ok:
            failures = self._failures
            if failures is None:
                failures = self._failures = _NO_FAILURES[:]
            failures[classify_cached(result.reason)] += 1

    @property
    def checks(self) -> int:
        return sum(self.buckets)


class Transitions:
    """Health transitions per (virtual, real), for /metrics. Per virtual, a pair of counters
    (up, down) a real at its place among the virtual's reals (RealRef.at), in one array('I')
    for the virtual: every real comes up once at start, and a dict by real was 35 bytes a real
    for that pair. `follow` takes each plan (start, reload): a virtual whose reals are the same
    objects keeps its array, another one takes the counts of the reals it kept, and a removed
    one's go. A real of no plan followed (a plan made by hand) is counted in a dict."""

    __slots__ = ("_by_service", "_loose")

    def __init__(self) -> None:
        self._by_service: dict[ServiceKey, tuple[tuple[RealRef, ...], array[int]]] = {}
        self._loose: dict[RealRef, tuple[int, int]] = {}

    def follow(self, virtuals: Iterable[tuple[ServiceKey, tuple[RealRef, ...]]]) -> None:
        """From now on, these virtuals' reals (a plan's parts), in their order."""
        old, new = self._by_service, {}
        for key, refs in virtuals:
            entry = old.get(key)
            if entry is not None and entry[0] is refs:
                new[key] = entry
                continue
            counts = array("I", bytes(8 * len(refs)))
            if entry is not None and any(entry[1]):
                before = {ref: i for i, ref in enumerate(entry[0])}
                for i, ref in enumerate(refs):
                    j = before.get(ref)
                    if j is not None:
                        counts[2 * i : 2 * i + 2] = entry[1][2 * j : 2 * j + 2]
            new[key] = (refs, counts)
        self._by_service = new

    def _place(self, ref: RealRef) -> tuple[array[int], int] | None:
        entry = self._by_service.get(ref.service)
        at = None if entry is None else place_in(entry[0], ref)
        return None if entry is None or at is None else (entry[1], 2 * at)

    def record(self, ref: RealRef, up: bool) -> None:
        place = self._place(ref)
        if place is not None:
            place[0][place[1] + (0 if up else 1)] += 1
            return
        ups, downs = self._loose.get(ref, (0, 0))
        self._loose[ref] = (ups + 1, downs) if up else (ups, downs + 1)

    def of(self, ref: RealRef) -> tuple[int, int]:
        place = self._place(ref)
        if place is not None:
            counts, at = place
            return counts[at], counts[at + 1]
        return self._loose.get(ref, (0, 0))

    def items(self) -> Iterator[tuple[RealRef, tuple[int, int]]]:
        """Every real with a transition, and its (up, down) counts."""
        for refs, counts in self._by_service.values():
            if not any(counts):
                continue
            for i, ref in enumerate(refs):
                ups, downs = counts[2 * i], counts[2 * i + 1]
                if ups or downs:
                    yield ref, (ups, downs)
        yield from self._loose.items()

    @property
    def counts(self) -> dict[RealRef, tuple[int, int]]:
        """items() as a dict (tests and tools)."""
        return dict(self.items())

    def keep_only(self, refs: Container[RealRef]) -> None:
        """A reload removed reals: forget those counted outside the plans followed."""
        for ref in [r for r in self._loose if r not in refs]:
            del self._loose[ref]
