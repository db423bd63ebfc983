"""The diff is pure: property tests against apply_ops (the kernel's rules), plus the order."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.ipvs.apply import apply_op, apply_ops, copy_table
from lvsmon.ipvs.diff import DesiredTableError, diff
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Forward,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
)
from lvsmon.ipvs.ops import AddDest, AddService, DeleteDest, DeleteService, EditDest, EditService
from tests.ipvs.strategies import as_kernel_stores, kernel_tables, managed_sets, tables

VIP = ServiceKey.inet("tcp", "10.0.0.1", 80)


def only(table: Table, keys: frozenset[ServiceKey], inside: bool) -> Table:
    return {k: v for k, v in table.items() if (k in keys) is inside}


@given(tables(), kernel_tables(), managed_sets())
def test_applying_the_diff_gives_desired_on_managed_and_keeps_the_rest(
    desired: Table, actual: Table, managed: frozenset[ServiceKey]
) -> None:
    ops = diff(desired, actual, managed)
    result, outcomes = apply_ops(actual, ops)
    assert all(r.ok for r in outcomes), [r for r in outcomes if not r.ok]
    assert only(result, managed, True) == only(as_kernel_stores(desired), managed, True)
    assert only(result, managed, False) == only(actual, managed, False)
    assert diff(desired, result, managed) == []


@given(kernel_tables(), managed_sets())
def test_no_change_no_ops(table: Table, managed: frozenset[ServiceKey]) -> None:
    assert diff(table, table, managed) == []


@given(tables(), kernel_tables(), managed_sets())
def test_every_op_changes_the_table_and_no_key_is_touched_twice(
    desired: Table, actual: Table, managed: frozenset[ServiceKey]
) -> None:
    ops = diff(desired, actual, managed)
    table = copy_table(actual)
    touched: set[object] = set()
    service_ops: set[ServiceKey] = set()
    deleted: set[ServiceKey] = set()
    for op in ops:
        before = copy_table(table)
        assert apply_op(table, op) is None, op
        assert table != before, f"redundant op {op}"
        assert op.service in managed
        if isinstance(op, AddService | EditService | DeleteService):
            assert op.service not in service_ops, f"service touched twice: {op}"
            service_ops.add(op.service)
            if isinstance(op, DeleteService):
                deleted.add(op.service)
        else:
            assert op.service not in deleted
            key = (op.service, op.dest)
            assert key not in touched, f"destination touched twice: {op}"
            touched.add(key)
    # A deleted service's destinations go with it: never deleted one by one first.
    assert not any(isinstance(op, DeleteDest) and op.service in deleted for op in ops)


@given(tables(), kernel_tables(), managed_sets(), st.randoms(use_true_random=False))
def test_order_does_not_depend_on_dict_order(
    desired: Table, actual: Table, managed: frozenset[ServiceKey], rnd: random.Random
) -> None:
    def shuffled(table: Table) -> Table:
        items = list(table.items())
        rnd.shuffle(items)
        out: Table = {}
        for key, svc in items:
            dest_items = list(svc.dests.items())
            rnd.shuffle(dest_items)
            out[key] = Service(svc.conf, dict(dest_items))
        return out

    managed_list = list(managed)
    rnd.shuffle(managed_list)
    assert diff(shuffled(desired), shuffled(actual), managed_list) == diff(desired, actual, managed)


@given(tables(), kernel_tables(), managed_sets())
def test_per_service_adds_then_edits_then_deletes_and_service_deletes_last(
    desired: Table, actual: Table, managed: frozenset[ServiceKey]
) -> None:
    ops = diff(desired, actual, managed)
    rank = {AddService: 0, EditService: 0, AddDest: 1, EditDest: 2, DeleteDest: 3}
    seen_delete_service = False
    last: dict[ServiceKey, int] = {}
    for op in ops:
        if isinstance(op, DeleteService):
            seen_delete_service = True
            continue
        assert not seen_delete_service, "service deletions come after everything else"
        r = rank[type(op)]
        assert r >= last.get(op.service, 0), ops
        last[op.service] = r


def dest(host: str, port: int = 80) -> DestKey:
    return DestKey.of(host, port)


def test_fallback_swap_is_make_before_break() -> None:
    # All reals down (quiesced) and the fallback in; then one real comes back.
    sorry = dest("127.0.0.1")
    actual = {
        VIP: Service(
            ServiceConf(),
            {
                dest("10.0.1.1"): DestConf(weight=0),
                dest("10.0.1.2"): DestConf(weight=0),
                sorry: DestConf(),
            },
        )
    }
    desired = {
        VIP: Service(
            ServiceConf(),
            {dest("10.0.1.1"): DestConf(weight=3), dest("10.0.1.2"): DestConf(weight=0)},
        )
    }
    assert diff(desired, actual, [VIP]) == [
        EditDest(VIP, dest("10.0.1.1"), DestConf(weight=3)),
        DeleteDest(VIP, sorry),
    ]
    # And back: the fallback goes in before the last real is quiesced.
    assert diff(actual, desired, [VIP]) == [
        AddDest(VIP, sorry, DestConf()),
        EditDest(VIP, dest("10.0.1.1"), DestConf(weight=0)),
    ]


def test_weight_and_forward_changes_are_edits_in_place() -> None:
    actual = {VIP: Service(ServiceConf(), {dest("10.0.1.1"): DestConf(Forward.GATE, 1)})}
    desired = {
        VIP: Service(ServiceConf("wrr"), {dest("10.0.1.1"): DestConf(Forward.MASQ, 5, 9, 3)})
    }
    assert diff(desired, actual, [VIP]) == [
        EditService(VIP, ServiceConf("wrr")),
        EditDest(VIP, dest("10.0.1.1"), DestConf(Forward.MASQ, 5, 9, 3)),
    ]


def test_unmanaged_services_are_never_touched() -> None:
    other = ServiceKey.inet("tcp", "10.9.9.9", 80)
    actual = {other: Service(ServiceConf(), {dest("10.0.1.1"): DestConf()})}
    assert diff({}, actual, [VIP]) == []
    assert diff({VIP: Service(ServiceConf())}, actual, [VIP]) == [AddService(VIP, ServiceConf())]


def test_removed_service_is_one_delete() -> None:
    actual = {
        VIP: Service(ServiceConf(), {dest("10.0.1.1"): DestConf(), dest("10.0.1.2"): DestConf()})
    }
    assert diff({}, actual, [VIP]) == [DeleteService(VIP)]


def test_gate_port_is_forced_like_the_kernel_does() -> None:
    desired = {VIP: Service(ServiceConf(), {dest("10.0.1.1", 8080): DestConf(Forward.GATE)})}
    ops = diff(desired, {}, [VIP])
    assert ops[1] == AddDest(VIP, dest("10.0.1.1", 80), DestConf(Forward.GATE))
    result, _ = apply_ops({}, ops)
    assert diff(desired, result, [VIP]) == []


def test_two_reals_the_kernel_would_merge_are_refused() -> None:
    desired = {
        VIP: Service(
            ServiceConf(),
            {
                dest("10.0.1.1", 8080): DestConf(weight=1),
                dest("10.0.1.1", 8081): DestConf(weight=2),
            },
        )
    }
    with pytest.raises(DesiredTableError, match="same real server"):
        diff(desired, {}, [VIP])


def test_persistence_mask_spellings_compare_equal() -> None:
    # The kernel reports no mask for the full-length default and a dotted quad for IPv4.
    actual = {VIP: Service(ServiceConf(persistent=300, netmask="255.255.255.0"))}
    assert diff({VIP: Service(ServiceConf(persistent=300, netmask="24"))}, actual, [VIP]) == []
    full = {VIP: Service(ServiceConf(persistent=300))}
    assert (
        diff({VIP: Service(ServiceConf(persistent=300, netmask="255.255.255.255"))}, full, [VIP])
        == []
    )
