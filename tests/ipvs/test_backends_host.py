"""The memory backend's extras, the factory, and the ipvsadm backend where the host allows:
this host's kernel has no IPVS, so the real ipvsadm must report NO_IPVS, never crash."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lvsmon.ipvs.errors import BackendError, ErrorKind
from lvsmon.ipvs.factory import UnknownBackend, make_backend
from lvsmon.ipvs.ipvsadm import IpvsadmBackend, find_ipvsadm
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Proto, Service, ServiceConf, ServiceKey
from lvsmon.ipvs.ops import AddDest, AddService, DeleteService, Op

VIP = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
REAL = DestKey.of("10.0.1.1", 80)
SAMPLES = Path(__file__).parent / "samples"
HOST_HAS_IPVS = Path("/proc/net/ip_vs").exists()


async def test_memory_log_and_render() -> None:
    backend = MemoryBackend()
    await backend.apply(
        [
            AddService(VIP, ServiceConf("rr")),
            AddDest(VIP, REAL, DestConf(weight=2)),
            DeleteService(ServiceKey.fwm(3)),
        ]
    )
    assert backend.log == [
        "ipvsadm -A -t 10.0.0.1:80 -s rr",
        "ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 2 -x 0 -y 0",
        "ipvsadm -D -f 3",
        "# failed: not-found: no such service fwm:3",
    ]
    assert backend.applies == 1
    assert "TCP  10.0.0.1:80 rr" in backend.render()
    assert "  -> 10.0.1.1:80                  Route   2" in backend.render()


async def test_memory_log_keeps_the_last_lines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from lvsmon.ipvs import memory

    monkeypatch.setattr(memory, "LOG_KEEP", 5)
    backend = MemoryBackend()
    await backend.apply([AddService(VIP, ServiceConf("rr"))])
    for weight in range(1, 30):
        await backend.apply(
            [AddDest(VIP, DestKey.of(f"10.0.2.{weight}", 80), DestConf(weight=weight))]
        )
        assert len(backend.log) <= 10
    assert backend.log[-1] == "ipvsadm -a -t 10.0.0.1:80 -r 10.0.2.29:80 -g -w 29 -x 0 -y 0"
    assert len(backend.table[VIP].dests) == 29  # the table keeps everything, of course


async def test_memory_log_is_trimmed_by_an_eighth_not_by_all_it_keeps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 22: trimmed at 2 x LOG_KEEP, a start-up's ops freed LOG_KEEP strings at once, every
    LOG_KEEP ops, and the allocator kept their pools (126 bytes of RSS a real at 10,000)."""
    from lvsmon.ipvs import memory

    monkeypatch.setattr(memory, "LOG_KEEP", 16)
    backend = MemoryBackend()
    await backend.apply([AddService(VIP, ServiceConf("rr"))])
    lengths = []
    for i in range(1, 60):
        await backend.apply([AddDest(VIP, DestKey.of(f"10.0.3.{i}", 80), DestConf(weight=1))])
        lengths.append(len(backend.log))
    assert max(lengths) == 16 + 16 // memory.LOG_SLACK_SHARE  # never more than an eighth over
    assert min(lengths[20:]) == 16


async def test_memory_dump_is_a_dict_of_its_own_and_start_table_is_copied() -> None:
    start = {VIP: Service(ServiceConf(), {REAL: DestConf()})}
    backend = MemoryBackend(start)
    dumped = await backend.dump()
    # the Service objects are the backend's own (never changed once published), the dict not
    assert dumped[VIP] is backend.table[VIP]
    dumped.clear()
    start[VIP].dests.clear()
    start.clear()
    assert (await backend.dump())[VIP].dests == {REAL: DestConf()}


async def test_memory_unavailable_acts_like_no_ipvs() -> None:
    backend = MemoryBackend(available=False)
    with pytest.raises(BackendError) as caught:
        await backend.dump()
    assert caught.value.error.kind is ErrorKind.NO_IPVS
    results = await backend.apply([AddService(VIP, ServiceConf())])
    assert [r.error.kind for r in results if r.error] == [ErrorKind.NO_IPVS]


def test_factory() -> None:
    assert isinstance(make_backend("memory"), MemoryBackend)
    made = make_backend("ipvsadm", ipvsadm="/bin/false")
    assert isinstance(made, IpvsadmBackend) and made.ipvsadm == "/bin/false"
    with pytest.raises(UnknownBackend, match="choose one of: netlink, ipvsadm, memory"):
        make_backend("iptables")


def test_factory_netlink_takes_no_arguments() -> None:
    assert make_backend("netlink").name == "netlink"


@pytest.mark.skipif(HOST_HAS_IPVS, reason="only where the kernel has no IPVS (the CI host)")
@pytest.mark.skipif(find_ipvsadm() is None, reason="ipvsadm not installed")
async def test_real_ipvsadm_without_ipvs_says_no_ipvs() -> None:
    backend = IpvsadmBackend()
    with pytest.raises(BackendError) as caught:
        await backend.dump()
    assert caught.value.error.kind is ErrorKind.NO_IPVS
    results = await backend.apply([AddService(VIP, ServiceConf()), DeleteService(VIP)])
    assert [r.error.kind if r.error else None for r in results] == [ErrorKind.NO_IPVS] * 2


async def test_missing_ipvsadm_is_a_typed_error(tmp_path: Path) -> None:
    backend = IpvsadmBackend(str(tmp_path / "no-such-ipvsadm"))
    with pytest.raises(BackendError) as caught:
        await backend.dump()
    assert caught.value.error.kind is ErrorKind.OTHER
    results = await backend.apply([AddService(VIP, ServiceConf())])
    assert [r.error.kind for r in results if r.error] == [ErrorKind.OTHER]


def stand_in(tmp_path: Path, body: str) -> str:
    """A stand-in ipvsadm (a shell script): it records its arguments and stdin."""
    path = tmp_path / "ipvsadm"
    path.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_dump_reads_save_and_thresholds(tmp_path: Path) -> None:
    body = (
        f'case "$*" in "-S -n") cat {SAMPLES}/save.txt;; '
        f'"-L -n --thresholds") cat {SAMPLES}/thresholds.txt;; *) exit 9;; esac'
    )
    backend = IpvsadmBackend(stand_in(tmp_path, body))
    table = await backend.dump()
    assert table[VIP].dests[DestKey.of("10.0.1.1", 8080)] == DestConf(Forward.MASQ, 5, 100, 10)
    assert (tmp_path / "calls").read_text().splitlines() == ["-S -n", "-L -n --thresholds"]


async def test_apply_is_one_restore_and_invalid_ops_are_not_sent(tmp_path: Path) -> None:
    backend = IpvsadmBackend(stand_in(tmp_path, f"cat > {tmp_path}/stdin"))
    ops: list[Op] = [
        AddService(VIP, ServiceConf("rr")),
        AddService(ServiceKey.inet(Proto.TCP, "10.0.0.1", 81), ServiceConf("rr", ops=True)),
        AddDest(VIP, REAL, DestConf(weight=3)),
    ]
    results = await backend.apply(ops)
    assert [r.op for r in results] == ops
    assert [r.error.kind if r.error else None for r in results] == [None, ErrorKind.INVALID, None]
    assert (tmp_path / "calls").read_text().splitlines() == ["-R"]
    assert (tmp_path / "stdin").read_text().splitlines() == [
        "-A -t 10.0.0.1:80 -s rr",
        "-Z -f 4294967295",
        "-a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 3 -x 0 -y 0",
        "-Z -f 4294967295",
    ]


async def test_a_hanging_ipvsadm_is_a_typed_error(tmp_path: Path) -> None:
    backend = IpvsadmBackend(stand_in(tmp_path, "exec sleep 30"), timeout=0.2)
    results = await backend.apply([AddService(VIP, ServiceConf())])
    assert results[0].error is not None and "did not finish" in results[0].error.message


def test_ipvsadm_found_in_sbin_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/usr/sbin/ipvsadm"):
        pytest.skip("ipvsadm not installed")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_ipvsadm() == "/usr/sbin/ipvsadm"
