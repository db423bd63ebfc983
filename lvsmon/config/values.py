"""Small parsers for directive values. Each returns the value or raises Invalid(message)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from lvsmon.checks.base import CheckSpecError, compile_receive
from lvsmon.config.model import DAEMON_STATES


class Invalid(ValueError):
    """A directive's value is unusable; the message is shown after FILE:LINE:."""


Warn = Callable[[str], None]

_LEADING_INT = re.compile(r"(\d+)(.*)\Z", re.S)

MAX_DIGITS = 18
"""Most digits a number in a config may have, leading zeros aside. Every real value fits in
far fewer; int() of a long run of digits costs time quadratic in its length and raises
ValueError past 4300 digits, which was a traceback instead of a FILE:LINE error."""


def shorten(text: str, limit: int = 24) -> str:
    """A value fit to quote in a one-line message."""
    return text if len(text) <= limit else text[:limit] + "..."


def small_int(digits: str) -> int | None:
    """The number a run of decimal digits spells, or None when it is longer than MAX_DIGITS.
    Every number of the configuration is read through here (or `decimal`)."""
    significant = digits.lstrip("0")
    if len(significant) > MAX_DIGITS:
        return None
    return int(significant or "0")


def decimal(digits: str, what: str) -> int:
    """`small_int`, with a too long number an Invalid naming `what`."""
    number = small_int(digits)
    if number is None:
        raise Invalid(f"invalid {what}: {shorten(digits)} has more than {MAX_DIGITS} digits")
    return number


def _trailing(rest: str, warn: Warn) -> None:
    if rest.strip():
        warn(f"ignoring trailing text {rest.strip()!r}")


def integer(
    value: str, what: str, warn: Warn, *, minimum: int = 1, maximum: int | None = None
) -> int:
    """A decimal integer at the start of the value. ldirectord takes the first run of digits
    anywhere in the value; text after the number is tolerated (with a warning), text before
    it is not."""
    m = _LEADING_INT.match(value)
    if m is None:
        raise Invalid(f"invalid {what}: {value!r} is not a number")
    number = decimal(m.group(1), what)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise Invalid(f"invalid {what}: {number} is out of range ({bound})")
    _trailing(m.group(2), warn)
    return number


_SHARE = re.compile(r"(\d+)(?:\.(\d*))?(%?)\Z")
SHARE_DECIMALS = 4  # of a fraction (0.3333); a percentage has two fewer (33.33%)


def share(value: str, what: str) -> float:
    """A share of a whole: a fraction 0..1 ("0.5") or a percentage 0%..100% ("50%"), to 1/10000
    at most, so that the share of a pool is exact (engine/desired.py rounds on it)."""
    m = _SHARE.match(value)
    if m is None:
        raise Invalid(
            f"invalid {what}: {shorten(value)!r} is not a fraction (0..1) or a percentage"
        )
    whole, decimals, percent = m.group(1), m.group(2) or "", m.group(3)
    places = SHARE_DECIMALS - (2 if percent else 0)
    if len(decimals) > places:
        raise Invalid(f"invalid {what}: {shorten(value)!r} has more than {places} decimals")
    scale = len(decimals) + (2 if percent else 0)
    number = decimal(whole + decimals, what) / int("1" + "0" * scale)
    if number > 1:
        raise Invalid(f"invalid {what}: {value} is out of range (0..1, or 0%..100%)")
    return number


def yes_no(value: str, name: str) -> bool:
    if value == "yes":
        return True
    if value == "no":
        return False
    raise Invalid(f"{name} must be 'yes' or 'no', not {value!r}")


def quoted(value: str, name: str, warn: Warn, *, allow_empty: bool = False) -> str:
    """A value that ldirectord only accepts in double quotes; everything up to the LAST quote
    belongs to it, as with ldirectord's greedy match."""
    if not value.startswith('"') or value.count('"') < 2:
        raise Invalid(f'{name} needs a double-quoted value, e.g. {name}="..."{_typographic(value)}')
    end = value.rindex('"')
    inner = value[1:end]
    if not inner and not allow_empty:
        raise Invalid(f"{name} must not be empty")
    _trailing(value[end + 1 :], warn)
    return inner


_TYPOGRAPHIC_QUOTES = "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb\uff02"


def _typographic(value: str) -> str:
    """A hint when a word processor's quote stands where a plain one is needed."""
    for ch in value:
        if ch in _TYPOGRAPHIC_QUOTES:
            name = unicodedata.name(ch, "").lower()
            return f' (U+{ord(ch):04X} {name} is not a plain ")'
    return ""


def receive_regex(pattern: str) -> str:
    """A `receive` regex the check can run: checked here so that a bad one is a FILE:LINE error
    of check-config, not a failed daemon start-up or a real that is always down."""
    try:
        compile_receive(pattern)
    except CheckSpecError as exc:
        raise Invalid(str(exc)) from None
    return pattern


def maybe_quoted(value: str, name: str) -> str:
    """A value with optional surrounding double quotes."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    if not value:
        raise Invalid(f"{name} must not be empty")
    return value


def word(value: str, pattern: str, message: str, warn: Warn) -> str:
    m = re.match(pattern, value)
    if m is None:
        raise Invalid(message)
    _trailing(value[m.end() :], warn)
    return m.group(0)


def email_status(value: str) -> tuple[str, ...]:
    """``emailalertstatus``: a comma list of all, none, or daemon states; none stands alone."""
    items = [item for item in re.split(r"\s*,\s*", value.strip())]
    if "none" in items:
        if len(items) > 1:
            others = next(i for i in items if i != "none")
            raise Invalid(f'invalid email alert status: "{others}" specified with "none"')
        return ()
    states: set[str] = set()
    for item in items:
        if item == "all":
            states.update(DAEMON_STATES)
        elif item in DAEMON_STATES:
            states.add(item)
        else:
            allowed = ", ".join(("all", "none", *DAEMON_STATES))
            raise Invalid(f'invalid email alert status "{item}" (allowed: {allowed})')
    return tuple(s for s in DAEMON_STATES if s in states)


def email_addresses(value: str) -> tuple[str, ...]:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    addresses = tuple(a.strip() for a in value.split(",") if a.strip())
    if not addresses:
        raise Invalid("no email address specified")
    return addresses
