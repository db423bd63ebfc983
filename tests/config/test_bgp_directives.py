"""lvsmon's BGP directives (config/bgpconf.py): off by default, the speaker global, the VIP's
settings global with per-virtual overrides, one-line FILE:LINE errors (check-config exit 2)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lvsmon.config.bgpsettings import NO_BGP, BgpVirtual, MinUp
from lvsmon.config.checkconf import check_config
from lvsmon.config.model import Config
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n\tscheduler=mh\n"


def _warnings(config: Config) -> list[str]:
    return [f"{w.line}: {w.message}" for w in config.warnings]


def test_off_by_default() -> None:
    config = _parse(VIRTUAL)
    assert config.settings.bgp == NO_BGP and not config.settings.bgp.enabled
    assert config.virtuals[0].bgp is None
    assert config.warnings == ()


def test_global_speaker_defaults_and_per_virtual_overrides() -> None:
    config = _parse(
        "bgp=bird\nbgptable=300\nbgpprotocol=99\nbgpdrain=8\nbgprequire=any\n"
        "bgpmed=50\nbgpminup=2\nbgpholddown=30\n"
        + VIRTUAL
        + VIRTUAL.replace(":80", ":81")
        + "\tbgpmed=150\n\tbgpminup=50%\n\tbgpholddown=0\n"
        + VIRTUAL.replace(":80", ":82")
        + "\tbgp=no\n"
        + "virtual=7\n\treal=192.0.2.2 gate\n"
    )
    g = config.settings.bgp
    assert (g.mode, g.table, g.protocol, g.drain, g.require) == ("bird", 300, 99, 8, "any")
    assert [v.bgp for v in config.virtuals] == [
        BgpVirtual(50, MinUp(2), 30, ()),
        BgpVirtual(150, MinUp(share=0.5), 0, ()),
        None,  # opted out
        None,  # a firewall mark has no address to announce
    ]


def test_exabgp_with_communities(tmp_path: Path) -> None:
    neighbours = tmp_path / "exabgp.conf"
    neighbours.write_text("neighbor 10.0.0.1 { }\n")
    config = _parse(
        f"bgp=exabgp\nbgpexabgpconf={neighbours}\nbgpcommunity=65000:1 65000:2 65000:1\n" + VIRTUAL
    )
    assert config.settings.bgp.exabgpconf == str(neighbours)
    assert config.virtuals[0].bgp == BgpVirtual(communities=("65000:1", "65000:2"))
    assert config.warnings == ()  # exabgp is installed (tests/debian-packages.txt)
    errors = _errors(f"bgp=exabgp\nbgpexabgpconf={tmp_path}/missing.conf\n" + VIRTUAL)
    assert errors == [f"a.cf:2: bgpexabgpconf {tmp_path}/missing.conf: no such readable file"]


def test_warnings_for_settings_without_effect() -> None:
    config = _parse("bgpmed=5\n" + VIRTUAL)
    assert _warnings(config) == ["1: bgpmed has no effect without bgp = bird|exabgp"]
    config = _parse("bgp=bird\nbgpcommunity=65000:1\n" + VIRTUAL)
    assert _warnings(config) == [
        "2: bgpcommunity has no effect with bgp = bird: BIRD's export filter sets communities"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bgp=quagga\n", "a.cf:1: bgp must be no, bird or exabgp, not 'quagga'"),
        ("bgp=bird\nbgptable=254\n", "a.cf:2: bgptable 254 is one of the kernel's own tables"),
        ("bgp=bird\nbgptable=4294967296\n", "a.cf:2: invalid bgptable: 4294967296 is out of range"),
        ("bgp=bird\nbgpprotocol=4\n", "a.cf:2: invalid bgpprotocol: 4 is out of range (5..255)"),
        ("bgp=bird\nbgpmed=4294967295\n", "a.cf:2: invalid bgpmed: 4294967295 is out of range"),
        ("bgp=bird\nbgpminup=0\n", "a.cf:2: invalid bgpminup: 0 is out of range"),
        ("bgp=bird\nbgpminup=0%\n", "a.cf:2: invalid bgpminup: a share must be above 0"),
        ("bgp=bird\nbgpminup=150%\n", "a.cf:2: invalid bgpminup: 150% is out of range"),
        ("bgp=bird\nbgpdrain=60\n", "a.cf:2: invalid bgpdrain: 60 is out of range (0..20)"),
        ("bgp=bird\nbgprequire=most\n", "a.cf:2: bgprequire must be all or any, not 'most'"),
        ("bgp=bird\nbgpcommunity=65536:1\n", "a.cf:2: invalid bgpcommunity '65536:1'"),
        ("bgp=bird\nbgpcommunity=no-export\n", "a.cf:2: invalid bgpcommunity 'no-export'"),
        ("bgp=exabgp\n", "a.cf:1: bgp = exabgp needs bgpexabgpconf"),
        ("bgp=exabgp\nbgpexabgpconf=x.conf\n", "a.cf:2: bgpexabgpconf must be an absolute path"),
        (
            "bgp=bird\n" + VIRTUAL + "\tbgp=exabgp\n",
            "a.cf:5: bgp = exabgp in a virtual: the global bgp (bird) chooses the speaker",
        ),
        (VIRTUAL + "\tbgp=bird\n", "a.cf:4: bgp = bird in a virtual: the global bgp (no)"),
        (VIRTUAL + "\tbgptable=300\n", "a.cf:4: bgptable is a global directive"),  # global only
    ],
)
def test_errors_are_one_line_each(text: str, message: str) -> None:
    errors = _errors(text if VIRTUAL in text else text + VIRTUAL)
    assert any(e.startswith(message) for e in errors), errors
    assert all("\n" not in e for e in errors)


def test_check_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bgp.cf"
    path.write_text("bgp=bird\nbgpminup=none\n" + VIRTUAL)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=False, out=out, err=err) == 2
    assert err.getvalue().startswith(f"{path}:2: invalid bgpminup")


def test_global_lines_appended_after_the_virtuals_count() -> None:
    # compatibility.md: lvsmon's copy of a file shared with ldirectord, lines appended at the end
    config = _parse(VIRTUAL + VIRTUAL.replace(":80", ":81") + "bgp = bird\nbgpminup = 2\n")
    assert config.settings.bgp.mode == "bird"
    assert [v.bgp for v in config.virtuals] == [BgpVirtual(minup=MinUp(2))] * 2
