"""Bytes of an ldirectord.cf → numbered logical lines with their indentation.

Decoding is strict UTF-8, line by line: a line that is not valid UTF-8, holds a NUL byte or is
absurdly long becomes a diagnostic for that line, and the rest of the file is still read, so one
run reports every problem. Comments are stripped here, once, for every line (see strip_comment).
"""

from __future__ import annotations

from dataclasses import dataclass

from lvsmon.config.errors import Diagnostic

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024
TAB_WIDTH = 4  # ldirectord turns every tab into four spaces before it looks at indentation


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    indent: int  # columns of leading whitespace, a tab counting four
    text: str  # the content after the indentation, comment and trailing blanks removed


def strip_comment(text: str) -> str:
    """Cut the line at the first ``#`` that is not inside double quotes.

    ldirectord cuts virtual-block lines at the first ``#`` wherever it is, which silently breaks
    a ``receive`` regex or URL holding one, and never cuts global lines. One rule for both, with
    quoted text protected, keeps every value ldirectord can read and also reads the quoted ones.
    """
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return text[:i]
    return text


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


def _decode(raw: bytes, number: int, path: str) -> tuple[str | None, Diagnostic | None]:
    if len(raw) > MAX_LINE_BYTES:
        return None, Diagnostic(path, number, f"line is longer than {MAX_LINE_BYTES} bytes")
    if b"\0" in raw:
        col = raw.index(b"\0") + 1
        return None, Diagnostic(path, number, f"line contains a NUL byte (column {col})")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        msg = f"line is not valid UTF-8 (byte 0x{bad:02x} at column {exc.start + 1})"
        return None, Diagnostic(path, number, msg)


def split_lines(data: bytes | str, path: str) -> tuple[list[Line], list[Diagnostic]]:
    """The non-blank, non-comment lines of a file, and the diagnostics of unreadable lines."""
    errors: list[Diagnostic] = []
    if isinstance(data, str):
        # Text that did not come from a file can still hold lone surrogates; treat it as bytes
        # so that both entry points share one decoder and one set of limits.
        data = data.encode("utf-8", "surrogateescape")
    if len(data) > MAX_FILE_BYTES:
        return [], [Diagnostic(path, None, f"file is larger than {MAX_FILE_BYTES} bytes")]
    lines: list[Line] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        text, problem = _decode(raw, number, path)
        if problem is not None:
            errors.append(problem)
            continue
        assert text is not None
        indent, rest = _indentation(text)
        rest = strip_comment(rest).rstrip()
        if rest:
            lines.append(Line(number, indent, rest))
    return lines, errors
