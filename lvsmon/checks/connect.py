"""checktype=connect: a TCP connect to the check port, then close.

As in ldirectord, a connect check of a UDP virtual is an ICMP echo instead (there is nothing to
connect to), so it goes to `ping.check_ping`. The TCP connect runs on the `prober`.
"""

from __future__ import annotations

import asyncio

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.ping import check_ping
from lvsmon.checks.prober import plan_probe, prober_for
from lvsmon.checks.step import Step


async def check_connect(spec: CheckSpec, step: Step) -> CheckResult:
    plan = plan_probe(spec)
    if plan is None:  # udp
        return await check_ping(spec, step)
    step.name = "connect"
    return await prober_for(asyncio.get_running_loop()).probe(plan, step)
