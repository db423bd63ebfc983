"""Every sans-IO dialogue is linear in the bytes it is fed (issue 21, class 1 and case 6).

A real server's bytes are fed to the dialogue on the event loop, so a parser that does more than
a constant amount of work per byte lets one hostile real stall every check: the IMAP dialogue
re-sliced its buffer per line, and 256 KiB of 3-byte lines cost 189 ms in one feed.

For each dialogue, its worst lines (many short lines, one endless line, many continuation lines,
whatever keeps it reading) are fed as pieces from 1 byte to the whole input at once, 64 KiB and
then 1 MiB of them (16 KiB and 256 KiB for 1-byte pieces, a million calls being slow in any
parser). The cost per KiB fed must stay within CEILING of the small run's: a quadratic parser
spends 16 times as much per KiB on 16 times the bytes. Then the verdict (the dialogue's own, or
its answer to the server closing) is down, with a reason of bounded length.

Byte budgets per check are the drivers' (tests/hostile/test_driver_bounds.py): here the pure
parsing cost is measured, so the dialogues are fed past any budget.
"""

from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import dns.message
import pytest

from lvsmon.checks._skeleton import SkeletonDialogue
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import MAX_LINE, Dialogue, LineBuffer, LineTooLong, Outcome
from lvsmon.checks.dns import DnsDialogue, lookup
from lvsmon.checks.http import HttpDialogue
from lvsmon.checks.http_request import build_target
from lvsmon.checks.imap import ImapDialogue
from lvsmon.checks.nntp import NntpDialogue
from lvsmon.checks.pop import PopDialogue
from lvsmon.checks.radius import RadiusDialogue
from lvsmon.checks.simpletcp import SimpleTcpDialogue
from lvsmon.checks.sip import SipDialogue

# It times CPU work by the wall clock: under pytest-xdist a neighbour worker's burst reads as a
# non-linear parser, so scripts/test-all runs `serial` tests alone, after the parallel run.
pytestmark = pytest.mark.serial

CEILING = 3.0
"""How much more a KiB may cost in the 16-times-bigger run (a quadratic parser: about 16)."""
SMALL, BIG = 64 * 1024, 1024 * 1024
SMALL_1, BIG_1 = 16 * 1024, 256 * 1024  # for 1-byte pieces
WHOLE = 0  # piece size: the whole input in one feed
STREAM_PIECES = (1, 61, 4096, 65536, WHOLE)
DATAGRAM_PIECES = (512, 4096, 65507)
MAX_REASON = 300
GUARD_S = 60  # one run longer than this is a failure, not a wait


class LineSink(Dialogue):
    """LineBuffer alone: takes every line, never decides (down at a line too long)."""

    step = "lines"

    def __init__(self) -> None:
        self.lines = LineBuffer()
        self.count = 0

    def feed(self, data: bytes) -> Outcome:
        try:
            self.count += len(self.lines.lines(data))
        except LineTooLong as exc:
            return CheckResult(False, f"lines: {exc}")
        return None


def http_dialogue() -> HttpDialogue:
    spec = CheckSpec(kind="negotiate", service="http", host="127.0.0.1", port=80, timeout=5)
    return HttpDialogue(spec, build_target(spec).request)


def radius_dialogue() -> RadiusDialogue:
    spec = CheckSpec(
        kind="negotiate",
        service="radius",
        host="127.0.0.1",
        port=1812,
        timeout=5,
        login="u",
        passwd="p",
        secret="s",
        protocol="udp",
    )
    return RadiusDialogue(spec)


def stray_dns_answer() -> bytes:
    """A well-formed DNS answer to a query we did not ask (another id): ignored over UDP."""
    query = dns.message.make_query("other.test", "A")
    query.id = 1
    return dns.message.make_response(query).to_wire()


def radius_datagram(size: int) -> bytes:
    """An Access-Reject `size` bytes long, all Reply-Message attributes, signed with nothing
    we know: it parses in full and then fails verification."""
    attrs = b""
    while len(attrs) + 20 < size:
        n = min(255, size - 20 - len(attrs))
        if n < 3:
            break
        attrs += bytes([18, n]) + b"x" * (n - 2)
    length = 20 + len(attrs)
    return bytes([3, 0]) + length.to_bytes(2, "big") + b"\0" * 16 + attrs


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Dialogue]
    prelude: bytes  # fed first, at once: it must not end the dialogue
    unit: bytes  # the worst input is this, repeated
    datagram: bool = False  # each piece is one datagram: unit builds them (see datagrams)


CASES = [
    Case("linebuffer-short", LineSink, b"", b"a\r\n"),
    Case("linebuffer-long", LineSink, b"", b"x" * (MAX_LINE - 1) + b"\n"),
    Case("linebuffer-endless", LineSink, b"", b"x"),
    Case("imap-greeting-short", lambda: ImapDialogue("imap"), b"", b"*\r\n"),
    Case("imap-login-short", lambda: ImapDialogue("imap", b"u", b"p"), b"* OK hi\r\n", b"*\r\n"),
    Case("imap-login-endless", lambda: ImapDialogue("imap", b"u", b"p"), b"* OK hi\r\n", b"x"),
    Case(
        "imap-login-literals",
        lambda: ImapDialogue("imap", b"u", b"p"),
        b"* OK hi\r\n",
        b"* 1 FETCH {1}\r\nx)\r\n",
    ),
    Case("imap-login-continue", lambda: ImapDialogue("imap", b"u", b"p"), b"* OK hi\r\n", b"+\r\n"),
    Case("pop-login-short", lambda: PopDialogue("pop", b"u", b"p"), b"+OK hi\r\n", b"+\r\n"),
    Case("pop-endless", lambda: PopDialogue("pop"), b"", b"x"),
    Case("nntp-short", NntpDialogue, b"", b"*\r\n"),
    Case("nntp-endless", NntpDialogue, b"", b"2"),
    Case("skeleton-short", lambda: SkeletonDialogue(b"PING", b"+OK"), b"", b"*\r\n"),
    Case("skeleton-endless", lambda: SkeletonDialogue(b"PING", b"+OK"), b"", b"x"),
    Case(
        "sip-provisional-headers",
        lambda: SipDialogue(b"", datagram=False),
        b"SIP/2.0 100 Trying\r\n",
        b"X: y\r\n",
    ),
    Case("sip-empty-lines", lambda: SipDialogue(b"", datagram=False), b"", b"\r\n"),
    Case("sip-endless", lambda: SipDialogue(b"", datagram=False), b"", b"S"),
    Case(
        "sip-udp-provisional",
        lambda: SipDialogue(b"", datagram=True),
        b"",
        b"SIP/2.0 100 Trying\r\n",
        datagram=True,
    ),
    Case("simpletcp-short", lambda: SimpleTcpDialogue(b"", "^NEVER"), b"", b"a\n"),
    Case("simpletcp-endless", lambda: SimpleTcpDialogue(b"", "^NEVER"), b"", b"x"),
    Case(
        "simpletcp-udp-short",
        lambda: SimpleTcpDialogue(b"", "^NEVER", datagram=True),
        b"",
        b"a\n",
        datagram=True,
    ),
    Case(
        "http-chunks",
        http_dialogue,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n",
    ),
    Case(
        "http-chunk-extension",
        http_dialogue,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"1;" + b"e" * 4000 + b"\r\nx\r\n",
    ),
    Case(
        "http-endless-chunk-line",
        http_dialogue,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;",
        b"e",
    ),
    Case("http-header-lines", http_dialogue, b"HTTP/1.1 200 OK\r\n", b"a: b\r\n"),
    Case(
        "http-trailers",
        http_dialogue,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        b"a: b\r\n",
    ),
    Case("http-interim", http_dialogue, b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
    Case("http-head-endless", http_dialogue, b"HTTP/1.1 200 OK\r\nX: ", b"x"),
    Case(
        "dns-tcp-long-message",
        lambda: DnsDialogue(lookup("a.test"), "", tcp=True),
        b"\xff\xff",
        b"\0",
    ),
    Case(
        "dns-udp-stray",
        lambda: DnsDialogue(lookup("a.test"), "", tcp=False),
        b"",
        b"dns",
        datagram=True,
    ),
    Case("radius-unverified", radius_dialogue, b"", b"radius", datagram=True),
]


def datagrams(case: Case, size: int, total: int) -> list[bytes]:
    """`total` bytes' worth of the case's datagrams, each about `size` bytes."""
    if case.unit == b"dns":
        one = stray_dns_answer()  # it cannot be padded: one size only
    elif case.unit == b"radius":
        one = radius_datagram(min(size, 4096))  # RFC 2865's largest packet
    else:
        one = (case.unit * (size // len(case.unit) + 1))[:size]
    return [one] * max(1, total // len(one))


def pieces(case: Case, piece: int, total: int) -> list[bytes]:
    if case.datagram:
        return datagrams(case, piece, total)
    data = (case.unit * (total // len(case.unit) + 1))[:total]
    if piece == WHOLE:
        return [data]
    return [data[i : i + piece] for i in range(0, total, piece)]


class TookTooLong(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TookTooLong(f"one run took over {GUARD_S} s")


def run(case: Case, feed: list[bytes]) -> tuple[float, int, CheckResult]:
    """Seconds spent feeding `feed` (after the prelude), bytes taken, and the verdict."""
    dialogue = case.make()
    dialogue.opening()
    if case.prelude:
        assert not isinstance(dialogue.feed(case.prelude), CheckResult)
    taken = 0
    outcome: Outcome = None
    gc.disable()
    started = time.perf_counter()
    try:
        for piece in feed:
            taken += len(piece)
            outcome = dialogue.feed(piece)
            if isinstance(outcome, CheckResult):
                break
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    result = outcome if isinstance(outcome, CheckResult) else dialogue.feed_eof()
    return elapsed, taken, result


def best(case: Case, feed: list[bytes], repeat: int) -> tuple[float, int, CheckResult]:
    runs = [run(case, feed) for _ in range(repeat)]
    return min(runs, key=lambda r: r[0])


@pytest.fixture(autouse=True)
def guard() -> Iterator[None]:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, GUARD_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


PARAMS = [
    pytest.param(case, piece, id=f"{case.name}-{piece or 'whole'}")
    for case in CASES
    for piece in (DATAGRAM_PIECES if case.datagram else STREAM_PIECES)
]


@pytest.mark.parametrize(("case", "piece"), PARAMS)
def test_cost_per_kib_is_bounded_and_the_verdict_down(case: Case, piece: int) -> None:
    small, big = (SMALL_1, BIG_1) if piece == 1 else (SMALL, BIG)
    small_feed, big_feed = pieces(case, piece, small), pieces(case, piece, big)
    t_small, n_small, _ = best(case, small_feed, 5)
    per_small = t_small / max(n_small, 1)
    for attempt in range(3):  # a busy machine can slow one run: a quadratic parser stays slow
        t_big, n_big, result = best(case, big_feed, 1 if attempt == 0 else 2)
        per_big = t_big / max(n_big, 1)
        # below a few milliseconds in all, the timer says nothing about the shape of the cost
        if per_big <= CEILING * per_small or t_big < 0.005:
            break
    else:
        pytest.fail(
            f"{case.name}: {per_big * 1e9 * 1024:.0f} ns/KiB over {n_big} bytes against "
            f"{per_small * 1e9 * 1024:.0f} ns/KiB over {n_small} bytes"
        )
    assert not result.ok, result
    assert 0 < len(result.reason) <= MAX_REASON, result.reason
