"""A skeleton negotiate check to copy when adding a service (not registered: no config reaches it).

Copy this file to `lvsmon/checks/<name>.py`, rename the dialogue, replace the protocol, and add
one `Service("<name>", "<name>")` line to `registry.SERVICES`; docs/architecture.md ("Adding a
service") lists the rest (well-known port, tests against the real server, docs, bench).

The protocol here is the smallest useful one: the checker sends `request` (default "PING") as a
line, and the server is up when its first line starts with `receive` (default "+OK"). It shows
what every check owes its operators:

* one deadline for the whole exchange: the driver's, never a timeout of its own;
* bounded work per peer: LineBuffer refuses lines over MAX_LINE, and the verdict comes on the
  first line, so a server streaming bytes costs at most one line's worth;
* a reason that names the step and quotes the server through `shown` (printable, short): the
  server is untrusted and its text reaches logs, status and mail;
* a sans-IO Dialogue, so the same code runs on the prober (plain TCP, no task per check: the
  engine's hot path), over TLS and over UDP, and is unit-testable as bytes in, verdict out.
"""

from __future__ import annotations

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.dialogue import Dialogue, LineBuffer, LineTooLong, Outcome, shown
from lvsmon.checks.drive import drive, plain_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step

SERVICE = "skeleton"  # the name in `service = ...` and at the start of every reason
DEFAULT_REQUEST = "PING"
DEFAULT_RECEIVE = "+OK"


class SkeletonDialogue(Dialogue):
    """Send one line, judge the first line of the answer."""

    step = f"{SERVICE} answer"  # what a deadline names: "timeout after 3s during skeleton answer"
    farewell = b"QUIT\r\n"  # sent after the verdict, without waiting: a polite hang-up

    def __init__(self, request: bytes, receive: bytes) -> None:
        self.request = request
        self.receive = receive
        self.lines = LineBuffer()

    def opening(self) -> bytes:
        return self.request + b"\r\n"

    def feed(self, data: bytes) -> Outcome:
        try:
            lines = self.lines.lines(data)
        except LineTooLong as exc:
            return CheckResult(False, f"{SERVICE}: answer: {exc}")
        if not lines:
            return None  # need more bytes
        line = lines[0]
        if not line.startswith(self.receive):
            return CheckResult(False, f"{SERVICE}: answer: {shown(line) or 'an empty line'}")
        return CheckResult(True, f"{SERVICE}: {shown(line)}")

    def feed_eof(self) -> CheckResult:
        partial = self.lines.partial
        if partial:
            return CheckResult(False, f"{SERVICE}: answer cut short: {shown(partial)}")
        return CheckResult(False, f"{SERVICE}: connection closed before the answer")


def _dialogue(spec: CheckSpec) -> SkeletonDialogue:
    request = (spec.request.lstrip("/") or DEFAULT_REQUEST).encode("utf-8", "surrogateescape")
    if any(c in request for c in (b"\r", b"\n", b"\0")):
        # a second command injected through the config must never reach the server
        raise CheckFailed(f"{SERVICE}: request holds CR, LF or NUL, which cannot be sent")
    receive = (spec.receive or DEFAULT_RECEIVE).encode("utf-8", "surrogateescape")
    return SkeletonDialogue(request, receive)


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    """The prober's plan (plain TCP): the engine runs the check without a task. None when the
    spec cannot run there (here: a request that cannot be sent goes the general way, which
    fails it with its reason)."""
    try:
        _dialogue(spec)
    except CheckFailed:
        return None
    return plain_plan(spec, lambda: _dialogue(spec))


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    """The whole check, for `run_check` (one deadline around it; CheckFailed is a down)."""
    return await drive(spec, step, _dialogue(spec))
