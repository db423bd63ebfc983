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
"""

from __future__ import annotations

from typing import Final

from lvsmon.checks.base import CheckResult

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

    def opening(self) -> bytes:
        """Bytes to send as soon as the connection is up; b"" to let the server speak first."""
        return b""

    def feed(self, data: bytes) -> Outcome:
        raise NotImplementedError

    def feed_eof(self) -> CheckResult:
        """The server closed its side before a verdict."""
        return CheckResult(False, f"{self.step}: connection closed by the server")


class LineBuffer:
    """Splits a byte stream into lines (CRLF or LF, ending stripped), bounded by MAX_LINE."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def lines(self, data: bytes) -> list[bytes]:
        """The complete lines `data` finishes; raises LineTooLong past MAX_LINE bytes."""
        buf = self._buf + data
        parts = buf.split(b"\n")
        self._buf = parts.pop()
        if len(self._buf) > MAX_LINE or any(len(p) > MAX_LINE for p in parts):
            raise LineTooLong(f"a line longer than {MAX_LINE} bytes")
        return [p[:-1] if p.endswith(b"\r") else p for p in parts]

    @property
    def partial(self) -> bytes:
        """What came after the last newline."""
        return self._buf


class LineTooLong(ValueError):
    pass


def shown(line: bytes, limit: int = 120) -> str:
    """A server's line for a reason: printable, short, never raising on bad bytes."""
    text = line.decode("utf-8", "replace").strip()
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."
