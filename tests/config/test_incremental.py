"""Issue 22: the incremental parse (lvsmon/config/incremental.py) gives what the full parse gives,
diagnostics and their order included, for random edits of real-world and generated configs; it
builds only the blocks whose text changed, and builds again every time what may change without
the text changing (names, monitorfile)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsmon.config import Config, ConfigError, effective, resolve
from lvsmon.config.incremental import BlockCache
from lvsmon.config.load import parse_config

from .corpus import cases

REALWORLD = Path(__file__).parents[2] / ".." / "shared" / "realworld-configs"
PATH = "/etc/ha.d/a.cf"


def generated(virtuals: int = 30) -> str:
    """A config with most of what a block can hold: own and global fallbacks, a relay of its
    own, repeated reals (a warning), a checkinterval that does not apply (a warning), flap
    damping that cannot act (a warning at a global line), a hostname, a port name."""
    lines = ["checktimeout=3", "fallback=127.0.0.2:80", "flapcount=2", "flapwindow=2", ""]
    for v in range(virtuals):
        lines.append(f"virtual=10.1.{v // 200}.{v % 200 + 1}:{'http' if v % 7 == 3 else 80}")
        for r in range(v % 5 + 1):
            host = "localhost" if v % 11 == 5 and r == 0 else f"10.2.{v}.{r + 1}"
            lines.append(f"\treal={host}:80 masq {r % 3 + 1}")
        if v % 4 == 1:
            lines.append(f"\treal=10.2.{v}.1:80 masq 1")  # listed again
        if v % 3 == 0:
            lines.append("\tfallback=127.0.0.1:80")
        if v % 6 == 2:
            lines.append("\tcheckinterval=9")
        if v % 8 == 4:
            lines.append("\tsmtp=127.0.0.9")
        if v % 9 == 0:
            lines.append("\tflapwindow=600")
        lines += ["\tchecktype=connect", "\t# a comment", ""]
    return "\n".join(lines) + "\n"


def sources() -> list[bytes]:
    found = [c.path.read_bytes() for c in cases()]
    if REALWORLD.is_dir():
        found += [p.read_bytes() for p in sorted(REALWORLD.glob("*.cf"))]
    return [*found, generated().encode()]


SOURCES = sources()

# lines an operator might add: each kind of line a block or the top level holds, and mistakes
PIECES = [
    "",
    "# a comment",
    "\treal=10.9.9.9:80 masq 3",
    "\treal=10.2.0.1:80 masq 1",
    "\treal=localhost:80 gate",
    "\tchecktype=connect",
    "\tfallback=127.0.0.3:80",
    "\tflapcount=1",
    "\tquiescent=yes",
    "\tmonitorfile=/nonexistent/m.log",
    "\tsmtp=127.0.0.8",
    "\tsmtp=127.0.0.8:2525",
    "  badly indented",
    "\tscheduler=rr",
    "virtual=10.8.8.8:80",
    "virtual=10.1.0.1:80",
    "checktimeout=7",
    "quiescent=yes",
    "flapcount=0",
    "smtptls=tls",
    "emailalert=ops@example.com",
    "virtualhost=x",
    "real=10.7.7.7:80",
    "\u00a0virtual=10.6.6.6:80",
    "\tarpguard=yes",
    "arpguard=yes",
]

edit = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.sampled_from(PIECES)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just("")),
    st.tuples(st.just("copy"), st.integers(0, 10_000), st.integers(0, 10_000).map(str)),
    st.tuples(st.just("digit"), st.integers(0, 10_000), st.sampled_from("0123456789")),
)


def edited(data: bytes, edits: list[tuple[str, int, str]]) -> bytes:
    lines = data.split(b"\n")
    for kind, at, arg in edits:
        i = at % (len(lines) + 1)
        if kind == "insert":
            lines.insert(i, arg.encode())
        elif kind == "delete" and i < len(lines):
            del lines[i]
        elif kind == "copy" and i < len(lines):
            lines.insert(int(arg) % (len(lines) + 1), lines[i])
        elif kind == "digit" and i < len(lines):
            line = lines[i]
            digits = [k for k, b in enumerate(line) if 0x30 <= b <= 0x39]
            if digits:
                k = digits[at % len(digits)]
                lines[i] = line[:k] + arg.encode() + line[k + 1 :]
    return b"\n".join(lines)


def outcome(data: bytes, cache: BlockCache | None) -> object:
    """What a parse gives, warnings (not compared by Config's ==) and errors included."""
    try:
        config = parse_config(data, PATH, hostname="director", cache=cache)
    except ConfigError as exc:
        return ("rejected", exc.diagnostics)
    return ("accepted", config, config.warnings)


@pytest.mark.parametrize("data", SOURCES, ids=range(len(SOURCES)))
def test_every_source_parses_as_in_full_cold_and_warm(data: bytes) -> None:
    cache = BlockCache()
    full = outcome(data, None)
    assert outcome(data, cache) == full  # cold: every block built
    assert outcome(data, cache) == full  # warm: the cached ones reused


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SOURCES))), st.lists(edit, min_size=1, max_size=4))
def test_an_edit_parses_as_in_full(source: int, edits: list[tuple[str, int, str]]) -> None:
    before = SOURCES[source]
    after = edited(before, edits)
    cache = BlockCache()
    outcome(before, cache)
    assert outcome(after, cache) == outcome(after, None)
    # and back: the cache now holds the edited file's blocks
    assert outcome(before, cache) == outcome(before, None)


def big(heavier: frozenset[int] = frozenset(), above: str = "") -> bytes:
    lines = [above, "checkinterval=4", "quiescent=no"]
    for v in range(50):
        lines.append(f"virtual=10.1.0.{v + 1}:80")
        for r in range(4):
            i = v * 4 + r
            lines.append(f"\treal=10.2.{i // 200}.{i % 200 + 1}:80 masq {2 if i in heavier else 1}")
        lines += ["\tfallback=127.0.0.1:80", "\tchecktype=connect", ""]
    return "\n".join(lines).encode()


class CountingBuilds:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        virtual = effective.Builder.virtual

        def counting(builder: effective.Builder, *args: object) -> object:
            self.built += 1
            return virtual(builder, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(effective.Builder, "virtual", counting)


def test_a_reload_builds_only_the_blocks_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = BlockCache()
    old = parse_config(big(), PATH, cache=cache)
    builds = CountingBuilds(monkeypatch)
    same = parse_config(big(), PATH, cache=cache)
    assert builds.built == 0
    # nothing changed: the very virtuals of the running config (the engine compares by identity)
    assert all(a is b for a, b in zip(same.virtuals, old.virtuals, strict=True))
    new = parse_config(big(heavier=frozenset({5, 6, 101})), PATH, cache=cache)
    assert builds.built == 2  # the second and the 26th virtual
    assert new == parse_config(big(heavier=frozenset({5, 6, 101})), PATH, cache=None)
    kept = [a is b for a, b in zip(new.virtuals, old.virtuals, strict=True)]
    assert kept.count(False) == 2 and not kept[1] and not kept[25]


def test_lines_added_above_move_every_block_without_building_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = BlockCache()
    parse_config(big(), PATH, cache=cache)
    builds = CountingBuilds(monkeypatch)
    moved = parse_config(big(above="# one\n# two\n"), PATH, cache=cache)
    assert builds.built == 0
    full = parse_config(big(above="# one\n# two\n"), PATH, cache=None)
    assert moved == full and moved.warnings == full.warnings
    assert moved.virtuals[0].line == 6 and moved.virtuals[0].reals[0].line == 7
    assert moved.virtuals[0].fallback is not None and moved.virtuals[0].fallback.line == 11


def test_names_are_resolved_again_at_every_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """As ldirectord resolves them at every reload: a block naming a host is never reused."""
    text = "virtual=10.1.0.1:80\n\treal=web1:80 masq 1\n\tchecktype=connect\n"
    text += "virtual=10.1.0.2:80\n\treal=10.2.0.1:http masq 1\n\tchecktype=connect\n"
    text += "virtual=10.1.0.3:80\n\treal=10.2.0.2:80 masq 1\n\tchecktype=connect\n"
    answer = {"web1": "10.3.0.1"}
    monkeypatch.setattr(resolve, "hosts_file_lookup", lambda name, af: answer.get(name))
    cache = BlockCache()
    first = parse_config(text, PATH, cache=cache)
    assert first.virtuals[0].reals[0].address == "10.3.0.1"
    assert len(cache) == 1  # only the third block: the others name a host or a service
    answer["web1"] = "10.3.0.2"
    again = parse_config(text, PATH, cache=cache)
    assert again.virtuals[0].reals[0].address == "10.3.0.2"
    assert again.virtuals[2] is first.virtuals[2]


def test_a_monitorfile_is_checked_at_every_parse(tmp_path: Path) -> None:
    where = tmp_path / "logs"
    where.mkdir()
    text = f"virtual=10.1.0.1:80\n\treal=10.2.0.1:80 masq 1\n\tmonitorfile={where}/m.log\n"
    cache = BlockCache()
    assert isinstance(parse_config(text, PATH, cache=cache), Config)
    where.rmdir()
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(text, PATH, cache=cache)


def test_other_global_settings_build_every_block_again(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = BlockCache()
    parse_config(big(), PATH, cache=cache)
    builds = CountingBuilds(monkeypatch)
    changed = big().replace(b"quiescent=no", b"quiescent=yes")
    new = parse_config(changed, PATH, cache=cache)
    assert builds.built == 50
    assert all(v.quiescent for v in new.virtuals)
