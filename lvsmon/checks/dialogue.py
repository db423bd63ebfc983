"""Sans-IO dialogues: a check's conversation as bytes in, next bytes or a verdict out.

A line protocol check (http, pop, imap, nntp, sip, simpletcp) is a small object that never
touches a socket. Its driver connects, sends `opening()`, feeds every chunk the server sends to
`feed()`, and sends what `feed()` returns, until `feed()` or `feed_eof()` gives a
`CheckResult`. Three drivers run the same dialogue:

* `prober.Prober`: plain TCP on one private epoll, no task per check (cheap at 10,000 reals);
* `stream.converse`: asyncio's transports, for TLS (https, pops, imaps) and host names;
* `datagram.converse_datagram`: UDP (sip), with retransmission of the opening.

A dialogue is single-use and knows nothing of time: the deadline is the driver's (one per check),
and `step` tells what a deadline or a socket error struck ("timeout after 3s during imap login").

A peer's bytes are untrusted (issue 21): every dialogue's work is linear in the bytes it is fed
(no re-slicing of a buffer per line; tests/hostile/test_dialogue_linearity.py), and each driver
feeds it at most `budget` bytes in all, then ends the check down with "<step>: response too large
(over 256 KiB)" (`too_large`), whatever the dialogue would still read.
"""

from __future__ import annotations

from typing import Final

from lvsmon.checks.base import CheckResult
from lvsmon.checks.budget import PEER_BYTES, too_large
from lvsmon.text import clean

Outcome = bytes | CheckResult | None
"""What `Dialogue.feed` returns: bytes to send (then read on; b"" sends nothing), the verdict,
or None when it needs more bytes."""

MAX_LINE: Final = 8192
"""Longest line a line protocol may send before the check calls it garbage: RFC 3501's and
RFC 5321's limits are lower, and a server streaming bytes without a newline is not healthy."""


class Dialogue:
    """Base of every dialogue. Subclasses set `step` and implement `feed`."""

    step: str = "negotiate"
    """The step now under way, named in a timeout or socket error: "imap login"."""
    shut_wr: bool = False
    """Half-close (SHUT_WR) once the opening is sent: ldirectord's simpletcp does."""
    farewell: bytes = b""
    """Sent, without waiting, after the verdict (QUIT, LOGOUT): servers log a rude hang-up."""
    budget: int = PEER_BYTES
    """The peer's bytes the driver feeds this dialogue at most, in all; past it the check is
    down (`over_budget`). A dialogue that keeps more on purpose (http's 1 MiB of body) adds it."""

    def opening(self) -> bytes:
        """Bytes to send as soon as the connection is up; b"" to let the server speak first."""
        return b""

    def feed(self, data: bytes) -> Outcome:
        raise NotImplementedError

    def feed_eof(self) -> CheckResult:
        """The server closed its side before a verdict."""
        return CheckResult(False, f"{self.step}: connection closed by the server")

    def over_budget(self) -> CheckResult:
        """The verdict of a driver that stopped feeding at `budget`."""
        return CheckResult(False, too_large(self.step, self.budget))


class LineBuffer:
    """Splits a byte stream into lines (CRLF or LF, ending stripped), bounded by MAX_LINE.

    Linear in what it is fed: a chunk without a newline is appended to the partial line (a
    bytearray, so appending is amortised O(chunk)) and nothing is searched twice; the partial
    line is copied once more when a newline ends it."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def lines(self, data: bytes) -> list[bytes]:
        """The complete lines `data` finishes; raises LineTooLong past MAX_LINE bytes."""
        buf = self._buf
        if b"\n" not in data:
            if len(buf) + len(data) > MAX_LINE:
                raise LineTooLong(f"a line longer than {MAX_LINE} bytes")
            buf += data
            return []
        if buf:
            data = bytes(buf) + data
            buf.clear()
        parts = data.split(b"\n")
        rest = parts.pop()
        if len(rest) > MAX_LINE or any(len(p) > MAX_LINE for p in parts):
            raise LineTooLong(f"a line longer than {MAX_LINE} bytes")
        buf += rest
        return [p[:-1] if p.endswith(b"\r") else p for p in parts]

    @property
    def partial(self) -> bytes:
        """What came after the last newline."""
        return bytes(self._buf)


class LineTooLong(ValueError):
    pass


def shown(line: bytes, limit: int = 120) -> str:
    """A server's line for a reason: printable, short, never raising on bad bytes (the one rule
    for outside text: lvsmon/text.py)."""
    return clean(line.decode("utf-8", "replace").strip(), limit)
