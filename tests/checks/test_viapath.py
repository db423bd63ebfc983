"""Checks through the VIP, the socket side (issue 23), on loopback: the prober's connect is marked
(SO_MARK), bound to the director's source toward the real and sent to VIP:checkport; `both`
runs both paths and its reason says which answers. (IPVS itself steers the marked connect
only in the VM: tests/lab/test_kernel_checkpath.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lvsmon.checks import viapath
from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, CheckSpecError
from lvsmon.checks.registry import plan_probe, run_check

RIP = "127.0.0.2"
VIP = "127.0.0.3"
MARK = 0x4C560007


@pytest.fixture(autouse=True)
def marks() -> Iterator[None]:
    viapath.use_marks({(RIP, "gate"): MARK})
    yield
    viapath.use_marks({})


async def _ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # a connect check closes at once
    finally:
        writer.close()


async def _http(host: str) -> tuple[asyncio.Server, int, list[tuple[str, int]]]:
    peers: list[tuple[str, int]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        await _ok(reader, writer)

    server = await asyncio.start_server(serve, host, 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, peers


@pytest.fixture
async def on_vip() -> AsyncIterator[tuple[int, list[tuple[str, int]]]]:
    """A web server on the VIP only (as a real whose service is bound to the VIP)."""
    server, port, peers = await _http(VIP)
    async with server:
        yield port, peers


def spec(port: int, path: str, kind: str = "negotiate") -> CheckSpec:
    return CheckSpec(
        kind,  # type: ignore[arg-type]
        RIP,
        port,
        2.0,
        service="http" if kind == "negotiate" else "none",
        receive="ok" if kind == "negotiate" else "",
        checkpath=path,
        pathvip=VIP,
        pathforward="gate",
    )


def test_steer_marks_binds_and_aims_at_the_vip() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        addr = viapath.Route(spec(8080, "vip")).steer(sock, time.monotonic())
        assert addr == (VIP, 8080)
        assert sock.getsockopt(socket.SOL_SOCKET, viapath.SO_MARK) == MARK
        assert sock.getsockopt(socket.IPPROTO_IP, viapath.IP_BIND_ADDRESS_NO_PORT) == 1
        assert sock.getsockname()[1] == 0  # the port is connect's to pick
        # the source the kernel picks toward the real (on loopback: 127.0.0.1)
        assert sock.getsockname()[0] == viapath.source_toward(RIP, socket.AF_INET)


def test_a_real_without_probe_service_is_not_steered() -> None:
    viapath.use_marks({})
    with (
        socket.socket() as sock,
        pytest.raises(CheckFailed, match=r"no probe service for 127\.0\.0\.2"),
    ):
        viapath.Route(spec(80, "vip")).steer(sock, time.monotonic())


@pytest.mark.parametrize("kind", ["connect", "negotiate"])
async def test_vip_connects_to_the_vip_with_the_mark(
    on_vip: tuple[int, list[tuple[str, int]]], kind: str
) -> None:
    port, peers = on_vip
    assert plan_probe(spec(port, "vip", kind)) is not None  # the prober's path, steered
    result = await run_check(spec(port, "vip", kind))
    assert result.ok, result.reason
    for _ in range(100):
        if peers:
            break
        await asyncio.sleep(0.01)
    assert peers and peers[0][0] == viapath.source_toward(RIP, socket.AF_INET)
    # the same check of the real's own address finds nothing there
    assert not (await run_check(spec(port, "real", kind))).ok


async def test_no_mark_fails_fast_with_the_reason(
    on_vip: tuple[int, list[tuple[str, int]]],
) -> None:
    viapath.use_marks({})
    result = await run_check(spec(on_vip[0], "vip"))
    assert not result.ok
    assert result.reason == "connect: no probe service for 127.0.0.2 (gate) yet"
    assert on_vip[1] == []


async def test_both_service_bound_to_the_vip(on_vip: tuple[int, list[tuple[str, int]]]) -> None:
    port, _ = on_vip
    assert plan_probe(spec(port, "both")) is None  # two checks, as a task
    result = await run_check(spec(port, "both"))
    assert result.ok
    assert result.reason.startswith(
        "answers only through the VIP (service bound to the VIP); on its own address: connect:"
    ), result.reason


async def test_both_vip_missing_on_the_real() -> None:
    server, port, _ = await _http(RIP)  # serves on the real's address, not on the VIP
    async with server:
        result = await run_check(spec(port, "both"))
    assert not result.ok
    assert result.reason.startswith(
        "answers on its own address but not through the VIP: VIP missing on its loopback, "
        "tunnel down, or rp_filter (connect: "
    ), result.reason


async def test_both_fine_both_ways() -> None:
    first, port, _ = await _http(RIP)
    servers = [first, await asyncio.start_server(_ok, VIP, port)]
    try:
        result = await run_check(spec(port, "both"))
    finally:
        for s in servers:
            s.close()
    assert result.ok, result.reason
    assert result.reason == "http: status 200"


def test_combined_reasons() -> None:
    up = CheckResult(True, "http: status 200", 0.1, received=5)
    down = CheckResult(False, "connect: connection refused", 0.2)
    late = CheckResult(False, "timeout after 2s during connect", 2.0, timed_out=True)
    assert viapath.combined(up, up) == CheckResult(True, "http: status 200", 0.1, received=5)
    both_down = viapath.combined(down, late)
    assert not both_down.ok and both_down.timed_out
    assert both_down.reason == (
        "connect: connection refused; through the VIP: timeout after 2s during connect"
    )
    rip_only = viapath.combined(up, late)
    assert not rip_only.ok and rip_only.timed_out
    assert rip_only.reason.endswith("rp_filter (timeout after 2s during connect)")
    vip_only = viapath.combined(down, up)
    assert vip_only.ok and not vip_only.timed_out


def test_spec_validation() -> None:
    with pytest.raises(CheckSpecError, match="checkpath must be real, vip or both"):
        CheckSpec("connect", RIP, 80, 1.0, checkpath="rip", pathvip=VIP, pathforward="gate")
    with pytest.raises(CheckSpecError, match="needs gate or ipip"):
        CheckSpec("connect", RIP, 80, 1.0, checkpath="vip", pathvip=VIP, pathforward="masq")
    with pytest.raises(CheckSpecError, match="differ in family"):
        CheckSpec("connect", RIP, 80, 1.0, checkpath="vip", pathvip="::1", pathforward="gate")
    assert CheckSpec("connect", RIP, 80, 1.0).checkpath == "real"


async def test_vip_only_through_the_prober() -> None:
    """A check the prober cannot run (https to a host name) is not sent unsteered."""
    s = CheckSpec(
        "negotiate", RIP, 443, 1.0, service="https", virtualhost="www.example",
        checkpath="vip", pathvip=VIP, pathforward="gate",
    )  # fmt: skip
    if plan_probe(s) is None:
        result = await run_check(s)
        assert not result.ok
        assert "cannot be sent through the VIP" in result.reason


def test_combined_keeps_the_certificate_end() -> None:
    """sslexpirywarn: the real's certificate end, read on either path, reaches the engine."""
    rip = CheckResult(True, "http: status 200", cert_not_after=100.0)
    vip = CheckResult(False, "timeout after 1s during tls")
    assert viapath.combined(rip, vip).cert_not_after == 100.0
    assert viapath.combined(rip, CheckResult(True, "ok", cert_not_after=200.0)).cert_not_after == (
        200.0
    )
    assert viapath.combined(vip, vip).cert_not_after is None


def _if_inet6(path: Path, rows: list[tuple[str, int, int, int, str]]) -> str:
    """A stand-in /proc/net/if_inet6: address, prefix length, scope, flags, device."""
    lines = []
    for n, (address, plen, scope, flags, dev) in enumerate(rows):
        hexed = ipaddress.IPv6Address(address).exploded.replace(":", "")
        lines.append(f"{hexed} {n + 1:02x} {plen:02x} {scope:02x} {flags:02x} {dev:>8}\n")
    path.write_text("".join(lines))
    return str(path)


def test_an_ipv6_probe_never_comes_from_the_vip(tmp_path: Path) -> None:
    """IPv6 picks the VIP (a /128) as the source toward a real on the director's /64: the other
    address of that interface whose prefix holds the real is taken instead."""
    table = _if_inet6(
        tmp_path / "if_inet6",
        [
            ("fd30::100", 128, 0, 0x80, "br0"),  # the VIP
            ("fd30::1", 64, 0, 0x80, "br0"),
            ("fe80::1", 64, 0x20, 0x80, "br0"),  # link-local: not a source for a global real
            ("fd31::1", 64, 0, 0x80, "br0"),  # another prefix, same interface
            ("fd30::7", 64, 0, 0x80 | 0x40, "br0"),  # tentative
            ("fd30::9", 64, 0, 0x80, "eth9"),  # another interface
        ],
    )
    assert viapath.other_source6("fd30::11", "fd30::100", table) == "fd30::1"
    # no address of the VIP's interface holds the real: any that is not a /128
    assert viapath.other_source6("fd40::11", "fd30::100", table) in {"fd30::1", "fd31::1"}
    only_vips = _if_inet6(
        tmp_path / "vips", [("fd30::100", 128, 0, 0x80, "br0"), ("fd30::101", 128, 0, 0, "br0")]
    )
    assert viapath.other_source6("fd30::11", "fd30::100", only_vips) is None
    assert viapath.other_source6("fd30::11", "fd30::100", str(tmp_path / "missing")) is None


def test_a_plan_made_from_another_keeps_its_route() -> None:
    """A check run as a task (drive.probe_in_task) makes a plan per check from the job's: it
    takes that plan's Route, with what the Route caches, instead of a new one each check."""
    from lvsmon.checks.prober import DialoguePlan, ProbePlan

    s = CheckSpec("connect", RIP, 80, 1.0, checkpath="vip", pathvip=VIP, pathforward="gate")
    plan = ProbePlan(s, socket.AF_INET, None)
    assert isinstance(plan.addr, viapath.Route)
    again = DialoguePlan(s, plan.family, plan.addr, lambda: None)  # type: ignore[arg-type,return-value]
    assert again.addr is plan.addr
