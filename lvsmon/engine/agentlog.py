"""How often an agent's changes reach the log: an agent that reports a load-based weight
(HAProxy's usual use: "73%", then "71%") changes it at every exchange, and one line each, at
thousands of reals and `agentinterval = 2`, would be hundreds of lines a second. The event
stream, /metrics, the status and the page still see every change; the log says each real's
first change, then at most one line per WINDOW_S, with how many it left out. A real its agent
takes out or gives back (drain/maint/down and back) is always said at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lvsmon.engine.events import AgentChanged
from lvsmon.engine.jobs import RealRef

WINDOW_S: Final = 60.0
# entries of reals whose last line is older than the window are forgotten when the table
# grows past this: it holds only the reals whose agents changed within a minute
PRUNE_AT: Final = 4096


@dataclass(slots=True)
class _Said:
    at: float
    out: bool  # the real was out (maint/down) by its agent at that line
    left_out: int  # changes since that line not logged


class AgentLines:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._said: dict[RealRef, _Said] = {}

    def line(self, event: AgentChanged, now: float) -> str | None:
        """The log line for `event` (the agent's words were cleaned where they came in), or
        None when it is left out."""
        out = event.out is not None
        said = self._said.get(event.ref)
        if said is not None and said.out == out and now - said.at < self.window_s:
            said.left_out += 1
            return None
        text = f"Agent of real server {event.ref}: {event.text}"
        if said is not None and said.left_out:
            many = said.left_out
            text += f" ({many} earlier change{'' if many == 1 else 's'} not logged)"
        if len(self._said) >= PRUNE_AT:
            self._said = {r: s for r, s in self._said.items() if now - s.at < self.window_s}
        self._said[event.ref] = _Said(now, out, 0)
        return text
