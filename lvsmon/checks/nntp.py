"""negotiate check for service=nntp: the server's greeting must be a 2xx response.

ldirectord connected, read at most 64 bytes once and was up iff they began with "2". We read the
greeting line (RFC 3977: a three-digit code, "200"/"201" when posting is allowed or not) and are
up iff its code is 2xx; "400 ..." (innd throttled, nnrpd without its overview) is down with the
server's text in the reason. Then "QUIT" as a farewell, without waiting for the answer. Plain TCP
only, so it always runs on the prober.
"""

from __future__ import annotations

from typing import Final

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import Dialogue, LineBuffer, LineTooLong, Outcome, shown
from lvsmon.checks.drive import drive, plain_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step

_QUIT: Final = b"QUIT\r\n"


def _code(line: bytes) -> int | None:
    """The response code of a line ("200 ready" -> 200), or None if it does not start with one."""
    head = line[:4]
    if len(head) < 3 or not head[:3].isdigit() or head[3:] not in (b"", b" ", b"-"):
        return None
    return int(head[:3])


class NntpDialogue(Dialogue):
    """Wait for the greeting line, judge its code."""

    step = "nntp greeting"
    farewell = _QUIT

    def __init__(self) -> None:
        self.lines = LineBuffer()

    def feed(self, data: bytes) -> Outcome:
        try:
            lines = self.lines.lines(data)
        except LineTooLong as exc:
            return CheckResult(False, f"nntp: greeting: {exc}")
        if not lines:
            return None
        line = lines[0]
        code = _code(line)
        if code is None:
            text = shown(line) or "an empty line"
            return CheckResult(False, f"nntp: greeting is not an NNTP response: {text}")
        if not 200 <= code < 300:
            return CheckResult(False, f"nntp: greeting: {shown(line)}")
        return CheckResult(True, f"nntp: {shown(line)}")

    def feed_eof(self) -> CheckResult:
        partial = self.lines.partial
        if partial:
            return CheckResult(False, f"nntp: greeting cut short: {shown(partial)}")
        return CheckResult(False, "nntp: connection closed before the greeting")


def probe_plan(spec: CheckSpec) -> ProbePlan:
    """Always the prober's: NNTP has no TLS variant among the services."""
    return plain_plan(spec, NntpDialogue)


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    return await drive(spec, step, NntpDialogue())
