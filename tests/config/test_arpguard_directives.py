"""lvsmon's arpguard and arpguardinterval directives: off by default, global with per-virtual
overrides, FILE:LINE errors (check-config exit 2), and the JSON view."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from lvsmon.config import parse_config
from lvsmon.config.checkconf import check_config
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n"


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert (config.settings.arpguard, config.settings.arpguardinterval) == (False, 10)
    assert (config.virtuals[0].arpguard, config.virtuals[0].arpguardinterval) == (False, 10)
    assert config.warnings == ()


def test_global_value_and_per_virtual_overrides() -> None:
    config = _parse(
        "arpguard=yes\narpguardinterval=30\n"
        + VIRTUAL
        + VIRTUAL.replace(":80", ":81")
        + "\tarpguard=no\n"
        + VIRTUAL.replace(":80", ":82")
        + "\tarpguardinterval=5\n"
    )
    assert (config.settings.arpguard, config.settings.arpguardinterval) == (True, 30)
    assert [(v.arpguard, v.arpguardinterval) for v in config.virtuals] == [
        (True, 30),
        (False, 30),
        (True, 5),
    ]


def test_per_virtual_only() -> None:
    config = _parse(VIRTUAL + "\tarpguard=yes\n" + VIRTUAL.replace(":80", ":81"))
    assert config.settings.arpguard is False
    assert [v.arpguard for v in config.virtuals] == [True, False]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("arpguard=maybe", "arpguard must be"),
        ("arpguard=", "arpguard must be"),
        ("arpguardinterval=0", "invalid arp guard interval"),
        ("arpguardinterval=-3", "invalid arp guard interval"),
        ("arpguardinterval=ten", "invalid arp guard interval"),
        ("arpguardinterval=" + "9" * 40, "invalid arp guard interval"),
    ],
)
def test_bad_values_are_errors_at_their_line(line: str, message: str) -> None:
    (error,) = _errors(f"\n{line}\n" + VIRTUAL)
    assert error.startswith(f"a.cf:2: {message}"), error
    (error,) = _errors(VIRTUAL + f"\t{line}\n")
    assert error.startswith(f"a.cf:3: {message}"), error


def test_check_config_reports_file_line_and_exits_2(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("arpguard=ja\n" + VIRTUAL + "\tarpguardinterval=0\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=False, out=out, err=err) == 2
    lines = err.getvalue().splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [f"{cf}:1", f"{cf}:4"], lines
    assert all(len(line.split("\n")) == 1 for line in lines)


def test_misspelt_directive_gets_a_suggestion() -> None:
    assert _errors("arpgaurd=yes\n" + VIRTUAL) == [
        'a.cf:1: unknown directive "arpgaurd"; did you mean "arpguard"?'
    ]


def test_json_shows_it(tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    cf.write_text("arpguard=yes\n" + VIRTUAL + "\tarpguardinterval=3\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(cf), as_json=True, out=out, err=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["global"]["arpguard"] is True
    assert [(v["arpguard"], v["arpguardinterval"]) for v in data["virtuals"]] == [(True, 3)]


def test_a_global_line_appended_after_the_virtuals_counts() -> None:
    # compatibility.md: lvsmon's copy of a file shared with ldirectord, lines appended at the end
    config = _parse(
        VIRTUAL + VIRTUAL.replace(":80", ":81") + "arpguard = yes\narpguardinterval = 4\n"
    )
    assert [(v.arpguard, v.arpguardinterval) for v in config.virtuals] == [(True, 4), (True, 4)]


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (
            "virtual=192.0.2.9:80\n\treal=192.0.2.2:80 masq\n",
            "it has no gate (direct routing) real",
        ),
        ("virtual=7\n\treal=192.0.2.2 gate\n", "a firewall-mark virtual has no VIP to ask ARP for"),
        (
            "virtual6=[2001:db8::1]:80\n\treal6=[2001:db8::2]:80 gate\n",
            "IPv6 neighbour discovery is not probed",
        ),
    ],
)
def test_arpguard_that_cannot_act_is_a_warning(block: str, why: str) -> None:
    config = _parse(block + "\tarpguard=yes\n")
    assert [str(w) for w in config.warnings] == [f"a.cf:3: arpguard has no effect here: {why}"]
    config = _parse("arpguard=yes\n" + block)
    assert [str(w) for w in config.warnings] == [
        "a.cf:1: arpguard has no effect: no IPv4 virtual with a gate real has it on"
    ]
    # one virtual it can guard is enough for the global line; no warning for the others
    assert _parse("arpguard=yes\n" + block + VIRTUAL).warnings == ()


def test_incremental_parse_gives_the_same_warnings() -> None:
    from lvsmon.config.incremental import BlockCache

    text = (
        "arpguard=yes\nvirtual=192.0.2.1:80\n\treal=192.0.2.2:80 masq\n\tarpguard=yes\n"
        "virtual=7\n\treal=192.0.2.2 gate\n"
    )
    full = _parse(text)
    cache = BlockCache()
    for _ in range(2):  # cold, then warm
        again = parse_config(text, "a.cf", check_support=False, cache=cache)
        assert again == full and again.warnings == full.warnings
    assert len(full.warnings) == 2
