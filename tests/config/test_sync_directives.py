"""The connection synchronisation directives (lvsmon's own: syncdaemon, syncinterface, syncid,
syncmaxlen, syncgroup, syncport, syncttl): values, defaults, cross checks and diagnostics."""

from __future__ import annotations

import pytest

from lvsmon.config import ConfigError, parse_config
from lvsmon.config.model import Config
from lvsmon.ipvs.sync import SyncDaemon, SyncState

VIRTUAL = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n"


def _parse(text: str) -> Config:
    return parse_config(text + VIRTUAL, "a.cf", check_support=False)


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _parse(text)
    return [str(d) for d in info.value.diagnostics]


def _warnings(config: Config) -> list[str]:
    return [f"{w.line}: {w.message}" for w in config.warnings]


def test_none_by_default() -> None:
    assert _parse("").settings.syncdaemon == ()
    assert _parse("syncdaemon = none\n").settings.syncdaemon == ()


@pytest.mark.parametrize(
    ("mode", "states"),
    [
        ("master", (SyncState.MASTER,)),
        ("backup", (SyncState.BACKUP,)),
        ("both", (SyncState.MASTER, SyncState.BACKUP)),
    ],
)
def test_modes_with_kernel_defaults(mode: str, states: tuple[SyncState, ...]) -> None:
    config = _parse(f"syncdaemon={mode}\nsyncinterface=eth1\n")
    assert config.settings.syncdaemon == tuple(SyncDaemon(s, "eth1") for s in states)
    assert not config.warnings


def test_every_setting() -> None:
    config = _parse(
        "syncdaemon = both\n"
        "syncinterface = bond0.42\n"
        "syncid = 255\n"
        "syncmaxlen = 1400\n"
        "syncgroup = [FF02::8:81]\n"
        "syncport = 8849\n"
        "syncttl = 2\n"
    )
    master, backup = config.settings.syncdaemon
    assert master == SyncDaemon(SyncState.MASTER, "bond0.42", 255, 1400, "ff02::8:81", 8849, 2)
    assert backup.state is SyncState.BACKUP and backup.group == "ff02::8:81"
    v4 = _parse("syncdaemon=master\nsyncinterface=e\nsyncgroup=239.0.0.1\n").settings
    assert v4.syncdaemon[0].group == "239.0.0.1"


def test_an_interface_is_required() -> None:
    assert _errors("syncdaemon = master\n") == [
        "a.cf:1: syncdaemon = master needs syncinterface (the device the sync messages use)"
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("syncdaemon = active", "syncdaemon must be master, backup, both or none, not 'active'"),
        ("syncinterface = eth0:1", "invalid syncinterface 'eth0:1': no device name has / or :"),
        ("syncinterface = a/b", "invalid syncinterface 'a/b': no device name has / or :"),
        ("syncinterface = sixteen-bytes-xx", "at most 15 bytes"),
        ("syncid = 256", "invalid syncid: 256 is out of range (0..255)"),
        ("syncid = -1", "invalid syncid: '-1' is not a number"),
        ("syncmaxlen = 0", "invalid syncmaxlen: 0 is out of range (1..65507)"),
        ("syncgroup = 192.0.2.1", "invalid syncgroup 192.0.2.1: not a multicast address"),
        ("syncgroup = ff02::zz", "invalid syncgroup 'ff02::zz': not an IP address"),
        ("syncport = 65536", "invalid syncport: 65536 is out of range (1..65535)"),
        ("syncttl = 0", "invalid syncttl: 0 is out of range (1..255)"),
    ],
)
def test_bad_values(line: str, message: str) -> None:
    errors = _errors(f"syncdaemon=master\nsyncinterface=eth1\n{line}\n")
    assert len(errors) == 1 and errors[0].startswith("a.cf:3: ") and message in errors[0]


def test_global_only() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(VIRTUAL + "\tsyncdaemon=master\n", "a.cf", check_support=False)
    assert [str(d) for d in info.value.diagnostics] == [
        "a.cf:3: syncdaemon is a global directive; it cannot be used inside a virtual block"
    ]


def test_warnings() -> None:
    config = _parse("syncinterface=eth1\nsyncid=3\n")
    assert _warnings(config) == [
        "1: syncinterface has no effect without syncdaemon",
        "2: syncid has no effect without syncdaemon",
    ]
    small = _parse("syncdaemon=both\nsyncinterface=eth1\nsyncmaxlen=512\n")
    assert _warnings(small) == ["3: syncmaxlen 512: the kernel makes a backup daemon's 1024"]
    assert _warnings(_parse("syncdaemon=master\nsyncinterface=eth1\nsyncmaxlen=512\n")) == []
