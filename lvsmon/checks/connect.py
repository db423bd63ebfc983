"""checktype=connect: a TCP connect to the check port, then close.

As in ldirectord, a connect check of a UDP virtual is an ICMP echo instead (there is nothing to
connect to), so it goes to `ping.check_ping`. The TCP connect runs on the `prober`.
"""

from __future__ import annotations

import asyncio
import socket

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.ping import check_ping
from lvsmon.checks.prober import ProbePlan, prober_for
from lvsmon.checks.step import Step


def connect_plan(spec: CheckSpec) -> ProbePlan | None:
    """The prober's plan for a TCP connect; None for udp (a ping)."""
    if spec.protocol == "udp":
        return None
    family = socket.AF_INET6 if spec.is_ipv6 else socket.AF_INET
    return ProbePlan(spec, family, None)  # None: the spec's host and port (no tuple per real)


async def check_connect(spec: CheckSpec, step: Step) -> CheckResult:
    plan = connect_plan(spec)
    if plan is None:  # udp
        return await check_ping(spec, step)
    step.name = "connect"
    return await prober_for(asyncio.get_running_loop()).probe(plan, step)
