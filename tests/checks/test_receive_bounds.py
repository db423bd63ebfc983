"""`receive` regexes: unusable ones are rejected when the spec is built, and a search is bounded.

The elapsed-time limits here are loose on purpose (seconds against a 0.1 s bound): they only tell
a bounded search from one that backtracks for minutes, as `re` did on these patterns.
"""

from __future__ import annotations

import time

import pytest
import regex  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.checks import CheckSpec, CheckSpecError, run_check
from lvsmon.checks.base import (
    MAX_RECEIVE_NESTING,
    MAX_RECEIVE_SIZE,
    RECEIVE_TIMEOUT,
    compile_receive,
    receive_shape,
)
from lvsmon.checks.http_parser import ResponseParser
from lvsmon.checks.http_request import verdict
from tests.checks.conftest import raw_server

TIMED_OUT = f"http: receive regex took longer than {RECEIVE_TIMEOUT:g} s"


def spec(receive: str, port: int = 80) -> CheckSpec:
    return CheckSpec(
        kind="negotiate", service="http", host="127.0.0.1", port=port, timeout=5, receive=receive
    )


def response(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def parsed(body: bytes) -> ResponseParser:
    parser = ResponseParser()
    assert parser.feed(response(body))
    return parser


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(" * 2000 + "a" + ")" * 2000, "groups nested 2000 deep"),
        ("(?:(?:a{1000}){1000}){1000}", "its counted repeats make it"),
        ("x{" + "9" * 5000 + "}", "its counted repeats make it"),
        ("(unclosed", "missing \\)"),
        ("a{2}{3}", "multiple repeat"),
    ],
)
def test_unusable_patterns_are_spec_errors(pattern: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(CheckSpecError, match=f"^receive regex .* is not usable: .*{message}"):
        spec(pattern)
    assert time.monotonic() - started < 2


def test_limits_leave_room_for_real_patterns() -> None:
    for pattern in ("(" * MAX_RECEIVE_NESTING + "ok" + ")" * MAX_RECEIVE_NESTING, "[0-9a-f]{64}"):
        assert compile_receive(pattern) is not None
    assert compile_receive(f"x{{{MAX_RECEIVE_SIZE - 1}}}") is not None


@pytest.mark.parametrize(
    ("pattern", "deepest", "size"),
    [
        ("ok", 0, 2),
        ("a{3}", 0, 3),
        ("(?:ab){10}", 1, 40),  # "?:ab" counted as four items, on the safe side
        ("[(]{5}", 0, 5),  # a parenthesis in a class opens no group
        (r"\({5}", 0, 5),
        ("[]({]x", 0, 2),  # ']' first in a class is a member
        ("x{,7}", 0, 7),
    ],
)
def test_shape_scan(pattern: str, deepest: int, size: int) -> None:
    assert receive_shape(pattern.encode()) == (deepest, size)


def test_catastrophic_nested_plus_fails_instead_of_hanging() -> None:
    started = time.monotonic()
    result = verdict(spec("(a+)+$"), parsed(b"a" * 30 + b"b"))
    assert not result.ok
    assert result.reason in ("http: body does not match receive", TIMED_OUT)
    assert time.monotonic() - started < 2


def test_a_search_past_the_bound_is_a_failed_check() -> None:
    started = time.monotonic()
    result = verdict(spec("(a|aa)+$"), parsed(b"a" * 40 + b"b"))
    assert (result.ok, result.reason) == (False, TIMED_OUT)
    assert time.monotonic() - started < 2


def test_a_fast_pattern_still_matches_a_megabyte() -> None:
    body = b"x" * ((1 << 20) - 5) + b"alive"
    assert verdict(spec("alive$"), parsed(body)).ok


async def test_bounded_search_through_run_check() -> None:
    async with raw_server(response(b"a" * 40 + b"b")) as peer:
        result = await run_check(spec("(a|aa)+$", peer.port))
    assert (result.ok, result.reason) == (False, TIMED_OUT)


@given(
    # no lone surrogates: a config file read as UTF-8 (surrogateescape) yields only those of
    # undecodable bytes, and '\ud800' has no bytes to encode back to
    text=st.text(
        alphabet=st.characters(blacklist_characters=".^$*+?{}[]\\|()", blacklist_categories=["Cs"]),
        min_size=1,
    ),
    before=st.binary(max_size=20),
    after=st.binary(max_size=20),
    inside=st.booleans(),
)
def test_a_literal_receive_answers_as_the_regex_would(
    text: str, before: bytes, after: bytes, inside: bool
) -> None:
    raw = text.encode("utf-8", "surrogateescape")
    body = before + (raw if inside else b"") + after
    fast = compile_receive(text)
    assert fast is not None and type(fast).__name__ == "_Literal"
    assert (fast.search(body) is not None) == (regex.compile(raw).search(body) is not None)
