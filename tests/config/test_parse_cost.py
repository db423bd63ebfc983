"""Issue 22: the parser's fast paths give what the slow ones give (hypothesis against the
loops they skip), and a real's destination key is built once, at parse time."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.config import parse_config
from lvsmon.config.lexer import BLANKS, _comment_start, _odd_blanks
from lvsmon.config.resolve import NotAnAddress, literal
from lvsmon.ipvs.model import DestKey, Family

# lines made of what matters to the lexer: quotes, '#', blanks of every kind, and text
_chars = st.sampled_from(['"', "#", " ", "\t", "\u00a0", "\u2003", "\x0b", "\x1c", "a", "="])
lines = st.one_of(st.text(_chars, max_size=30), st.text(max_size=30))


def slow_comment_start(text: str) -> int | None:
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return i
    return None


def slow_odd_blanks(text: str) -> tuple[str, list[tuple[int, str]]]:
    found: list[tuple[int, str]] = []
    chars = list(text)
    quoted = False
    for i, ch in enumerate(chars):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch.isspace() and ch not in BLANKS:
            found.append((i, ch))
            chars[i] = " "
    return ("".join(chars), found) if found else (text, found)


@given(lines)
def test_comment_start_as_the_loop(text: str) -> None:
    assert _comment_start(text) == slow_comment_start(text)


@given(lines)
def test_odd_blanks_as_the_loop(text: str) -> None:
    assert _odd_blanks(text) == slow_odd_blanks(text)


def slow_literal(name: str, family: Family) -> str | type[NotAnAddress] | None:
    """literal() through ipaddress alone (the fast path's reference)."""
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        return "not-ipaddress"
    if addr.version != (6 if family is Family.INET6 else 4):
        return NotAnAddress
    return str(addr)


octets = st.sampled_from(["0", "00", "01", "1", "9", "10", "99", "100", "199", "249", "250",
                          "255", "256", "300", "010", "٣"])  # fmt: skip
quads = st.lists(octets, min_size=3, max_size=5).map(".".join)


@given(quads, st.sampled_from([Family.INET, Family.INET6]), st.booleans())
def test_literal_fast_path_as_ipaddress(quad: str, family: Family, bracket: bool) -> None:
    name = f"[{quad}]" if bracket else quad
    want = slow_literal(name, family)
    try:
        got: str | type[NotAnAddress] | None = literal(name, family)
    except NotAnAddress:
        got = NotAnAddress
    if want == "not-ipaddress":  # not an address: literal's own rules (an error or a name)
        assert got is None or got is NotAnAddress
    else:
        assert got == want


def test_a_reals_destination_key_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config("virtual=10.0.0.1:80\n\treal=10.0.0.5:8080 masq\n", "x.cf")
    (r,) = config.virtuals[0].reals
    built: list[tuple[str, int]] = []
    init = DestKey.__post_init__

    def counting(self: DestKey) -> None:
        built.append((self.address, self.port))
        init(self)

    monkeypatch.setattr(DestKey, "__post_init__", counting)
    for _ in range(10):
        assert r.dest == DestKey("10.0.0.5", 8080)
    assert built == [("10.0.0.5", 8080)] * 10  # the comparisons' own keys, none of r's
    assert "dest=" not in repr(r)
