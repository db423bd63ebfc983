"""The agent check (issue 25): HAProxy's `agent-check` protocol, a real's own word on its load.

A small agent on the real listens on `agentport`. lvsmon connects, sends `agentsend` (nothing by
default), reads one line and closes. The line holds words separated by spaces, tabs or commas,
in any order (HAProxy's rules, doc/configuration.txt "agent-check"):

* `75%`: the weight is that share of the configured weight (lvsmon: rounded, never above it, 0
  only for `0%`; a positive share that rounds to 0 gives 1). HAProxy lets a share above 100%
  raise the weight; lvsmon never does (a lying agent cannot pull more traffic): above 100% counts
  as 100%;
* `drain`: weight 0, kept in the kernel (its connections go on); `maint`: out, as maintenance;
  `ready`: cancels drain and maint (the share applies again);
* `down`, `fail`, `stopped`: taken down; `up` cancels that (the health check still decides);
* `#` starts a description (the rest of the line): shown as the reason of a down or maint;
* anything else (`maxconn:30`, a word of a newer HAProxy) is ignored.

A reply changes only what it names: a share is kept until another share, drain/maint until
`ready`, down until `up`, as HAProxy keeps them. A reply without one word lvsmon knows counts as
a failed exchange (garbage), never as "all is well".

Everything here but `AgentDialogue`'s driver is pure: `parse_reply` (one line -> `AgentReply`),
`fold` (the real's `AgentState` and a reply -> the new state), `verdict` (a state and the
configured weight -> the cap and whether the agent takes the real out). The exchange runs on the
prober (checks/prober.py): one deadline for the connect, the send and the line, at most
`LINE_BOUND` bytes of line; the engine's side is engine/agentcheck.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.drive import plain_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.text import clean

LINE_BOUND: Final = 256
"""The agent's line is at most this many bytes (HAProxy reads one check buffer; its agents send
a dozen bytes). Longer without a newline: a failed exchange."""

DESCRIPTION_LIMIT: Final = 120  # characters of an agent's description kept

Admin = Literal["ready", "drain", "maint"]
Oper = Literal["up", "down", "fail", "stopped"]
Out = Literal["maint", "down"]

_SEPARATORS: Final = re.compile(r"[ \t,]+")
_PERCENT: Final = re.compile(r"[0-9]{1,9}%")
_ADMIN: Final = frozenset({"ready", "drain", "maint"})
_OPER: Final = frozenset({"up", "down", "fail", "stopped"})


@dataclass(frozen=True, slots=True)
class AgentReply:
    """What one line said; None: it did not say."""

    percent: int | None = None  # as written (may be above 100)
    admin: Admin | None = None
    oper: Oper | None = None
    description: str = ""  # after '#', clean

    @property
    def empty(self) -> bool:
        """No word lvsmon knows: garbage, counted as a failed exchange."""
        return self.percent is None and self.admin is None and self.oper is None


def parse_reply(line: str) -> AgentReply:
    """One agent line as HAProxy reads it; words are case-insensitive, a later word of the same
    kind wins ("drain,ready" is ready)."""
    text, sharp, rest = line.partition("#")
    description = clean(rest.strip(), DESCRIPTION_LIMIT) if sharp else ""
    percent: int | None = None
    admin: Admin | None = None
    oper: Oper | None = None
    for word in _SEPARATORS.split(text.strip().lower()):
        if _PERCENT.fullmatch(word):
            percent = int(word[:-1])
        elif word in _ADMIN:
            admin = word  # type: ignore[assignment]  # one of _ADMIN
        elif word in _OPER:
            oper = word  # type: ignore[assignment]  # one of _OPER
    return AgentReply(percent, admin, oper, description)


@dataclass(frozen=True, slots=True)
class AgentState:
    """What the agent has said so far, as it stands (the defaults: it has said nothing)."""

    percent: int = 100  # 0..100: a share above 100 is kept as 100
    admin: Admin = "ready"
    down_word: str = ""  # "down", "fail" or "stopped" while the agent holds the real down
    description: str = ""  # what the reply that set the state said after '#'

    @property
    def down(self) -> bool:
        return bool(self.down_word)


NEUTRAL: Final = AgentState()


def fold(state: AgentState, reply: AgentReply) -> AgentState:
    """`state` after `reply`: each kind of word changes only its own part."""
    percent = state.percent if reply.percent is None else min(reply.percent, 100)
    admin = state.admin if reply.admin is None else reply.admin
    down_word = state.down_word
    if reply.oper is not None:
        down_word = "" if reply.oper == "up" else reply.oper
    description = state.description
    if reply.description or reply.oper is not None or reply.admin is not None:
        description = reply.description
    return AgentState(percent, admin, down_word, description)


def share(weight: int, percent: int) -> int:
    """`percent` (0..100) of `weight`, rounded half up; 0 only for 0%, never above `weight`."""
    if percent <= 0 or weight <= 0:
        return 0
    if percent >= 100:
        return weight
    return max(1, (weight * percent * 2 + 100) // 200)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The agent's effect on one real: a weight cap (None: no cap) and whether it is out."""

    cap: int | None
    out: Out | None = None


NO_EFFECT: Final = Verdict(None)


def verdict(state: AgentState, weight: int) -> Verdict:
    """`state` on a real of configured `weight`: down wins over maint, maint over drain, drain
    over the share. A cap is given only below `weight`."""
    if state.down:
        return Verdict(None, "down")
    if state.admin == "maint":
        return Verdict(None, "maint")
    if state.admin == "drain":
        return Verdict(0)
    cap = share(weight, state.percent)
    return Verdict(cap) if cap < weight else NO_EFFECT


def describe(state: AgentState, weight: int) -> str:
    """The state in a few words, for status, events and the log ("weight 3/10", "drain",
    "down: disk full")."""
    if state.down or state.admin == "maint":
        word = state.down_word or "maint"
        return f"{word}: {state.description}" if state.description else word
    if state.admin == "drain":
        return "drain"
    return f"weight {share(weight, state.percent)}/{weight}"


def unescape_send(text: str) -> bytes:
    """`agentsend` as bytes, HAProxy's escapes read: \\n, \\r, \\t, \\\\ and \\xHH; any other
    backslash is kept as it is."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            simple = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\"}.get(nxt)
            if simple is not None:
                out += simple
                i += 2
                continue
            if nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2 : i + 4]):
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
        out += c.encode("utf-8", "surrogateescape")
        i += 1
    return bytes(out)


class AgentDialogue(Dialogue):
    """Send `send` (maybe nothing), read one line of at most LINE_BOUND bytes. The verdict's
    reason is the line as text (not clean yet: `parse_reply` takes words from it and cleans
    what it keeps); ok=False names what went wrong. A line the agent ends by closing counts."""

    step = "agent"

    def __init__(self, send: bytes) -> None:
        self.send = send
        self._buf = bytearray()

    def opening(self) -> bytes:
        return self.send

    def feed(self, data: bytes) -> Outcome:
        buf = self._buf
        room = LINE_BOUND + 2 - len(buf)  # the line and its CRLF
        buf += data[:room]
        end = buf.find(b"\n")
        if end >= 0:
            return self._line(bytes(buf[:end]))
        if len(buf) > LINE_BOUND:
            return CheckResult(False, f"agent: a line longer than {LINE_BOUND} bytes")
        return None

    def feed_eof(self) -> CheckResult:
        if self._buf:
            return self._line(bytes(self._buf))
        return CheckResult(False, "agent: connection closed without a reply")

    @staticmethod
    def _line(raw: bytes) -> CheckResult:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > LINE_BOUND:
            return CheckResult(False, f"agent: a line longer than {LINE_BOUND} bytes")
        return CheckResult(True, raw.decode("utf-8", "replace"))


def agent_spec(host: str, port: int, timeout: float) -> CheckSpec:
    """The spec of one agent exchange (a plain connect to the agent's port, its one deadline)."""
    return CheckSpec("negotiate", host, port, timeout)


def agent_plan(spec: CheckSpec, send: bytes) -> ProbePlan:
    """The prober's plan for one real's agent: connect, send, read the line."""
    return plain_plan(spec, lambda: AgentDialogue(send))
