"""The agent check in the running engine (engine/agentcheck.py): the kernel weight (in-memory
backend) follows what each real's agent says, over time; drain, maint, down, up and ready;
hostile agents never raise a weight nor take a real out; the health check still decides up and
down. Agents and web servers listen on their own loopback addresses (127.0.0.21, .22)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lvsmon.config import load_config, parse_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import AgentChanged, Event, EventBus
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey
from tests.agentserver import Agent
from tests.helpers import Web, wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)
HOSTS = ("127.0.0.21", "127.0.0.22")


def _free_port() -> int:
    """A port free on both agents' addresses."""
    for _ in range(20):
        with socket.socket() as a, socket.socket() as b:
            a.bind((HOSTS[0], 0))
            port: int = a.getsockname()[1]
            try:
                b.bind((HOSTS[1], port))
            except OSError:
                continue
            return port
    raise AssertionError("no common free port")


class Pool:
    def __init__(self, webs: list[Web], agents: list[Agent], engine: Engine) -> None:
        self.webs, self.agents, self.engine = webs, agents, engine
        self.events: list[AgentChanged] = []

    def taken(self, event: Event) -> None:
        assert isinstance(event, AgentChanged)
        self.events.append(event)

    def weight(self, i: int) -> int | None:
        table = self.engine.actual or {}
        service = table.get(VKEY)
        if service is None:
            return None
        for dest, conf in service.dests.items():
            if dest.address == HOSTS[i]:
                return conf.weight
        return None


@pytest.fixture
async def pool(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Pool]:
    extra = getattr(request, "param", "")
    port = _free_port()
    webs = [Web(0, host=h) for h in HOSTS]
    agents = [Agent(b"100%\n", host=h, port=port) for h in HOSTS]
    for w in webs:
        await w.start()
    for a in agents:
        await a.start()
    cf = tmp_path / "lb.cf"
    reals = "".join(f"\treal={w.host}:{w.port} masq 10\n" for w in webs)
    cf.write_text(
        "checktimeout=1\ncheckinterval=1\n"
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
        f"\tagentport={port}\n\tagentinterval=1\n\tagenttimeout=1\n{extra}"
    )
    bus = EventBus()
    engine = Engine(load_config(str(cf)), MemoryBackend(), events=bus)
    p = Pool(webs, agents, engine)
    bus.subscribe("test", p.taken, kinds=(AgentChanged,))
    await bus.start()
    await engine.start()
    await engine.wait_programmed()
    try:
        yield p
    finally:
        await engine.stop()
        await bus.stop()
        for a in agents:
            await a.stop()
        for w in webs:
            await w.stop()


async def _follows(p: Pool, i: int, answer: bytes, weight: int | None) -> float:
    """Say `answer` on agent i; seconds until its kernel weight is `weight`."""
    p.agents[i].say(answer)
    started = time.monotonic()
    await wait_for(lambda: p.weight(i) == weight, within=10)
    return time.monotonic() - started


def _after_answer(p: Pool, i: int, answer: bytes) -> float:
    """Seconds from the first time agent i sent `answer` (since it was told to) to now."""
    agent = p.agents[i]
    sent = [t for t, a in agent.served if a == answer and t >= agent.changed_at]
    return time.monotonic() - sent[0]


async def test_the_kernel_weight_follows_the_agent(pool: Pool) -> None:
    assert (pool.weight(0), pool.weight(1)) == (10, 10)
    delays, lags = [], []
    for answer, weight in [
        (b"30%\n", 3),
        (b"75%\n", 8),
        (b"0%\n", 0),
        (b"100%\n", 10),
        (b"drain\n", 0),
        (b"ready 50%\n", 5),
        (b"500%\n", 10),  # a lying agent: never above the configured weight
    ]:
        delays.append(await _follows(pool, 0, answer, weight))
        lags.append(_after_answer(pool, 0, answer))
        assert pool.weight(1) == 10  # the other real's agent said nothing new
    print(
        f"\nkernel weight after the agent's answer changed (agentinterval=1): "
        f"{', '.join(f'{d:.2f}' for d in delays)} s; max {max(delays):.2f} s; after the agent"
        f" sent it: {', '.join(f'{x * 1000:.0f}' for x in lags)} ms (poll step 20 ms)"
    )
    assert max(delays) < 3.0  # one agent interval and a reconcile, with room for a slow host
    status = pool.engine.agents.views
    assert status[next(r for r in status if r.address == HOSTS[0])].text == "weight 10/10"
    texts = [e.text for e in pool.events if e.ref.address == HOSTS[0]]
    assert "weight 3/10" in texts and "drain" in texts


async def test_maint_down_up_ready(pool: Pool) -> None:
    await _follows(pool, 0, b"maint # upgrade\n", None)  # out (quiescent=no: deleted)
    ref = next(r for r in pool.engine.agents.views if r.address == HOSTS[0])
    assert pool.engine.agents.views[ref].text == "maint: upgrade"
    assert ref in pool.engine.maintained
    await _follows(pool, 0, b"ready\n", 10)
    await _follows(pool, 0, b"down # disk full\n", None)
    seen = pool.agents[0].connections
    await _follows(pool, 0, b"75%\n", None)  # down holds until up
    await wait_for(lambda: pool.agents[0].connections >= seen + 2)
    assert pool.weight(0) is None
    await _follows(pool, 0, b"up\n", 8)  # and the share said meanwhile applies
    assert ref not in pool.engine.maintained


async def test_all_reals_out_by_agent_brings_no_weight_back(pool: Pool) -> None:
    await _follows(pool, 0, b"drain\n", 0)
    await _follows(pool, 1, b"drain\n", 0)
    # drained by their agents: in the kernel at weight 0, none of them counted up
    assert pool.engine.up_of()[VKEY] is False


async def test_a_failing_health_check_wins(pool: Pool) -> None:
    await _follows(pool, 0, b"50%\n", 5)
    await pool.webs[0].stop()  # health check fails: out whatever the agent says
    await wait_for(lambda: pool.weight(0) is None)
    pool.agents[0].say(b"up 100%\n")  # the agent cannot bring it back
    await wait_for(lambda: pool.agents[0].connections >= 3)
    assert pool.weight(0) is None
    await pool.webs[0].start()
    await wait_for(lambda: pool.weight(0) == 10)


@pytest.mark.parametrize("mode", ["hang", "flood", "close", "garbage", "refused"])
async def test_a_broken_agent_keeps_the_last_state_then_drops_it(pool: Pool, mode: str) -> None:
    await _follows(pool, 0, b"30%\n", 3)
    agent = pool.agents[0]
    seen = agent.connections
    if mode == "garbage":
        agent.say(b"\x00hello there\n")
    elif mode == "refused":
        await agent.stop()
    else:
        agent.mode = mode  # type: ignore[assignment]
    ref = next(r for r in pool.engine.agents.views if r.address == HOSTS[0])
    # kept through 3 failures in a row (agentfail's default), then no cap: never out
    await wait_for(lambda: pool.engine.agents.views[ref].failures >= 2, within=15)
    assert pool.weight(0) == 3
    await wait_for(lambda: pool.weight(0) == 10, within=15)
    assert pool.engine.agents.views[ref].text.startswith("no answer: ")
    assert ref not in pool.engine.maintained
    if mode != "refused":
        assert agent.connections > seen


@pytest.mark.parametrize("pool", ["\tagentfail=ignore\n"], indirect=True)
async def test_agentfail_ignore_drops_at_once(pool: Pool) -> None:
    await _follows(pool, 0, b"maint\n", None)
    pool.agents[0].mode = "close"
    await wait_for(lambda: pool.weight(0) == 10, within=5)


async def test_a_reload_without_the_agent_drops_its_caps(pool: Pool, tmp_path: Path) -> None:
    await _follows(pool, 0, b"drain\n", 0)
    cf = tmp_path / "lb.cf"
    text = "".join(line for line in cf.read_text().splitlines(True) if "agent" not in line)
    cf.write_text(text)
    await pool.engine.reload(load_config(str(cf)))
    await wait_for(lambda: pool.weight(0) == 10)
    assert pool.engine.steering.caps() == {}


def test_the_log_words_an_agent_change(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lvsmon.engine import eventlog
    from lvsmon.engine.agentlog import AgentLines
    from lvsmon.engine.eventlog import LOGGED, log_event
    from lvsmon.engine.jobs import RealRef

    monkeypatch.setattr(eventlog, "_agent_lines", AgentLines())  # no line of another test
    assert AgentChanged in LOGGED
    ref = RealRef(VKEY, "10.0.0.5", 80)
    with caplog.at_level("INFO", logger="lvsmon"):
        log_event(AgentChanged(ref, "weight 3/10", 3, 10))
        log_event(AgentChanged(ref, "down: disk full", 0, 10, "down"))
        log_event(AgentChanged(ref, "weight 0/10 (drain)", 0, 10))  # back in: said at once
        for pct in range(4, 9):  # a load-based weight, each exchange: one line a minute
            log_event(AgentChanged(ref, f"weight {pct}/10", pct, 10))
    assert caplog.messages == [
        "Agent of real server 10.0.0.5:80 (tcp:127.0.0.100:80): weight 3/10",
        "Agent of real server 10.0.0.5:80 (tcp:127.0.0.100:80): down: disk full",
        "Agent of real server 10.0.0.5:80 (tcp:127.0.0.100:80): weight 0/10 (drain)",
    ]


def test_an_agent_that_changes_at_every_exchange_is_logged_once_a_minute() -> None:
    from lvsmon.engine.agentlog import AgentLines
    from lvsmon.engine.jobs import RealRef

    lines = AgentLines(window_s=60.0)
    a, b = RealRef(VKEY, "10.0.0.5", 80), RealRef(VKEY, "10.0.0.6", 80)
    said = [lines.line(AgentChanged(a, f"weight {w}/10", w, 10), t) for t, w in enumerate(range(9))]
    assert said[0] == "Agent of real server 10.0.0.5:80 (tcp:127.0.0.100:80): weight 0/10"
    assert said[1:] == [None] * 8
    # another real is its own
    assert lines.line(AgentChanged(b, "weight 5/10", 5, 10), 3.0) is not None
    # taken out and given back: at once, whatever the window
    assert lines.line(AgentChanged(a, "maint: upgrade", 0, 10, "maint"), 10.0) is not None
    assert lines.line(AgentChanged(a, "maint: later", 0, 10, "maint"), 11.0) is None
    assert lines.line(AgentChanged(a, "weight 2/10", 2, 10), 12.0) is not None
    assert lines.line(AgentChanged(a, "weight 3/10", 3, 10), 13.0) is None
    assert lines.line(AgentChanged(a, "weight 4/10", 4, 10), 14.0) is None
    # a minute after its last line: the next change is said, with how many were left out
    assert lines.line(AgentChanged(a, "weight 7/10", 7, 10), 72.0) == (
        "Agent of real server 10.0.0.5:80 (tcp:127.0.0.100:80): weight 7/10"
        " (2 earlier changes not logged)"
    )


async def test_status_shows_what_the_agent_says(pool: Pool) -> None:
    from lvsmon.engine.status import MalformedStatus, check_status, render_status, unpack

    def entry(i: int) -> dict[str, object]:
        status = pool.engine.status()
        reals = status["virtuals"][0]["reals"]
        return next(dict(r) for r in reals if r["address"] == HOSTS[i])

    def texts() -> str:
        return b"".join(unpack(t) for t in pool.engine.status_texts()).decode()

    assert entry(0)["agent"] == "weight 10/10"
    await _follows(pool, 0, b"30%\n", 3)
    await wait_for(lambda: '"agent":"weight 3/10"' in texts())  # the kept texts follow
    assert entry(0)["agent"] == "weight 3/10"
    await _follows(pool, 1, b"maint # kernel upgrade\n", None)
    assert entry(1)["agent"] == "maint: kernel upgrade" and entry(1)["state"] == "maintenance"
    await wait_for(lambda: '"agent":"maint: kernel upgrade"' in texts())
    status = pool.engine.status()
    status["pid"] = 1
    text = render_status(check_status(json.loads(json.dumps(status))))
    assert "weight 3/10 by agent" in text
    assert "maintenance agent: maint: kernel upgrade" in text
    broken = json.loads(json.dumps(status))
    broken["virtuals"][0]["reals"][0]["agent"] = 7
    with pytest.raises(MalformedStatus, match="agent"):
        check_status(broken)


async def test_the_metric_is_the_weight_the_agent_asks_for(pool: Pool) -> None:
    import asyncio

    from prometheus_client.parser import text_string_to_metric_families

    from lvsmon.api.metrics import Layout, agent_family

    await _follows(pool, 0, b"30%\n", 3)
    await _follows(pool, 1, b"drain\n", 0)

    async def pause() -> None:
        await asyncio.sleep(0)

    layout = Layout(pool.engine)
    await layout.build(pool.engine, pause)
    out: list[str] = []
    agent_family(out, pool.engine, layout)
    (fam,) = text_string_to_metric_families("".join(out))
    assert fam.name == "lvsmon_real_agent_weight" and fam.type == "gauge"
    got = {s.labels["real"].split(":")[0]: s.value for s in fam.samples}
    assert got == {HOSTS[0]: 3.0, HOSTS[1]: 0.0}


def test_a_dropped_state_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Pure: the runner without its loop, fed results by hand (an IPv6 agent in brackets)."""
    from lvsmon.checks.base import CheckResult
    from lvsmon.engine.agentcheck import AgentRunner, plan_agents
    from lvsmon.engine.steering import Steering

    config = parse_config(
        "virtual6=[2001:db8::1]:80\n\treal6=[2001:db8::5]:80 gate 10\n\tagentport=7000\n"
        "\tagentfail=keep 2\n",
        "a.cf",
        check_support=False,
    )
    published: list[AgentChanged] = []
    steering = Steering()
    runner = AgentRunner(steering, published.append)
    runner.schedule(config)
    (job,) = plan_agents(config)
    (ref,) = runner.views
    runner.take(job, CheckResult(True, "maint # upgrade"))
    assert runner.out == {ref} and [e.text for e in published] == ["maint: upgrade"]
    refused = CheckResult(False, "connect: connection refused")
    with caplog.at_level("INFO", logger="lvsmon"):
        for _ in range(2):
            runner.take(job, refused)
        assert runner.out == {ref} and not caplog.messages  # kept through 2 failures
        runner.take(job, refused)
        runner.take(job, refused)
    assert runner.out == frozenset() and steering.caps() == {}
    assert caplog.messages == [
        "agent [2001:db8::5]:7000: 3 failed exchanges in a row (connect: connection refused):"
        " its last state is dropped"
    ]
    assert [e.text for e in published] == [
        "maint: upgrade",
        "no answer: connect: connection refused",
    ]
    runner.take(job, CheckResult(True, "\x1b[31m 40% \r"))  # back, its words cleaned
    assert runner.views[ref].text == "weight 4/10" and steering.caps() == {ref: 4}
    assert runner.views[ref].answer.isprintable()


def test_the_event_as_events_shows_it() -> None:
    from lvsmon.api.eventfeed import event_json
    from lvsmon.engine.jobs import RealRef

    ref = RealRef(VKEY, "10.0.0.5", 80)
    assert event_json(AgentChanged(ref, "maint: upgrade", 0, 10, "maint"), 7, 1.5) == {
        "type": "AgentChanged",
        "seq": 7,
        "at": 1.5,
        "ref": {"virtual": "tcp:127.0.0.100:80", "real": "10.0.0.5:80"},
        "text": "maint: upgrade",
        "weight": 0,
        "configured": 10,
        "out": "maint",
    }


def test_a_reload_that_changes_the_weight_moves_the_cap_without_asking_again() -> None:
    from lvsmon.checks.base import CheckResult
    from lvsmon.engine.agentcheck import AgentRunner, plan_agents
    from lvsmon.engine.steering import Steering

    def cfg(weight: int, interval: int = 5) -> str:
        return (
            f"virtual=127.0.0.100:80\n\treal=127.0.0.21:80 masq {weight}\n\tagentport=7000\n"
            f"\tagentinterval={interval}\n"
        )

    steering = Steering()
    runner = AgentRunner(steering)
    config = parse_config(cfg(10), "a.cf", check_support=False)
    runner.schedule(config)
    (job,) = plan_agents(config)
    runner.take(job, CheckResult(True, "30%"))
    (ref,) = runner.views
    assert steering.caps() == {ref: 3}
    runner.schedule(parse_config(cfg(20), "a.cf", check_support=False))
    assert steering.caps() == {ref: 6} and runner.views[ref].text == "weight 6/20"
    # the same agent at another interval: what it said carries over
    runner.schedule(parse_config(cfg(20, 9), "a.cf", check_support=False))
    assert steering.caps() == {ref: 6} and runner.views[ref].text == "weight 6/20"
    # another agent port: another agent, no cap until it answers
    runner.schedule(parse_config(cfg(20, 9).replace("7000", "7001"), "a.cf", check_support=False))
    assert steering.caps() == {} and runner.views[ref].text == "no answer yet"
