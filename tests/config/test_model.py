"""The API other parts use: load_config/parse_config, digest, model helpers, error shapes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from lvsmon.checks import registry
from lvsmon.checks.registry import SERVICES
from lvsmon.config import (
    CheckType,
    ConfigError,
    Service,
    VirtualProtocol,
    load_config,
    parse_config,
)
from lvsmon.config.lexer import MAX_LINE_BYTES
from lvsmon.config.parser import SCHEDULERS
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


def _without(library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make an optional library look uninstalled."""
    present = registry._library_present  # what Service.available asks (cached per library)
    monkeypatch.setattr(
        registry, "_library_present", lambda name: name != library and present(name)
    )


ORACLE = '\treal=192.168.6.2 gate\n\tlogin="scott"\n\trequest="SELECT 1 FROM DUAL"\n'


def test_service_without_its_library_is_an_error_naming_the_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without("oracledb", monkeypatch)
    text = "virtual=192.168.6.240:1521\n" + ORACLE
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.cf")
    assert str(info.value) == (
        "x.cf:1: service oracle (from port 1521) needs the Python package oracledb: "
        "pip install 'lvsmon[oracle]'"
    )
    named = "virtual=192.168.6.240:1521\n\tservice=oracle\n" + ORACLE
    with pytest.raises(ConfigError, match=r"^x\.cf:1: service oracle needs the Python package"):
        parse_config(named, "x.cf")
    # check_support=False still parses it (the daemon's own reload path)
    (v,) = parse_config(text, "x.cf", check_support=False).virtuals
    assert (v.service, v.service_from_port) == (Service.ORACLE, True)
    assert v.checktype is CheckType.NEGOTIATE


@pytest.mark.parametrize("service", [s for s in Service if not SERVICES[s].library])
def test_every_ldirectord_service_is_accepted(service: Service) -> None:
    text = f"virtual=192.168.6.240:80\n\tservice={service}\n" + ORACLE
    (v,) = parse_config(text, "x.cf").virtuals
    assert (v.service, v.service_from_port) == (service, False)


def test_service_from_port_is_recorded_and_named_in_warnings() -> None:
    text = "virtual=192.168.6.240:smtp\n\treal=192.168.6.2 gate\nvirtual=192.168.6.240:3306\n"
    text += "\treal=192.168.6.2 gate\nvirtual=7\n\treal=192.168.6.2 gate\n"
    config = parse_config(text, "x.cf")
    assert [(v.service, v.service_from_port) for v in config.virtuals] == [
        (Service.SMTP, True),
        (Service.MYSQL, True),
        (Service.NONE, False),  # a firewall mark has no port to derive a service from
    ]
    assert [str(w) for w in config.warnings] == [
        "x.cf:3: service mysql (from port 3306) needs login and request; its reals will be "
        "down until they are set"
    ]


def test_unknown_scheduler_is_a_warning_listing_linux_schedulers() -> None:
    text = "virtual=192.168.6.240:80\n\treal=192.168.6.2 gate\n\tscheduler=wrrr\n"
    config = parse_config(text, "x.cf")
    assert config.virtuals[0].scheduler == "wrrr"
    (w,) = config.warnings
    assert (w.line, w.message) == (
        3,
        'unknown scheduler "wrrr" (Linux has rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh '
        "twos): the kernel will refuse this virtual service unless a module ip_vs_wrrr "
        "provides it",
    )


# CONFIG_IP_VS_* symbols that are not schedulers
_NOT_SCHEDULERS = re.compile(r"IPV6|DEBUG|(SH_|MH_)?TAB_(BITS|INDEX)|PROTO_.*|FTP|NFCT|PE_.*")


def test_every_linux_scheduler_is_known() -> None:
    """SCHEDULERS is the kernel's list: every CONFIG_IP_VS_<scheduler> of the installed kernels'
    configs (Debian 12's 6.1 names twos without building it), every ip_vs_<scheduler> module."""
    from_configs: set[str] = set()
    for config in Path("/boot").glob("config-*"):
        for m in re.finditer(
            r"^(?:# )?CONFIG_IP_VS_(\w+?)(?:=| is not set)", config.read_text(), re.M
        ):
            if not _NOT_SCHEDULERS.fullmatch(m.group(1)):
                from_configs.add(m.group(1).lower())
    modules = {
        p.name.split(".")[0].removeprefix("ip_vs_")
        for p in Path("/lib/modules").glob("*/kernel/net/netfilter/ipvs/ip_vs_*.ko*")
    } - {"ftp", "pe_sip"}
    assert from_configs, "no kernel config under /boot to read the IPVS schedulers from"
    assert from_configs == set(SCHEDULERS)
    assert modules <= set(SCHEDULERS)
    for name in SCHEDULERS:
        text = f"virtual=192.168.6.240:80\n\treal=192.168.6.2 gate\n\tscheduler={name}\n"
        assert parse_config(text, "x.cf").warnings == ()


def test_identical_repeated_real_is_counted_once() -> None:
    text = (
        "virtual=192.168.6.240:80\n\treal=192.168.6.2:80 masq 2 l:5 u:50\n"
        "\treal=192.168.6.3 masq\n\treal=192.168.6.2:80   masq 2  l:5 u:50\n"
    )
    config = parse_config(text, "x.cf")
    (v,) = config.virtuals
    assert [(r.address, r.line) for r in v.reals] == [("192.168.6.2", 2), ("192.168.6.3", 3)]
    assert [str(w) for w in config.warnings] == [
        "x.cf:4: real server 192.168.6.2:80 is listed again with the same settings as at line 2; "
        "counted once"
    ]


@pytest.mark.parametrize(
    ("second", "difference"),
    [
        ("192.168.6.2:80 masq 3", "(weight 3 here; weight 2 at line 2)"),
        ("192.168.6.2:80 gate 2", "(gate here; masq at line 2)"),
        ("192.168.6.2:80 masq 2 u:9", "(u:9 here; u:0 at line 2)"),
        (
            '192.168.6.2:80 masq 2 "/a", "b"',
            "(request '/a', receive 'b' here; request '/', receive '' at line 2)",
        ),
    ],
)
def test_repeated_real_with_other_settings_is_an_error_saying_what_differs(
    second: str, difference: str
) -> None:
    text = f"virtual=192.168.6.240:80\n\treal=192.168.6.2:80 masq 2\n\treal={second}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.cf")
    assert str(info.value) == (
        "x.cf:3: real server 192.168.6.2:80 is listed twice in tcp:192.168.6.240:80 with "
        f"different settings {difference}: the kernel has one destination per address and "
        "port, keep one of the lines"
    )


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


def test_virtual_key_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: the key was a property that parsed the address on every use (5 million times
    at a 2,284-virtual start-up); it is a field now, built when the virtual is."""
    import dataclasses

    from lvsmon.config.dump import virtual_to_dict

    calls = []
    inet = ServiceKey.inet

    def counting(*args: object) -> ServiceKey:
        calls.append(args)
        return inet(*args)  # type: ignore[arg-type]

    config = parse_config(BASIC, "x.cf")
    monkeypatch.setattr(ServiceKey, "inet", counting)
    (v,) = config.virtuals
    for _ in range(100):
        assert v.key == ServiceKey.fwm(1) or v.key.port == 80
    assert [c for c in calls if c[1] == "192.168.6.240"] == []  # none: built at parse time
    moved = dataclasses.replace(v, port=81)  # a copy gets its own key
    assert moved.key.port == 81 and len(calls) == 1
    assert moved != v and dataclasses.replace(v) == v
    # derived, not a setting: neither shown nor dumped
    assert "key=" not in repr(v)
    assert "key" not in virtual_to_dict(v)
