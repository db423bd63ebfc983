"""The JSON view of a Config (``lvsmon check-config --json``).

Secrets (`passwd`, `secret`, `smtppassword`) are shown as REDACTED when set: this output lands
in terminals, tickets and CI logs. Whatever else shows settings (status output, logs) should
pass each field through `redact` too.
"""

from __future__ import annotations

import enum
from dataclasses import fields, is_dataclass
from typing import Any, Final

from lvsmon.config.model import Config, Real, Virtual

REDACTED: Final = "***"
SECRET_FIELDS: Final = frozenset({"passwd", "secret", "smtppassword"})


def redact(name: str, value: Any) -> Any:
    """`value` of the setting `name` as it may be shown: a set secret is REDACTED; an empty
    one stays empty, so that "not set" still reads as such."""
    if name in SECRET_FIELDS and value:
        return REDACTED
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Real):  # its values, not its shared settings object
        return {name: _plain(getattr(value, name)) for name in Real.VALUES}
    if isinstance(value, Virtual):  # the same
        return {name: _plain(redact(name, getattr(value, name))) for name in Virtual.VALUES}
    if is_dataclass(value) and not isinstance(value, type):
        # fields that are not init arguments are derived (Virtual.key): not settings
        return {
            f.name: _plain(redact(f.name, getattr(value, f.name))) for f in fields(value) if f.init
        }
    return value


def virtual_to_dict(v: Virtual) -> dict[str, Any]:
    out = _plain(v)
    assert isinstance(out, dict)
    reals = out.pop("reals")
    out["name"] = v.name
    out["reals"] = reals  # last, so that a long list does not hide the virtual's settings
    return out


def config_to_dict(config: Config) -> dict[str, Any]:
    return {
        "path": config.path,
        "digest": config.digest,
        "global": _plain(config.settings),
        "virtuals": [virtual_to_dict(v) for v in config.virtuals],
    }
