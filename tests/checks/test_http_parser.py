"""The sans-IO response parser, fed byte-chunk lists: no sockets, no clock."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.checks.http_parser import MAX_CHUNK_FRAMING, HttpProtocolError, ResponseParser

CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"5;name=value\r\nhello\r\n"
    b"1\r\n \r\n"
    b"B\r\nstill alive\r\n"
    b"0\r\n"
    b"X-Trailer: yes\r\n"
    b"\r\n"
)
LENGTH = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"


def parse(chunks: list[bytes], *, eof: bool = False, **kwargs: int | bool) -> ResponseParser:
    parser = ResponseParser(**kwargs)  # type: ignore[arg-type]
    for chunk in chunks:
        parser.feed(chunk)
    if eof:
        parser.feed_eof()
    return parser


def splits(data: bytes) -> list[list[bytes]]:
    """The message whole, byte by byte, and cut in two at every position."""
    out = [[data], [data[i : i + 1] for i in range(len(data))]]
    out += [[data[:i], data[i:]] for i in range(1, len(data))]
    return out


@pytest.mark.parametrize("chunks", splits(CHUNKED))
def test_chunked_body_split_anywhere(chunks: list[bytes]) -> None:
    parser = parse(chunks)
    assert parser.complete
    assert parser.status == 200
    assert parser.body == b"hello still alive"
    assert (b"content-type", b"text/plain") in parser.headers


@pytest.mark.parametrize("chunks", splits(LENGTH))
def test_content_length_split_anywhere(chunks: list[bytes]) -> None:
    parser = parse(chunks)
    assert parser.complete
    assert (parser.status, parser.reason_phrase, parser.body) == (
        503,
        "Service Unavailable",
        b"down",
    )


@given(st.lists(st.integers(min_value=0, max_value=len(CHUNKED)), max_size=8))
def test_chunked_body_any_cuts(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(CHUNKED)]
    parser = parse([CHUNKED[a:b] for a, b in itertools.pairwise(points)])
    assert parser.complete and parser.body == b"hello still alive"


def test_completion_is_reported_by_feed() -> None:
    parser = ResponseParser()
    assert parser.feed(LENGTH[:-1]) is False
    assert parser.feed(LENGTH[-1:]) is True


def test_body_until_eof() -> None:
    parser = parse([b"HTTP/1.0 200 OK\r\n\r\nsome ", b"body"])
    before_eof = parser.complete
    parser.feed_eof()
    assert not before_eof
    assert parser.complete and parser.body == b"some body"


def test_bare_lf_line_endings() -> None:
    parser = parse([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"])
    assert parser.complete and parser.body == b"ok"


def test_interim_100_continue_is_skipped() -> None:
    parser = parse([b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"])
    assert parser.complete and parser.status == 204 and parser.body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    parser = parse([f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n".encode()])
    assert parser.complete and parser.body == b""


def test_head_response_has_no_body_whatever_the_length() -> None:
    parser = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"], head=True)
    assert parser.complete and parser.status == 200


def test_body_limit_ends_the_parse_with_the_prefix() -> None:
    parser = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"x" * 30], body_limit=10)
    assert parser.complete and parser.truncated and parser.body == b"x" * 10


def test_bytes_after_the_response_are_ignored() -> None:
    parser = parse([LENGTH + b"garbage"])
    assert parser.complete and parser.body == b"down"
    assert parser.feed(b"more") is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "conflicting Content-Length",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "bad chunk size"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            "not followed by CRLF",
        ),
    ],
)
def test_malformed_responses(data: bytes, message: str) -> None:
    with pytest.raises(HttpProtocolError, match=message):
        parse([data])


def test_headers_too_large() -> None:
    with pytest.raises(HttpProtocolError, match="exceed"):
        parse([b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"a" * 200], head_limit=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "without a response"),
        (b"HTTP/1.1 200 OK\r\nContent-", "in the response headers"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the end of the body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "before the end"),
    ],
)
def test_early_eof(data: bytes, message: str) -> None:
    parser = parse([data])
    with pytest.raises(HttpProtocolError, match=message):
        parser.feed_eof()


def test_parser_refuses_use_after_error() -> None:
    parser = ResponseParser()
    with pytest.raises(HttpProtocolError):
        parser.feed(b"garbage\r\n\r\n")
    with pytest.raises(HttpProtocolError, match="after an error"):
        parser.feed(b"HTTP/1.1 200 OK\r\n\r\n")


# -- bounded work on untrusted bytes ---------------------------------------------------------

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _CountingBuffer(bytearray):
    """A parser buffer that adds up how many bytes each search looked at."""

    scanned = 0

    def find(self, sub: bytes, start: int = 0, end: int | None = None, /) -> int:  # type: ignore[override]
        stop = len(self) if end is None else min(end, len(self))
        found = super().find(sub, start, stop)
        self.scanned += (found + len(sub) if found >= 0 else stop) - start
        return found


def counting(parser: ResponseParser) -> _CountingBuffer:
    buf = _CountingBuffer()
    parser._buf = buf  # the one place where bytes are searched
    return buf


def test_interim_heads_up_to_the_limit_are_skipped() -> None:
    parser = parse([CONTINUE * 8 + OK_EMPTY])
    assert parser.complete and parser.status == 200


def test_more_interim_heads_than_the_limit_is_an_error() -> None:
    with pytest.raises(HttpProtocolError, match=r"^more than 8 interim 1xx responses$"):
        parse([CONTINUE * 9 + OK_EMPTY])


def test_a_megabyte_of_100_heads_in_small_chunks_stops_at_the_limit() -> None:
    flood = CONTINUE * ((1 << 20) // len(CONTINUE))
    parser = ResponseParser()
    fed = 0
    with pytest.raises(HttpProtocolError, match="more than 8 interim"):
        for i in range(0, len(flood), 7):
            parser.feed(flood[i : i + 7])
            fed += 7
    # the ninth head ends the parse: the rest of the megabyte is never looked at
    assert fed < 9 * len(CONTINUE) + 7


def test_a_megabyte_of_100_heads_in_one_feed_is_searched_only_up_to_the_limit() -> None:
    parser = ResponseParser()
    buf = counting(parser)
    with pytest.raises(HttpProtocolError, match="more than 8 interim"):
        parser.feed(CONTINUE * ((1 << 20) // len(CONTINUE)))
    # before the fix each head searched the whole megabyte for a bare-LF terminator
    assert buf.scanned <= 2 * 9 * len(CONTINUE)


@pytest.mark.parametrize("heads", [1_000, 10_000])
def test_head_search_work_is_linear_in_the_input(heads: int) -> None:
    data = CONTINUE * heads + OK_EMPTY
    parser = ResponseParser(max_interim=heads)
    buf = counting(parser)
    assert parser.feed(data) and parser.status == 200
    assert buf.scanned <= 2 * len(data)


@pytest.mark.parametrize("heads", [100, 1_000])
def test_head_search_work_is_linear_fed_byte_by_byte(heads: int) -> None:
    data = CONTINUE * heads + OK_EMPTY
    parser = ResponseParser(max_interim=heads)
    buf = counting(parser)
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
    assert parser.complete
    # each byte is looked at a few times (two terminators, two bytes of overlap), not per head
    assert buf.scanned <= 8 * len(data)


def test_bare_lf_heads_search_no_further_than_the_head_limit() -> None:
    parser = ResponseParser(head_limit=1000)
    buf = counting(parser)
    with pytest.raises(HttpProtocolError, match="more than 8 interim"):
        parser.feed(b"HTTP/1.1 100 Continue\n\n" * 100_000)
    assert buf.scanned <= 9 * 2 * 1003


def test_a_giant_content_length_is_a_protocol_error() -> None:
    with pytest.raises(HttpProtocolError, match="bad Content-Length"):
        parse([b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"])


def test_endless_trailers_are_bounded_by_the_head_limit() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    parser = ResponseParser(head_limit=1000)
    parser.feed(head)
    with pytest.raises(HttpProtocolError, match="trailers exceed 1000 bytes"):
        for _ in range(1000):
            parser.feed(b"X-More: yes\r\n")


def test_a_chunk_size_line_is_searched_only_up_to_its_limit() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    buf = counting(parser)
    with pytest.raises(HttpProtocolError, match="line longer than"):
        parser.feed(b"1" * (1 << 20))
    assert buf.scanned <= 4097


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_endless_one_byte_chunks_end_at_the_framing_bound() -> None:
    """Issue 21: a body of 1-byte chunks costs a parse step per 6 bytes; the framing bound ends it
    as too large long before the body limit (1 MiB of such chunks: 6 MiB fed)."""
    parser = ResponseParser()
    parser.feed(CHUNKED_HEAD)
    fed = 0
    with pytest.raises(HttpProtocolError, match=r"response too large \(chunk framing over 64 KiB"):
        while fed < 8 << 20:
            parser.feed(b"1\r\nx\r\n" * 1024)
            fed += 6 * 1024
    assert fed <= MAX_CHUNK_FRAMING * 6 // 5 + 6 * 1024  # five of every six bytes are framing


def test_a_megabyte_in_256_byte_chunks_is_within_the_framing_bound() -> None:
    chunk = b"100\r\n" + b"x" * 256 + b"\r\n"
    parser = parse([CHUNKED_HEAD, chunk * 4096, b"0\r\n\r\n"])
    assert parser.complete and len(parser.body) == 1 << 20 and not parser.truncated
