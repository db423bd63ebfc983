"""The API other parts use: load_config/parse_config, digest, model helpers, error shapes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lvsmon.config import (
    CheckType,
    ConfigError,
    Service,
    VirtualProtocol,
    load_config,
    parse_config,
)
from lvsmon.config.lexer import MAX_LINE_BYTES
from lvsmon.ipvs.model import DestKey, Family, Forward, ServiceKey

BASIC = """\
virtual=192.168.6.240:80
\treal=192.168.6.2:80 gate 2
\tpersistent=300
\tnetmask=255.255.255.0
\tschedflags=sh-port,sh-fallback
\tscheduler=sh
"""


def test_load_config_digest_is_of_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "ldirectord.cf"
    path.write_bytes(BASIC.encode())
    config = load_config(str(path))
    assert config.path == str(path)
    assert config.digest == hashlib.sha256(BASIC.encode()).hexdigest()
    assert parse_config(BASIC, "x.cf").digest == config.digest


def test_model_is_immutable_and_keyed() -> None:
    config = parse_config(BASIC, "x.cf")
    (v,) = config.virtuals
    assert v.key == ServiceKey.inet("tcp", "192.168.6.240", 80)
    assert v.service_conf.persistent == 300
    assert v.service_conf.netmask == "255.255.255.0"
    assert v.service_conf.sched_flags == frozenset({"sh-port", "sh-fallback"})
    assert v.name == "tcp:192.168.6.240:80"
    (r,) = v.reals
    assert (r.address, r.port, r.forward, r.weight) == ("192.168.6.2", 80, Forward.GATE, 2)
    assert v.check_port(r) == 80
    with pytest.raises(AttributeError):
        v.port = 81  # type: ignore[misc]


def test_fwmark_keys_and_check_port() -> None:
    text = "virtual6=100\n\treal6=[2001:db8::2] gate\n\tservice=http\n"
    (v,) = parse_config(text, "x.cf").virtuals
    assert v.protocol is VirtualProtocol.FWM
    assert v.key == ServiceKey.fwm(100, Family.INET6)
    assert v.name == "fwm6:100"
    (r,) = v.reals
    assert r.port == 0
    assert v.check_port(r) == 80  # the service's well-known port


def test_unsupported_service_can_still_be_parsed() -> None:
    text = "virtual=192.168.6.240:25\n\treal=192.168.6.2 gate\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.cf")
    assert "service=smtp is not supported" in str(info.value)
    (v,) = parse_config(text, "x.cf", check_support=False).virtuals
    assert v.service is Service.SMTP
    assert v.checktype is CheckType.NEGOTIATE


def test_all_errors_are_collected_in_line_order() -> None:
    text = "bogus=1\nvirtual=192.168.6.240:80\n\treal=192.168.6.2 nowhere\n\tchecktype=x\nfoo\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.cf")
    assert [d.line for d in info.value.diagnostics] == [1, 3, 4, 5]
    assert str(info.value).splitlines()[0].startswith("x.cf:1: ")


def test_huge_line_is_an_error_not_a_hang() -> None:
    text = 'virtual=192.168.6.240:80\n\treceive="' + "a" * (MAX_LINE_BYTES + 1) + '"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.cf")
    assert info.value.diagnostics[0].line == 2


def test_global_fallback_reaches_fwmark_virtuals() -> None:
    text = "fallback=127.0.0.1\nvirtual=9\n\treal=192.168.6.2 gate\n\tchecktype=connect\n"
    (v,) = parse_config(text, "x.cf").virtuals
    assert v.fallback is not None
    assert (v.fallback.address, v.fallback.port, v.fallback.weight) == ("127.0.0.1", 0, 1)


def test_dest_keys_of_reals_are_unique() -> None:
    text = "virtual=192.168.6.240:80\n\treal=192.168.6.2:80 masq\n\treal=192.168.6.2:81 masq\n"
    (v,) = parse_config(text, "x.cf").virtuals
    assert {DestKey(r.address, r.port) for r in v.reals} == {
        DestKey("192.168.6.2", 80),
        DestKey("192.168.6.2", 81),
    }
