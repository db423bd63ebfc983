"""Graceful removal (engine/leaving.py) and the dead-real policy's table rule (issue 25 point 3):
who starts leaving on a reload, who is done (no connections, time up, gone), who comes back, a
removed virtual, the merge into the desired table, and deadconns=expire deleting a down real."""

from __future__ import annotations

import pytest

from lvsmon.engine.desired import desired_table, layout_of
from lvsmon.engine.health import ADOPTED_UP, DOWN
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.leaving import (
    ADDED_AGAIN,
    GONE,
    NO_CONNECTIONS,
    TIME_UP,
    Change,
    Leaving,
    LeavingService,
    merged,
    settled,
    started,
    status_of,
)
from lvsmon.ipvs.model import DestConf, DestKey, DestStats, Forward, Service, ServiceKey, Table

from .conftest import cfg

VKEY = ServiceKey.inet("tcp", "192.0.2.1", 80)
UKEY = ServiceKey.inet("udp", "192.0.2.1", 53)
A, B, C = (DestKey(f"192.0.2.{n}", 80) for n in (11, 12, 13))


def config(reals: str, extra: str = "removedrain=30\n", udp: bool = False) -> str:
    lines = "".join(f"\treal={r}:80 masq 5\n" for r in reals.split())
    text = extra + "virtual=192.0.2.1:80\n" + lines + "\tchecktype=connect\n"
    if udp:
        text += "virtual=192.0.2.1:53\n\treal=192.0.2.11:53 masq\n"
        text += "\tchecktype=connect\n\tprotocol=udp\n"
    return text


def kernel(c_text: str) -> Table:
    """The table of `c_text` with every real up."""
    c = cfg(c_text)
    health = {RealRef(v.key, r.address, r.port): ADOPTED_UP for v in c.virtuals for r in v.reals}
    return desired_table(c, health, (), {})


def reload(
    old_text: str, new_text: str, actual: Table, leaving: Leaving | None = None, now: float = 100.0
) -> tuple[dict[ServiceKey, LeavingService], list[Change]]:
    old, new = cfg(old_text), cfg(new_text)
    return started(leaving or {}, old, layout_of(old), new, layout_of(new), actual, now)


def with_conns(
    table: Table, key: ServiceKey, dest: DestKey, active: int, inactive: int = 0
) -> Table:
    table[key].stats[dest] = DestStats(active, inactive)
    return table


def test_a_removed_real_starts_leaving_at_weight_0_with_its_deadline() -> None:
    actual = kernel(config("192.0.2.11 192.0.2.12"))
    leaving, changes = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    assert set(leaving) == {VKEY}
    lv = leaving[VKEY].dests[B]
    assert (lv.conf, lv.since, lv.deadline, lv.connections) == (
        DestConf(Forward.MASQ, 0, 0, 0),
        100.0,
        130.0,
        None,
    )
    assert leaving[VKEY].conf is None  # the virtual stays in the config
    assert [(c.dest, c.started, c.reason, c.seconds) for c in changes] == [
        (B, True, "removed", 30.0)
    ]


def test_off_by_default_and_per_virtual() -> None:
    actual = kernel(config("192.0.2.11 192.0.2.12", extra=""))
    leaving, changes = reload(
        config("192.0.2.11 192.0.2.12", extra=""), config("192.0.2.11", extra=""), actual
    )
    assert leaving == {} and changes == []


def test_the_new_configs_value_counts_where_the_virtual_stays() -> None:
    # one edit sets removedrain and removes a real: it drains
    actual = kernel(config("192.0.2.11 192.0.2.12", extra=""))
    leaving, _ = reload(config("192.0.2.11 192.0.2.12", extra=""), config("192.0.2.11"), actual)
    assert leaving[VKEY].dests[B].deadline == 130.0
    # and one that sets it to 0 removes it at once
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11", extra=""), actual)
    assert leaving == {}


def test_a_real_not_in_the_kernel_does_not_leave() -> None:
    actual = kernel(config("192.0.2.11"))  # .12 is down, deleted
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    assert leaving == {}


def test_the_merge_keeps_it_at_weight_0_and_the_diff_edits_then_deletes() -> None:
    from lvsmon.ipvs.diff import diff
    from lvsmon.ipvs.ops import DeleteDest, EditDest

    old_text, new_text = config("192.0.2.11 192.0.2.12"), config("192.0.2.11")
    actual = kernel(old_text)
    leaving, _ = reload(old_text, new_text, actual)
    want = kernel(new_text)
    merged(want, leaving)
    assert want[VKEY].dests[B] == DestConf(Forward.MASQ, 0, 0, 0)
    assert diff(want, actual, {VKEY}) == [EditDest(VKEY, B, DestConf(Forward.MASQ, 0, 0, 0))]
    # the last connection closed: done, and the next table deletes it
    done, changes = settled(leaving, with_conns(actual, VKEY, B, 0), 101.0, fresh=True)
    assert done == {} and [(c.reason, c.seconds) for c in changes] == [(NO_CONNECTIONS, 1.0)]
    want = kernel(new_text)
    merged(want, done)
    assert diff(want, actual, {VKEY}) == [DeleteDest(VKEY, B)]


def test_it_stays_while_connections_are_active_and_not_on_stale_counters() -> None:
    actual = kernel(config("192.0.2.11 192.0.2.12"))
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    # counters not read since it started (an applied table): only the deadline counts
    same, changes = settled(leaving, actual, 110.0, fresh=False)
    assert changes == [] and same[VKEY].dests[B].connections is None
    busy, changes = settled(leaving, with_conns(actual, VKEY, B, 7, 3), 110.0, fresh=True)
    assert changes == [] and busy[VKEY].dests[B].connections == 7
    # inactive entries (TIME_WAIT) do not hold a TCP real
    done, changes = settled(busy, with_conns(actual, VKEY, B, 0, 3), 111.0, fresh=True)
    assert done == {} and [c.reason for c in changes] == [NO_CONNECTIONS]


def test_the_deadline_ends_it_whatever_the_counters() -> None:
    actual = with_conns(kernel(config("192.0.2.11 192.0.2.12")), VKEY, B, 50)
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    still, changes = settled(leaving, actual, 129.9, fresh=True)
    assert changes == []
    done, changes = settled(still, actual, 130.0, fresh=True)
    assert done == {} and [(c.dest, c.reason, c.seconds) for c in changes] == [(B, TIME_UP, 30.0)]


def test_a_real_deleted_behind_its_back_is_done() -> None:
    actual = kernel(config("192.0.2.11 192.0.2.12"))
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    del actual[VKEY].dests[B]
    done, changes = settled(leaving, actual, 105.0, fresh=False)
    assert done == {} and [c.reason for c in changes] == [GONE]


def test_a_real_added_again_before_it_left_stops_leaving_and_gets_its_weight() -> None:
    two, one = config("192.0.2.11 192.0.2.12"), config("192.0.2.11")
    actual = with_conns(kernel(two), VKEY, B, 4)
    leaving, _ = reload(two, one, actual)
    back, changes = reload(one, two, actual, leaving, now=112.0)
    assert back == {}
    assert [(c.dest, c.started, c.reason, c.seconds) for c in changes] == [
        (B, False, ADDED_AGAIN, 12.0)
    ]
    want = kernel(two)
    merged(want, back)
    assert want[VKEY].dests[B] == DestConf(Forward.MASQ, 5, 0, 0)


def test_a_second_reload_keeps_the_first_deadline() -> None:
    three = config("192.0.2.11 192.0.2.12 192.0.2.13")
    two = config("192.0.2.11 192.0.2.12")
    one = config("192.0.2.11")
    actual = kernel(three)
    leaving, _ = reload(three, two, actual)
    leaving, changes = reload(two, one, actual, leaving, now=110.0)
    assert {d: lv.deadline for d, lv in leaving[VKEY].dests.items()} == {C: 130.0, B: 140.0}
    assert [(c.dest, c.started) for c in changes] == [(B, True)]


def test_a_removed_virtual_drains_its_reals_then_the_service_goes() -> None:
    from lvsmon.ipvs.diff import diff
    from lvsmon.ipvs.ops import DeleteService, EditDest

    old_text = config("192.0.2.11 192.0.2.12")
    new_text = "removedrain=30\nvirtual=192.0.2.9:80\n\treal=192.0.2.11:80 masq\n\tchecktype=on\n"
    actual = kernel(old_text)
    leaving, changes = reload(old_text, new_text, actual)
    assert {(c.dest, c.reason) for c in changes} == {(A, "virtual removed"), (B, "virtual removed")}
    assert leaving[VKEY].conf == actual[VKEY].conf  # the service is kept as it was
    want = kernel(new_text)
    merged(want, leaving)
    ops = [op for op in diff(want, actual, {VKEY}) if op.service == VKEY]
    zero = DestConf(Forward.MASQ, 0, 0, 0)
    assert ops == [EditDest(VKEY, A, zero), EditDest(VKEY, B, zero)]
    actual[VKEY].dests = {A: zero, B: zero}
    # one left, the other still busy: the service stays
    half, _ = settled(
        leaving, with_conns(with_conns(actual, VKEY, A, 0), VKEY, B, 2), 101, fresh=True
    )
    want = kernel(new_text)
    merged(want, half)
    assert set(want[VKEY].dests) == {B}
    gone, _ = settled(half, with_conns(actual, VKEY, B, 0), 102, fresh=True)
    want = kernel(new_text)
    merged(want, gone)
    assert VKEY not in want
    assert [op for op in diff(want, actual, {VKEY}) if op.service == VKEY] == [DeleteService(VKEY)]


def test_udp_counts_every_entry() -> None:
    old = config("192.0.2.11", udp=True)
    new = config("192.0.2.11")
    actual = kernel(old)
    leaving, _ = reload(old, new, actual)
    dest = DestKey("192.0.2.11", 53)
    # the kernel counts UDP entries as inactive: they hold the real
    busy, changes = settled(leaving, with_conns(actual, UKEY, dest, 0, 2), 101, fresh=True)
    assert changes == [] and busy[UKEY].dests[dest].connections == 2
    done, changes = settled(busy, with_conns(actual, UKEY, dest, 0, 0), 102, fresh=True)
    assert done == {} and [c.reason for c in changes] == [NO_CONNECTIONS]


def test_the_merge_of_some_keys_only() -> None:
    actual = kernel(config("192.0.2.11 192.0.2.12"))
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    want: Table = {}
    merged(want, leaving, keys=())
    assert want == {}
    merged(want, leaving)  # the config's virtual left out of the computation: not invented
    assert want == {}
    want = {VKEY: Service(actual[VKEY].conf)}
    merged(want, leaving, keys={VKEY})
    assert set(want[VKEY].dests) == {B}


def test_status_entries_in_wall_clock_time() -> None:
    actual = kernel(config("192.0.2.11 192.0.2.12"))
    leaving, _ = reload(config("192.0.2.11 192.0.2.12"), config("192.0.2.11"), actual)
    entries = status_of(leaving, 110.0, 1_000_010.0, str)
    assert entries == [
        {
            "virtual": "tcp:192.0.2.1:80",
            "real": "192.0.2.12:80",
            "since": 1_000_000.0,
            "deadline": 1_000_030.0,
            "connections": None,
        }
    ]


def test_deadconns_expire_deletes_a_down_real_even_with_quiescent() -> None:
    text = "quiescent=yes\n" + config("192.0.2.11 192.0.2.12", extra="")
    refs = [RealRef(VKEY, f"192.0.2.{n}", 80) for n in (11, 12)]
    for extra, want in (("", {A, B}), ("deadconns=expire\n", {A})):
        c = cfg(extra + text)
        actual = desired_table(c, dict.fromkeys(refs, ADOPTED_UP), (), {})
        t = desired_table(c, {refs[0]: ADOPTED_UP, refs[1]: DOWN}, (), actual)
        assert set(t[VKEY].dests) == want, extra
        if B in want:
            assert t[VKEY].dests[B].weight == 0  # keep: quiesced, as ldirectord does


def test_the_expire_nodest_conn_warning_at_start_and_reload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lvsmon.engine import leaving

    expire = cfg("deadconns=expire\n" + config("192.0.2.11", extra=""))
    keep = cfg(config("192.0.2.11", extra=""))
    monkeypatch.setattr(leaving, "read_expire_nodest_conn", lambda: 0)
    assert leaving.deadconns_warning(keep, "netlink") is None
    assert leaving.deadconns_warning(expire, "memory") is None  # no kernel
    text = leaving.deadconns_warning(expire, "netlink")
    assert text is not None and "(tcp:192.0.2.1:80) needs net.ipv4.vs.expire_nodest_conn=1" in text
    monkeypatch.setattr(leaving, "read_expire_nodest_conn", lambda: 1)
    assert leaving.deadconns_warning(expire, "ipvsadm") is None


@pytest.mark.parametrize(
    ("leaving", "message"),
    [
        ("x", "leaving: not a list"),
        (["x"], "leaving[0]: not an object"),
        (
            [{"real": "a", "since": 1, "deadline": 2, "connections": 0}],
            "leaving[0].virtual: missing",
        ),
        (
            [{"virtual": "v", "real": "a", "since": 1, "deadline": "soon", "connections": 0}],
            "leaving[0].deadline: not a number",
        ),
        (
            [{"virtual": "v", "real": "a", "since": 1, "deadline": 2, "connections": "3"}],
            "leaving[0].connections: not an integer or null",
        ),
    ],
)
def test_a_malformed_leaving_entry_in_a_status_file(leaving: object, message: str) -> None:
    from lvsmon.engine.status import MalformedStatus, check_status, render_status

    with pytest.raises(MalformedStatus, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_status({"leaving": leaving})
    good = {"virtual": "tcp:192.0.2.1:80", "real": "192.0.2.12:80", "since": 1.0}
    text = render_status({"leaving": [{**good, "deadline": 2.0, "connections": None}]})  # type: ignore[typeddict-item]
    assert text.startswith("leaving: 192.0.2.12:80 of tcp:192.0.2.1:80: weight 0, connections")


def test_a_virtual_removed_while_one_of_its_reals_leaves_keeps_the_service() -> None:
    two, one = config("192.0.2.11 192.0.2.12"), config("192.0.2.11")
    actual = with_conns(kernel(two), VKEY, B, 4)
    leaving, _ = reload(two, one, actual)
    assert leaving[VKEY].conf is None
    # .11 is down and deleted, .12 still leaving; then the virtual goes
    del actual[VKEY].dests[A]
    other = "removedrain=30\nvirtual=192.0.2.9:80\n\treal=192.0.2.11:80 masq\n\tchecktype=on\n"
    leaving, changes = reload(one, other, actual, leaving, now=105.0)
    assert changes == []  # nothing new leaves: .12 goes on as it was
    assert leaving[VKEY].conf == actual[VKEY].conf
    assert leaving[VKEY].dests[B].deadline == 130.0
    want = kernel(other)
    merged(want, leaving)
    assert set(want[VKEY].dests) == {B}  # the service is not deleted under it
