"""No input makes the parser fail other than with ConfigError: mutations of valid corpus files."""

from __future__ import annotations

import contextlib
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon.config import Config, ConfigError, parse_config
from tests.config.corpus import CORPUS

SEEDS = [p.read_bytes() for p in sorted((CORPUS / "valid").glob("*.cf")) if p.stat().st_size]


def _parse(data: bytes) -> Config | None:
    try:
        return parse_config(data, "mutant.cf")
    except ConfigError as exc:
        assert exc.diagnostics, "a ConfigError always names at least one problem"
        for d in exc.diagnostics:
            assert d.file == "mutant.cf"
            assert d.line is None or d.line >= 1
            assert "\n" not in d.message
        return None


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(SEEDS)).split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["insert", "delete", "duplicate", "bytes", "indent", "splice", "number"]
            )
        )
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if kind == "insert":
            lines.insert(i, draw(st.binary(max_size=80)))
        elif kind == "delete" and lines:
            del lines[i]
        elif kind == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif kind == "bytes" and lines:
            line = lines[i]
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.binary(min_size=1, max_size=8)) + line[j:]
        elif kind == "indent" and lines:
            line = lines[i].lstrip(b" \t")
            prefix = draw(st.sampled_from([b"", b" ", b"  ", b"    ", b"\t", b"\t\t", b"  \t"]))
            lines[i] = prefix + line
        elif kind == "number" and lines:
            # a number anywhere, up to well past int()'s 4300-digit limit
            line = lines[i]
            runs = list(re.finditer(rb"\d+", line))
            digits = draw(st.sampled_from([b"9", b"1", b"0"])) * draw(
                st.sampled_from([17, 18, 19, 20, 4300, 4301, 6000])
            )
            if runs:
                run = runs[draw(st.integers(0, len(runs) - 1))]
                lines[i] = line[: run.start()] + digits + line[run.end() :]
            else:
                lines[i] = line + digits
        elif kind == "splice" and lines:
            other = draw(st.sampled_from(SEEDS)).split(b"\n")
            lines.insert(i, other[draw(st.integers(0, len(other) - 1))])
    return b"\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_mutated_configs_parse_or_raise_config_error(data: bytes) -> None:
    config = _parse(data)
    if config is not None:
        for v in config.virtuals:
            assert v.key is not None  # every accepted virtual is a valid IPVS identity
            for r in v.reals:
                assert 0 <= r.port <= 65535


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _parse(data)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    _parse(text.encode("utf-8", "surrogatepass"))
    with contextlib.suppress(ConfigError):
        parse_config(text, "t.cf")
