"""checktype=connect: a TCP connect to the check port, then close.

As in ldirectord, a connect check of a UDP virtual is an ICMP echo instead (there is nothing to
connect to), so the registry sends those to `ping.check_ping`.
"""

from __future__ import annotations

import asyncio
import socket

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.ping import check_ping
from lvsmon.checks.step import Step


async def check_connect(spec: CheckSpec, step: Step) -> CheckResult:
    if spec.protocol == "udp":
        return await check_ping(spec, step)
    step.name = "connect"
    family = socket.AF_INET6 if spec.is_ipv6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (spec.host, spec.port))
    return CheckResult(True, "connect: connected")
