"""A sans-IO parser for one HTTP/1.x response, as much of HTTP as a health check needs.

No sockets and no clock: the caller feeds bytes as they arrive (`feed`), tells it about EOF
(`feed_eof`), and reads the verdict (`status`, `body`, `complete`). That keeps it testable with
byte-chunk lists and keeps the I/O shell in `http.py` small. The deadline belongs to the caller.

It handles: informational 1xx heads (skipped, at most `max_interim` of them), Content-Length,
chunked (extensions and trailers ignored, at most `MAX_CHUNK_FRAMING` bytes of framing),
read-until-EOF bodies, HEAD/204/304 without body, bare-LF line endings from sloppy servers. It
keeps at most `body_limit` body bytes; a longer body ends the parse early with `truncated` set,
and the check judges the prefix. Anything it cannot make sense of raises `HttpProtocolError`
(the server misbehaved), and the parser must not be fed again.

The bytes come from servers we do not trust, and the parser runs on the event loop, so its work
is linear in what it is fed: a search never looks past the head it is after, nor past
`head_limit`, and a server that keeps sending 1xx heads is an error after `max_interim` of them
instead of a loop that lasts as long as the server wants.
"""

from __future__ import annotations

from typing import Final

DEFAULT_BODY_LIMIT: Final = 1 << 20
DEFAULT_HEAD_LIMIT: Final = 64 * 1024
# real servers send one 100 Continue, maybe a 102/103 or two; more is a server stalling us
MAX_INTERIM_RESPONSES: Final = 8
_MAX_CHUNK_LINE: Final = 4096
# the bytes of chunk size lines and the CRLFs after chunk data, per response: a 1 MiB body in
# 256-byte chunks takes 28 KiB; a server sending 1-byte chunks would cost a parse step per 6 bytes
# for the whole budget (issue 21: a third of a second of the loop per check)
MAX_CHUNK_FRAMING: Final = 64 * 1024

# parser states
_HEAD: Final = 0
_LENGTH: Final = 1
_EOF_BODY: Final = 2
_CHUNK_SIZE: Final = 3
_CHUNK_DATA: Final = 4
_CHUNK_DATA_END: Final = 5
_TRAILER: Final = 6
_DONE: Final = 7
_ERROR: Final = 8


class HttpProtocolError(Exception):
    """The response is not HTTP we can parse; the message says what was wrong."""


def _snippet(data: bytes | bytearray) -> str:
    text = bytes(data[:40]).decode("latin-1")
    return repr(text + ("..." if len(data) > 40 else ""))


class ResponseParser:
    __slots__ = (
        "_body",
        "_body_limit",
        "_buf",
        "_framing",
        "_head",
        "_head_limit",
        "_interim",
        "_max_interim",
        "_remaining",
        "_scan_from",
        "_state",
        "headers",
        "reason_phrase",
        "status",
        "truncated",
    )

    def __init__(
        self,
        *,
        head: bool = False,
        body_limit: int = DEFAULT_BODY_LIMIT,
        head_limit: int = DEFAULT_HEAD_LIMIT,
        max_interim: int = MAX_INTERIM_RESPONSES,
    ) -> None:
        self._head = head  # the request was HEAD: no body whatever the headers say
        self._body_limit = body_limit
        self._head_limit = head_limit
        self._max_interim = max_interim
        self._interim = 0
        self._buf = bytearray()
        self._body = bytearray()
        self._state = _HEAD
        self._remaining = 0
        self._framing = 0
        self._scan_from = 0
        self.status = 0
        self.reason_phrase = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.truncated = False

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    def feed(self, data: bytes) -> bool:
        """Take more bytes from the server; return True once the response is complete."""
        state = self._state
        if state == _DONE:
            return True  # bytes after the response (a sloppy server) are ignored
        if state == _ERROR:
            raise HttpProtocolError("parser used after an error")
        if state == _LENGTH and not self._buf:
            # fast path: plain body bytes, nothing buffered
            self._take_length(data)
            return self._state == _DONE
        self._buf += data
        try:
            self._run()
        except HttpProtocolError:
            self._state = _ERROR
            raise
        return self._state == _DONE

    def feed_eof(self) -> None:
        """The server closed its side: ends a read-to-EOF body; else unfinished is an error."""
        state = self._state
        if state in (_DONE, _ERROR):
            return
        if state == _EOF_BODY:
            self._state = _DONE
            return
        self._state = _ERROR
        if state == _HEAD:
            if not self._buf and not self.status:
                raise HttpProtocolError("connection closed without a response")
            raise HttpProtocolError("connection closed in the response headers")
        raise HttpProtocolError("connection closed before the end of the body")

    # -- internals ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            state = self._state
            if state == _HEAD:
                if not self._parse_head():
                    return
            elif state == _LENGTH:
                data = bytes(self._buf)
                self._buf.clear()
                self._take_length(data)
                return
            elif state == _EOF_BODY:
                data = bytes(self._buf)
                self._buf.clear()
                self._keep(data)
                return
            elif state == _CHUNK_SIZE:
                if not self._chunk_size():
                    return
            elif state == _CHUNK_DATA:
                if not self._buf:
                    return
                n = min(self._remaining, len(self._buf))
                self._keep(bytes(self._buf[:n]))
                del self._buf[:n]
                self._remaining -= n
                if self._state == _DONE:
                    return
                if self._remaining == 0:
                    self._state = _CHUNK_DATA_END
            elif state == _CHUNK_DATA_END:
                buf = self._buf
                if buf[:2] == b"\r\n":
                    del buf[:2]
                    self._framing += 2
                elif buf[:1] == b"\n":
                    del buf[:1]
                    self._framing += 1
                elif buf == b"\r" or not buf:
                    return
                else:
                    raise HttpProtocolError(f"chunk data not followed by CRLF: {_snippet(buf)}")
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                before = len(self._buf)
                line = self._line()
                if line is None:
                    return
                # trailers are headers: the same bound, or a server could send them forever
                self._remaining += before - len(self._buf)
                if self._remaining > self._head_limit:
                    raise HttpProtocolError(f"response trailers exceed {self._head_limit} bytes")
                if not line:
                    self._state = _DONE
                    return
            else:
                return

    def _line(self) -> bytes | None:
        """One CRLF/LF-terminated line from the buffer, without its terminator."""
        buf = self._buf
        # a line fed a byte at a time is searched once: from where the last search stopped
        end = buf.find(b"\n", self._scan_from, _MAX_CHUNK_LINE + 1)
        if end < 0:
            if len(buf) > _MAX_CHUNK_LINE:
                raise HttpProtocolError(f"line longer than {_MAX_CHUNK_LINE} bytes")
            self._scan_from = len(buf)
            return None
        self._scan_from = 0
        line = bytes(buf[:end])
        del buf[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _parse_head(self) -> bool:
        buf = self._buf
        start = self._scan_from
        # Both searches stop where a head would be too long, and the second stops where the
        # first found its end: searching the whole buffer for the other terminator, once per
        # head, made a buffer full of "100 Continue" heads quadratic.
        stop = self._head_limit + 3
        crlf = buf.find(b"\n\r\n", start, stop)
        lf = buf.find(b"\n\n", start, stop if crlf < 0 else crlf + 2)
        if crlf < 0 and lf < 0:
            if len(buf) > self._head_limit:
                raise HttpProtocolError(f"response headers exceed {self._head_limit} bytes")
            self._scan_from = max(0, len(buf) - 2)
            return False
        end, skip = (crlf, 3) if lf < 0 else (lf, 2)
        if end + skip > self._head_limit:
            raise HttpProtocolError(f"response headers exceed {self._head_limit} bytes")
        head = bytes(buf[:end])
        # deleting from the front of a bytearray only moves its start (CPython), so consuming
        # head after head stays linear
        del buf[: end + skip]
        self._scan_from = 0
        lines = head.split(b"\n")
        self._status_line(lines[0].rstrip(b"\r"))
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        for raw in lines[1:]:
            name, sep, value = raw.rstrip(b"\r").partition(b":")
            if not sep or not name or name != name.strip():
                raise HttpProtocolError(f"malformed header line {_snippet(raw)}")
            name = name.lower()
            value = value.strip()
            headers.append((name, value))
            if name == b"content-length":
                # past 18 digits int() costs time, and past 4300 it raises ValueError
                if not value.isdigit() or len(value) > 18:
                    raise HttpProtocolError(f"bad Content-Length {_snippet(value)}")
                n = int(value)
                if length is not None and n != length:
                    raise HttpProtocolError("conflicting Content-Length headers")
                length = n
            elif name == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
        self.headers = headers
        status = self.status
        if 100 <= status < 200 and status != 101:
            self._interim += 1
            if self._interim > self._max_interim:
                raise HttpProtocolError(f"more than {self._max_interim} interim 1xx responses")
            self.headers = []
            return True  # an interim response; the real one follows
        if self._head or status in (101, 204, 304):
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH if length else _DONE
        else:
            self._state = _EOF_BODY
        return self._state != _DONE

    def _status_line(self, line: bytes) -> None:
        parts = line.split(None, 2)
        if (
            len(parts) < 2
            or not parts[0].startswith(b"HTTP/1.")
            or len(parts[1]) != 3
            or not parts[1].isdigit()
        ):
            raise HttpProtocolError(f"malformed status line {_snippet(line)}")
        self.status = int(parts[1])
        self.reason_phrase = parts[2].decode("latin-1") if len(parts) > 2 else ""

    def _chunk_size(self) -> bool:
        before = len(self._buf)
        line = self._line()
        if line is None:
            return False
        self._framing += before - len(self._buf)
        if self._framing > MAX_CHUNK_FRAMING:
            raise HttpProtocolError(
                f"response too large (chunk framing over {MAX_CHUNK_FRAMING // 1024} KiB)"
            )
        text = line.split(b";", 1)[0].strip()
        try:
            size = int(text, 16)
        except ValueError:
            size = -1
        if size < 0 or not text or text[:1] in (b"+", b"-") or b"_" in text:
            raise HttpProtocolError(f"bad chunk size line {_snippet(line)}")
        if size == 0:
            self._state = _TRAILER
            self._remaining = 0  # from here on: trailer bytes seen
        else:
            self._remaining = size
            self._state = _CHUNK_DATA
        return True

    def _take_length(self, data: bytes) -> None:
        remaining = self._remaining
        if len(data) >= remaining:
            # any bytes past Content-Length are ignored; Connection: close means nothing follows
            self._keep(data[:remaining] if len(data) > remaining else data)
            self._remaining = 0
            self._state = _DONE
        else:
            self._remaining = remaining - len(data)
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        room = self._body_limit - len(self._body)
        if len(data) > room:
            self._body += data[:room]
            self.truncated = True
            self._state = _DONE
        else:
            self._body += data
