"""lvsmon's removedrain and deadconns directives (issue 25 point 3): off (0, keep) by default,
global with per-virtual overrides, FILE:LINE errors, and the expire_nodest_conn warning's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsmon.config import ConfigError, parse_config
from lvsmon.config.model import Config, DeadConns
from lvsmon.config.removalconf import expire_nodest_conn_warning, read_expire_nodest_conn

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n"


def _parse(text: str) -> Config:
    return parse_config(text, "a.cf", check_support=False)


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    return [str(d) for d in info.value.diagnostics]


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert (config.settings.removedrain, config.settings.deadconns) == (0, DeadConns.KEEP)
    assert (config.virtuals[0].removedrain, config.virtuals[0].deadconns) == (0, DeadConns.KEEP)
    assert config.warnings == ()


def test_global_value_and_per_virtual_overrides() -> None:
    config = _parse(
        "removedrain=30\ndeadconns=expire\n"
        + VIRTUAL
        + VIRTUAL.replace(":80", ":81")
        + "\tremovedrain=0\n"
        + VIRTUAL.replace(":80", ":82")
        + "\tdeadconns=KEEP\n"
    )
    assert [(v.removedrain, v.deadconns) for v in config.virtuals] == [
        (30, DeadConns.EXPIRE),
        (0, DeadConns.EXPIRE),
        (30, DeadConns.KEEP),
    ]


def test_a_global_line_appended_after_the_virtuals_counts() -> None:
    # compatibility.md: lvsmon's copy of a file shared with ldirectord, lines appended at the end
    config = _parse(VIRTUAL + "removedrain = 10\ndeadconns = expire\n")
    assert (config.virtuals[0].removedrain, config.virtuals[0].deadconns) == (
        10,
        DeadConns.EXPIRE,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("removedrain=-1", "remove drain"),
        ("removedrain=86401", "remove drain"),
        ("removedrain=soon", "remove drain"),
        ("deadconns=maybe", "deadconns must be keep or expire, not 'maybe'"),
        ("deadconns=", "deadconns must be keep or expire"),
    ],
)
def test_bad_values_are_file_line_errors(line: str, message: str) -> None:
    errors = _errors(VIRTUAL + f"\t{line}\n")
    assert len(errors) == 1
    assert errors[0].startswith("a.cf:3: ")
    assert message in errors[0]


def test_expire_nodest_conn_warning() -> None:
    assert expire_nodest_conn_warning([], 0) is None
    assert expire_nodest_conn_warning(["udp:192.0.2.1:53"], 1) is None
    text = expire_nodest_conn_warning(["udp:192.0.2.1:53"], 0, "/x")
    assert text is not None
    assert text.startswith("deadconns=expire (udp:192.0.2.1:53) needs")
    assert "/x is 0" in text and "sysctl -w net.ipv4.vs.expire_nodest_conn=1" in text
    text = expire_nodest_conn_warning([f"v{i}" for i in range(5)], None, "/x")
    assert text is not None and "(v0, v1, v2 and 2 more)" in text and "cannot be read" in text


def test_read_expire_nodest_conn(tmp_path: Path) -> None:
    f = tmp_path / "expire_nodest_conn"
    f.write_text("1\n")
    assert read_expire_nodest_conn(str(f)) == 1
    f.write_text("junk")
    assert read_expire_nodest_conn(str(f)) is None
    assert read_expire_nodest_conn(str(tmp_path / "none")) is None


@pytest.mark.parametrize(("value", "warned"), [(0, True), (None, True), (1, False)])
def test_check_config_warns_when_deadconns_expire_meets_a_kernel_that_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: int | None, warned: bool
) -> None:
    import io

    from lvsmon.config import removalconf
    from lvsmon.config.checkconf import check_config

    path = tmp_path / "l.cf"
    path.write_text("checktimeout=3\n" + VIRTUAL + "\tdeadconns=expire\n")
    monkeypatch.setattr(removalconf, "read_expire_nodest_conn", lambda: value)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=False, out=out, err=err) == 0  # a warning only
    line = f"{path}:2: warning: deadconns=expire (tcp:192.0.2.1:80) needs "
    assert err.getvalue().startswith(line) is warned, err.getvalue()
    assert ("fix: sysctl -w net.ipv4.vs.expire_nodest_conn=1" in err.getvalue()) is warned
