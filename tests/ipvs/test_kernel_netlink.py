"""The netlink backend against a real kernel (run in the VM by tests/vm/run), cross-checked with
what the real ipvsadm reads back from the kernel."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import AsyncIterator

import pytest

from lvsmon.ipvs.errors import BackendError, ErrorKind
from lvsmon.ipvs.factory import make_backend
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from lvsmon.ipvs.rules import SCHEDULERS

pytestmark = pytest.mark.kernel

TCP80 = ServiceKey.inet("tcp", "10.0.0.1", 80)


def ipvsadm(*args: str) -> str:
    return subprocess.run(["ipvsadm", *args], check=True, capture_output=True, text=True).stdout


def saved() -> set[str]:
    """`ipvsadm -Sn`, one line per service or destination."""
    return {line.strip() for line in ipvsadm("-Sn").splitlines() if line.strip()}


def require_ipvs() -> None:
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        pytest.fail("kernel tests need root and IPVS: run them with tests/vm/run")


@pytest.fixture
async def nl() -> AsyncIterator[NetlinkBackend]:
    require_ipvs()
    ipvsadm("-C")
    backend = NetlinkBackend()
    yield backend
    await backend.close()
    ipvsadm("-C")


async def apply_ok(backend: NetlinkBackend, ops: list[Op]) -> None:
    results = await backend.apply(ops)
    assert [r.op for r in results] == ops
    assert [r.error for r in results if not r.ok] == []


def build(table: Table) -> list[Op]:
    ops: list[Op] = []
    for key, service in table.items():
        ops.append(AddService(key, service.conf))
        ops += [AddDest(key, dest, conf) for dest, conf in service.dests.items()]
    return ops


async def round_trip(backend: NetlinkBackend, table: Table) -> Table:
    await apply_ok(backend, build(table))
    dumped = await backend.dump()
    assert dumped == table
    return dumped


# ---- schedulers and flags -----------------------------------------------------------------

SCHEDULER_CASES = [
    ("rr", frozenset[str](), "-s rr"),
    ("wrr", frozenset[str](), "-s wrr"),
    ("lc", frozenset[str](), "-s lc"),
    ("wlc", frozenset[str](), "-s wlc"),
    ("dh", frozenset[str](), "-s dh"),
    ("sed", frozenset[str](), "-s sed"),
    ("nq", frozenset[str](), "-s nq"),
    ("sh", frozenset[str](), "-s sh"),
    ("sh", frozenset({"sh-port"}), "-s sh -b sh-port"),
    ("sh", frozenset({"sh-fallback", "sh-port"}), "-s sh -b sh-fallback,sh-port"),
    ("mh", frozenset[str](), "-s mh"),
    ("mh", frozenset({"mh-fallback"}), "-s mh -b mh-fallback"),
    ("mh", frozenset({"mh-fallback", "mh-port"}), "-s mh -b mh-fallback,mh-port"),
]


@pytest.mark.parametrize(("scheduler", "flags", "expected"), SCHEDULER_CASES)
async def test_scheduler(
    nl: NetlinkBackend, scheduler: str, flags: frozenset[str], expected: str
) -> None:
    dest = DestKey.of("10.1.0.1", 80)
    table = {TCP80: Service(ServiceConf(scheduler, flags), {dest: DestConf(Forward.MASQ, 3)})}
    await round_trip(nl, table)
    assert saved() == {f"-A -t 10.0.0.1:80 {expected}", "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 3"}


async def test_edit_service_changes_scheduler_flags_and_persistence(nl: NetlinkBackend) -> None:
    await apply_ok(nl, [AddService(TCP80, ServiceConf("sh", frozenset({"sh-port"}), 300))])
    new = ServiceConf("mh", frozenset({"mh-fallback"}))
    await apply_ok(nl, [EditService(TCP80, new)])
    assert (await nl.dump())[TCP80].conf == new
    assert saved() == {"-A -t 10.0.0.1:80 -s mh -b mh-fallback"}


# ---- addresses: IPv6, fwmark --------------------------------------------------------------


async def test_ipv6_service(nl: NetlinkBackend) -> None:
    key = ServiceKey.inet("udp", "2001:db8::1", 53)
    dests = {
        DestKey.of("2001:db8::10", 5353): DestConf(Forward.MASQ, 2),
        DestKey.of("2001:db8::11", 53): DestConf(Forward.GATE, 1),
    }
    await round_trip(nl, {key: Service(ServiceConf("wrr", ops=True), dests)})
    assert saved() == {
        "-A -u [2001:db8::1]:53 -s wrr -o",
        "-a -u [2001:db8::1]:53 -r [2001:db8::10]:5353 -m -w 2",
        "-a -u [2001:db8::1]:53 -r [2001:db8::11]:53 -g -w 1",
    }


async def test_sctp_service(nl: NetlinkBackend) -> None:
    key = ServiceKey.inet("sctp", "10.0.0.3", 3868)
    await round_trip(
        nl, {key: Service(ServiceConf("rr"), {DestKey.of("10.1.0.3", 3868): DestConf()})}
    )
    assert "-A --sctp-service 10.0.0.3:3868 -s rr" in saved()


async def test_fwmark_v4_and_v6(nl: NetlinkBackend) -> None:
    v4 = ServiceKey.fwm(7)
    v6 = ServiceKey.fwm(8, "inet6")
    table = {
        v4: Service(ServiceConf("rr"), {DestKey.of("10.1.0.7", 0): DestConf(Forward.GATE, 4)}),
        v6: Service(ServiceConf("lc"), {DestKey.of("2001:db8::7", 0): DestConf(Forward.IPIP, 1)}),
    }
    await round_trip(nl, table)
    lines = saved()
    assert "-A -f 7 -s rr" in lines
    assert "-a -f 7 -r 10.1.0.7:0 -g -w 4" in lines
    assert "-A -f 8 -6 -s lc" in lines
    assert any(line.startswith("-a -f 8 -6 -r [2001:db8::7]:0 -i -w 1") for line in lines)


# ---- persistence, netmask ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "conf", "expected"),
    [
        (TCP80, ServiceConf("wlc", persistent=300), "-A -t 10.0.0.1:80 -s wlc -p 300"),
        (
            TCP80,
            ServiceConf("rr", persistent=60, netmask="255.255.255.0"),
            "-A -t 10.0.0.1:80 -s rr -p 60 -M 255.255.255.0",
        ),
        (
            ServiceKey.inet("tcp", "2001:db8::1", 443),
            ServiceConf("rr", persistent=900, netmask="64"),
            "-A -t [2001:db8::1]:443 -s rr -p 900 -M 64",
        ),
        (
            ServiceKey.fwm(9, "inet6"),
            ServiceConf("rr", persistent=10, netmask="48"),
            "-A -f 9 -6 -s rr -p 10 -M 48",
        ),
        (ServiceKey.inet("tcp", "10.0.0.2", 0), ServiceConf("rr", persistent=5), None),
    ],
)
async def test_persistence(
    nl: NetlinkBackend, key: ServiceKey, conf: ServiceConf, expected: str | None
) -> None:
    await round_trip(nl, {key: Service(conf)})
    if expected is not None:
        assert saved() == {expected}


async def test_full_netmask_reads_back_as_none(nl: NetlinkBackend) -> None:
    await apply_ok(
        nl, [AddService(TCP80, ServiceConf("rr", persistent=60, netmask="255.255.255.255"))]
    )
    assert (await nl.dump())[TCP80].conf == ServiceConf("rr", persistent=60)


# ---- destinations --------------------------------------------------------------------------


async def test_thresholds_and_forwarding(nl: NetlinkBackend) -> None:
    dests = {
        DestKey.of("10.1.0.1", 8080): DestConf(Forward.MASQ, 5, upper=100, lower=10),
        DestKey.of("10.1.0.2", 80): DestConf(Forward.GATE, 0),
        DestKey.of("10.1.0.3", 80): DestConf(Forward.IPIP, 7, upper=50),
    }
    await round_trip(nl, {TCP80: Service(ServiceConf("wlc"), dests)})
    rows = {}
    for line in ipvsadm("-Ln", "--thresholds").splitlines():
        tokens = line.split()
        if tokens[:1] == ["->"] and tokens[1][0].isdigit():
            rows[tokens[1]] = tokens[2:4]  # Uthreshold Lthreshold
    assert rows == {
        "10.1.0.1:8080": ["100", "10"],
        "10.1.0.2:80": ["0", "0"],
        "10.1.0.3:80": ["50", "0"],
    }
    assert {line for line in saved() if line.startswith("-a")} == {
        "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 5",
        "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 0",
        "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 7 --tun-type ipip",
    }


async def test_gate_uses_the_virtual_port(nl: NetlinkBackend) -> None:
    await apply_ok(nl, [AddService(TCP80, ServiceConf("rr"))])
    await apply_ok(nl, [AddDest(TCP80, DestKey.of("10.1.0.1", 8080), DestConf(Forward.GATE, 1))])
    assert set((await nl.dump())[TCP80].dests) == {DestKey.of("10.1.0.1", 80)}


async def test_local_real_server_reads_back_as_written(nl: NetlinkBackend) -> None:
    local = DestKey.of("127.0.0.1", 80)
    await round_trip(nl, {TCP80: Service(ServiceConf("rr"), {local: DestConf(Forward.GATE, 1)})})
    # A second backend has no memory of what was written: it must still read something sane.
    other = NetlinkBackend()
    try:
        assert (await other.dump())[TCP80].dests[local].forward is Forward.GATE
    finally:
        await other.close()


async def test_edit_and_delete(nl: NetlinkBackend) -> None:
    a, b = DestKey.of("10.1.0.1", 80), DestKey.of("10.1.0.2", 80)
    await round_trip(nl, {TCP80: Service(ServiceConf("wrr"), {a: DestConf(), b: DestConf()})})
    await apply_ok(
        nl,
        [
            EditDest(TCP80, a, DestConf(Forward.MASQ, 9, upper=5, lower=1)),
            DeleteDest(TCP80, b),
        ],
    )
    assert (await nl.dump())[TCP80].dests == {a: DestConf(Forward.MASQ, 9, upper=5, lower=1)}
    assert saved() == {"-A -t 10.0.0.1:80 -s wrr", "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 9"}
    await apply_ok(nl, [DeleteService(TCP80)])
    assert await nl.dump() == {}
    assert saved() == set()


async def test_reads_what_ipvsadm_wrote(nl: NetlinkBackend) -> None:
    ipvsadm(
        "-A", "-t", "10.0.0.1:80", "-s", "sh", "-b", "sh-port", "-p", "120", "-M", "255.255.0.0"
    )
    ipvsadm("-a", "-t", "10.0.0.1:80", "-r", "10.1.0.1:80", "-m", "-w", "4", "-x", "9", "-y", "2")
    assert await nl.dump() == {
        TCP80: Service(
            ServiceConf("sh", frozenset({"sh-port"}), 120, "255.255.0.0"),
            {DestKey.of("10.1.0.1", 80): DestConf(Forward.MASQ, 4, 9, 2)},
        )
    }


async def test_counters_are_read(nl: NetlinkBackend) -> None:
    await round_trip(
        nl, {TCP80: Service(ServiceConf("rr"), {DestKey.of("10.1.0.1", 80): DestConf()})}
    )
    stats = (await nl.dump())[TCP80].stats
    assert stats[DestKey.of("10.1.0.1", 80)].active_conns == 0


# ---- errors --------------------------------------------------------------------------------


def missing_scheduler() -> str | None:
    """A scheduler lvsmon knows whose module this kernel lacks (6.1 has no twos)."""
    ipvs = f"/lib/modules/{platform.release()}/kernel/net/netfilter/ipvs"
    for name in sorted(SCHEDULERS):
        if not any(f.startswith(f"ip_vs_{name}.ko") for f in os.listdir(ipvs)):
            return name
    return None


async def test_errors_are_typed(nl: NetlinkBackend) -> None:
    dest = DestKey.of("10.1.0.1", 80)
    absent = ServiceKey.inet("tcp", "10.0.0.99", 80)
    ops: list[Op] = [
        AddService(TCP80, ServiceConf("rr")),
        AddService(TCP80, ServiceConf("rr")),  # exists
        AddDest(TCP80, dest, DestConf()),
        AddDest(TCP80, dest, DestConf()),  # exists
        EditDest(TCP80, DestKey.of("10.1.0.2", 80), DestConf()),  # no such destination
        DeleteDest(TCP80, DestKey.of("10.1.0.2", 80)),  # no such destination
        EditService(absent, ServiceConf("rr")),  # no such service
        DeleteService(absent),  # no such service
        AddDest(absent, dest, DestConf()),  # no such service
        AddService(absent, ServiceConf("bogus")),  # invalid, refused before the kernel
        AddDest(TCP80, DestKey.of("10.1.0.3", 80), DestConf(upper=1, lower=5)),  # invalid
        AddDest(TCP80, DestKey.of("10.1.0.4", 80), DestConf(weight=2)),  # still applied
    ]
    results = await nl.apply(ops)
    kinds = [r.error.kind if r.error else None for r in results]
    assert kinds == [
        None,
        ErrorKind.EXISTS,
        None,
        ErrorKind.EXISTS,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.INVALID,
        ErrorKind.INVALID,
        None,
    ]
    assert all(r.error.message for r in results if r.error)
    assert set((await nl.dump())[TCP80].dests) == {dest, DestKey.of("10.1.0.4", 80)}


async def test_scheduler_missing_from_the_kernel_is_invalid(nl: NetlinkBackend) -> None:
    name = missing_scheduler()
    if name is None:
        pytest.skip("this kernel has every scheduler lvsmon knows")
    [result] = await nl.apply([AddService(TCP80, ServiceConf(name))])
    assert result.error is not None and result.error.kind is ErrorKind.INVALID
    assert name in result.error.message
    assert await nl.dump() == {}


async def test_results_stay_in_order_across_chunks(nl: NetlinkBackend) -> None:
    """Many more ops than one send holds, with failures spread through them."""
    ops: list[Op] = [AddService(TCP80, ServiceConf("wrr"))]
    for i in range(700):
        ops.append(AddDest(TCP80, DestKey.of(f"10.2.{i // 200}.{i % 200 + 1}", 80), DestConf()))
        if i % 97 == 0:
            ops.append(AddDest(TCP80, DestKey.of(f"10.2.{i // 200}.{i % 200 + 1}", 80), DestConf()))
    results = await nl.apply(ops)
    failed = [i for i, r in enumerate(results) if not r.ok]
    expected = [i for i in range(1, len(ops)) if ops[i] == ops[i - 1]]
    assert failed == expected
    assert all(results[i].error.kind is ErrorKind.EXISTS for i in failed)  # type: ignore[union-attr]
    assert len((await nl.dump())[TCP80].dests) == 700


async def test_dump_after_ipvs_vanishes_is_not_a_traceback(nl: NetlinkBackend) -> None:
    await apply_ok(nl, [AddService(TCP80, ServiceConf("rr"))])
    assert TCP80 in await nl.dump()
    ipvsadm("-C")
    assert await nl.dump() == {}


async def test_factory_makes_it() -> None:
    backend = make_backend("netlink")
    try:
        assert backend.name == "netlink"
        assert isinstance(await backend.dump(), dict)
    except BackendError as exc:  # pragma: no cover - shows the reason instead of a traceback
        pytest.fail(str(exc))
    finally:
        await backend.close()
