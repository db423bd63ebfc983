"""lvsmon's slowstart directive: off (0) by default, whole seconds up to a day, global with
per-virtual overrides, FILE:LINE errors (check-config exit 2), and the JSON view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate 10\n"


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert config.settings.slowstart == 0
    assert config.virtuals[0].slowstart == 0


def test_global_with_per_virtual_overrides() -> None:
    config = _parse(
        "slowstart=30\n"
        + VIRTUAL
        + VIRTUAL.replace(":80", ":81")
        + "\tslowstart=0\n"
        + VIRTUAL.replace(":80", ":82")
        + "\tslowstart=86400\n"
    )
    assert config.settings.slowstart == 30
    assert [v.slowstart for v in config.virtuals] == [30, 0, 86400]


@pytest.mark.parametrize("value", ["-1", "86401", "fast", "", "s30"])
def test_bad_values_are_errors_at_their_line(value: str) -> None:
    (error,) = _errors(f"\nslowstart={value}\n" + VIRTUAL)
    assert error.startswith("a.cf:2: ") and "slow start" in error, error
    (error,) = _errors(VIRTUAL + f"\tslowstart={value}\n")
    assert error.startswith("a.cf:3: ") and "slow start" in error, error


def test_trailing_text_is_a_warning_as_for_every_number() -> None:
    config = _parse("slowstart=30s\n" + VIRTUAL)
    assert config.settings.slowstart == 30
    assert [str(w) for w in config.warnings] == ["a.cf:1: ignoring trailing text 's'"]


def test_check_config_reports_file_line_and_exits_2(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("slowstart=-3\n" + VIRTUAL + "\tslowstart=x\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=False, out=out, err=err) == 2
    lines = err.getvalue().splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{cf}:1", f"{cf}:4"]


def test_misspelt_directive_gets_a_suggestion() -> None:
    assert _errors("slowstrat=5\n" + VIRTUAL) == [
        'a.cf:1: unknown directive "slowstrat"; did you mean "slowstart"?'
    ]


def test_json_shows_it(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("slowstart=20\n" + VIRTUAL + VIRTUAL.replace(":80", ":81") + "\tslowstart=0\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=True, out=out, err=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["global"]["slowstart"] == 20
    assert [v["slowstart"] for v in data["virtuals"]] == [20, 0]
