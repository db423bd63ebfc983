"""Bytes of an ldirectord.cf → numbered logical lines with their indentation.

Decoding is strict UTF-8, line by line: a line whose directive or value is not valid UTF-8, holds
a NUL byte or is absurdly long becomes a diagnostic for that line, and the rest of the file is
still read, so one run reports every problem. Comments are stripped here, once, for every line
(see strip_comment); a comment in another encoding (GBK notes are common) is only warned about,
since nothing reads it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from lvsmon.config.errors import Diagnostic

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
TAB_WIDTH = 4  # ldirectord turns every tab into four spaces before it looks at indentation
BLANKS = " \t"
_LISTED = 8  # lines named in the warning about comments in another encoding


@dataclass(frozen=True, slots=True)
class OddBlank:
    """A Unicode blank other than space and tab, outside quotes and comments: ldirectord takes
    it for part of a word, Python's str methods for a blank; lvsmon names it."""

    column: int  # 1-based character column in the line as written
    char: str
    offset: int  # where it is in Line.text: -1 in the indentation, >= len(text) after the content

    def __str__(self) -> str:
        name = unicodedata.name(self.char, "").lower()
        shown = f"U+{ord(self.char):04X}" + (f" ({name})" if name else "")
        return f"{shown} where a blank is expected (column {self.column})"


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    indent: int  # columns of leading whitespace, a tab counting four
    text: str  # the content after the indentation, comment and trailing blanks removed
    odd_blanks: tuple[OddBlank, ...] = ()  # each now a space (or gone, at either end)


def _comment_start(text: str) -> int | None:
    # the usual lines first, at C speed: no "#" at all, or no quote that could protect one
    if "#" not in text:
        return None
    if '"' not in text:
        return text.index("#")
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return i
    return None


def strip_comment(text: str) -> str:
    """Cut the line at the first ``#`` that is not inside double quotes.

    ldirectord cuts virtual-block lines at the first ``#`` wherever it is, which silently breaks
    a ``receive`` regex or URL holding one, and never cuts global lines. One rule for both, with
    quoted text protected, keeps every value ldirectord can read and also reads the quoted ones.
    """
    cut = _comment_start(text)
    return text if cut is None else text[:cut]


def _comment_start_bytes(raw: bytes) -> int | None:
    # '#' and '"' are ASCII: in UTF-8 and in the legacy CJK encodings (GBK, Big5, Shift_JIS,
    # whose second bytes are >= 0x40) they never occur inside a multi-byte character.
    quoted = False
    for i, byte in enumerate(raw):
        if byte == 0x22:
            quoted = not quoted
        elif byte == 0x23 and not quoted:
            return i
    return None


def _indentation(text: str) -> tuple[int, str]:
    cols = 0
    for i, ch in enumerate(text):
        if ch == " ":
            cols += 1
        elif ch == "\t":
            cols += TAB_WIDTH
        else:
            return cols, text[i:]
    return cols, ""


@dataclass(frozen=True, slots=True)
class _Decoded:
    text: str | None = None  # None: unusable line
    error: Diagnostic | None = None
    bad_comment: str | None = None  # where a comment is not UTF-8, for the warning


def _decode(raw: bytes, number: int, path: str) -> _Decoded:
    if len(raw) > MAX_LINE_BYTES:
        return _Decoded(
            error=Diagnostic(path, number, f"line is longer than {MAX_LINE_BYTES} bytes")
        )
    if b"\0" in raw:
        col = raw.index(b"\0") + 1
        return _Decoded(error=Diagnostic(path, number, f"line contains a NUL byte (column {col})"))
    try:
        return _Decoded(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
        cut = _comment_start_bytes(raw)
        if cut is not None and exc.start > cut:
            return _Decoded(raw[:cut].decode("utf-8"), bad_comment=where)
        msg = f"line is not valid UTF-8 ({where})"
        return _Decoded(error=Diagnostic(path, number, msg))


# a blank (str.isspace, as the loop below asks) that is neither a space nor a tab
_ODD_BLANK = re.compile(r"[^\S \t]")


def _odd_blanks(text: str) -> tuple[str, list[tuple[int, str]]]:
    """`text` with every Unicode blank but space and tab outside quotes made a space, and where
    they were (index, char)."""
    found: list[tuple[int, str]] = []
    if _ODD_BLANK.search(text) is None:  # the usual line: none anywhere, quoted or not
        return text, found
    chars = list(text)
    quoted = False
    for i, ch in enumerate(chars):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch.isspace() and ch not in BLANKS:
            found.append((i, ch))
            chars[i] = " "
    return ("".join(chars), found) if found else (text, found)


def _line(number: int, text: str) -> Line | None:
    content = strip_comment(text)
    if not content.strip():  # Unicode-blank: a comment line however it is indented
        return None
    content, odd = _odd_blanks(content)
    indent, rest = _indentation(content)
    start = len(content) - len(rest)
    rest = rest.rstrip(BLANKS)
    blanks = tuple(OddBlank(i + 1, ch, max(i - start, -1)) for i, ch in odd)
    return Line(number, indent, rest, blanks)


def _comment_warning(path: str, bad: list[tuple[int, str]]) -> Diagnostic:
    first_line, where = bad[0]
    message = f"comment is not valid UTF-8 ({where})"
    if len(bad) > 1:
        more = [str(n) for n, _ in bad[1 : 1 + _LISTED]]
        rest = len(bad) - 1 - len(more)
        message += f", nor are those of lines {', '.join(more)}"
        message += f" and {rest} more" if rest else ""
    return Diagnostic(path, first_line, message + "; comments are ignored")


def split_lines(
    data: bytes | str, path: str, first: int = 1
) -> tuple[list[Line], list[Diagnostic], list[Diagnostic]]:
    """The non-blank, non-comment lines of a file, the diagnostics of unreadable lines, and the
    warnings (comments in another encoding). `first`: the number of the first line (a part of
    a file, lvsmon/config/incremental.py)."""
    errors: list[Diagnostic] = []
    if isinstance(data, str):
        # Text that did not come from a file can still hold lone surrogates; treat it as bytes
        # so that both entry points share one decoder and one set of limits.
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_FILE_BYTES:
        return [], [Diagnostic(path, None, f"file is larger than {MAX_FILE_BYTES} bytes")], []
    lines: list[Line] = []
    bad_comments: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), start=first):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        decoded = _decode(raw, number, path)
        if decoded.error is not None:
            errors.append(decoded.error)
            continue
        if decoded.bad_comment is not None:
            bad_comments.append((number, decoded.bad_comment))
        assert decoded.text is not None
        if (line := _line(number, decoded.text)) is not None:
            lines.append(line)
    warnings = [_comment_warning(path, bad_comments)] if bad_comments else []
    return lines, errors, warnings
