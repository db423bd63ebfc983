"""negotiate check for service=simpletcp: send `request`, half-close, grep the reply's lines.

As ldirectord's check_simpletcp: the request is `request` without its leading "/" (the one the
config adds), each literal `\\n` (backslash, n) turned into a newline and nothing else
unescaped; the write side is shut (SHUT_WR) once it is sent, so a server reading to EOF (an echo
server, a `cat`) answers; then the reply is read line by line, each line with its newline as Perl
read it, and the first line that `receive` matches makes the check up. The server closing before
such a line is down, naming the last line seen.

Over UDP (the virtual's protocol is udp; ldirectord opened a UDP socket too) the request is one
datagram, sent again 0.5 s, 1 s, 2 s... until an answer matches or the deadline passes, and each
datagram's last line counts even without a newline, since no EOF will ever finish it.

Where ldirectord was arbitrary: an empty `receive` made Perl reuse the last pattern that had
matched anywhere before; here it means "any line at all", so a server that answers is up.
A line longer than MAX_LINE bytes is down (Perl read without bound).
"""

from __future__ import annotations

from lvsmon.checks.base import RECEIVE_TIMEOUT, CheckResult, CheckSpec, compile_receive
from lvsmon.checks.dialogue import MAX_LINE, Dialogue, Outcome, shown
from lvsmon.checks.drive import drive, plain_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step


def request_bytes(request: str) -> bytes:
    """What ldirectord sent for `request`."""
    text = request[1:] if request.startswith("/") else request
    return text.replace("\\n", "\n").encode("utf-8", "surrogateescape")


class SimpleTcpDialogue(Dialogue):
    """Send, half-close, up at the first line `receive` matches."""

    step = "simpletcp"
    shut_wr = True

    def __init__(self, request: bytes, receive: str, *, datagram: bool = False) -> None:
        self.request = request
        self.receive = compile_receive(receive)
        self.datagram = datagram
        self.last: bytes | None = None  # the last line read, for the reason
        self._buf = bytearray()  # the line under way (TCP), at most MAX_LINE bytes

    def opening(self) -> bytes:
        return self.request

    def feed(self, data: bytes) -> Outcome:
        # linear in what is fed: a chunk without a newline only extends the line under way
        if not self.datagram and b"\n" not in data:
            if len(self._buf) + len(data) > MAX_LINE:
                return CheckResult(False, f"simpletcp: a line longer than {MAX_LINE} bytes")
            self._buf += data
            return None
        if self._buf:
            data = bytes(self._buf) + data
            self._buf.clear()
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            verdict = self._line(data[start : end + 1])
            if verdict is not None:
                return verdict
            start = end + 1
        rest = data[start:]
        if self.datagram and rest:
            return self._line(rest)
        if len(rest) > MAX_LINE:
            return CheckResult(False, f"simpletcp: a line longer than {MAX_LINE} bytes")
        self._buf += rest
        return None

    def feed_eof(self) -> CheckResult:
        if self._buf:  # Perl's readline returns the last line without its newline too
            rest = bytes(self._buf)
            self._buf.clear()
            verdict = self._line(rest)
            if verdict is not None:
                return verdict
        if self.last is None:
            return CheckResult(False, "simpletcp: connection closed without a reply")
        return CheckResult(False, f"simpletcp: no line matched receive (last: {shown(self.last)})")

    def _line(self, line: bytes) -> CheckResult | None:
        if len(line) > MAX_LINE:
            return CheckResult(False, f"simpletcp: a line longer than {MAX_LINE} bytes")
        self.last = line
        if self.receive is None:
            return CheckResult(True, f"simpletcp: {shown(line)}")
        try:
            found = self.receive.search(line, timeout=RECEIVE_TIMEOUT)
        except TimeoutError:
            reason = f"simpletcp: receive regex took longer than {RECEIVE_TIMEOUT:g} s"
            return CheckResult(False, reason)
        return CheckResult(True, f"simpletcp: {shown(line)}") if found is not None else None


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    """simpletcp over TCP runs on the prober; over UDP it goes through `check`."""
    if spec.protocol == "udp":
        return None
    request, receive = request_bytes(spec.request), spec.receive
    return plain_plan(spec, lambda: SimpleTcpDialogue(request, receive))


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    udp = spec.protocol == "udp"
    dialogue = SimpleTcpDialogue(request_bytes(spec.request), spec.receive, datagram=udp)
    return await drive(spec, step, dialogue, "udp" if udp else "tcp")
