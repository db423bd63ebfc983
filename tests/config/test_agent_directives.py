"""lvsmon's agent check directives (issue 25 point 1): off by default, global with per-virtual
overrides each alone, defaults from the virtual's checkinterval and checktimeout, FILE:LINE
errors, and a warning for settings without an agent port."""

from __future__ import annotations

import pytest

from lvsmon.config.agentsettings import AgentConf
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate 10\n"


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert config.virtuals[0].agent is None
    assert config.warnings == ()


def test_port_0_is_off() -> None:
    assert _parse("agentport = 0\n" + VIRTUAL).virtuals[0].agent is None
    assert _parse("agentport = 7000\n" + VIRTUAL + "\tagentport = 0\n").virtuals[0].agent is None


def test_defaults_follow_the_virtuals_check_settings() -> None:
    config = _parse("checkinterval = 7\n" + VIRTUAL + "\tagentport = 7000\n\tchecktimeout = 2\n")
    assert config.virtuals[0].agent == AgentConf(7000, 7, 2, "", 3)


def test_global_values_and_per_virtual_overrides() -> None:
    config = _parse(
        'agentport = 7000\nagentinterval = 4\nagentsend = "load\\n"\nagentfail = ignore\n'
        + VIRTUAL
        + VIRTUAL.replace(":80", ":81")
        + "\tagentport = 7001\n\tagenttimeout = 9\n\tagentfail = keep 7\n"
    )
    assert [v.agent for v in config.virtuals] == [
        AgentConf(7000, 4, 5, "load\\n", 0),
        AgentConf(7001, 4, 9, "load\\n", 7),
    ]


def test_a_global_line_appended_after_the_virtuals_counts() -> None:
    config = _parse(VIRTUAL + "agentport = 7000\nagentfail = keep\n")
    agent = config.virtuals[0].agent
    assert agent is not None and (agent.port, agent.failkeep) == (7000, 3)


def test_agentsend_without_quotes_and_bound() -> None:
    config = _parse(VIRTUAL + "\tagentport = 7000\n\tagentsend = ping\\r\\n\n")
    assert config.virtuals[0].agent is not None
    assert config.virtuals[0].agent.send == "ping\\r\\n"
    long = "x" * 1025
    assert _errors(VIRTUAL + f"\tagentport = 7000\n\tagentsend = {long}\n") == [
        "a.cf:4: agentsend is longer than 1024 bytes"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("agentport = 70000", "invalid agentport: 70000 is out of range (0..65535)"),
        ("agentport = -1", "agentport"),
        ("agentinterval = 0", "agentinterval"),
        ("agenttimeout = x", "agenttimeout"),
        ("agentfail = maybe", "agentfail must be keep, keep N or ignore, not 'maybe'"),
        ("agentfail = keep 0", "agentfail keep"),
        ("agentfail = keep 1 2", "agentfail must be keep, keep N or ignore"),
    ],
)
def test_bad_values_are_one_line_errors(line: str, message: str) -> None:
    errors = _errors(VIRTUAL + f"\tagentport = 7000\n\t{line}\n")
    assert len(errors) == 1
    assert errors[0].startswith("a.cf:4: ")
    assert message in errors[0]


def test_settings_without_a_port_warn() -> None:
    config = _parse(VIRTUAL + "\tagentinterval = 3\n")
    assert [(w.line, w.message) for w in config.warnings] == [
        (3, "agentinterval has no effect without agentport")
    ]


def test_check_config_exits_2(tmp_path: object) -> None:
    import io
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    path = tmp_path / "bad.cf"
    path.write_text(VIRTUAL + "\tagentport = 7000\n\tagentfail = never\n")
    from lvsmon.config.checkconf import check_config

    err = io.StringIO()
    assert check_config(str(path), as_json=False, out=io.StringIO(), err=err) == 2
    assert err.getvalue().strip().splitlines() == [
        f"{path}:4: agentfail must be keep, keep N or ignore, not 'never'"
    ]
