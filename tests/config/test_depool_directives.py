"""lvsmon's depoolthreshold directive: off by default, a fraction or a percentage, global with
per-virtual overrides, FILE:LINE errors (check-config exit 2), and the JSON view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n"


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert config.settings.depoolthreshold is None
    assert config.virtuals[0].depoolthreshold is None
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("value", "share"),
    [
        ("0.5", 0.5),
        ("50%", 0.5),
        ("0", 0.0),
        ("0%", 0.0),
        ("1", 1.0),
        ("1.0", 1.0),
        ("100%", 1.0),
        ("0.3333", 0.3333),
        ("33.33%", 0.3333),
        ("0.", 0.0),
        ("7.5%", 0.075),
    ],
)
def test_fractions_and_percentages(value: str, share: float) -> None:
    config = _parse(f"depoolthreshold={value}\n" + VIRTUAL)
    assert config.settings.depoolthreshold == share
    assert config.virtuals[0].depoolthreshold == share


def test_global_value_and_per_virtual_overrides() -> None:
    config = _parse(
        "depoolthreshold=0.5\n"
        + VIRTUAL
        + "\tdepoolthreshold=25%\n"
        + VIRTUAL.replace(":80", ":81")
        + VIRTUAL.replace(":80", ":82")
        + "\tdepoolthreshold=1\n"
    )
    assert config.settings.depoolthreshold == 0.5
    assert [v.depoolthreshold for v in config.virtuals] == [0.25, 0.5, 1.0]


def test_per_virtual_only() -> None:
    config = _parse(VIRTUAL + "\tdepoolthreshold=0.4\n" + VIRTUAL.replace(":80", ":81"))
    assert [v.depoolthreshold for v in config.virtuals] == [0.4, None]
    assert config.settings.depoolthreshold is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.5", "invalid depool threshold: 1.5 is out of range (0..1, or 0%..100%)"),
        ("50", "invalid depool threshold: 50 is out of range (0..1, or 0%..100%)"),
        ("101%", "invalid depool threshold: 101% is out of range (0..1, or 0%..100%)"),
        ("-0.5", "invalid depool threshold: '-0.5' is not a fraction (0..1) or a percentage"),
        ("half", "invalid depool threshold: 'half' is not a fraction (0..1) or a percentage"),
        (".5", "invalid depool threshold: '.5' is not a fraction (0..1) or a percentage"),
        ("0.5 %", "invalid depool threshold: '0.5 %' is not a fraction (0..1) or a percentage"),
        ("", "invalid depool threshold: '' is not a fraction (0..1) or a percentage"),
        ("0.12345", "invalid depool threshold: '0.12345' has more than 4 decimals"),
        ("12.345%", "invalid depool threshold: '12.345%' has more than 2 decimals"),
        ("9" * 40, "invalid depool threshold: 999999999999999999999999..."),
    ],
)
def test_bad_values_are_errors_at_their_line(value: str, message: str) -> None:
    (error,) = _errors(f"\ndepoolthreshold={value}\n" + VIRTUAL)
    assert error.startswith(f"a.cf:2: {message}")
    (error,) = _errors(VIRTUAL + f"\tdepoolthreshold={value}\n")
    assert error.startswith(f"a.cf:3: {message}")


def test_check_config_reports_file_line_and_exits_2(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("depoolthreshold=2\n" + VIRTUAL + "\tdepoolthreshold=0.5.0\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=False, out=out, err=err) == 2
    assert err.getvalue().splitlines() == [
        f"{cf}:1: invalid depool threshold: 2 is out of range (0..1, or 0%..100%)",
        f"{cf}:4: invalid depool threshold: '0.5.0' is not a fraction (0..1) or a percentage",
    ]


def test_misspelt_directive_gets_a_suggestion() -> None:
    assert _errors("depoolthreshhold=0.5\n" + VIRTUAL) == [
        'a.cf:1: unknown directive "depoolthreshhold"; did you mean "depoolthreshold"?'
    ]


def test_json_shows_it(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("depoolthreshold=50%\n" + VIRTUAL + VIRTUAL.replace(":80", ":81"))
    cf.write_text(cf.read_text() + "\tdepoolthreshold=0\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=True, out=out, err=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["global"]["depoolthreshold"] == 0.5
    assert [v["depoolthreshold"] for v in data["virtuals"]] == [0.5, 0.0]
