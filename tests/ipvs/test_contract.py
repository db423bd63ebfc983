"""One behaviour for every IPVS backend: memory on the host, ipvsadm and netlink in the VM.

Run: `.venv/bin/pytest tests/ipvs/test_contract.py` (memory) and
`tests/vm/run tests/ipvs/test_contract.py` (ipvsadm and netlink against Linux's IPVS).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from lvsmon.ipvs.backend import IpvsBackend
from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.errors import ErrorKind, OpResult
from lvsmon.ipvs.model import (
    NO_STATS,
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
from lvsmon.ipvs.sync import SyncDaemon, SyncState

TCP = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
UDP = ServiceKey.inet(Proto.UDP, "10.0.0.1", 53)
SCTP = ServiceKey.inet(Proto.SCTP, "10.0.0.1", 9999)
TCP6 = ServiceKey.inet(Proto.TCP, "2001:db8::1", 443)
FWM = ServiceKey.fwm(7)
FWM6 = ServiceKey.fwm(8, Family.INET6)

R1 = DestKey.of("10.0.1.1", 80)
R2 = DestKey.of("10.0.1.2", 80)
R6 = DestKey.of("2001:db8:1::1", 443)


async def ok(backend: IpvsBackend, *ops: Op) -> None:
    results = await backend.apply(ops)
    assert [r.error for r in results] == [None] * len(ops)


async def kinds(backend: IpvsBackend, *ops: Op) -> list[ErrorKind | None]:
    results: list[OpResult] = await backend.apply(ops)
    assert [r.op for r in results] == list(ops)
    return [r.error.kind if r.error else None for r in results]


async def test_empty_table(backend: IpvsBackend) -> None:
    assert await backend.dump() == {}
    assert await backend.apply([]) == []


@pytest.mark.parametrize("service", [TCP, UDP, SCTP, TCP6, FWM, FWM6], ids=str)
async def test_add_and_delete_service_of_every_kind(
    backend: IpvsBackend, service: ServiceKey
) -> None:
    dest = {
        TCP6: R6,
        FWM: DestKey.of("10.0.1.1", 0),
        FWM6: DestKey.of("2001:db8:1::1", 0),
    }.get(service, DestKey.of("10.0.1.1", service.port))
    await ok(backend, AddService(service, ServiceConf("rr")), AddDest(service, dest, DestConf()))
    assert await backend.dump() == {service: Service(ServiceConf("rr"), {dest: DestConf()})}
    await ok(backend, DeleteService(service))
    assert await backend.dump() == {}


@pytest.mark.parametrize(
    "scheduler",
    ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"],
)
async def test_every_scheduler(backend: IpvsBackend, scheduler: str) -> None:
    await ok(backend, AddService(TCP, ServiceConf(scheduler)))
    assert (await backend.dump())[TCP].conf == ServiceConf(scheduler)


@pytest.mark.parametrize(
    "conf",
    [
        ServiceConf("sh", frozenset({"sh-port"})),
        ServiceConf("sh", frozenset({"sh-fallback", "sh-port"})),
        ServiceConf("mh", frozenset({"mh-fallback"})),
        ServiceConf("mh", frozenset({"mh-fallback", "mh-port"})),
    ],
    ids=lambda c: f"{c.scheduler}:{','.join(sorted(c.sched_flags))}",
)
async def test_scheduler_flags(backend: IpvsBackend, conf: ServiceConf) -> None:
    await ok(backend, AddService(TCP, conf))
    assert (await backend.dump())[TCP].conf == conf
    await ok(backend, EditService(TCP, ServiceConf("rr")))  # flags go when not given
    assert (await backend.dump())[TCP].conf == ServiceConf("rr")


async def test_persistence_and_netmask(backend: IpvsBackend) -> None:
    v4 = ServiceConf("wlc", persistent=300, netmask="255.255.255.0")
    v6 = ServiceConf("rr", persistent=60, netmask="64")
    zero_port = ServiceKey.inet(Proto.TCP, "10.0.0.2", 0)  # all ports: needs persistence
    await ok(
        backend,
        AddService(TCP, v4),
        AddService(TCP6, v6),
        AddService(FWM6, v6),
        AddService(FWM, ServiceConf("wrr", persistent=360)),
        AddService(zero_port, ServiceConf("rr", persistent=10)),
    )
    table = await backend.dump()
    assert {k: s.conf for k, s in table.items()} == {
        TCP: v4,
        TCP6: v6,
        FWM6: v6,
        FWM: ServiceConf("wrr", persistent=360),
        zero_port: ServiceConf("rr", persistent=10),
    }
    # Dropping persistence drops the mask; a full-length mask reads back as no mask.
    await ok(
        backend,
        EditService(TCP, ServiceConf("wlc")),
        EditService(TCP6, ServiceConf("rr", persistent=60, netmask="128")),
    )
    table = await backend.dump()
    assert table[TCP].conf == ServiceConf("wlc")
    assert table[TCP6].conf == ServiceConf("rr", persistent=60)


async def test_one_packet_scheduling(backend: IpvsBackend) -> None:
    await ok(
        backend,
        AddService(UDP, ServiceConf("rr", ops=True)),
        AddService(FWM, ServiceConf("rr", persistent=30, ops=True)),
    )
    table = await backend.dump()
    assert table[UDP].conf == ServiceConf("rr", ops=True)
    assert table[FWM].conf == ServiceConf("rr", persistent=30, ops=True)
    assert await kinds(backend, AddService(TCP, ServiceConf("rr", ops=True))) == [ErrorKind.INVALID]


async def test_weights_thresholds_and_forwarding(backend: IpvsBackend) -> None:
    masq = DestKey.of("10.0.1.3", 8080)  # NAT may map the port
    await ok(
        backend,
        AddService(TCP, ServiceConf("wrr")),
        AddDest(TCP, R1, DestConf(Forward.GATE, 5, 100, 10)),
        AddDest(TCP, R2, DestConf(Forward.IPIP, 0)),
        AddDest(TCP, masq, DestConf(Forward.MASQ, 70000, 3, 0)),
    )
    assert (await backend.dump())[TCP].dests == {
        R1: DestConf(Forward.GATE, 5, 100, 10),
        R2: DestConf(Forward.IPIP, 0),
        masq: DestConf(Forward.MASQ, 70000, 3, 0),
    }


async def test_gate_and_ipip_take_the_virtual_port(backend: IpvsBackend) -> None:
    await ok(
        backend,
        AddService(TCP, ServiceConf()),
        AddDest(TCP, DestKey.of("10.0.1.1", 8080), DestConf(Forward.GATE)),
        AddDest(TCP, DestKey.of("10.0.1.2", 8080), DestConf(Forward.IPIP)),
        AddService(FWM, ServiceConf()),
        AddDest(FWM, DestKey.of("10.0.1.1", 0), DestConf(Forward.GATE)),
    )
    table = await backend.dump()
    assert set(table[TCP].dests) == {R1, R2}
    assert set(table[FWM].dests) == {DestKey.of("10.0.1.1", 0)}
    # Edits find the destination the same way (ipvsadm applies the same forcing).
    await ok(backend, EditDest(TCP, DestKey.of("10.0.1.1", 8080), DestConf(Forward.GATE, 4)))
    assert (await backend.dump())[TCP].dests[R1] == DestConf(Forward.GATE, 4)


async def test_edits_are_in_place_and_complete(backend: IpvsBackend) -> None:
    await ok(
        backend,
        AddService(TCP, ServiceConf("wlc", persistent=300)),
        AddDest(TCP, R1, DestConf(Forward.GATE, 5, 100, 10)),
        AddDest(TCP, R2, DestConf(Forward.GATE, 1)),
    )
    await ok(
        backend,
        EditService(TCP, ServiceConf("sh", frozenset({"sh-port"}))),
        EditDest(TCP, R1, DestConf(Forward.MASQ, 0)),  # thresholds cleared, not kept
        EditDest(TCP, R2, DestConf(Forward.IPIP, 7, 20, 5)),
    )
    assert await backend.dump() == {
        TCP: Service(
            ServiceConf("sh", frozenset({"sh-port"})),
            {R1: DestConf(Forward.MASQ, 0), R2: DestConf(Forward.IPIP, 7, 20, 5)},
        )
    }


async def test_delete_dest_and_service(backend: IpvsBackend) -> None:
    await ok(
        backend,
        AddService(TCP, ServiceConf()),
        AddDest(TCP, R1, DestConf()),
        AddDest(TCP, R2, DestConf()),
        AddService(UDP, ServiceConf()),
        AddDest(UDP, DestKey.of("10.0.1.1", 53), DestConf()),
    )
    await ok(backend, DeleteDest(TCP, R1), DeleteService(UDP))
    assert await backend.dump() == {TCP: Service(ServiceConf(), {R2: DestConf()})}


async def test_error_kinds(backend: IpvsBackend) -> None:
    await ok(backend, AddService(TCP, ServiceConf()), AddDest(TCP, R1, DestConf()))
    before = await backend.dump()
    assert await kinds(
        backend,
        AddService(TCP, ServiceConf("rr")),
        AddDest(TCP, R1, DestConf(weight=3)),
        EditService(UDP, ServiceConf()),
        DeleteService(UDP),
        AddDest(UDP, R1, DestConf()),
        EditDest(TCP, R2, DestConf()),
        DeleteDest(TCP, R2),
        DeleteDest(UDP, R2),
        AddService(UDP, ServiceConf("no-such-scheduler")),
        AddDest(TCP, R2, DestConf(upper=5, lower=10)),
        AddDest(TCP, R6, DestConf()),
    ) == [
        ErrorKind.EXISTS,
        ErrorKind.EXISTS,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.NOT_FOUND,
        ErrorKind.INVALID,
        ErrorKind.INVALID,
        ErrorKind.INVALID,
    ]
    assert await backend.dump() == before  # failed ops change nothing


async def test_a_failed_op_does_not_stop_the_batch(backend: IpvsBackend) -> None:
    await ok(backend, AddService(TCP, ServiceConf()))
    assert await kinds(
        backend,
        AddService(UDP, ServiceConf("rr")),
        AddService(TCP, ServiceConf("rr")),  # exists
        AddDest(UDP, DestKey.of("10.0.1.1", 53), DestConf()),
        AddService(SCTP, ServiceConf("bogus")),  # invalid
        AddDest(TCP, R1, DestConf(weight=2)),
    ) == [None, ErrorKind.EXISTS, None, ErrorKind.INVALID, None]
    assert await backend.dump() == {
        TCP: Service(ServiceConf(), {R1: DestConf(weight=2)}),
        UDP: Service(ServiceConf("rr"), {DestKey.of("10.0.1.1", 53): DestConf()}),
    }


async def test_dump_has_counters_outside_equality(backend: IpvsBackend) -> None:
    await ok(backend, AddService(TCP, ServiceConf()), AddDest(TCP, R1, DestConf()))
    svc = (await backend.dump())[TCP]
    # a destination without an entry has none yet (the memory backend keeps none for its own)
    stats = svc.stats.get(R1, NO_STATS)
    assert stats.active_conns == 0
    assert stats.inactive_conns == 0
    assert svc == Service(svc.conf, dict(svc.dests), {R1: DestStats(5, 5)})


def desired_table() -> Table:
    return {
        TCP: Service(
            ServiceConf("wrr", persistent=300, netmask="255.255.255.0"),
            {
                R1: DestConf(Forward.GATE, 3, 50, 5),
                DestKey.of("10.0.1.2", 8080): DestConf(Forward.GATE, 0),  # becomes :80
                DestKey.of("10.0.1.3", 8080): DestConf(Forward.MASQ, 1),
            },
        ),
        UDP: Service(ServiceConf("rr", ops=True), {DestKey.of("10.0.1.1", 53): DestConf()}),
        SCTP: Service(ServiceConf("sh", frozenset({"sh-fallback"})), {}),
        TCP6: Service(ServiceConf("mh", frozenset({"mh-port"})), {R6: DestConf(Forward.IPIP, 2)}),
        FWM: Service(ServiceConf("lc"), {DestKey.of("10.0.1.9", 0): DestConf()}),
        FWM6: Service(
            ServiceConf("sed", persistent=60, netmask="96"),
            {DestKey.of("2001:db8:1::2", 0): DestConf(Forward.MASQ, 4)},
        ),
    }


async def test_diff_apply_round_trip_converges(backend: IpvsBackend) -> None:
    foreign = ServiceKey.inet(Proto.TCP, "10.9.9.9", 80)
    await ok(
        backend,
        AddService(foreign, ServiceConf("rr")),
        AddDest(foreign, R1, DestConf(weight=9)),
        AddService(UDP, ServiceConf("wlc")),  # managed, wrong conf, stray dest
        AddDest(UDP, DestKey.of("10.0.1.7", 53), DestConf()),
    )
    foreign_before = (await backend.dump())[foreign]
    managed = set(desired_table()) | {ServiceKey.inet(Proto.TCP, "10.0.0.3", 80)}

    async def converge(desired: Table) -> None:
        ops = diff(desired, await backend.dump(), managed)
        assert ops
        await ok(backend, *ops)
        after = await backend.dump()
        assert diff(desired, after, managed) == []
        assert after[foreign] == foreign_before
        assert after[foreign].dests == foreign_before.dests
        assert set(after) == set(desired) | {foreign}

    desired = desired_table()
    await converge(desired)
    table = await backend.dump()
    assert table[TCP].dests[R2] == DestConf(Forward.GATE, 0)

    # Then changes of every kind: quiesce, restore, fallback in, conf edits, a service gone.
    desired[TCP].dests[R1] = DestConf(Forward.GATE, 0)
    desired[TCP].dests[DestKey.of("127.0.0.1", 80)] = DestConf(Forward.GATE, 1)
    desired[TCP] = Service(ServiceConf("wlc"), desired[TCP].dests)
    desired[FWM6].dests[DestKey.of("2001:db8:1::2", 0)] = DestConf(Forward.GATE, 1, 10, 2)
    del desired[UDP]
    desired[SCTP].dests[DestKey.of("10.0.1.4", 9999)] = DestConf(Forward.MASQ, 1)
    await converge(desired)


# ---- connection sync daemons ----------------------------------------------------------------


@pytest.fixture
def sync_interface(backend: IpvsBackend) -> Iterator[str]:
    """A device for the kernel's sync threads (a dummy one in the VM; any name in memory)."""
    if backend.name == "memory":
        yield "lvsync0"
        return
    subprocess.run(["ip", "link", "add", "lvsync0", "type", "dummy"], check=True)
    subprocess.run(["ip", "link", "set", "lvsync0", "up", "multicast", "on"], check=True)
    try:
        yield "lvsync0"
    finally:
        for state in ("master", "backup"):
            subprocess.run(["ipvsadm", "--stop-daemon", state], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", "lvsync0"], check=True)


async def test_sync_daemons_start_read_stop(backend: IpvsBackend, sync_interface: str) -> None:
    master = SyncDaemon(SyncState.MASTER, sync_interface, 42)
    backup = SyncDaemon(
        SyncState.BACKUP, sync_interface, 43, maxlen=1400, group="239.1.2.3", port=9000, ttl=2
    )
    assert await backend.sync_daemons() == ()
    assert await backend.start_sync_daemon(master) is None
    assert await backend.start_sync_daemon(backup) is None  # both at once: one per state
    running = await backend.sync_daemons()
    assert [d.state for d in running] == [SyncState.MASTER, SyncState.BACKUP]
    assert all(d.satisfied_by(r) for d, r in zip((master, backup), running, strict=True))
    if backend.name != "ipvsadm":  # ipvsadm lists what the kernel filled in since 1.28 only
        assert running == (master.as_kernel_runs_it(), backup.as_kernel_runs_it())

    again = await backend.start_sync_daemon(master)
    assert again is not None and again.kind is ErrorKind.EXISTS
    assert await backend.stop_sync_daemon(SyncState.MASTER) is None
    gone = await backend.stop_sync_daemon(SyncState.MASTER)
    assert gone is not None and gone.kind is ErrorKind.NOT_FOUND
    assert await backend.sync_daemons() == running[1:]
    assert await backend.stop_sync_daemon(SyncState.BACKUP) is None
    assert await backend.sync_daemons() == ()


async def test_sync_daemon_refusals(backend: IpvsBackend, sync_interface: str) -> None:
    bad_group = SyncDaemon(SyncState.MASTER, sync_interface, group="10.0.0.1")
    refused = await backend.start_sync_daemon(bad_group)
    assert refused is not None and refused.kind is ErrorKind.INVALID
    if backend.name != "memory":  # the memory backend has no devices to look up
        missing = await backend.start_sync_daemon(SyncDaemon(SyncState.BACKUP, "nosuchdev0"))
        assert missing is not None and missing.kind is ErrorKind.INVALID, missing
    assert await backend.sync_daemons() == ()
