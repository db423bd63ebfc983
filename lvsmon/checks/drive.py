"""Where a check's dialogue runs: the prober (plain TCP), a TLS stream, or UDP datagrams.

Every dialogue-based service (http aside, which may resolve a name) picks one of the three per
spec and otherwise has nothing to say about I/O; this keeps that choice in one place.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Literal

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.datagram import converse_datagram
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.prober import DialogueFactory, ProbePlan, prober_for
from lvsmon.checks.step import Step
from lvsmon.checks.stream import converse

Via = Literal["tcp", "tls", "udp"]

_UNSENDABLE = (b"\r", b"\n", b"\0")


def family_of(spec: CheckSpec) -> int:
    """The address family of the real (its address is always an IP literal)."""
    return socket.AF_INET6 if spec.is_ipv6 else socket.AF_INET


def plain_plan(spec: CheckSpec, dialogue: DialogueFactory) -> ProbePlan:
    """The prober's plan for a dialogue over plain TCP to the real's check port."""
    return ProbePlan(spec, family_of(spec), (spec.host, spec.port), dialogue)


async def drive(spec: CheckSpec, step: Step, dialogue: Dialogue, via: Via = "tcp") -> CheckResult:
    """Run `dialogue` against the real's check port; run_check's deadline bounds it."""
    family, addr = family_of(spec), (spec.host, spec.port)
    if via == "udp":
        return await converse_datagram(dialogue, family, addr, step)
    if via == "tls":
        return await converse(dialogue, family, addr, step, tls=True)
    step.name = "connect"
    plan = ProbePlan(spec, family, addr, lambda: dialogue)
    return await prober_for(asyncio.get_running_loop()).probe(plan, step)


def line_credentials(spec: CheckSpec) -> tuple[bytes, bytes]:
    """`login` and `passwd` as bytes for a line protocol; CheckFailed if a CR, LF or NUL would
    end the command early (a second command injected through the config)."""
    login = spec.login.encode("utf-8", "surrogateescape")
    passwd = spec.passwd.encode("utf-8", "surrogateescape")
    if login and any(c in login + passwd for c in _UNSENDABLE):
        raise CheckFailed(
            f"{spec.service}: login or passwd holds CR, LF or NUL, which cannot be sent"
        )
    return login, passwd


LoginDialogue = Callable[[str, bytes, bytes], Dialogue]
"""A dialogue made from (service, login, passwd): pop's and imap's."""


def login_plan(spec: CheckSpec, make: LoginDialogue, tls: bool) -> ProbePlan | None:
    """The prober's plan for a login dialogue over plain TCP; None for TLS or unsendable
    credentials (`login_check` reports those)."""
    if tls:
        return None
    try:
        login, passwd = line_credentials(spec)
    except CheckFailed:
        return None
    service = spec.service
    return plain_plan(spec, lambda: make(service, login, passwd))


async def login_check(spec: CheckSpec, step: Step, make: LoginDialogue, tls: bool) -> CheckResult:
    login, passwd = line_credentials(spec)
    return await drive(spec, step, make(spec.service, login, passwd), "tls" if tls else "tcp")
