"""Connection sync daemons without a kernel: the model's defaults and matching, the change plan,
the netlink encoding (checked byte by byte against include/uapi/linux/ip_vs.h), ipvsadm's
arguments and listing, and the memory backend's kernel rules."""

from __future__ import annotations

import socket
import struct

import pytest

from lvsmon.ipvs import netlink
from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.errors import ErrorKind
from lvsmon.ipvs.ipvsadm import IpvsadmBackend
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.sync import (
    SyncChange,
    SyncDaemon,
    SyncState,
    ipvsadm_line,
    ipvsadm_start_args,
    parse_ipvsadm_daemons,
    sync_change,
    sync_error,
)

MASTER = SyncDaemon(SyncState.MASTER, "eth1", 7)
BACKUP = SyncDaemon(SyncState.BACKUP, "eth1", 7)
FULL = SyncDaemon(SyncState.BACKUP, "eth1", 9, maxlen=1400, group="239.1.2.3", port=9000, ttl=3)


def nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


# ---- the model ------------------------------------------------------------------------------


def test_the_kernel_fills_in_its_defaults() -> None:
    shown = MASTER.as_kernel_runs_it()
    assert (shown.maxlen, shown.group, shown.port, shown.ttl) == (1472, "224.0.0.81", 8848, 1)
    v6 = SyncDaemon(SyncState.BACKUP, "eth1", group="FF02::81").as_kernel_runs_it()
    assert (v6.maxlen, v6.group) == (1452, "ff02::81")
    # a backup's length is raised to 1024, a master's is not
    assert SyncDaemon(SyncState.BACKUP, "e", maxlen=100).as_kernel_runs_it().maxlen == 1024
    assert SyncDaemon(SyncState.MASTER, "e", maxlen=100).as_kernel_runs_it().maxlen == 100


def test_satisfied_by() -> None:
    running = MASTER.as_kernel_runs_it()
    assert MASTER.satisfied_by(running)
    assert not BACKUP.satisfied_by(running)  # another state
    assert not SyncDaemon(SyncState.MASTER, "eth2", 7).satisfied_by(running)
    assert not SyncDaemon(SyncState.MASTER, "eth1", 8).satisfied_by(running)
    assert not SyncDaemon(SyncState.MASTER, "eth1", 7, ttl=2).satisfied_by(running)
    assert not SyncDaemon(SyncState.MASTER, "eth1", 7, port=1).satisfied_by(running)
    assert not SyncDaemon(SyncState.MASTER, "eth1", 7, maxlen=1000).satisfied_by(running)
    # an unset length is the MTU's: any running length does (a jumbo-frame interface)
    assert MASTER.satisfied_by(SyncDaemon(SyncState.MASTER, "eth1", 7, maxlen=8972))
    # an old ipvsadm lists only interface and syncid
    assert FULL.satisfied_by(SyncDaemon(SyncState.BACKUP, "eth1", 9))
    assert FULL.satisfied_by(FULL.as_kernel_runs_it())


def test_change_plan() -> None:
    assert sync_change((MASTER,), ()) == SyncChange(start=(MASTER,))
    running = (MASTER.as_kernel_runs_it(),)
    assert sync_change((MASTER,), running) == SyncChange(keep=(MASTER,))
    other = SyncDaemon(SyncState.MASTER, "eth1", 8)
    assert sync_change((other,), running) == SyncChange(stop=(SyncState.MASTER,), start=(other,))
    # a state the config does not name is left alone
    assert sync_change((BACKUP,), running) == SyncChange(start=(BACKUP,))
    assert sync_change((), running) == SyncChange()


def test_errors_from_errno_and_ipvsadm_words() -> None:
    assert sync_error(SyncState.MASTER, True, 17).kind is ErrorKind.EXISTS
    assert sync_error(SyncState.MASTER, False, 3).kind is ErrorKind.NOT_FOUND
    nodev = sync_error(SyncState.BACKUP, True, 19)
    assert nodev.kind is ErrorKind.INVALID and "no such interface" in nodev.message
    assert "backup" in nodev.message and "start" in nodev.message
    assert sync_error(SyncState.MASTER, True, "Daemon has already run").kind is ErrorKind.EXISTS
    assert sync_error(SyncState.MASTER, False, "No daemon is running").kind is ErrorKind.NOT_FOUND
    assert sync_error(SyncState.MASTER, True, "No such device").kind is ErrorKind.INVALID
    denied = "Can't initialize ipvs: Permission denied (you must be root)"
    assert sync_error(SyncState.MASTER, True, denied).kind is ErrorKind.PERMISSION


# ---- ipvsadm --------------------------------------------------------------------------------


def test_ipvsadm_arguments() -> None:
    assert ipvsadm_start_args(MASTER) == [
        "--start-daemon",
        "master",
        "--mcast-interface",
        "eth1",
        "--syncid",
        "7",
    ]
    assert ipvsadm_start_args(FULL)[6:] == [
        "--sync-maxlen",
        "1400",
        "--mcast-group",
        "239.1.2.3",
        "--mcast-port",
        "9000",
        "--mcast-ttl",
        "3",
    ]


def test_ipvsadm_listing() -> None:
    text = (
        "master sync daemon (mcast=eth1, syncid=7, maxlen=1472, group=224.0.0.81, "
        "port=8848, ttl=1)\n"
        "backup sync daemon (mcast=eth1, syncid=9, maxlen=1400, group=ff02::81, "
        "port=9000, ttl=3)\n"
    )
    master, backup = parse_ipvsadm_daemons(text)
    assert master == MASTER.as_kernel_runs_it()
    assert backup == SyncDaemon(SyncState.BACKUP, "eth1", 9, 1400, "ff02::81", 9000, 3)
    old = parse_ipvsadm_daemons("master sync daemon (mcast=eth0, syncid=0)\n")
    assert old == (SyncDaemon(SyncState.MASTER, "eth0", 0),)
    assert parse_ipvsadm_daemons("") == ()
    assert parse_ipvsadm_daemons(ipvsadm_line(FULL)) == (FULL.as_kernel_runs_it(),)
    with pytest.raises(ValueError):
        parse_ipvsadm_daemons("something else\n")


async def test_ipvsadm_backend_with_a_fake_ipvsadm(tmp_path: pytest.TempPathFactory) -> None:
    """The commands the backend runs and how it reads their outcome (a fake ipvsadm)."""
    calls = tmp_path / "calls"  # type: ignore[operator]
    fake = tmp_path / "ipvsadm"  # type: ignore[operator]
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in\n'
        '  "-L --daemon") echo "backup sync daemon (mcast=eth1, syncid=7)";;\n'
        '  "--stop-daemon master") echo "No daemon is running" >&2; exit 1;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    backend = IpvsadmBackend(str(fake))
    assert await backend.sync_daemons() == (BACKUP,)
    assert await backend.start_sync_daemon(FULL) is None
    error = await backend.stop_sync_daemon(SyncState.MASTER)
    assert error is not None and error.kind is ErrorKind.NOT_FOUND
    assert calls.read_text().splitlines() == [
        "-L --daemon",
        "--start-daemon backup --mcast-interface eth1 --syncid 9 --sync-maxlen 1400 "
        "--mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 3",
        "--stop-daemon master",
    ]


# ---- netlink encoding -----------------------------------------------------------------------


def test_netlink_start_request_bytes() -> None:
    body = codec.daemon_start(FULL).body
    cmd, version, _ = struct.unpack_from("=BBH", body)
    assert (cmd, version) == (9, 1)  # IPVS_CMD_NEW_DAEMON
    inner = (
        nla(1, struct.pack("=I", 2))  # STATE: backup
        + nla(2, b"eth1\0")  # MCAST_IFN
        + nla(3, struct.pack("=I", 9))  # SYNC_ID
        + nla(4, struct.pack("=H", 1400))  # SYNC_MAXLEN
        + nla(5, socket.inet_aton("239.1.2.3"))  # MCAST_GROUP, network order
        + nla(7, struct.pack("=H", 9000))  # MCAST_PORT, host order (the kernel converts)
        + nla(8, b"\3")  # MCAST_TTL
    )
    assert body[4:] == nla(3, inner)  # nested in IPVS_CMD_ATTR_DAEMON


def test_netlink_minimal_and_ipv6_requests() -> None:
    body = codec.daemon_start(MASTER).body
    inner = nla(1, struct.pack("=I", 1)) + nla(2, b"eth1\0") + nla(3, struct.pack("=I", 7))
    assert body[4:] == nla(3, inner)
    v6 = SyncDaemon(SyncState.MASTER, "eth1", group="ff02::81")
    assert nla(6, socket.inet_pton(socket.AF_INET6, "ff02::81")) in codec.daemon_start(v6).body
    stop = codec.daemon_stop(SyncState.BACKUP).body
    assert stop == struct.pack("=BBH", 10, 1, 0) + nla(3, nla(1, struct.pack("=I", 2)))


@pytest.mark.parametrize(
    "bad",
    [
        SyncDaemon(SyncState.MASTER, "a-very-long-ifname"),
        SyncDaemon(SyncState.MASTER, "eth1", 256),
        SyncDaemon(SyncState.MASTER, "eth1", group="10.0.0.1"),
        SyncDaemon(SyncState.MASTER, "eth1", ttl=0),
        SyncDaemon(SyncState.MASTER, "eth1", maxlen=70000),
    ],
)
async def test_refused_before_the_kernel(bad: SyncDaemon) -> None:
    with pytest.raises(ValueError):
        codec.daemon_start(bad)
    backend = netlink.NetlinkBackend()
    try:
        error = await backend.start_sync_daemon(bad)
    finally:
        await backend.close()
    assert error is not None and error.kind is ErrorKind.INVALID
    memory = MemoryBackend()
    error = await memory.start_sync_daemon(bad)
    assert error is not None and error.kind is ErrorKind.INVALID
    assert memory.sync == {}


def test_netlink_decodes_the_kernels_reply() -> None:
    """A GET_DAEMON record as ip_vs_genl_fill_daemon builds it."""
    record = nla(
        3,
        nla(1, struct.pack("=I", 1))
        + nla(2, b"eth1\0")
        + nla(3, struct.pack("=I", 7))
        + nla(4, struct.pack("=H", 1472))
        + nla(7, struct.pack("=H", 8848))
        + nla(8, b"\1")
        + nla(5, socket.inet_aton("224.0.0.81")),
    )
    reply = struct.pack("=BBH", 11, 1, 0) + record  # the genl header: IPVS_CMD_GET_DAEMON
    assert codec.daemon_from(reply) == MASTER.as_kernel_runs_it()
    v6 = nla(1, struct.pack("=I", 2)) + nla(2, b"e\0") + nla(6, socket.inet_pton(10, "ff02::81"))
    decoded = codec.decode_daemon(codec.parse_attrs(v6))
    assert decoded is not None and decoded.group == "ff02::81"
    assert codec.decode_daemon(codec.parse_attrs(nla(1, struct.pack("=I", 4)))) is None


# ---- the memory backend ---------------------------------------------------------------------


async def test_memory_backend_keeps_the_kernels_rules() -> None:
    backend = MemoryBackend()
    assert await backend.sync_daemons() == ()
    assert await backend.start_sync_daemon(MASTER) is None
    again = await backend.start_sync_daemon(MASTER)
    assert again is not None and again.kind is ErrorKind.EXISTS
    assert await backend.start_sync_daemon(FULL) is None  # master and backup at once
    assert await backend.sync_daemons() == (MASTER.as_kernel_runs_it(), FULL.as_kernel_runs_it())
    assert await backend.stop_sync_daemon(SyncState.MASTER) is None
    gone = await backend.stop_sync_daemon(SyncState.MASTER)
    assert gone is not None and gone.kind is ErrorKind.NOT_FOUND
    assert await backend.sync_daemons() == (FULL.as_kernel_runs_it(),)
    assert "ipvsadm --start-daemon master --mcast-interface eth1 --syncid 7" in backend.log
    assert "ipvsadm --stop-daemon master" in backend.log
