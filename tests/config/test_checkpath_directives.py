"""lvsmon's checkpath and checkmarkbase directives (issue 23): real by default, global with
per-virtual overrides, which reals a VIP path applies to, and FILE:LINE errors (check-config
exit 2) for what cannot be checked through the VIP."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from lvsmon.config.checkpathconf import PROBE_MARKS, path_of, probe_needs
from lvsmon.config.model import DEFAULT_CHECKMARKBASE, CheckPath
from lvsmon.ipvs.model import Forward
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

VIRTUAL = (
    "virtual=192.0.2.1:80\n"
    "\treal=192.0.2.2:80 gate\n"
    "\treal=192.0.2.3:80 ipip\n"
    "\treal=192.0.2.4:80 masq\n"
    "\tservice=http\n"
)


def test_real_by_default() -> None:
    config = _parse(VIRTUAL)
    assert config.settings.checkpath is CheckPath.REAL
    assert config.settings.checkmarkbase == DEFAULT_CHECKMARKBASE == 0x4C560000
    assert config.virtuals[0].checkpath is CheckPath.REAL
    assert probe_needs(config.virtuals) == set()


def test_global_and_per_virtual() -> None:
    config = _parse(
        "checkpath=vip\n"
        + VIRTUAL
        + VIRTUAL.replace(":80", ":81")
        + "\tcheckpath=both\n"
        + VIRTUAL.replace(":80", ":82")
        + "\tcheckpath = REAL\n"
    )
    assert config.settings.checkpath is CheckPath.VIP
    assert [v.checkpath for v in config.virtuals] == [CheckPath.VIP, CheckPath.BOTH, CheckPath.REAL]


def test_gate_and_ipip_go_through_the_vip_masq_keeps_its_address() -> None:
    v = _parse(VIRTUAL + "\tcheckpath=vip\n").virtuals[0]
    assert [path_of(v, r) for r in v.reals] == [CheckPath.VIP, CheckPath.VIP, CheckPath.REAL]
    assert probe_needs([v]) == {("192.0.2.2", Forward.GATE), ("192.0.2.3", Forward.IPIP)}


@pytest.mark.parametrize(
    "lines",
    [
        "\tchecktype=ping\n",
        "\tchecktype=external\n\tcheckcommand=/bin/true\n",
        "\tchecktype=on\n",
        "\tchecktype=off\n",
        "\tprotocol=udp\n\tchecktype=connect\n",  # a connect check of UDP is a ping
    ],
)
def test_checks_that_are_no_connection_keep_the_real_address(lines: str) -> None:
    v = _parse(VIRTUAL.replace("\tservice=http\n", "") + lines + "\tcheckpath=vip\n").virtuals[0]
    assert {path_of(v, r) for r in v.reals} == {CheckPath.REAL}
    assert probe_needs([v]) == set()


def test_connect_and_combined_checks_go_through_the_vip() -> None:
    for checktype in ("connect", "3"):
        text = VIRTUAL + f"\tchecktype={checktype}\n\tcheckpath=both\n"
        v = _parse(text).virtuals[0]
        assert path_of(v, v.reals[0]) is CheckPath.BOTH


def test_checkmarkbase() -> None:
    assert _parse("checkmarkbase=100\n" + VIRTUAL).settings.checkmarkbase == 100
    top = 0xFFFFFFFF - PROBE_MARKS + 1
    assert _parse(f"checkmarkbase={top}\n" + VIRTUAL).settings.checkmarkbase == top


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("checkpath=rip\n" + VIRTUAL, "a.cf:1: checkpath must be real, vip or both, not 'rip'"),
        (VIRTUAL + "\tcheckpath=\n", "a.cf:6: checkpath must be real, vip or both, not ''"),
        ("checkmarkbase=0\n" + VIRTUAL, "a.cf:1: invalid checkmarkbase: 0 is out of range"),
        (
            f"checkmarkbase={0xFFFFFFFF}\n" + VIRTUAL,
            f"a.cf:1: invalid checkmarkbase: {0xFFFFFFFF} is out of range",
        ),
        (VIRTUAL + "\tcheckmarkbase=5\n", "a.cf:6: "),  # global only
    ],
)
def test_bad_values(text: str, message: str) -> None:
    errors = _errors(text)
    assert len(errors) == 1
    assert errors[0].startswith(message), errors


def test_overlap_with_a_configured_fwmark_virtual_is_an_error() -> None:
    fwm = "virtual=1280704600\n\treal=192.0.2.9 gate\n\tchecktype=connect\n\tcheckport=80\n"
    assert _errors(VIRTUAL + "\tcheckpath=vip\n" + fwm) == [
        "a.cf:7: firewall mark 1280704600 lies in the marks reserved for probe services "
        "(checkmarkbase 1280704512..1280770047): move checkmarkbase or this virtual"
    ]
    # moved out of the way, or nothing checked through the VIP: no error
    _parse("checkmarkbase=100000\n" + VIRTUAL + "\tcheckpath=vip\n" + fwm)
    _parse(VIRTUAL + fwm)


def test_a_fwmark_virtual_has_no_vip_to_connect_to() -> None:
    fwm = "virtual=7\n\treal=192.0.2.9 gate\n\tchecktype=connect\n\tcheckport=80\n"
    assert _errors(fwm + "\tcheckpath=vip\n") == [
        "a.cf:1: checkpath=vip needs the virtual's address to connect to; fwm:7 is a "
        "firewall mark: set checkpath=real in it"
    ]


@pytest.mark.parametrize(
    ("lines", "why"),
    [
        (
            '\tservice=mysql\n\tlogin="a"\n\tpasswd="b"\n\tdatabase="c"\n',
            "service=mysql (its library",
        ),
        ("\tservice=smtp\n", "service=smtp (its library"),
        ('\tprotocol=udp\n\tservice=dns\n\trequest="a.example"\n', "service=dns over UDP"),
    ],
)
def test_services_that_open_their_own_connection_are_refused(lines: str, why: str) -> None:
    text = VIRTUAL.replace("\tservice=http\n", "") + lines + "\tcheckpath=both\n"
    errors = _errors(text)
    assert len(errors) == 1
    assert errors[0].startswith(f"a.cf:1: checkpath=both: {why}"), errors
    assert errors[0].endswith(
        "cannot be checked through the VIP; set checkpath=real in this virtual"
    )


def test_a_refused_service_with_masq_reals_only_is_fine() -> None:
    text = "virtual=192.0.2.1:25\n\treal=192.0.2.4:25 masq\n\tservice=smtp\n\tcheckpath=vip\n"
    _parse(text)


def test_check_config_exit_2_one_line_per_error(tmp_path: Path) -> None:
    path = tmp_path / "l.cf"
    path.write_text(VIRTUAL.replace("\tservice=http\n", "\tservice=ftp\n") + "\tcheckpath=vip\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=False, out=out, err=err) == 2
    lines = err.getvalue().splitlines()
    assert lines == [
        f"{path}:1: checkpath=vip: service=ftp (its library opens its own connection) cannot "
        "be checked through the VIP; set checkpath=real in this virtual"
    ]


def test_json_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from lvsmon.config import probehost

    monkeypatch.setattr(probehost, "route_dev", lambda address: None)  # not this host's sysctls
    path = tmp_path / "l.cf"
    path.write_text("checkmarkbase=4096\n" + VIRTUAL + "\tcheckpath=both\n")
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=True, out=out, err=err) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert data["global"]["checkpath"] == "real"
    assert data["global"]["checkmarkbase"] == 4096
    assert data["virtuals"][0]["checkpath"] == "both"
