"""lvsmon's risecount and flap damping directives (risecount, flapcount, flapwindow, flaphold):
defaults that keep ldirectord's behaviour, global values and per-virtual overrides, FILE:LINE
errors (check-config exit 2), warnings for damping that cannot act, and the JSON view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from lvsmon.config.model import Config, GlobalSettings, Virtual
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n"
FIELDS = ("risecount", "flapcount", "flapwindow", "flaphold")


def _warnings(config: Config) -> list[str]:
    return [f"{w.line}: {w.message}" for w in config.warnings]


def _values(x: GlobalSettings | Virtual) -> tuple[int, ...]:
    return tuple(getattr(x, f) for f in FIELDS)


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert _values(config.settings) == (1, 0, 300, 120)
    (v,) = config.virtuals
    assert _values(v) == (1, 0, 300, 120)
    assert config.warnings == ()


def test_global_values_and_per_virtual_overrides() -> None:
    config = _parse(
        "risecount=3\n"
        "flapcount=4\n"
        "flapwindow=600\n"
        "flaphold=60\n"
        "virtual=192.0.2.1:80\n"
        "\treal=192.0.2.2:80 gate\n"
        "\trisecount=1\n"
        "\tflapcount=0\n"
        "virtual=192.0.2.1:81\n"
        "\treal=192.0.2.2:81 gate\n"
        "\tflaphold=30\n"
        "virtual=192.0.2.1:82\n"
        "\treal=192.0.2.2:82 gate\n"
    )
    assert _values(config.settings) == (3, 4, 600, 60)
    assert [_values(v) for v in config.virtuals] == [
        (1, 0, 600, 60),
        (3, 4, 600, 30),
        (3, 4, 600, 60),
    ]
    assert config.warnings == ()


def test_per_virtual_only() -> None:
    config = _parse(VIRTUAL + "\trisecount=2\n\tflapcount=3\n\tflapwindow=100\n\tflaphold=10\n")
    assert _values(config.virtuals[0]) == (2, 3, 100, 10)
    assert _values(config.settings) == (1, 0, 300, 120)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("risecount=0\n", "invalid rise count: 0 is out of range (1..1000000)"),
        ("risecount=x\n", "invalid rise count: 'x' is not a number"),
        ("risecount=-2\n", "invalid rise count: '-2' is not a number"),
        ("risecount=1000001\n", "invalid rise count: 1000001 is out of range (1..1000000)"),
        ("flapcount=y\n", "invalid flap count: 'y' is not a number"),
        ("flapcount=2000000\n", "invalid flap count: 2000000 is out of range (0..1000000)"),
        ("flapwindow=0\n", "invalid flap window: 0 is out of range (1..315360000)"),
        ("flapwindow=1.5\n", None),  # a warning: ".5" is trailing text, as for every number
        ("flaphold=0\n", "invalid flap hold time: 0 is out of range (1..315360000)"),
        ("flaphold=\n", "invalid flap hold time: '' is not a number"),
        ("flaphold=" + "9" * 40 + "\n", "invalid flap hold time: 999999999999999999999999..."),
    ],
)
def test_bad_values_are_errors_at_their_line(text: str, message: str | None) -> None:
    if message is None:
        assert _warnings(_parse(text + VIRTUAL)) == [
            "1: ignoring trailing text '.5'",
            "1: flapwindow has no effect without flapcount",
        ]
        return
    (error,) = _errors("\n" + text + VIRTUAL)
    assert error.startswith(f"a.cf:2: {message}")
    (error,) = _errors(VIRTUAL + "\t" + text)
    assert error.startswith(f"a.cf:3: {message}")


def test_check_config_reports_file_line_and_exits_2(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("checkinterval=5\n" + VIRTUAL + "\trisecount=0\n\tflapcount=many\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=False, out=out, err=err) == 2
    assert err.getvalue().splitlines() == [
        f"{cf}:4: invalid rise count: 0 is out of range (1..1000000)",
        f"{cf}:5: invalid flap count: 'many' is not a number",
    ]


def test_misspelt_directive_gets_a_suggestion() -> None:
    assert _errors("risecont=2\n" + VIRTUAL) == [
        'a.cf:1: unknown directive "risecont"; did you mean "risecount"?'
    ]


# -- warnings: damping that cannot act ---------------------------------------------------------


def test_window_or_hold_without_a_count_warns() -> None:
    config = _parse("flapwindow=60\n" + VIRTUAL + "\tflaphold=10\n")
    assert _warnings(config) == [
        "1: flapwindow has no effect without flapcount",
        "4: flaphold has no effect without flapcount",
    ]


def test_a_global_window_used_by_one_virtuals_count_does_not_warn() -> None:
    config = _parse("flapwindow=60\n" + VIRTUAL + "\tflapcount=2\n")
    assert config.warnings == ()


def test_a_window_too_short_for_the_count_warns_once_for_the_globals() -> None:
    # 3 changes need 3 checks, 10 s apart: 4 changes never fit in 30 s
    text = (
        "checkinterval=10\nflapcount=3\nflapwindow=30\n" + VIRTUAL + VIRTUAL.replace(":80", ":81")
    )
    assert _warnings(_parse(text)) == [
        "3: flapwindow=30 cannot see more than flapcount=3 state changes with a check every 10 s,"
        " so flap damping never holds a real: make it longer than 30"
    ]
    assert _parse(text.replace("flapwindow=30", "flapwindow=31")).warnings == ()


def test_a_window_too_short_in_a_virtual_warns_at_its_line() -> None:
    text = "flapcount=2\n" + VIRTUAL + "\tflapwindow=20\n"
    assert _warnings(_parse(text)) == [
        "4: flapwindow=20 cannot see more than flapcount=2 state changes with a check every 10 s,"
        " so flap damping never holds a real: make it longer than 20"
    ]


# -- check-config --json ---------------------------------------------------------------------------


def test_json_shows_them(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("risecount=2\nflapcount=5\n" + VIRTUAL + "\tflaphold=45\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=True, out=out, err=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert {f: data["global"][f] for f in FIELDS} == {
        "risecount": 2,
        "flapcount": 5,
        "flapwindow": 300,
        "flaphold": 120,
    }
    (v,) = data["virtuals"]
    assert {f: v[f] for f in FIELDS} == {
        "risecount": 2,
        "flapcount": 5,
        "flapwindow": 300,
        "flaphold": 45,
    }
