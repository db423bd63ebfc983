"""Outside text made safe to show: the one rule for every string lvsmon did not write itself.

A check's reason quotes its server (an HTTP real's Location header, an IMAP greeting), a drain
names a file someone created, a status file may have been edited, a relay words its own errors.
Any of them may hold a CR that forges a whole log line on `tail -f`, terminal escapes that clear
the operator's screen in `lvsmon status`, bidi overrides that make a line read backwards, or a
megabyte. So each such string passes `clean` where it enters lvsmon (the check runner takes in
every result through it; the drain listing, `lvsmon status`, the monitorfile and the mail relay's
errors too), and everything downstream (status, log, events, mails, monitorfile) gets clean text.

The rule: every character Python calls not printable (`str.isprintable`: the C0 and C1 controls,
DEL, the line and paragraph separators, the format characters such as the bidi overrides and
zero-width joiners, every separator but the ASCII space, surrogates, private and unassigned code
points) becomes `?`, and the text is cut to `limit` characters, `...` added. Printable text of any
script is kept as it is. `clean` is idempotent, and its common case (a short printable reason) is
one C-speed test.

A leaf: it imports nothing of lvsmon, so that the checks and the engine alike can use it.
"""

from __future__ import annotations

from typing import Final

LIMIT: Final = 512  # characters of outside text kept, the ellipsis not counted
ELLIPSIS: Final = "..."
REPLACEMENT: Final = "?"


def clean(text: str, limit: int = LIMIT) -> str:
    """`text` with every non-printable character replaced by `?`, at most `limit` characters
    (then `...` follows)."""
    if text.isprintable() and len(text) <= limit:
        return text
    cut = text[:limit]  # one character for one: the work is bounded by the limit
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else REPLACEMENT for c in cut)
    return cut + ELLIPSIS if len(text) > limit else cut
