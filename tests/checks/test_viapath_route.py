"""A check job's Route (viapath.py): its mark and its source are looked up once and reused by
every check until the engine publishes new marks, a bind fails or the source's time runs out;
each check then costs its three system calls and no look-up (issue 23 point 6)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from lvsmon.checks import viapath
from lvsmon.checks.base import CheckFailed, CheckSpec
from lvsmon.checks.prober import ProbePlan

RIP = "127.0.0.2"
VIP = "127.0.0.3"
MARK = 0x4C560007


@pytest.fixture(autouse=True)
def marks() -> Iterator[None]:
    viapath.use_marks({(RIP, "gate"): MARK})
    viapath._sources.clear()
    yield
    viapath.use_marks({})
    viapath._sources.clear()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The source look-ups made (each one a datagram socket's four system calls)."""
    made: list[str] = []
    real = viapath.source_toward

    def counting(address: str, family: int, avoid: str = "") -> str:
        made.append(address)
        return real(address, family, avoid)

    monkeypatch.setattr(viapath, "source_toward", counting)
    return made


def spec(path: str = "vip") -> CheckSpec:
    return CheckSpec(
        "connect", RIP, 8080, 2.0, checkpath=path, pathvip=VIP, pathforward="gate"
    )  # fmt: skip


def steered(route: viapath.Route, now: float = 0.0) -> tuple[tuple[str, int], int, str]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        addr = route.steer(sock, now or time.monotonic())
        return addr, sock.getsockopt(socket.SOL_SOCKET, viapath.SO_MARK), sock.getsockname()[0]


def test_a_plan_through_the_vip_has_a_route_and_one_to_the_real_none() -> None:
    assert isinstance(ProbePlan(spec(), socket.AF_INET, None).via, viapath.Route)
    assert ProbePlan(spec("real"), socket.AF_INET, None).via is None


def test_checks_reuse_the_route(lookups: list[str]) -> None:
    route = viapath.Route(spec())
    first = steered(route)
    assert first == ((VIP, 8080), MARK, "127.0.0.1")
    for _ in range(5):
        assert steered(route) == first
    assert lookups == [RIP]  # once, not per check


def test_new_marks_are_taken_at_the_next_check(lookups: list[str]) -> None:
    route = viapath.Route(spec())
    assert steered(route)[1] == MARK
    viapath.use_marks({(RIP, "gate"): MARK + 1})
    assert steered(route)[1] == MARK + 1
    viapath.use_marks({})
    with pytest.raises(CheckFailed, match=r"no probe service for 127\.0\.0\.2"):
        steered(route)


def test_the_source_is_looked_up_again_when_its_time_runs_out(
    lookups: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    route = viapath.Route(spec())
    start = time.monotonic()
    steered(route, start)
    # the clock is the caller's (the prober read it at the check's start): none read here
    with monkeypatch.context() as clock:
        clock.setattr(time, "monotonic", lambda: start + 10 * viapath.SOURCE_TTL_S)
        steered(route, start + viapath.SOURCE_TTL_S - 1)
    assert lookups == [RIP]
    viapath._sources[RIP] = ("127.0.0.1", start - viapath.SOURCE_TTL_S)  # its time is out too
    steered(route, start + 2 * viapath.SOURCE_TTL_S)
    assert lookups == [RIP, RIP]


def test_a_failed_bind_forgets_the_source(lookups: list[str]) -> None:
    route = viapath.Route(spec())
    steered(route)
    route.bind = ("192.0.2.77", 0)  # a source that went away: the bind fails
    with pytest.raises(CheckFailed, match="connect through the VIP"):
        steered(route)
    assert RIP not in viapath._sources
    assert steered(route)[2] == "127.0.0.1"  # looked up again
    assert lookups == [RIP, RIP]
