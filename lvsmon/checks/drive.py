"""Where a check's dialogue runs: the prober (plain TCP, or TLS over it), a TLS stream, or UDP
datagrams.

Every dialogue-based service (http aside, which may resolve a name) picks one of the three per
spec and otherwise has nothing to say about I/O; this keeps that choice in one place.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Literal

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, received_counter
from lvsmon.checks.datagram import converse_datagram
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.prober import DialogueFactory, DialoguePlan, ProbePlan, prober_for
from lvsmon.checks.step import Step
from lvsmon.checks.stream import converse
from lvsmon.checks.tls import TlsDialogue, TlsSetting

Via = Literal["tcp", "tls", "udp"]

_UNSENDABLE = (b"\r", b"\n", b"\0")


def family_of(spec: CheckSpec) -> int:
    """The address family of the real (its address is always an IP literal)."""
    return socket.AF_INET6 if spec.is_ipv6 else socket.AF_INET


def plain_plan(spec: CheckSpec, dialogue: DialogueFactory) -> DialoguePlan:
    """The prober's plan for a dialogue over plain TCP to the real's check port."""
    return DialoguePlan(spec, family_of(spec), None, dialogue)  # None: the spec's host and port


async def drive(spec: CheckSpec, step: Step, dialogue: Dialogue, via: Via = "tcp") -> CheckResult:
    """Run `dialogue` against the real's check port; run_check's deadline bounds it."""
    family, addr = family_of(spec), (spec.host, spec.port)
    if via == "udp":
        return await converse_datagram(dialogue, family, addr, step)
    if via == "tls":
        return await converse(dialogue, family, addr, step, tls=True)
    step.name = "connect"
    plan = DialoguePlan(spec, family, addr, lambda: dialogue)
    return await prober_for(asyncio.get_running_loop()).probe(plan, step)


async def probe_in_task(plan: ProbePlan, step: Step) -> CheckResult:
    """Probe `plan` from a check's own task (run_check's path). A TLS dialogue's ciphertext is
    counted into the check's `Received` as it comes, so that when run_check's deadline cancels
    the probe before the prober's own timeout ends it, the lag rule still sees a flood (the
    prober's count is in its result only)."""
    made: list[Dialogue] = []

    def make() -> Dialogue:
        dialogue = plan.make_dialogue()
        assert dialogue is not None  # a connect check has no task path here
        made.append(dialogue)
        return dialogue

    step.name = "connect"
    counted = DialoguePlan(plan.spec, plan.family, plan.addr, make)  # the same Route, if any
    try:
        return await prober_for(asyncio.get_running_loop()).probe(counted, step)
    finally:
        if made and isinstance(made[0], TlsDialogue):
            counter = received_counter()
            counter.count = max(counter.count, made[0].received)


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
    """The prober's plan for a login dialogue over plain TCP, or TLS over it (pops, imaps: no SNI,
    the real's session resumed); None for unsendable credentials (`login_check` reports those)."""
    try:
        return _login_plan(spec, make, tls)
    except CheckFailed:
        return None


def _login_plan(spec: CheckSpec, make: LoginDialogue, tls: bool) -> ProbePlan:
    login, passwd = line_credentials(spec)
    service = spec.service
    if tls:
        setting = TlsSetting(spec, spec.host, spec.port, "")  # no SNI unless a name is verified
        return plain_plan(spec, lambda: TlsDialogue(make(service, login, passwd), *setting.args()))
    return plain_plan(spec, lambda: make(service, login, passwd))


async def login_check(spec: CheckSpec, step: Step, make: LoginDialogue, tls: bool) -> CheckResult:
    return await probe_in_task(_login_plan(spec, make, tls), step)
