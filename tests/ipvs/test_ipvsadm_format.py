"""ipvsadm text both ways, checked against real ipvsadm 1.31 output (tests/ipvs/samples/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given

from lvsmon.ipvs.errors import ErrorKind
from lvsmon.ipvs.ipvsadm_format import (
    ParseError,
    error_kind,
    op_line,
    parse_dump,
    parse_save,
    parse_thresholds,
    render_list,
    restore_results,
    restore_script,
)
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    DestStats,
    Family,
    Forward,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from tests.ipvs.strategies import kernel_tables

SAMPLES = Path(__file__).parent / "samples"

# The table the samples were taken from, as ipvsadm -R input.
SETUP = """\
-A -t 10.0.0.1:80 -s wlc
-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 5 -x 100 -y 10
-a -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0
-a -t 10.0.0.1:80 -r 10.0.1.3:80 -i -w 3
-A -t 10.0.0.1:81 -s sh -p 300 -M 255.255.255.0 -b sh-fallback,sh-port
-A -u 10.0.0.1:53 -s rr -p 30 -o
-A --sctp-service 10.0.0.1:99 -s rr
-A -t [2001:db8::1]:80 -s mh -b mh-port
-a -t [2001:db8::1]:80 -r [2001:db8::9]:8080 -m -w 2 -x 7 -y 3
-A -t [2001:db8::2]:80 -s rr -p 120
-A -f 7 -s wrr
-a -f 7 -r 10.0.1.1:0 -g -w 1
-A -f 8 -6 -s wrr -p 60 -M 64
-a -f 8 -6 -r [2001:db8::5]:0 -g -w 1
-A -t 10.0.0.2:0 -s rr -p 10
"""


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey.inet(Proto.TCP, address, port)


EXPECTED: Table = {
    tcp("10.0.0.1", 80): Service(
        ServiceConf("wlc"),
        {
            DestKey.of("10.0.1.1", 8080): DestConf(Forward.MASQ, 5, 100, 10),
            DestKey.of("10.0.1.2", 80): DestConf(Forward.GATE, 0),
            DestKey.of("10.0.1.3", 80): DestConf(Forward.IPIP, 3),
        },
    ),
    tcp("10.0.0.1", 81): Service(
        ServiceConf("sh", frozenset({"sh-fallback", "sh-port"}), 300, "255.255.255.0")
    ),
    tcp("10.0.0.2", 0): Service(ServiceConf("rr", persistent=10)),
    ServiceKey.inet(Proto.UDP, "10.0.0.1", 53): Service(ServiceConf("rr", persistent=30, ops=True)),
    ServiceKey.inet(Proto.SCTP, "10.0.0.1", 99): Service(ServiceConf("rr")),
    tcp("2001:db8::1", 80): Service(
        ServiceConf("mh", frozenset({"mh-port"})),
        {DestKey.of("2001:db8::9", 8080): DestConf(Forward.MASQ, 2, 7, 3)},
    ),
    tcp("2001:db8::2", 80): Service(ServiceConf("rr", persistent=120)),
    ServiceKey.fwm(7): Service(ServiceConf("wrr"), {DestKey.of("10.0.1.1", 0): DestConf()}),
    ServiceKey.fwm(8, Family.INET6): Service(
        ServiceConf("wrr", persistent=60, netmask="64"),
        {DestKey.of("2001:db8::5", 0): DestConf()},
    ),
}


def test_dump_from_real_output() -> None:
    assert parse_dump(sample("save.txt"), sample("thresholds.txt")) == EXPECTED


def test_setup_lines_parse_to_the_same_table() -> None:
    # What we write and what ipvsadm prints back mean the same table.
    assert parse_save(SETUP) == EXPECTED


def test_counters_are_read() -> None:
    text = sample("thresholds.txt").replace(
        "10.0.1.2:80                  0          0          0          0",
        "10.0.1.2:80                  0          0          12         345",
    )
    counters = parse_thresholds(text)[tcp("10.0.0.1", 80)][DestKey.of("10.0.1.2", 80)]
    assert counters.stats == DestStats(12, 345)
    table = parse_dump(sample("save.txt"), text)
    assert table[tcp("10.0.0.1", 80)].stats[DestKey.of("10.0.1.2", 80)] == DestStats(12, 345)


def test_empty_table() -> None:
    empty_list = sample("thresholds.txt").split("TCP ", 1)[0]
    assert parse_dump("", empty_list) == {}


@pytest.mark.parametrize(
    "line",
    [
        "-X -t 10.0.0.1:80",
        "-A -t 10.0.0.1",
        "-A -t 10.0.0.1:99999 -s rr",
        "-A -q 10.0.0.1:80 -s rr",
        "-a -t 10.0.0.9:80 -r 10.0.1.1:80 -g -w 1",  # destination before its service
        "-A -f x -s rr",
        "-A -t [2001:db8::1:80 -s rr",
    ],
)
def test_garbage_is_a_parse_error(line: str) -> None:
    with pytest.raises(ParseError):
        parse_save(line)


def test_garbage_list_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_thresholds("TCP  10.0.0.1:80 wlc\nsomething else\n")


@given(kernel_tables())
def test_rendered_ops_parse_back(table: Table) -> None:
    lines = []
    for key, svc in table.items():
        lines.append(op_line(AddService(key, svc.conf)))
        lines += [op_line(AddDest(key, dest, conf)) for dest, conf in svc.dests.items()]
    assert parse_save("\n".join(lines)) == table


def test_op_lines() -> None:
    vip = tcp("10.0.0.1", 80)
    fwm6 = ServiceKey.fwm(8, Family.INET6)
    v6 = ServiceKey.inet(Proto.UDP, "2001:db8::1", 53)
    assert [
        op_line(AddService(vip, ServiceConf("wrr", frozenset(), 300, "24"))),
        op_line(
            EditService(v6, ServiceConf("sh", frozenset({"sh-port", "sh-fallback"}), ops=True))
        ),
        op_line(DeleteService(fwm6)),
        op_line(AddDest(vip, DestKey.of("10.0.1.1", 8080), DestConf(Forward.MASQ, 5, 100, 10))),
        op_line(EditDest(fwm6, DestKey.of("2001:db8::5", 0), DestConf(Forward.IPIP, 0))),
        op_line(DeleteDest(ServiceKey.inet(Proto.SCTP, "10.0.0.1", 9), DestKey.of("10.0.1.1", 9))),
    ] == [
        "-A -t 10.0.0.1:80 -s wrr -p 300 -M 255.255.255.0",
        "-E -u [2001:db8::1]:53 -s sh -b sh-fallback,sh-port -o",
        "-D -f 8 -6",
        "-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 5 -x 100 -y 10",
        "-e -f 8 -6 -r [2001:db8::5]:0 -i -w 0 -x 0 -y 0",
        "-d --sctp-service 10.0.0.1:9 -r 10.0.1.1:9",
    ]


# The batch behind samples/restore-stderr.txt: each op then its marker line.
RESTORE_OPS: list[Op] = [
    AddService(tcp("10.0.0.3", 80), ServiceConf("rr")),  # ok
    AddService(tcp("10.0.0.1", 80), ServiceConf("rr")),  # exists
    EditService(tcp("10.9.9.9", 80), ServiceConf("rr")),  # no such service
    AddDest(tcp("10.0.0.1", 80), DestKey.of("10.0.1.1", 8080), DestConf(Forward.MASQ, 1, 2, 5)),
    AddService(tcp("10.0.0.4", 80), ServiceConf("bogus")),  # no such scheduler
    AddService(tcp("10.0.0.5", 80), ServiceConf("rr", frozenset({"nonsense"}))),  # ends the run
    AddService(tcp("10.0.0.6", 80), ServiceConf("rr")),  # never run
]


def test_restore_script_matches_the_sample_batch() -> None:
    script = restore_script(RESTORE_OPS)
    assert script.splitlines()[:6] == [
        "-A -t 10.0.0.3:80 -s rr",
        "-Z -f 4294967295",
        "-A -t 10.0.0.1:80 -s rr",
        "-Z -f 4294967295",
        "-E -t 10.9.9.9:80 -s rr",
        "-d -f 4294967295 -r 0.0.0.1:0",
    ]
    assert len(script.splitlines()) == 2 * len(RESTORE_OPS)


def test_results_from_real_restore_stderr() -> None:
    results = restore_results(RESTORE_OPS, 2, sample("restore-stderr.txt"))
    assert [r.op for r in results] == RESTORE_OPS
    assert [(r.error.kind, r.error.message) if r.error else None for r in results] == [
        None,
        (ErrorKind.EXISTS, "Service already exists"),
        (ErrorKind.NOT_FOUND, "No such service"),
        (ErrorKind.INVALID, "Numerical result out of range"),
        (ErrorKind.INVALID, "Scheduler or persistence engine not found"),
        (ErrorKind.INVALID, "invalid scheduler flag `nonsense'"),
        (ErrorKind.OTHER, "not applied: ipvsadm stopped at an earlier op"),
    ]


def test_start_up_failure_fails_every_op() -> None:
    results = restore_results(RESTORE_OPS[:3], 2, sample("nonroot-stderr.txt"))
    assert {r.error.kind for r in results if r.error} == {ErrorKind.PERMISSION}
    assert all(not r.ok for r in results)
    no_ipvs = (
        "modprobe: FATAL: Module ip_vs not found in directory /lib/modules/6.18\n"
        "Can't initialize ipvs: Protocol not available\n"
        "Are you sure that IP Virtual Server is built in the kernel or as module?\n"
    )
    results = restore_results(RESTORE_OPS[:3], 2, no_ipvs)
    assert [r.error.kind if r.error else None for r in results] == [ErrorKind.NO_IPVS] * 3


def test_silent_success_means_all_applied() -> None:
    # What a recording stand-in for ipvsadm does: print nothing, exit 0.
    assert all(r.ok for r in restore_results(RESTORE_OPS, 0, ""))


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Service already exists", ErrorKind.EXISTS),
        ("Destination already exists", ErrorKind.EXISTS),
        ("No such service", ErrorKind.NOT_FOUND),
        ("No such destination", ErrorKind.NOT_FOUND),
        ("Service not defined", ErrorKind.NOT_FOUND),
        ("Memory allocation problem", ErrorKind.NO_IPVS),
        ("Can't initialize ipvs: Protocol not available", ErrorKind.NO_IPVS),
        ("Can't initialize ipvs: Permission denied (you must be root)", ErrorKind.PERMISSION),
        ("Scheduler or persistence engine not found", ErrorKind.INVALID),
        ("One-Packet Scheduling is only for UDP virtual services", ErrorKind.INVALID),
        ("Different address family is allowed only for tunneling servers", ErrorKind.OTHER),
        ("something new", ErrorKind.OTHER),
    ],
)
def test_error_kinds(message: str, kind: ErrorKind) -> None:
    assert error_kind(message) is kind


def test_render_list_looks_like_ipvsadm() -> None:
    text = render_list(EXPECTED)
    real = sample("list.txt").splitlines()[1:]  # without the version line
    ours = text.splitlines()
    # Same lines in the same order, apart from our threshold notes and trailing blanks.
    assert [line.split(" (thresholds")[0].rstrip() for line in ours] == [
        line.rstrip() for line in real
    ]


def test_a_tools_words_are_made_clean_where_they_enter() -> None:
    """Issue 21, class 6: ipvsadm's stderr (or whatever answers at its path) reaches the log,
    mails and /events through OpError.message; control characters and length are dealt with
    once, where the error is made."""
    hostile = (
        "Memory allocation problem\r[lvsmon] Real server 10.0.0.1:80 is up\x1b[2J" + "x" * 5000
    )
    results = restore_results(RESTORE_OPS[:1], 2, hostile)
    error = results[0].error
    assert error is not None
    assert "\r" not in error.message and "\x1b" not in error.message
    assert error.message.startswith("Memory allocation problem?[lvsmon] Real server")
    assert len(error.message) <= 512 + 3
