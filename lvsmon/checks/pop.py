"""negotiate checks for service=pop and pops: the POP3 greeting, then USER, PASS and STAT.

A hand-written sans-IO `Dialogue` (no asyncio POP3 client exists; `poplib` blocks). Plain pop
runs on the `prober`, pops the same dialogue over TLS through `stream.converse` (no certificate
check, like ldirectord).

ldirectord (Mail::POP3Client) logs in with USER/PASS then STAT when `login` is set. Without
`login` its check is up whatever happens, even with nothing listening (spec §10 #22); here the
greeting must then be "+OK".
"""

from __future__ import annotations

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import Dialogue, LineBuffer, LineTooLong, Outcome, shown
from lvsmon.checks.drive import login_check, login_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step

TLS_SERVICES = frozenset({"pops"})


class PopDialogue(Dialogue):
    """Greeting, then (with a login) USER, PASS, STAT: each answer must be positive."""

    farewell = b"QUIT\r\n"

    def __init__(self, service: str, login: bytes = b"", passwd: bytes = b"") -> None:
        self.service = service
        self.step = f"{service} greeting"
        self.lines = LineBuffer()
        # (step name, command sent before the answer, what the answer must start with, reason)
        self._stages: list[tuple[str, bytes, bytes, str]] = []
        if login:
            self._stages = [
                # Mail::POP3Client takes any "+" after USER, but insists on "+OK" after PASS
                (f"{service} login", b"USER " + login + b"\r\n", b"+", "login rejected"),
                (f"{service} login", b"PASS " + passwd + b"\r\n", b"+OK", "login rejected"),
                (f"{service} stat", b"STAT\r\n", b"+OK", "stat failed"),
            ]
        self._login = bool(login)
        self._greeting = b""

    def feed(self, data: bytes) -> Outcome:
        try:
            lines = self.lines.lines(data)
        except LineTooLong as exc:
            return self._down(f"{self._stage_name()}: {exc}")
        command: bytes | None = None
        for line in lines:
            if command is not None:
                # the server cannot have seen our command yet: this line answers nothing
                return self._down(f"{self._stage_name()}: unexpected line {shown(line)}")
            outcome = self._answer(line)
            if isinstance(outcome, CheckResult):
                return outcome
            command = outcome
        return command

    def _answer(self, line: bytes) -> bytes | CheckResult:
        if not self._greeting:
            if line[:3].upper() != b"+OK":
                return self._down(f"greeting: {shown(line)}")
            self._greeting = line
        elif not line.startswith(self._stages[0][2]):
            return self._down(f"{self._stages[0][3]}: {shown(line)}")
        else:
            self._stages.pop(0)
        if not self._stages:
            if self._login:
                return CheckResult(True, f"{self.service}: logged in")
            return CheckResult(True, f"{self.service}: {shown(self._greeting)}")
        self.step = self._stages[0][0]
        return self._stages[0][1]

    def _stage_name(self) -> str:
        return self.step.removeprefix(f"{self.service} ")

    def _down(self, what: str) -> CheckResult:
        return CheckResult(False, f"{self.service}: {what}")


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    return login_plan(spec, PopDialogue, spec.service in TLS_SERVICES)


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    return await login_check(spec, step, PopDialogue, spec.service in TLS_SERVICES)
