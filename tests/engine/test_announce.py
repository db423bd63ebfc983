"""engine/announce.py: the per-VIP announcement decision, with examples and hypothesis traces."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.config.bgpsettings import WORST_MED, BgpVirtual, MinUp
from lvsmon.engine.announce import (
    FIRST_ROUND,
    GRACEFUL_SHUTDOWN,
    Decision,
    VipState,
    VirtualInput,
    able,
    eligible,
    graceful,
    route_of,
    step,
    withdraw_all,
)

VIP = "192.0.2.10"
ONE = MinUp()


def vin(
    healthy: int,
    reals: int = 4,
    *,
    name: str = "tcp:192.0.2.10:80",
    vip: str = VIP,
    tripped: bool = False,
    minup: MinUp = ONE,
    holddown: int = 10,
    med: int = 100,
    communities: tuple[str, ...] = (),
) -> VirtualInput:
    return VirtualInput(
        name, vip, healthy, reals, tripped, BgpVirtual(med, minup, holddown, communities)
    )


def run(
    states: dict[str, VipState],
    virtuals: list[VirtualInput],
    now: float,
    *,
    first: bool = True,
    require: str = "all",
) -> Decision:
    return step(states, virtuals, require=require, first_round_done=first, now=now)


# -- examples --------------------------------------------------------------------------------


def test_nothing_is_announced_before_the_first_round() -> None:
    d = run({}, [vin(4)], 0.0, first=False)
    assert d.announce == () and d.withdraw == ()
    assert d.states[VIP].announced is False and d.states[VIP].reason == FIRST_ROUND
    d = run(d.states, [vin(4)], 1.0)
    assert [r.vip for r in d.announce] == [VIP]
    assert d.states[VIP].announced and d.states[VIP].since == 1.0


def test_a_count_and_a_share() -> None:
    assert MinUp(2).needed(10) == 2
    assert MinUp(share=0.5).needed(5) == 3  # rounded up
    assert MinUp(share=0.5).needed(4) == 2
    assert MinUp(share=0.01).needed(3) == 1  # at least one
    assert MinUp(share=0.3333).needed(3) == 1  # exact: 0.9999 of a real is one
    assert MinUp(share=1.0).needed(7) == 7
    assert str(MinUp(share=0.5)) == "50%" and str(MinUp(3)) == "3"
    ok, why = able(vin(1, 4, minup=MinUp(share=0.5)))
    assert not ok and why == "tcp:192.0.2.10:80: 1 of 4 reals healthy, 2 needed"


def test_all_or_any_of_the_virtuals_sharing_a_vip() -> None:
    web = vin(2, name="tcp:192.0.2.10:80")
    tls = vin(0, name="tcp:192.0.2.10:443")
    assert eligible([web, tls], "all") == (
        False,
        "tcp:192.0.2.10:443: 0 of 4 reals healthy, 1 needed",
    )
    assert eligible([web, tls], "any") == (True, "tcp:192.0.2.10:80: 2 of 4 reals healthy")


def test_a_tripped_depool_threshold_withdraws_even_with_any() -> None:
    web = vin(4, name="tcp:192.0.2.10:80")
    tls = vin(3, name="tcp:192.0.2.10:443", tripped=True)
    ok, why = eligible([web, tls], "any")
    assert not ok and "depool threshold tripped" in why
    d = run({}, [web], 0.0)
    d = run(d.states, [web, tls], 1.0)
    assert d.withdraw == (VIP,)


def test_withdraw_at_once_and_hold_down_before_announcing_again() -> None:
    d = run({}, [vin(1)], 0.0)
    assert d.states[VIP].announced
    d = run(d.states, [vin(0)], 5.0)
    assert d.withdraw == (VIP,) and d.states[VIP].since == 5.0
    d = run(d.states, [vin(1)], 6.0)
    assert d.announce == () and d.wake_at == 16.0
    assert d.states[VIP].reason.startswith("hold-down: eligible for 0 of 10 s")
    d = run(d.states, [vin(0)], 8.0)  # a flap restarts the hold-down
    d = run(d.states, [vin(1)], 9.0)
    assert d.wake_at == 19.0
    d = run(d.states, [vin(1)], 18.9)
    assert d.announce == ()
    d = run(d.states, [vin(1)], 19.0)
    assert [r.vip for r in d.announce] == [VIP] and d.wake_at is None


def test_the_worst_med_and_the_union_of_communities() -> None:
    a = vin(1, name="a", med=100, communities=("65000:1",))
    b = vin(1, name="b", med=200, communities=("65000:2", "65000:1"))
    route = route_of(VIP, [a, b])
    assert route.med == 200 and route.communities == ("65000:1", "65000:2")
    assert route.prefix == "192.0.2.10/32"
    assert route_of("2001:db8::1", [a]).prefix == "2001:db8::1/128"
    g = graceful(route)
    assert g.med == WORST_MED and g.communities[-1] == GRACEFUL_SHUTDOWN
    assert graceful(g) == g


def test_changed_attributes_are_announced_again() -> None:
    d = run({}, [vin(1, med=100)], 0.0)
    d = run(d.states, [vin(1, med=50)], 1.0)
    assert [r.med for r in d.announce] == [50] and d.states[VIP].since == 0.0


def test_a_vip_a_reload_removed_is_withdrawn() -> None:
    d = run({}, [vin(1), vin(1, vip="192.0.2.11", name="tcp:192.0.2.11:80")], 0.0)
    d = run(d.states, [vin(1)], 1.0)
    assert d.withdraw == ("192.0.2.11",) and "192.0.2.11" not in d.states


def test_withdraw_all() -> None:
    d = run({}, [vin(1), vin(0, vip="192.0.2.11", name="x")], 0.0)
    d = withdraw_all(d.states, "graceful stop", 3.0)
    assert d.withdraw == (VIP,)
    assert all(not s.announced and s.reason == "graceful stop" for s in d.states.values())


# -- properties over random traces -------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    dt: float
    first: bool
    healthy: tuple[int, ...]  # per virtual of the one VIP
    tripped: tuple[bool, ...]


def ticks(n_virtuals: int) -> st.SearchStrategy[list[Tick]]:
    tick = st.builds(
        Tick,
        st.sampled_from([0.0, 0.5, 1.0, 3.0, 7.0, 12.0]),
        st.booleans(),
        st.tuples(*[st.integers(0, 4)] * n_virtuals),
        st.tuples(*[st.booleans()] * n_virtuals).map(
            lambda t: tuple(x and i == 0 for i, x in enumerate(t))  # rarely more than one
        ),
    )
    return st.lists(tick, min_size=1, max_size=40)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 3).flatmap(lambda n: st.tuples(st.just(n), ticks(n))),
    st.sampled_from(["all", "any"]),
    st.integers(0, 15),
    st.sampled_from([MinUp(1), MinUp(2), MinUp(share=0.5), MinUp(share=1.0)]),
)
def test_invariants_of_any_trace(
    case: tuple[int, list[Tick]], require: str, holddown: int, minup: MinUp
) -> None:
    n, trace = case
    states: dict[str, VipState] = {}
    now = 0.0
    first_seen = False
    ever_withdrawn = False
    eligible_from: float | None = None  # start of the current unbroken eligibility
    announced = False
    for t in trace:
        now += t.dt
        first_seen = first_seen or t.first
        members = [
            vin(t.healthy[i], 4, name=f"v{i}", tripped=t.tripped[i], minup=minup, holddown=holddown)
            for i in range(n)
        ]
        ok, _ = eligible(members, require)
        d = run(states, members, now, first=first_seen, require=require)
        new = d.states[VIP]
        # the changes say exactly what the states did
        assert (VIP in d.withdraw) == (announced and not new.announced)
        if not announced and new.announced:
            assert [r.vip for r in d.announce] == [VIP]
        # never before the first round; announced only while eligible
        if not first_seen:
            assert not new.announced and new.reason == FIRST_ROUND
        if new.announced:
            assert ok
        if first_seen and ok:
            eligible_from = now if eligible_from is None else eligible_from
        else:
            eligible_from = None
        # the hold-down: after a withdrawal, announced only after holddown s of eligibility
        if not announced and new.announced and ever_withdrawn:
            assert eligible_from is not None and now - eligible_from >= holddown
        # liveness: eligible long enough (or never withdrawn) means announced
        if first_seen and ok and (not ever_withdrawn or now - (eligible_from or now) >= holddown):
            assert new.announced
        if not new.announced and first_seen and ok:
            assert d.wake_at is not None and d.wake_at == (eligible_from or now) + holddown
        if any(t.tripped) and first_seen:
            assert not new.announced
        ever_withdrawn = ever_withdrawn or (announced and not new.announced)
        announced = new.announced
        states = d.states
