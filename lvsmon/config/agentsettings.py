"""The agent check's settings as the model holds them (config/agentconf.py parses them; the
protocol is checks/agent.py, the runner engine/agentcheck.py). A leaf: model.py imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_FAILKEEP: Final = 3


@dataclass(frozen=True, slots=True)
class AgentConf:
    """A virtual's agent check, effective values (seconds for the interval and the timeout)."""

    port: int
    interval: int
    timeout: int
    send: str = ""  # as written, escapes unread (checks/agent.unescape_send reads them)
    failkeep: int = DEFAULT_FAILKEEP  # agent intervals of failures that keep the last state


@dataclass(frozen=True, slots=True)
class AgentGlobal:
    """The global agent lines as written (None: not written): each is a virtual's default. Part
    of GlobalSettings, so that a reload that changes one of them builds every virtual again."""

    port: int | None = None
    interval: int | None = None
    timeout: int | None = None
    send: str | None = None
    failkeep: int | None = None


NO_AGENT: Final = AgentGlobal()
