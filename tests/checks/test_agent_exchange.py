"""The agent exchange on the prober (checks/agent.py) against a small agent on 127.0.0.1: one
line read, the request sent first, one deadline; hostile agents (hang, refuse, flood, garbage,
500%) end as failed exchanges or are clamped, never raising a weight."""

from __future__ import annotations

import asyncio
import socket
import time

from lvsmon.checks.agent import (
    LINE_BOUND,
    NEUTRAL,
    Verdict,
    agent_plan,
    agent_spec,
    fold,
    parse_reply,
    verdict,
)
from lvsmon.checks.base import CheckResult
from lvsmon.checks.prober import prober_for
from tests.agentserver import Agent


async def _exchange(port: int, send: bytes = b"", timeout: float = 1.0) -> CheckResult:
    plan = agent_plan(agent_spec("127.0.0.1", port, timeout), send)
    return await prober_for(asyncio.get_running_loop()).probe(plan)


async def test_answers_are_read() -> None:
    agent = await Agent(b"ready 75%\n").start()
    try:
        result = await _exchange(agent.port)
        assert result.ok and result.reason == "ready 75%"
        assert verdict(fold(NEUTRAL, parse_reply(result.reason)), 10) == Verdict(8)
        agent.say(b"drain")  # closing ends the line as well
        assert (await _exchange(agent.port)).reason == "drain"
    finally:
        await agent.stop()


async def test_agentsend_goes_out_first() -> None:
    agent = await Agent(b"50%\n", expect=b"load\n").start()
    try:
        result = await _exchange(agent.port, b"load\n")
        assert result.ok and result.reason == "50%"
        assert agent.requests == [b"load\n"]
    finally:
        await agent.stop()


async def test_a_hung_agent_ends_at_the_deadline() -> None:
    agent = await Agent().start()
    agent.mode = "hang"
    try:
        started = time.monotonic()
        result = await _exchange(agent.port, timeout=0.3)
        took = time.monotonic() - started
        assert not result.ok and result.timed_out
        assert result.reason == "timeout after 0.3s during agent"
        assert 0.25 < took < 1.0
    finally:
        await agent.stop()


async def test_a_refused_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        result = await _exchange(port)
    assert not result.ok and result.reason == "connect: connection refused"


async def test_a_flood_without_newline_is_cut_at_the_bound() -> None:
    agent = await Agent().start()
    agent.mode = "flood"
    try:
        result = await _exchange(agent.port)
        assert not result.ok
        assert result.reason == f"agent: a line longer than {LINE_BOUND} bytes"
        assert result.received <= 65536  # one recv at most
    finally:
        await agent.stop()


async def test_a_silent_close() -> None:
    agent = await Agent().start()
    agent.mode = "close"
    try:
        result = await _exchange(agent.port)
        assert (result.ok, result.reason) == (False, "agent: connection closed without a reply")
    finally:
        await agent.stop()


async def test_garbage_and_lies() -> None:
    agent = await Agent(b"\x00\x1b[2J hello\n").start()
    try:
        result = await _exchange(agent.port)
        assert result.ok and parse_reply(result.reason).empty  # the runner counts it failed
        agent.say(b"500%\n")
        result = await _exchange(agent.port)
        assert verdict(fold(NEUTRAL, parse_reply(result.reason)), 10) == Verdict(None)
    finally:
        await agent.stop()


async def test_ipv6() -> None:
    agent = await Agent(b"up 20%\n", host="::1").start()
    try:
        plan = agent_plan(agent_spec("::1", agent.port, 1.0), b"")
        result = await prober_for(asyncio.get_running_loop()).probe(plan)
        assert result.ok and result.reason == "up 20%"
    finally:
        await agent.stop()
