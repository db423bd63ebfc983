"""negotiate checks for service=imap and imaps: the IMAP greeting, then LOGIN when `login` is set.

A hand-written sans-IO `Dialogue` rather than aioimaplib, which is GPL-3.0-only (lvsmon ships
under GPL-2.0-or-later). Plain imap runs on the `prober`, imaps the same dialogue over TLS through
`stream.converse` (no certificate check, like ldirectord).

As ldirectord's Net::IMAP::Simple: the greeting must be "* OK" or "* PREAUTH"; with a login, the
tagged answer to LOGIN must be OK. Credentials go as quoted strings, or as literals when they hold
8-bit bytes (RFC 3501 quoted strings are 7-bit).
"""

from __future__ import annotations

import re
from typing import Final

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import MAX_LINE, Dialogue, Outcome, shown
from lvsmon.checks.drive import login_check, login_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step

TLS_SERVICES = frozenset({"imaps"})
TAG: Final = b"a1"

_GREETING = re.compile(rb"\*[ \t]+(OK|PREAUTH)\b", re.IGNORECASE)
_BYE = re.compile(rb"\*[ \t]+BYE\b", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d{1,9})\+?\}\Z")  # a line announcing n bytes that are not lines
_CODE = re.compile(rb"\A\[[^\]]*\]\s*")
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")  # RFC 3501 QUOTED-CHAR, unescaped


def login_command(login: bytes, passwd: bytes) -> list[bytes]:
    """`a1 LOGIN user pass` as the pieces to send: the first after the greeting, each next one
    after a "+" continuation (a literal's announcement ends a piece)."""
    pieces = [TAG + b" LOGIN"]
    for arg in (login, passwd):
        if _QUOTABLE.match(arg):
            pieces[-1] += b' "' + arg.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        else:
            pieces[-1] += b" {%d}\r\n" % len(arg)
            pieces.append(arg)
    pieces[-1] += b"\r\n"
    return pieces


class ImapDialogue(Dialogue):
    """Greeting, then (with a login) LOGIN until its tagged answer; untagged lines are skipped."""

    def __init__(self, service: str, login: bytes = b"", passwd: bytes = b"") -> None:
        self.service = service
        self.step = f"{service} greeting"
        self._pieces = login_command(login, passwd) if login else []
        self.farewell = b"a2 LOGOUT\r\n" if login else TAG + b" LOGOUT\r\n"
        self._buf = bytearray()
        self._scanned = 0  # bytes at the front of _buf known to hold no newline
        self._skip = 0  # bytes of a literal still to pass over

    def feed(self, data: bytes) -> Outcome:
        # linear in what is fed: lines are read at an offset into the buffer, which is cut once
        # per feed (slicing it per line made 256 KiB of 3-byte lines cost 189 ms: issue 21)
        buf = self._buf
        buf += data
        size = len(buf)
        pos = 0
        sent = b""
        try:
            while True:
                if self._skip:
                    taken = min(self._skip, size - pos)
                    pos += taken
                    self._skip -= taken
                    if self._skip:
                        break
                end = buf.find(b"\n", max(pos, self._scanned), pos + MAX_LINE + 1)
                if end < 0:
                    if size - pos > MAX_LINE:
                        return self._down(f"{self._stage()}: a line longer than {MAX_LINE} bytes")
                    self._scanned = size
                    break
                line = bytes(buf[pos:end]).removesuffix(b"\r")
                pos = end + 1
                outcome = self._answer(line)
                if isinstance(outcome, CheckResult):
                    return outcome
                sent += outcome
        finally:
            del buf[:pos]
            self._scanned = max(0, self._scanned - pos)
        return sent or None

    def _answer(self, line: bytes) -> bytes | CheckResult:
        if self.step.endswith(" greeting"):
            return self._greeting(line)
        if line.startswith(b"+"):
            # the server waits for a literal we announced
            return self._pieces.pop(0) if self._pieces else b""
        tag, _, rest = line.partition(b" ")
        if tag.upper() == TAG.upper():
            if rest[:2].upper() == b"OK":
                return CheckResult(True, f"{self.service}: logged in")
            return self._down(f"login rejected: {shown(rest)}")
        if _BYE.match(line):
            return self._down(f"login: {shown(line)}")
        if (literal := _LITERAL.search(line)) is not None:
            self._skip = int(literal[1])
        return b""

    def _greeting(self, line: bytes) -> bytes | CheckResult:
        status = _GREETING.match(line)
        if status is None:
            return self._down(f"greeting: {shown(line)}")
        if not self._pieces:
            # the response code is mostly a CAPABILITY list: too long to tell anything
            text = shown(_CODE.sub(b"", line[status.end() :].lstrip()))
            said = " ".join(filter(None, (status[1].upper().decode(), text)))
            return CheckResult(True, f"{self.service}: {said}")
        if status[1].upper() == b"PREAUTH":
            # already authenticated: LOGIN would only get BAD for the wrong state
            return CheckResult(True, f"{self.service}: preauthenticated, login not needed")
        self.step = f"{self.service} login"
        return self._pieces.pop(0)

    def _stage(self) -> str:
        return self.step.removeprefix(f"{self.service} ")

    def _down(self, what: str) -> CheckResult:
        return CheckResult(False, f"{self.service}: {what}")


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    return login_plan(spec, ImapDialogue, spec.service in TLS_SERVICES)


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    return await login_check(spec, step, ImapDialogue, spec.service in TLS_SERVICES)
