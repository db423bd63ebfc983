"""The director's sysctls for checks through the VIP (issue 23 point 3), on a stand-in /proc and
route table: accept_local on the interface toward the real (or all), rp_filter 0 or 2 (the larger
of all and the interface's); one clear error per sysctl naming it and the fix; check-config
exits 2 with them as FILE:LINE lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lvsmon.config import ConfigError, parse_config, probehost
from lvsmon.config.checkconf import check_config
from lvsmon.config.model import Config

CONFIG = (
    "virtual=10.30.0.100:80\n"
    "\tservice=http\n"
    "\tcheckpath=vip\n"
    "\treal=10.30.0.11:80 gate\n"
    "\treal=10.30.0.12:80 gate\n"
    "\treal=10.40.0.13:80 ipip\n"
    "\treal=10.30.0.14:80 masq\n"
    "virtual=10.30.0.101:80\n"
    "\tservice=http\n"
    "\treal=10.50.0.1:80 gate\n"
)
DEVS = {"10.30.0.11": "eth1", "10.30.0.12": "eth1", "10.40.0.13": "eth2", "10.50.0.1": "eth3"}


def _proc(root: Path, values: dict[str, dict[str, int]]) -> str:
    for dev, settings in values.items():
        d = root / "sys/net/ipv4/conf" / dev
        d.mkdir(parents=True, exist_ok=True)
        for name, value in settings.items():
            (d / name).write_text(f"{value}\n")
    return str(root)


def _problems(config: Config, proc: str) -> list[str]:
    asked: list[str] = []

    def dev_toward(address: str) -> str | None:
        asked.append(address)
        return DEVS.get(address)

    found = probehost.problems(config, proc=proc, dev_toward=dev_toward)
    # the masq real and the virtual with checkpath=real are not looked at
    assert set(asked) <= {"10.30.0.11", "10.30.0.12", "10.40.0.13"}
    return [f"{line}: {message}" for line, message in found]


GOOD = {
    "all": {"accept_local": 0, "rp_filter": 0},
    "eth1": {"accept_local": 1, "rp_filter": 2},
    "eth2": {"accept_local": 1, "rp_filter": 0},
    "eth3": {"accept_local": 0, "rp_filter": 1},  # not toward a VIP-path real
}


def test_a_ready_director_has_nothing_to_say(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "l.cf")
    assert _problems(config, _proc(tmp_path, GOOD)) == []


def test_accept_local_on_all_is_enough(tmp_path: Path) -> None:
    values = {**GOOD, "all": {"accept_local": 1, "rp_filter": 0}, "eth1": {"accept_local": 0}}
    assert _problems(parse_config(CONFIG, "l.cf"), _proc(tmp_path, values)) == []


def test_accept_local_off(tmp_path: Path) -> None:
    values = {**GOOD, "eth1": {"accept_local": 0, "rp_filter": 0}}
    assert _problems(parse_config(CONFIG, "l.cf"), _proc(tmp_path, values)) == [
        "1: checkpath=vip needs net.ipv4.conf.eth1.accept_local=1 (it is 0): the answer "
        "through the VIP comes from the VIP, a local address, and is dropped as a martian on "
        "eth1 toward 10.30.0.11; fix: sysctl -w net.ipv4.conf.eth1.accept_local=1"
    ]


@pytest.mark.parametrize("scope", ["all", "eth2"])
def test_strict_rp_filter(tmp_path: Path, scope: str) -> None:
    values = {**GOOD, scope: {**GOOD[scope], "rp_filter": 1}}
    found = _problems(parse_config(CONFIG, "l.cf"), _proc(tmp_path, values))
    # all=1 is reported once, at the first real it concerns
    real = "10.30.0.11" if scope == "all" else "10.40.0.13"
    dev = "eth1" if scope == "all" else "eth2"
    assert found == [
        f"1: checkpath=vip needs rp_filter 0 or 2 on {dev} toward {real} "
        f"(net.ipv4.conf.{scope}.rp_filter is 1, strict: the answer from the VIP fails the "
        f"reverse-path check); fix: sysctl -w net.ipv4.conf.{scope}.rp_filter=2"
    ]


def test_no_route_and_no_proc_say_nothing(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "l.cf")
    assert probehost.problems(config, proc=str(tmp_path), dev_toward=lambda a: None) == []
    assert probehost.problems(config, proc=str(tmp_path / "none"), dev_toward=DEVS.get) == []


def test_check_config_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = _proc(tmp_path / "proc", {**GOOD, "eth1": {"accept_local": 0, "rp_filter": 1}})
    monkeypatch.setattr(probehost, "PROC", proc)
    monkeypatch.setattr(probehost, "route_dev", DEVS.get)
    path = tmp_path / "l.cf"
    path.write_text(CONFIG)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=False, out=out, err=err) == 2
    lines = err.getvalue().splitlines()
    assert [line.split(": checkpath=vip needs ")[0] for line in lines] == [f"{path}:1"] * 2
    assert "net.ipv4.conf.eth1.accept_local=1" in lines[0]
    assert "net.ipv4.conf.eth1.rp_filter=2" in lines[1]
    # fixed: valid
    _proc(tmp_path / "proc", GOOD)
    assert check_config(str(path), as_json=False, out=out, err=io.StringIO()) == 0


def test_start_refuses_an_unready_director(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lvsmon.cli import control

    proc = _proc(tmp_path / "proc", {**GOOD, "eth1": {"accept_local": 0, "rp_filter": 0}})
    monkeypatch.setattr(probehost, "PROC", proc)
    monkeypatch.setattr(probehost, "route_dev", DEVS.get)
    launched: list[object] = []

    def serve(*args: object) -> int:
        launched.append(args)
        return 0

    monkeypatch.setattr(control, "serve", serve)
    path = tmp_path / "l.cf"
    path.write_text(CONFIG)
    ctl = control.Control(str(path), "l.cf", pid_file=str(tmp_path / "l.pid"), foreground=True)
    assert ctl.start() == 2
    assert launched == []
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:1: checkpath=vip needs net.ipv4.conf.eth1.accept_local=1")
    # the memory backend touches no kernel: nothing to need
    dry = control.Control(
        str(path), "l.cf", backend="memory", pid_file=str(tmp_path / "l.pid"), foreground=True
    )
    assert dry.start() == 0
    assert len(launched) == 1


async def test_a_reload_checks_them_as_start_does(tmp_path: Path) -> None:
    """The watcher of a daemon on a kernel backend parses through parse_ready: a reload whose
    checks through the VIP the kernel would drop is refused with the same FILE:LINE lines (the
    running config stays), and once the sysctl is fixed the same file applies."""
    from lvsmon.config.watch import ConfigWatcher

    cf = tmp_path / "l.cf"
    cf.write_text(CONFIG)
    values = {**GOOD, "eth1": {"accept_local": 0, "rp_filter": 0}}
    proc = _proc(tmp_path / "proc", values)
    parse = probehost.parse_ready(parse_config, proc=proc, dev_toward=DEVS.get)
    watcher = ConfigWatcher(str(cf), "running", parse=parse)
    refused = await watcher.load_now()
    assert isinstance(refused, ConfigError)
    assert [str(d) for d in refused.diagnostics] == [
        f"{cf}:1: checkpath=vip needs net.ipv4.conf.eth1.accept_local=1 (it is 0): the answer "
        "through the VIP comes from the VIP, a local address, and is dropped as a martian on "
        "eth1 toward 10.30.0.11; fix: sysctl -w net.ipv4.conf.eth1.accept_local=1"
    ]
    _proc(tmp_path / "proc", GOOD)
    loaded = await watcher.load_now()
    assert isinstance(loaded, Config) and len(loaded.virtuals) == 2


def test_the_daemon_checks_them_on_reload_only_on_a_kernel_backend() -> None:
    from lvsmon.daemon.daemon import Daemon
    from lvsmon.ipvs.memory import MemoryBackend

    class KernelLike(MemoryBackend):
        name = "netlink"

    config = parse_config(CONFIG, "l.cf")
    assert Daemon(config, MemoryBackend()).watcher._parse is parse_config
    assert Daemon(config, KernelLike()).watcher._parse.__qualname__.startswith("parse_ready")
