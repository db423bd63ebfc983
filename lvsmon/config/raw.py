"""What the parser makes of a file (parser.py), before defaults, overrides and name resolution
(effective.py): each directive's parsed value with its line, per scope. The value parsers
(syncconf.py, values.py) and the effective-value rules read these; none of them parse lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from lvsmon.config import syntax
from lvsmon.config.errors import Diagnostic


@dataclass(frozen=True, slots=True)
class Setting:
    value: object
    line: int


@dataclass(slots=True)
class RawVirtual:
    line: int
    inet6: bool
    spec: syntax.VirtualSpec
    settings: dict[str, Setting] = field(default_factory=dict)
    reals: list[tuple[syntax.RealSpec, int]] = field(default_factory=list)


@dataclass(slots=True)
class RawConfig:
    path: str
    settings: dict[str, Setting] = field(default_factory=dict)
    execute: list[str] = field(default_factory=list)
    virtuals: list[RawVirtual] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
