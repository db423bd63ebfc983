"""The agent check's reply parser, state and verdict (checks/agent.py): pure, HAProxy's words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.checks.agent import (
    LINE_BOUND,
    NEUTRAL,
    AgentDialogue,
    AgentReply,
    AgentState,
    Verdict,
    describe,
    fold,
    parse_reply,
    share,
    unescape_send,
    verdict,
)
from lvsmon.checks.base import CheckResult


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("75%", AgentReply(percent=75)),
        ("  75%  ", AgentReply(percent=75)),
        ("drain", AgentReply(admin="drain")),
        ("DRAIN", AgentReply(admin="drain")),
        ("maint", AgentReply(admin="maint")),
        ("ready", AgentReply(admin="ready")),
        ("up", AgentReply(oper="up")),
        ("down", AgentReply(oper="down")),
        ("fail", AgentReply(oper="fail")),
        ("stopped", AgentReply(oper="stopped")),
        ("down #disk full", AgentReply(oper="down", description="disk full")),
        ("down#disk full", AgentReply(oper="down", description="disk full")),
        ("up 50%,ready", AgentReply(50, "ready", "up")),
        ("ready\t60%\tmaxconn:30", AgentReply(60, "ready")),
        ("drain,ready", AgentReply(admin="ready")),  # the later word of a kind wins
        ("10% 20%", AgentReply(percent=20)),
        ("500%", AgentReply(percent=500)),
        ("0%", AgentReply(percent=0)),
        ("75.5%", AgentReply()),  # not an integer percentage: ignored
        ("-5%", AgentReply()),
        ("%", AgentReply()),
        ("hello world", AgentReply()),
        ("", AgentReply()),
        ("# 50% drain", AgentReply(description="50% drain")),  # after '#': words do not count
        ("maxconn:10", AgentReply()),
        ("down # \x1b[2Jevil\r", AgentReply(oper="down", description="?[2Jevil")),
    ],
)
def test_parse_reply(line: str, reply: AgentReply) -> None:
    assert parse_reply(line) == reply


def test_empty_means_no_known_word() -> None:
    assert parse_reply("garbage words").empty
    assert parse_reply("").empty
    assert not parse_reply("up").empty


@pytest.mark.parametrize(
    ("weight", "percent", "expected"),
    [
        (10, 75, 8),  # 7.5 rounds half up
        (10, 74, 7),
        (10, 30, 3),
        (10, 100, 10),
        (10, 0, 0),
        (10, 1, 1),  # a positive share that rounds to 0 gives 1
        (1, 49, 1),
        (100, 33, 33),
        (0, 50, 0),
        (3, 50, 2),
    ],
)
def test_share(weight: int, percent: int, expected: int) -> None:
    assert share(weight, percent) == expected


@given(st.integers(0, 65535), st.integers(0, 100))
def test_share_bounds(weight: int, percent: int) -> None:
    got = share(weight, percent)
    assert 0 <= got <= weight
    assert (got == 0) == (weight == 0 or percent == 0)
    assert abs(got - weight * percent / 100) <= 1


def _after(*lines: str) -> AgentState:
    state = NEUTRAL
    for line in lines:
        state = fold(state, parse_reply(line))
    return state


def test_transitions() -> None:
    assert verdict(_after("75%"), 10) == Verdict(8)
    assert verdict(_after("100%"), 10) == Verdict(None)
    assert verdict(_after("500%"), 10) == Verdict(None)  # never above the configured weight
    assert verdict(_after("0%"), 10) == Verdict(0)
    assert verdict(_after("drain"), 10) == Verdict(0)
    assert verdict(_after("50%", "drain", "80%"), 10) == Verdict(0)  # drain holds until ready
    assert verdict(_after("50%", "drain", "ready"), 10) == Verdict(5)  # ready restores the share
    assert verdict(_after("maint"), 10) == Verdict(None, "maint")
    assert verdict(_after("maint", "50%"), 10) == Verdict(None, "maint")
    assert verdict(_after("maint", "ready"), 10) == Verdict(None)
    assert verdict(_after("down"), 10) == Verdict(None, "down")
    assert verdict(_after("down", "50%"), 10) == Verdict(None, "down")  # down holds until up
    assert verdict(_after("down", "up"), 10) == Verdict(None)
    assert verdict(_after("fail"), 10) == Verdict(None, "down")
    assert verdict(_after("stopped", "ready"), 10) == Verdict(None, "down")  # ready is admin
    assert verdict(_after("down", "maint", "up"), 10) == Verdict(None, "maint")
    assert verdict(_after("maint", "down"), 10) == Verdict(None, "down")  # down wins
    assert verdict(_after("drain", "down", "up"), 10) == Verdict(0)


def test_describe() -> None:
    assert describe(_after("30%"), 10) == "weight 3/10"
    assert describe(_after("drain"), 10) == "drain"
    assert describe(_after("maint #upgrade"), 10) == "maint: upgrade"
    assert describe(_after("stopped # by hand"), 10) == "stopped: by hand"
    assert describe(NEUTRAL, 10) == "weight 10/10"


WORDS = st.sampled_from(
    ["up", "down", "fail", "stopped", "drain", "maint", "ready", "0%", "1%", "50%", "100%",
     "250%", "maxconn:5", "junk", "#", "# note", ",", "\t"]
)  # fmt: skip


@given(st.lists(st.lists(WORDS, max_size=6).map(" ".join), max_size=8), st.integers(0, 256))
def test_an_agent_never_raises_a_weight(lines: list[str], weight: int) -> None:
    """Whatever it says, in any order: a cap below the weight or none, never above."""
    state = _after(*lines)
    v = verdict(state, weight)
    assert v.cap is None or 0 <= v.cap < weight or (v.cap == 0 and weight == 0)
    assert (v.out is None) or v.cap is None


@given(st.text(max_size=300))
def test_parse_never_raises_and_keeps_clean_text(line: str) -> None:
    reply = parse_reply(line)
    assert reply.description.isprintable()
    assert reply.percent is None or reply.percent >= 0


def test_unescape_send() -> None:
    assert unescape_send("") == b""
    assert unescape_send("load\\n") == b"load\n"
    assert unescape_send("a\\r\\n\\tb\\\\c\\x41\\q") == b"a\r\n\tb\\cA\\q"
    assert unescape_send("\\x4") == b"\\x4"
    assert unescape_send("é") == "é".encode()


def _dialogue(*chunks: bytes, eof: bool = False) -> object:
    d = AgentDialogue(b"")
    for chunk in chunks:
        out = d.feed(chunk)
        if out is not None:
            return out
    return d.feed_eof() if eof else None


def test_dialogue_reads_one_line() -> None:
    assert _dialogue(b"75%\n") == CheckResult(True, "75%")
    assert _dialogue(b"75", b"%\r\nrest") == CheckResult(True, "75%")
    assert _dialogue(b"drain", eof=True) == CheckResult(True, "drain")
    assert _dialogue(eof=True) == CheckResult(False, "agent: connection closed without a reply")
    assert _dialogue(b"x" * LINE_BOUND + b"\n") == CheckResult(True, "x" * LINE_BOUND)
    too_long = CheckResult(False, f"agent: a line longer than {LINE_BOUND} bytes")
    assert _dialogue(b"x" * (LINE_BOUND + 1) + b"\n") == too_long
    assert _dialogue(*[b"x" * 100] * 5) == too_long
    assert _dialogue(b"x" * (1 << 20)) == too_long
    assert _dialogue(b"\xff\xfe 50%\n") == CheckResult(True, "\ufffd\ufffd 50%")


def test_dialogue_sends_its_request_first() -> None:
    assert AgentDialogue(b"load\n").opening() == b"load\n"
