"""The status file's per-service digests (what `lvsmon verify-table` compares with the kernel):
they change with any rule the kernel acts on, not with counters, and an unchanged service is not
hashed again at each status write."""

from __future__ import annotations

import pytest

from lvsmon.engine import status as status_mod
from lvsmon.engine.status import ABSENT, TableDigests, service_digest, table_digests
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    DestStats,
    Forward,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)

VIP = ServiceKey.inet(Proto.TCP, "10.0.0.1", 80)
OTHER = ServiceKey.fwm(5)
R1, R2 = DestKey.of("10.0.1.1", 80), DestKey.of("10.0.1.2", 80)


def svc(weight: int = 1, scheduler: str = "rr") -> Service:
    return Service(
        ServiceConf(scheduler), {R1: DestConf(Forward.MASQ, weight), R2: DestConf(Forward.MASQ)}
    )


def test_digest_follows_rules_not_counters_or_order() -> None:
    base = service_digest(VIP, svc())
    assert service_digest(VIP, svc(weight=2)) != base
    assert service_digest(VIP, svc(scheduler="wlc")) != base
    reordered = Service(ServiceConf("rr"), {R2: DestConf(Forward.MASQ), R1: DestConf(Forward.MASQ)})
    assert service_digest(VIP, reordered) == base
    counted = svc()
    counted.stats[R1] = DestStats(active_conns=7)
    assert service_digest(VIP, counted) == base
    assert table_digests({VIP: svc()}, [VIP, OTHER]) == {str(VIP): base, str(OTHER): ABSENT}


def test_unchanged_services_are_not_hashed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[ServiceKey] = []
    real = status_mod.service_digest

    def counting(key: ServiceKey, service: Service) -> str:
        hashed.append(key)
        return real(key, service)

    monkeypatch.setattr(status_mod, "service_digest", counting)
    digests = TableDigests()
    first: Table = {VIP: svc(), OTHER: svc()}
    assert digests.of(None, [VIP]) is None  # the table is unknown
    out = digests.of(first, [VIP, OTHER])
    assert sorted(hashed, key=str) == sorted([VIP, OTHER], key=str)
    hashed.clear()
    # a resync's fresh dump, equal to the last: nothing hashed, same answer
    assert digests.of({VIP: svc(), OTHER: svc()}, [VIP, OTHER]) == out
    assert hashed == []
    # one service changed: only it is hashed
    changed = digests.of({VIP: svc(weight=0), OTHER: svc()}, [VIP, OTHER])
    assert hashed == [VIP] and changed is not None and out is not None
    assert changed[str(VIP)] != out[str(VIP)] and changed[str(OTHER)] == out[str(OTHER)]


def test_a_new_table_of_the_same_services_names_no_service_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resync gives a new table that keeps each equal service's object: the digests and
    their names (str of a ServiceKey is Python, 2,284 of them after each resync at #2318's
    shape) are the last ones."""
    digests = TableDigests()
    services = {VIP: svc(), OTHER: svc()}
    out = digests.of(dict(services), [VIP, OTHER])
    named: list[ServiceKey] = []
    real = ServiceKey.__str__

    def counting(key: ServiceKey) -> str:
        named.append(key)
        return real(key)

    monkeypatch.setattr(ServiceKey, "__str__", counting)
    assert digests.of(dict(services), [VIP, OTHER]) == out
    assert named == []
    changed = digests.of({**services, VIP: svc(weight=3)}, [VIP, OTHER])
    assert changed is not None and out is not None and changed[str(VIP)] != out[str(VIP)]
    assert named  # a digest changed: named anew
