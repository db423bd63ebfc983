"""Bytes to lines: comments in another encoding, and blanks that are not spaces or tabs."""

from __future__ import annotations

import pytest

from lvsmon.config import ConfigError, parse_config
from lvsmon.config.lexer import split_lines

VIRTUAL = b"virtual=192.168.6.240:80\n\treal=192.168.6.2:80 gate\n"
NBSP = "\u00a0".encode()


def _errors(data: bytes) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.cf")
    return [str(d) for d in info.value.diagnostics]


@pytest.mark.parametrize(
    ("encoding", "note"),
    [
        ("gbk", "检查超时"),
        ("big5", "檢查逾時"),
        ("shift_jis", "タイムアウト"),
        ("latin-1", "délai"),
    ],
)
def test_comment_in_another_encoding_is_a_warning(encoding: str, note: str) -> None:
    data = b"# " + note.encode(encoding) + b"\nchecktimeout=20  # " + note.encode(encoding)
    config = parse_config(data + b"\n" + VIRTUAL, "x.cf")
    assert config.virtuals[0].checktimeout == 20
    (w,) = config.warnings
    assert w.line == 1
    assert w.message.startswith("comment is not valid UTF-8 (byte 0x")
    assert w.message.endswith(", nor are those of lines 2; comments are ignored")


def test_many_such_comments_make_one_warning() -> None:
    data = b"".join(b"# \xb5\xc8\n" for _ in range(20)) + VIRTUAL
    lines, errors, warnings = split_lines(data, "x.cf")
    assert len(lines) == 2
    assert errors == []
    assert [str(w) for w in warnings] == [
        "x.cf:1: comment is not valid UTF-8 (byte 0xb5 at column 3), nor are those of lines "
        "2, 3, 4, 5, 6, 7, 8, 9 and 11 more; comments are ignored"
    ]


@pytest.mark.parametrize(
    ("line", "column"),
    [
        (b'\treceive="caf\xe9"', 14),  # in a value
        (b'\treceive="#\xb5"', 12),  # a "#" inside quotes starts no comment
        (b"\tservice=ht\xb5p # \xb5", 12),  # in the value, though the comment is bad too
    ],
)
def test_undecodable_value_stays_an_error(line: bytes, column: int) -> None:
    assert _errors(VIRTUAL + line + b"\n") == [
        f"x.cf:3: line is not valid UTF-8 (byte 0x{line[column - 1]:02x} at column {column})"
    ]


@pytest.mark.parametrize(
    ("line", "column"),
    [
        (NBSP + b"   real=192.168.6.3:80 gate", 1),  # indentation
        (b"\treal=192.168.6.3:80" + NBSP + b"gate", 21),  # between words
        (b"\treal=192.168.6.3:80 gate 1 " + NBSP + b"# weight 1", 29),  # before a comment
        (b"\treal=192.168.6.3:80 gate 1" + NBSP, 28),  # at the end
        (b"\tscheduler" + NBSP + b"=rr", 11),  # around "="
        (b"\tservicename=" + NBSP + b"shop", 14),  # before a free-text value
    ],
)
def test_no_break_space_where_a_blank_is_expected_is_named(line: bytes, column: int) -> None:
    # one error: the line is still read with a blank there, so nothing else trips over it
    assert _errors(VIRTUAL + line + b"\n") == [
        f"x.cf:3: U+00A0 (no-break space) where a blank is expected (column {column}): "
        "replace it with a space or a tab"
    ]


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\u3000", "U+3000 (ideographic space)"),
        ("\u2009", "U+2009 (thin space)"),
        ("\u202f", "U+202F (narrow no-break space)"),
        ("\x0c", "U+000C"),  # form feed has no Unicode name
    ],
)
def test_other_unicode_blanks_are_named(char: str, shown: str) -> None:
    data = VIRTUAL + b"\tscheduler=rr" + char.encode() + b"\n"
    assert _errors(data) == [
        f"x.cf:3: {shown} where a blank is expected (column 14): replace it with a space or a tab"
    ]


def test_no_break_space_is_kept_in_quotes_free_text_and_comments() -> None:
    data = (
        VIRTUAL
        + b'\treceive="still'
        + NBSP
        + b'alive"\n\tcomment=web'
        + NBSP
        + b"shop\n"
        + NBSP * 4
        + b"# a comment indented with no-break spaces"
        + NBSP
        + b"\n\tscheduler=rr # a comment"
        + NBSP
        + b"\n"
    )
    config = parse_config(data, "x.cf")
    (v,) = config.virtuals
    assert v.receive == "still\u00a0alive"
    assert v.comment == "web shop"  # outside quotes it is read as the blank it looks like
    assert config.warnings == ()


def test_typographic_quotes_are_named() -> None:
    data = VIRTUAL + '\treceive=\u201cTest Ldirectord"\n'.encode()
    assert _errors(data) == [
        'x.cf:3: receive needs a double-quoted value, e.g. receive="..." '
        '(U+201C left double quotation mark is not a plain ")'
    ]
