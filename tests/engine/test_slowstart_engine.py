"""Slow start in the running engine: real HTTP servers on loopback, the in-memory IPVS backend,
every kernel weight the backend was told recorded step by step. Plus the driver
(engine/ramping.py) on a hand-moved clock: steps, reloads, the agent's cap."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from pathlib import Path

import pytest

from lvsmon.api.metrics import Layout, ramp_family
from lvsmon.config import load_config, parse_config
from lvsmon.engine.desired import desired_table
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import Event, RampChanged
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.planning import plan_reload, running_from_kernel
from lvsmon.engine.ramping import SlowStart
from lvsmon.engine.status import MalformedStatus, check_status, render_status
from lvsmon.engine.steering import Steering
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestKey, ServiceKey
from lvsmon.ipvs.ops import AddDest, DeleteDest, EditDest, Op
from tests.helpers import Web, wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)


def write_cf(
    path: Path, webs: list[Web], slowstart: int, weight: int = 10, extra: str = ""
) -> None:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq {weight}\n" for w in webs)
    path.write_text(
        f"checktimeout=1\ncheckinterval=1\nslowstart={slowstart}\n{extra}"
        f"virtual=127.0.0.100:80\n{reals}"
        '\tservice=http\n\trequest="health"\n\treceive="alive"\n'
    )


class Spy:
    """Every weight the backend was told for each real, in order (None: deleted)."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.seen: dict[int, list[int | None]] = {}
        real_apply = backend.apply

        async def apply(ops: list[Op]):  # type: ignore[no-untyped-def]
            for op in ops:
                if isinstance(op, AddDest | EditDest) and op.service == VKEY:
                    self.seen.setdefault(op.dest.port, []).append(op.conf.weight)
                elif isinstance(op, DeleteDest) and op.service == VKEY:
                    self.seen.setdefault(op.dest.port, []).append(None)
            return await real_apply(ops)

        backend.apply = apply  # type: ignore[method-assign,assignment]


def kernel_weight(engine: Engine, port: int) -> int | None:
    table = engine.actual or {}
    conf = table[VKEY].dests.get(DestKey("127.0.0.1", port)) if VKEY in table else None
    return None if conf is None else conf.weight


def ramps_of(events: list[Event]) -> list[tuple[bool, str]]:
    return [(e.started, e.reason) for e in events if isinstance(e, RampChanged)]


async def started(cf: Path, backend: MemoryBackend) -> tuple[Engine, list[Event]]:
    engine = Engine(load_config(str(cf)), backend)
    seen: list[Event] = []
    engine.events.subscribe("test", seen.append, kinds=(RampChanged,))
    await engine.start()
    return engine, seen


async def test_a_real_first_seen_up_ramps_one_to_ten_in_ten_steps(
    webs: list[Web], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:1], slowstart=2)
    backend = MemoryBackend()
    spy = Spy(backend)
    engine, events = await started(cf, backend)
    port = webs[0].port
    await wait_for(lambda: ramps_of(events) == [(True, ""), (False, "done")], within=20)
    await wait_for(lambda: kernel_weight(engine, port) == 10)
    print("kernel weights seen:", spy.seen[port])
    assert spy.seen[port] == list(range(1, 11))
    assert kernel_weight(engine, port) == 10
    assert dict(engine.steering.caps()) == {}
    text = "\n".join(caplog.messages)
    assert "Slow start of real server 127.0.0.1:" in text and "ramping to weight 10" in text
    assert f"127.0.0.1:{port} (tcp:127.0.0.100:80) done: weight 10" in text
    await engine.stop()


async def test_a_real_that_fails_during_its_ramp_goes_out_and_ramps_again(
    webs: list[Web], tmp_path: Path
) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:2], slowstart=30)  # a step every 3.3 s: it fails within the first steps
    backend = MemoryBackend()
    spy = Spy(backend)
    engine, events = await started(cf, backend)
    port = webs[0].port
    ref = RealRef(VKEY, "127.0.0.1", port)
    await wait_for(lambda: ref in engine.slowstart.ramps)
    await webs[0].stop()
    await wait_for(lambda: kernel_weight(engine, port) is None)  # quiescent=no: deleted
    await wait_for(lambda: (False, "down") in ramps_of(events))
    assert ref not in engine.slowstart.ramps and ref not in engine.steering.caps()
    await webs[0].start()  # same port
    await wait_for(lambda: kernel_weight(engine, port) == 1)  # from 1 again
    assert spy.seen[port][-2:] == [None, 1]
    assert max(w for w in spy.seen[port] if w is not None) < 10
    await engine.stop()


async def test_a_reload_keeps_the_ramp_and_slowstart_0_ends_it(
    webs: list[Web], tmp_path: Path
) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:1], slowstart=60)
    backend = MemoryBackend()
    spy = Spy(backend)
    engine, events = await started(cf, backend)
    port = webs[0].port
    ref = RealRef(VKEY, "127.0.0.1", port)
    await wait_for(lambda: kernel_weight(engine, port) == 1)
    ramp = engine.slowstart.ramps.get(ref)
    assert ramp is not None
    start = ramp.start
    # a reload that adds a real and keeps this one: its ramp goes on from the same start
    write_cf(cf, webs[:2], slowstart=60)
    await engine.reload(load_config(str(cf)))
    ramp = engine.slowstart.ramps.get(ref)
    assert ramp is not None and ramp.start == start
    assert kernel_weight(engine, port) == 1  # not its full weight
    # the added real ramps too (it comes up by its first check)
    other = webs[1].port
    await wait_for(lambda: kernel_weight(engine, other) == 1)
    # a reload that turns slow start off ends both ramps at once ("off"): full weight
    write_cf(cf, webs[:2], slowstart=0)
    await engine.reload(load_config(str(cf)))
    await wait_for(lambda: kernel_weight(engine, port) == kernel_weight(engine, other) == 10)
    assert len(engine.slowstart.ramps) == 0 and dict(engine.steering.caps()) == {}
    assert spy.seen[port] == [1, 10]
    await wait_for(lambda: ramps_of(events).count((False, "off")) == 2)
    await engine.stop()


async def test_a_real_adopted_up_at_a_restart_is_not_ramped(
    webs: list[Web], tmp_path: Path
) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:2], slowstart=0)
    backend = MemoryBackend()
    first = Engine(load_config(str(cf)), backend)
    await first.start()
    await first.wait_programmed()
    before = await backend.dump()
    await first.stop(clean=False)  # as after kill -9: the table stays

    write_cf(cf, webs[:2], slowstart=30)
    spy = Spy(backend)
    second, events = await started(cf, backend)
    await second.wait_programmed()
    assert await backend.dump() == before
    assert spy.seen == {} and second.stats.ops_applied == 0
    assert ramps_of(events) == [] and len(second.slowstart.ramps) == 0
    await second.stop(clean=False)


async def test_the_agents_lower_cap_wins_over_the_ramp(webs: list[Web], tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:1], slowstart=2)
    backend = MemoryBackend()
    spy = Spy(backend)
    engine = Engine(load_config(str(cf)), backend)
    port = webs[0].port
    ref = RealRef(VKEY, "127.0.0.1", port)
    engine.steering.set("agent", ref, 3)  # a fake agent: 30 %
    await engine.start()
    await wait_for(lambda: ref in engine.slowstart.ramps)
    await wait_for(lambda: ref not in engine.slowstart.ramps, within=20)
    await wait_for(lambda: kernel_weight(engine, port) == 3)
    assert spy.seen[port] == [1, 2, 3]  # the ramp's steps up to the agent's 3, then the agent
    engine.steering.set("agent", ref, None)
    await wait_for(lambda: kernel_weight(engine, port) == 10)
    await engine.stop()


# ---- the driver on a hand-moved clock -------------------------------------------------------

CF = """\
slowstart=9
virtual=192.168.6.240:80
\treal=192.168.6.2:80 masq 10
\treal=192.168.6.3:80 masq 1
\tservice=http
"""
V2 = ServiceKey.inet("tcp", "192.168.6.240", 80)
R1 = RealRef(V2, "192.168.6.2", 80)
R2 = RealRef(V2, "192.168.6.3", 80)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def driver() -> tuple[SlowStart, Steering, Clock, list[Event]]:
    clock = Clock()
    steering = Steering()
    events: list[Event] = []
    s = SlowStart(steering, events.append, clock)
    s.configure(parse_config(CF, "t.cf"))
    return s, steering, clock, events


def test_the_driver_sets_a_cap_per_step_and_drops_it_at_the_end() -> None:
    s, steering, clock, events = driver()
    s.came_up(R2)  # weight 1: nothing to ramp
    assert dict(steering.caps()) == {} and events == []
    s.came_up(R1)
    seen = [steering.caps()[R1]]
    while R1 in s.ramps:
        at = s.ramps.next_at()
        assert at is not None and at > clock.now
        clock.now = at
        s.advance(clock.now)
        seen.append(steering.caps().get(R1, 10))
    assert seen == list(range(1, 11))
    assert clock.now == pytest.approx(1009.0)
    assert [(e.started, e.reason) for e in events if isinstance(e, RampChanged)] == [
        (True, ""),
        (False, "done"),
    ]


def test_the_driver_follows_reloads() -> None:
    s, steering, clock, events = driver()
    s.came_up(R1)
    clock.now += 4.5
    s.advance(clock.now)
    assert steering.caps()[R1] == 5
    s.configure(parse_config(CF.replace("slowstart=9", "slowstart=18"), "t.cf"))
    assert steering.caps()[R1] == 3  # 4.5 s of 18: step 3
    s.configure(
        parse_config(
            CF.replace("real=192.168.6.2:80 masq 10", "real=192.168.6.2:80 masq 20"), "t.cf"
        )
    )
    assert steering.caps()[R1] == 10  # 4.5 s of 9 at weight 20: step 5, 10
    s.configure(parse_config(CF.replace("\treal=192.168.6.2:80 masq 10\n", ""), "t.cf"))
    assert R1 not in steering.caps() and len(s.ramps) == 0
    assert isinstance(events[-1], RampChanged) and events[-1].reason == "removed"
    s.went_down(R1)  # nothing left to end
    assert len(events) == 2


async def test_status_shows_the_ramp_and_other_caps(webs: list[Web], tmp_path: Path) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:1], slowstart=60)
    backend = MemoryBackend()
    engine, _ = await started(cf, backend)
    port = webs[0].port
    ref = RealRef(VKEY, "127.0.0.1", port)
    await wait_for(lambda: kernel_weight(engine, port) == 1)
    (real,) = engine.status()["virtuals"][0]["reals"]
    steering = real["steering"]
    assert steering is not None
    assert steering["caps"] == {"ramp": 1} and steering["ramp"] == "1/10"
    assert steering["ramp_until"] == pytest.approx(time.time() + 60, abs=3)
    engine.steering.set("agent", ref, 0)
    text = render_status(engine.status())
    assert re.search(r"up ramping 1/10 \(slow start, (59|60) s left\) ", text)
    # the daemon's kept texts follow the caps, not only health and the kernel
    first = b"".join(engine.status_texts())
    engine.steering.set("agent", ref, 4)
    assert b"".join(engine.status_texts()) != first
    await engine.stop()
    assert "ramping" not in render_status(
        check_status({"virtuals": [{"name": "x", "reals": [dict(real, steering=None)]}]})
    )


@pytest.mark.parametrize(
    ("steering", "message"),
    [
        ([], "virtuals[0].reals[0].steering: not an object or null"),
        ({}, "virtuals[0].reals[0].steering.caps: missing"),
        ({"caps": {"ramp": "3"}}, 'virtuals[0].reals[0].steering.caps["ramp"]: not an integer'),
        ({"caps": {}, "ramp": 3}, "virtuals[0].reals[0].steering.ramp: not a string or null"),
        (
            {"caps": {}, "ramp_until": 1e300},
            "virtuals[0].reals[0].steering.ramp_until: not a number or null",
        ),
    ],
)
def test_a_malformed_steering_entry_is_named(steering: object, message: str) -> None:
    real = {"address": "a", "port": 1, "state": "up", "reason": "", "kernel_weight": 1}
    with pytest.raises(MalformedStatus) as info:
        check_status({"virtuals": [{"name": "x", "reals": [dict(real, steering=steering)]}]})
    assert str(info.value) == message


async def test_the_ramping_gauge_has_a_sample_per_ramping_real(
    webs: list[Web], tmp_path: Path
) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:2], slowstart=60)
    webs[1].status = 503  # never up: no ramp
    engine, _ = await started(cf, MemoryBackend())
    port = webs[0].port
    await wait_for(lambda: kernel_weight(engine, port) == 1)

    async def no_pause() -> None:
        return None

    layout = Layout(engine)
    await layout.build(engine, no_pause)
    out: list[str] = []
    ramp_family(out, engine, layout)
    samples = [line for line in "".join(out).splitlines() if not line.startswith("#")]
    assert samples == [
        f'lvsmon_real_ramping{{virtual="tcp:127.0.0.100:80",real="127.0.0.1:{port}"}} 1'
    ]
    await engine.stop()


def test_lvsmon_plan_keeps_a_ramping_reals_cap() -> None:
    """The plan of a reload (engine/planning.py, `lvsmon plan`) computes the table with the
    running daemon's caps: a real ramping at 3 of 10 is no EditDest to 10 in it."""
    config = parse_config(CF, "t.cf")
    full = desired_table(config, {R1: RealHealth(up=True)}, (), {})
    actual = desired_table(config, {R1: RealHealth(up=True)}, (), {}, caps={R1: 3})
    running = running_from_kernel(config, actual)
    assert running.health[R1].up  # adopted up at weight 3
    bigger = parse_config(CF + "\treal=192.168.6.4:80 masq 5\n", "t.cf")
    without = plan_reload(running, bigger, lambda c, p: ())
    assert any(isinstance(op, EditDest) and op.conf.weight == 10 for op in without.ops)
    with_caps = plan_reload(dataclasses.replace(running, caps={R1: 3}), bigger, lambda c, p: ())
    assert not any(isinstance(op, EditDest) for op in with_caps.ops)
    assert with_caps.desired[V2].dests[R1.dest].weight == 3
    assert full[V2].dests[R1.dest].weight == 10


async def test_a_resync_repairs_a_ramping_weight_changed_behind_its_back(
    webs: list[Web], tmp_path: Path
) -> None:
    cf = tmp_path / "lb.cf"
    write_cf(cf, webs[:1], slowstart=60)
    backend = MemoryBackend()
    engine, _ = await started(cf, backend)
    port = webs[0].port
    await wait_for(lambda: kernel_weight(engine, port) == 1)
    dest = DestKey("127.0.0.1", port)
    table = await backend.dump()
    conf = table[VKEY].dests[dest]
    # an operator's ipvsadm -e ... -w 10
    await backend.apply([EditDest(VKEY, dest, dataclasses.replace(conf, weight=10))])
    assert (await backend.dump())[VKEY].dests[dest].weight == 10
    await engine.reconciler.resync()
    assert (await backend.dump())[VKEY].dests[dest].weight == 1
    assert engine.stats.drift_repairs >= 1
    await engine.stop()


def write_on(path: Path, ports: list[int], slowstart: int) -> None:
    reals = "".join(f"\treal=127.0.0.1:{p} masq 10\n" for p in ports)
    path.write_text(
        f"slowstart={slowstart}\nvirtual=127.0.0.100:80\n{reals}\tchecktype=on\n\tservice=http\n"
    )


async def test_checktype_on_reals_ramp_when_they_come_in_not_when_adopted(
    tmp_path: Path,
) -> None:
    """No check brings a checktype=on real up: it is up when it comes in (a start on a table
    without it, a reload that adds it), and ramps then; adopted serving, it does not."""
    cf = tmp_path / "lb.cf"
    write_on(cf, [9001], slowstart=60)
    backend = MemoryBackend()
    engine, events = await started(cf, backend)
    await engine.wait_programmed()
    assert kernel_weight(engine, 9001) == 1
    write_on(cf, [9001, 9002], slowstart=60)
    await engine.reload(load_config(str(cf)))
    await wait_for(lambda: kernel_weight(engine, 9002) == 1)
    assert kernel_weight(engine, 9001) == 1  # its ramp goes on
    await wait_for(lambda: ramps_of(events) == [(True, ""), (True, "")])
    await engine.stop(clean=False)
    # a restart adopts both (serving, at weight 1): no ramp; a restart in the middle of a
    # ramp gives the weight at once (the ramp's state died with the daemon)
    second, events = await started(cf, backend)
    await second.wait_programmed()
    assert len(second.slowstart.ramps) == 0
    assert kernel_weight(second, 9001) == kernel_weight(second, 9002) == 10
    await second.stop()
