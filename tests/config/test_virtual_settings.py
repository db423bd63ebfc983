"""A config Virtual keeps its identity, file, line and reals; its other settings are one shared
VirtualSettings (issue 22 goal 5), read, compared, copied, shown and dumped as before."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

from lvsmon.config.dump import REDACTED, virtual_to_dict
from lvsmon.config.load import parse_config
from lvsmon.config.model import VIRTUAL_SETTINGS, Config, Virtual, VirtualSettings
from lvsmon.engine.planning import same_but_lines

TEXT = """\
checkinterval=5
virtual=10.1.0.1:80
\treal=10.2.0.1:80 masq
\tchecktype=negotiate
\tservice=http
\tlogin="user"
\tpasswd="secret"
virtual=10.1.0.2:80
\treal=10.2.0.2:80 masq
\tchecktype=negotiate
\tservice=http
\tlogin="user"
\tpasswd="secret"
virtual=10.1.0.3:80
\treal=10.2.0.3:80 masq
\tchecktype=connect
"""


def config(text: str = TEXT) -> Config:
    return parse_config(textwrap.dedent(text), "test.cf")


def test_virtuals_with_equal_settings_share_one_settings_object() -> None:
    a, b, c = config().virtuals
    assert a.settings is b.settings and a.settings is not c.settings
    again = config().virtuals[0]  # another parse: the same object again
    assert again.settings is a.settings and again == a and hash(again) == hash(a)
    # 11 slots (identity, file, line, reals, fallback, settings, key) where 59 took 504 bytes
    assert sys.getsizeof(a) <= 120
    assert a.key != b.key


def test_a_virtual_reads_compares_and_copies_as_before() -> None:
    a, b, _ = config().virtuals
    assert (a.checkinterval, a.checktype.value, a.service.value) == (5, "negotiate", "http")
    assert (a.login, a.passwd, a.scheduler, a.port) == ("user", "secret", "wrr", 80)
    assert all(getattr(a, n) is getattr(a.settings, n) for n in VIRTUAL_SETTINGS)
    changed = dataclasses.replace(a, checkinterval=7)
    assert changed.checkinterval == 7 and changed != a and changed.reals is a.reals
    assert changed.settings == dataclasses.replace(a.settings, checkinterval=7)
    assert dataclasses.replace(changed, checkinterval=5) == a
    assert dataclasses.replace(a) == a and dataclasses.replace(a).settings is a.settings
    assert dataclasses.replace(a, port=81).key != a.key  # a copy gets its own key
    assert a != b  # the same settings, another address
    made = Virtual(
        a.family, a.protocol, a.address, a.port, a.fwmark, a.file, a.line, a.reals,
        **{n: getattr(a, n) for n in VIRTUAL_SETTINGS},
    )  # fmt: skip
    assert made == a and hash(made) == hash(a) and made.settings is a.settings
    assert "secret" not in repr(a) and repr(a).startswith("Virtual(family=")
    assert Virtual(a.family, a.protocol, a.address, 80, 0, "f", 1).settings == VirtualSettings()


def test_the_json_view_is_the_virtuals_values_in_their_order() -> None:
    a = config().virtuals[0]
    out = virtual_to_dict(a)
    assert "settings" not in out and out["passwd"] == REDACTED
    assert list(out) == [n for n in Virtual.VALUES if n != "reals"] + ["name", "reals"]


def test_virtuals_with_fallbacks_of_their_own_share_their_settings() -> None:
    """A fallback= line is the block's, at a line of its own: the Virtual keeps it, not the
    shared settings (every virtual of bench/many_virtuals.py's config has one)."""
    block = "virtual=10.1.0.{}:80\n\treal=10.2.0.{}:80 masq\n\tfallback=127.0.0.1:80\n"
    a, b = config(block.format(1, 1) + block.format(2, 2)).virtuals
    assert a.fallback is not None and b.fallback is not None
    assert (a.fallback.line, b.fallback.line) == (3, 6)
    assert a.settings is b.settings and a.fallback != b.fallback


def test_a_virtual_moved_with_its_fallback_is_the_same_but_lines() -> None:
    text = "virtual=10.1.0.1:80\n\treal=10.2.0.1:80 masq\n\tfallback=10.3.0.1:80\n"
    old = config(text).virtuals[0]
    new = config("\n\n" + text).virtuals[0]
    assert new.line == old.line + 2 and new.fallback != old.fallback
    assert same_but_lines(old, new)
    assert not same_but_lines(old, dataclasses.replace(new, checkinterval=3))


def test_what_mypy_reads_of_a_virtual_is_its_settings_fields() -> None:
    """Virtual's `if TYPE_CHECKING:` block names VirtualSettings' fields with their types
    (the properties are made at run time, out of mypy's sight)."""
    import ast
    import inspect

    from lvsmon.config import model

    tree = ast.parse(inspect.getsource(model))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Virtual")
    block = next(n for n in cls.body if isinstance(n, ast.If))
    declared = {
        s.target.id: ast.unparse(s.annotation)  # type: ignore[union-attr]
        for s in block.body
        if isinstance(s, ast.AnnAssign)
    }
    settings = next(
        n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "VirtualSettings"
    )
    fields = {
        s.target.id: ast.unparse(s.annotation)  # type: ignore[union-attr]
        for s in settings.body
        if isinstance(s, ast.AnnAssign)
    }
    assert declared == fields and list(declared) == list(VIRTUAL_SETTINGS)
