"""Incremental parsing (issue 22): a reload parses again only the virtual blocks whose text changed.

A file is cut into parts at the lines that begin with a letter or "_": in a valid file those are
exactly its top-level lines (every other line of a block is indented, blank or a comment). A
part that begins with "virtual" is one virtual block; the others hold global lines. The parser
reads a block the same wherever it stands (its state ends at every top-level line), so what the
builder makes of a block depends only on its text, the number of its first line, and what the
builder reads besides: the global settings, the file's path, the host name and the resolver
(the system's: parse_config gives a parse with any other resolver to the full parser).
BlockCache keeps, per block text (its blake2b), the Virtual built from it and the warnings it
gave. A block found again at the line it stood at is that very Virtual (so a reload of an
unchanged file makes a Config whose virtuals are the running config's objects, and the engine
finds nothing changed); found at another line (lines added or removed above it), it is moved:
every line number it holds moves by the same amount (a block with warnings is built again
instead: their words may hold line numbers).

Built anew at every parse, never cached, as ldirectord reads everything at every reload:
- a block that names a host or a service (resolved again: DNS or /etc/services may have changed);
- a block with a monitorfile (whether it can be written is checked at every load);
- a block whose warnings cite a global line (the global flap settings': said once for all);
- everything when the global settings, the path or the host name differ from the last parse's
  (the cache then holds the blocks of this parse only);
- the global lines and settings (the log file, the maintenance and template directories are
  checked at every parse), the checks across virtuals (duplicates, unused flap settings).
A file with an error anywhere is parsed again in full by parse_lines and build_config, whose
diagnostics (every one, in their order) are the reference: this module builds valid files only.
The result equals the full parse's, warnings and their order included (tests/config/
test_incremental.py edits real-world and generated configs at random and compares).

The cache is one generation: the blocks of the last parse that could be cached, so it never
holds more than one config's virtuals (which that config holds anyway) and one 16-byte key per
block. Parses in several threads at once are safe: each reads the cache once and replaces it
whole at its end.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from lvsmon.config.effective import Builder, Settled
from lvsmon.config.errors import Diagnostic
from lvsmon.config.lexer import MAX_FILE_BYTES
from lvsmon.config.model import Config, Family, GlobalSettings, Virtual
from lvsmon.config.parser import LineParser
from lvsmon.config.raw import RawVirtual, Setting
from lvsmon.config.resolve import SystemResolver
from lvsmon.config.syntax import FallbackSpec
from lvsmon.ipvs.model import ServiceKey

# a line at the top level (in a valid file): where a part begins
_TOP: Final = re.compile(rb"^[A-Za-z_]", re.M)
_BLOCK: Final = b"virtual"


@dataclass(frozen=True, slots=True)
class _Block:
    """What the builder made of one virtual block whose first line was `first`."""

    first: int
    virtual: Virtual  # with each real once (Builder.dedup_reals)
    parsed: tuple[Diagnostic, ...]  # the parser's warnings
    built: tuple[Diagnostic, ...]  # Builder.virtual's
    repeated: tuple[Diagnostic, ...]  # Builder.dedup_reals'
    smtp: Setting | None  # the block's own relay: the global SMTP warnings read it
    own_fallback: bool  # its fallback is the block's line (else the global one's)

    @property
    def warns(self) -> bool:
        return bool(self.parsed or self.built or self.repeated)

    def at(self, first: int) -> _Block:
        """The same block with its first line at `first`."""
        delta = first - self.first
        if delta == 0:
            return self
        smtp = self.smtp
        return _Block(
            first,
            _moved_virtual(self.virtual, delta, self.own_fallback),
            _moved(self.parsed, delta),
            _moved(self.built, delta),
            _moved(self.repeated, delta),
            None if smtp is None else Setting(smtp.value, smtp.line + delta),
            self.own_fallback,
        )


def _moved(diagnostics: tuple[Diagnostic, ...], delta: int) -> tuple[Diagnostic, ...]:
    return tuple(
        d if d.line is None else Diagnostic(d.file, d.line + delta, d.message) for d in diagnostics
    )


_T = TypeVar("_T")


def _copy(obj: _T, **changes: object) -> _T:
    """A frozen slots object's copy with `changes`: every slot as it is, its derived keys too
    (dataclasses.replace would run __post_init__, which parses the address again: that was
    most of moving 37,298 reals)."""
    new = object.__new__(type(obj))
    slots = type(obj).__slots__  # type: ignore[attr-defined]
    assert changes.keys() <= set(slots), f"not slots of {type(obj).__name__}: {changes.keys()}"
    for name in slots:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(obj, name))
    return new


def _moved_virtual(v: Virtual, delta: int, own_fallback: bool) -> Virtual:
    reals = tuple(r.at_line(r.line + delta) for r in v.reals)
    fallback = v.fallback
    if fallback is not None and own_fallback:
        fallback = _copy(fallback, line=fallback.line + delta)
    return _copy(v, line=v.line + delta, reals=reals, fallback=fallback)


@dataclass(frozen=True, slots=True)
class _Context:
    """What a cached block was built with, besides its text."""

    path: str
    hostname: str
    settings: GlobalSettings


class BlockCache:
    """The blocks of the last parse, by the blake2b of their text (see the module docstring)."""

    def __init__(self) -> None:
        self._state: tuple[_Context | None, dict[bytes, _Block]] = (None, {})

    def __len__(self) -> int:
        return len(self._state[1])

    def clear(self) -> None:
        self._state = (None, {})


class _Watching:
    """The resolver, noting whether a host name was looked up: the builder asks it for a host
    only when that is not an address literal. (Service names: _names_a_service.)"""

    def __init__(self, inner: SystemResolver) -> None:
        self.inner = inner
        self.named = False
        self.port = inner.port  # every port goes through here: no frame of its own

    def host(self, name: str, family: Family) -> str | None:
        self.named = True
        return self.inner.host(name, family)


def _names_a_service(rv: RawVirtual) -> bool:
    """A port of the block is a service name (looked up again at every parse)."""
    fallback = rv.settings.get("fallback")
    ports = [rv.spec.port, *(spec.port for spec, _ in rv.reals)]
    if fallback is not None:
        ports.append(cast(FallbackSpec, fallback.value).port)
    return not all(port is None or port.isdigit() for port in ports)


@dataclass(slots=True)
class _Part:
    """One virtual block of the file being parsed."""

    first: int
    last: int
    key: bytes
    text: bytes
    cached: _Block | None = None
    raw: RawVirtual | None = None
    parsed: tuple[Diagnostic, ...] = ()


def _order(d: Diagnostic) -> int:
    return d.line or 0


class _Invalid(Exception):
    """The file has an error: the full parser words it (with the global settings, once they
    were built: some of their checks are not cheap, the template directory's)."""

    def __init__(self, settled: Settled | None = None) -> None:
        super().__init__()
        self.settled = settled


def parse_incremental(
    data: bytes, path: str, digest: str, hostname: str, cache: BlockCache
) -> Config | Settled | None:
    """The Config of `data` with the system resolver, reusing the blocks `cache` holds and
    leaving this parse's there. When the file has an error, what the full parse (parse_lines,
    build_config) is to reuse: the global settings (Settled), or nothing."""
    if len(data) > MAX_FILE_BYTES:
        return None
    try:
        return _parse(data, path, digest, hostname, cache)
    except _Invalid as exc:
        return exc.settled


def _parse(data: bytes, path: str, digest: str, hostname: str, cache: BlockCache) -> Config:
    context, entries = cache._state
    top = LineParser(path)
    parts = _cut(data, path, top, entries)
    if top.raw.errors:
        raise _Invalid
    watching = _Watching(SystemResolver())
    builder = Builder(top.raw, watching, hostname)
    builder.warnings = []
    relays = [_relay(part) for part in parts]
    g = builder.settings(relays)
    settings_warnings = builder.warnings
    settled = Settled(g, tuple(builder.errors), tuple(settings_warnings))
    if builder.errors:
        raise _Invalid(settled)
    now = _Context(path, hostname, g)
    if context != now:
        for part in parts:
            if part.cached is not None:
                part.cached = None
                _parse_block(part, path)
    try:
        blocks = [_block(part, builder, watching, g) for part in parts]
    except _Invalid:
        raise _Invalid(settled) from None
    virtuals = [b.virtual for b in blocks]
    seen: dict[ServiceKey, Virtual] = {}
    for v in virtuals:
        builder.unique_virtual(v, seen)
    builder.warnings = []
    builder.unused_flap_settings(g, virtuals)
    builder.check_paths(g, virtuals)
    builder.arpguard_warnings(virtuals)
    if builder.errors:
        raise _Invalid(settled)
    warnings = [*top.raw.warnings]
    for b in blocks:
        warnings.extend(b.parsed)
    warnings.sort(key=_order)  # the parts' own warnings in file order, as one parser gives them
    warnings.extend(settings_warnings)
    for b in blocks:
        warnings.extend(b.built)
    for b in blocks:
        warnings.extend(b.repeated)
    warnings.extend(builder.warnings)
    cache._state = (now, {part.key: b for part, b in zip(parts, blocks, strict=True) if part.key})
    return Config(path, digest, g, tuple(virtuals), tuple(sorted(warnings, key=_order)))


def _cut(data: bytes, path: str, top: LineParser, entries: dict[bytes, _Block]) -> list[_Part]:
    """The file's virtual blocks; its other lines are fed to `top`. A block the cache holds is
    not parsed (yet)."""
    starts = [m.start() for m in _TOP.finditer(data)]
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    starts.append(len(data))
    parts: list[_Part] = []
    line = 1
    for a, b in itertools.pairwise(starts):
        if a == b:
            continue
        text = data[a:b]
        n = text.count(b"\n")
        if text.startswith(_BLOCK):
            last = line + n - (1 if text.endswith(b"\n") else 0)
            key = hashlib.blake2b(text, digest_size=16).digest()
            part = _Part(line, last, key, text, entries.get(key))
            if part.cached is None:
                _parse_block(part, path)
            parts.append(part)
        elif not top.feed_part(text, line):
            raise _Invalid
        line += n
    return parts


def _parse_block(part: _Part, path: str) -> None:
    parser = LineParser(path)
    raw = parser.raw
    if not parser.feed_part(part.text, part.first) or raw.errors:
        raise _Invalid
    if raw.settings or raw.execute or len(raw.virtuals) != 1:
        raise _Invalid  # not one virtual block after all: the full parser says what it is
    part.raw, part.parsed = raw.virtuals[0], tuple(raw.warnings)


def _relay(part: _Part) -> Mapping[str, Setting]:
    """What the global SMTP warnings read of a block: its own relay."""
    cached = part.cached
    if cached is not None:
        smtp = cached.smtp
        if smtp is None:
            return {}
        return {"smtp": Setting(smtp.value, smtp.line + part.first - cached.first)}
    assert part.raw is not None
    return part.raw.settings


def _block(part: _Part, builder: Builder, watching: _Watching, g: GlobalSettings) -> _Block:
    cached = part.cached
    if cached is not None:
        if cached.first == part.first or not cached.warns:
            return cached.at(part.first)
        # moved, with warnings: their words may hold line numbers ("overrides the value set at
        # line 12"), which are worded again
        _parse_block(part, builder.path)
    return _build(part, builder, watching, g)


def _build(part: _Part, builder: Builder, watching: _Watching, g: GlobalSettings) -> _Block:
    rv = part.raw
    assert rv is not None
    watching.named = False
    builder.cited_global = False
    errors = len(builder.errors)
    builder.warnings = []
    v = builder.virtual(rv, g)
    built = tuple(builder.warnings)
    builder.warnings = []
    if v is None or len(builder.errors) > errors:
        raise _Invalid
    v = builder.dedup_reals(v)
    if len(builder.errors) > errors:
        raise _Invalid
    block = _Block(
        part.first,
        v,
        part.parsed,
        built,
        tuple(builder.warnings),
        rv.settings.get("smtp"),
        "fallback" in rv.settings,
    )
    # what may differ at the next parse although the text does not is built again then
    if (
        watching.named
        or _names_a_service(rv)
        or builder.cited_global
        or v.monitorfile is not None
        or not _within(block, part.first, part.last)
    ):
        part.key = b""
    return block


def _within(block: _Block, first: int, last: int) -> bool:
    """Every warning of the block cites one of its own lines."""
    return all(
        d.line is not None and first <= d.line <= last
        for d in (*block.parsed, *block.built, *block.repeated)
    )
