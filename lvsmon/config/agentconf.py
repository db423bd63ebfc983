"""The agent check's directives (issue 25; lvsmon's own, ldirectord rejects them):

    agentport     = N                 global and per virtual; 0 or unset: no agent check
    agentinterval = SECONDS           default: the virtual's checkinterval
    agenttimeout  = SECONDS           default: the virtual's checktimeout (connect, send, line)
    agentsend     = "TEXT"            sent once connected, HAProxy's escapes (\\n \\r \\t \\\\
                                      \\xHH); default: nothing (the agent speaks first)
    agentfail     = keep [N] | ignore default: keep 3

A virtual's own value wins over the global one, each directive alone. `agentfail`: when the
agent cannot be reached, times out, or answers garbage, `keep N` keeps what it last said for N
agent intervals of failures in a row, then drops it (no cap, nothing taken out); `ignore` drops
it at the first failure. A failing agent never takes a real out nor raises a weight: the health
check decides up and down (HAProxy: "failure to connect to the agent is not considered an
error"). The protocol is checks/agent.py; the runner engine/agentcheck.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, cast

from lvsmon.checks.agent import unescape_send
from lvsmon.config.agentsettings import DEFAULT_FAILKEEP, AgentConf, AgentGlobal
from lvsmon.config.raw import Setting
from lvsmon.config.values import Invalid, Warn, integer, maybe_quoted, shorten

MAX_SEND: Final = 1024  # bytes of agentsend: an agent's request is a word or two
MAX_SECONDS: Final = 86400
NAMES: Final = ("agentport", "agentinterval", "agenttimeout", "agentsend", "agentfail")


def parse_port(value: str, warn: Warn) -> int:
    return integer(value, "agentport", warn, minimum=0, maximum=65535)


def parse_seconds(name: str) -> Callable[[str, Warn], int]:
    def parse(value: str, warn: Warn) -> int:
        return integer(value, name, warn, minimum=1, maximum=MAX_SECONDS)

    return parse


def parse_send(value: str, warn: Warn) -> str:
    text = maybe_quoted(value, "agentsend")
    # the bytes it stands for are bounded, not the escapes that spell them
    if len(unescape_send(text)) > MAX_SEND:
        raise Invalid(f"agentsend is longer than {MAX_SEND} bytes")
    return text


def parse_fail(value: str, warn: Warn) -> int:
    """`keep`, `keep N` or `ignore`, as the number of intervals the last state is kept."""
    words = value.split()
    wanted = "agentfail must be keep, keep N or ignore"
    if words == ["ignore"]:
        return 0
    if words and words[0] == "keep":
        if len(words) == 1:
            return DEFAULT_FAILKEEP
        if len(words) == 2:
            return integer(words[1], "agentfail keep", warn, minimum=1, maximum=1_000_000)
    raise Invalid(f"{wanted}, not {shorten(value)!r}")


def agent_global(gs: Mapping[str, Setting]) -> AgentGlobal:
    """The global agent lines (config/effective.py puts them in GlobalSettings)."""

    def get(name: str) -> object:
        st = gs.get(name)
        return None if st is None else st.value

    return AgentGlobal(
        cast("int | None", get("agentport")),
        cast("int | None", get("agentinterval")),
        cast("int | None", get("agenttimeout")),
        cast("str | None", get("agentsend")),
        cast("int | None", get("agentfail")),
    )


def agent_of(
    vs: Mapping[str, Setting], g: AgentGlobal, checkinterval: int, checktimeout: int
) -> AgentConf | None:
    """The virtual's agent check from its settings `vs` and the global lines `g`; None: off."""

    def get(name: str, default: object) -> object:
        st = vs.get(name)
        return default if st is None else st.value

    port = cast(int, get("agentport", g.port or 0))
    if port == 0:
        return None
    return AgentConf(
        port,
        cast(int, get("agentinterval", g.interval or checkinterval)),
        cast(int, get("agenttimeout", g.timeout or checktimeout)),
        cast(str, get("agentsend", g.send or "")),
        cast(int, get("agentfail", DEFAULT_FAILKEEP if g.failkeep is None else g.failkeep)),
    )


def unused(vs: Mapping[str, Setting]) -> list[tuple[int, str]]:
    """(line, warning) for agent settings of a virtual without an agent port."""
    out = []
    for name in NAMES[1:]:
        st = vs.get(name)
        if st is not None:
            out.append((st.line, f"{name} has no effect without agentport"))
    return out
