"""The ARP guard's directives across the config: where `arpguard = yes` can do nothing, a warning
at its line (the guard itself: engine/arpguard.py). A leaf of the config layer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lvsmon.config.model import Virtual, VirtualProtocol
from lvsmon.config.raw import Setting
from lvsmon.ipvs.model import Family, Forward


def unguardable(v: Virtual) -> str | None:
    """Why the guard cannot ask for this virtual's VIP; None when it can."""
    if v.protocol is VirtualProtocol.FWM or v.address is None:
        return "a firewall-mark virtual has no VIP to ask ARP for"
    if v.family is not Family.INET:
        return "IPv6 neighbour discovery is not probed"
    if not any(r.forward is Forward.GATE for r in v.reals):
        return "it has no gate (direct routing) real"
    return None


def block_warnings(settings: Mapping[str, Setting], v: Virtual) -> list[tuple[int, str]]:
    """A virtual block's own `arpguard = yes` that cannot act."""
    s = settings.get("arpguard")
    why = unguardable(v) if s is not None and s.value is True else None
    return [] if s is None or why is None else [(s.line, f"arpguard has no effect here: {why}")]


def global_warnings(
    settings: Mapping[str, Setting], virtuals: Iterable[Virtual]
) -> list[tuple[int, str]]:
    """A global `arpguard = yes` that no virtual can use."""
    s = settings.get("arpguard")
    if s is None or s.value is not True:
        return []
    if any(v.arpguard and unguardable(v) is None for v in virtuals):
        return []
    return [(s.line, "arpguard has no effect: no IPv4 virtual with a gate real has it on")]
