"""ldirectord's log wording for kernel changes, so existing log watchers keep matching."""

from __future__ import annotations

from lvsmon.addr import host_port
from lvsmon.config.model import Config, Virtual
from lvsmon.ipvs.model import DestKey, Forward, ServiceKey, kernel_dest_port
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)


def virtual_label(key: ServiceKey) -> str:
    """ldirectord's `vip:port` (or the fwmark) as it appears in parentheses in its messages."""
    if key.is_fwmark:
        return str(key.fwmark)
    return host_port(str(key.address), key.port)


def fallback_dest(v: Virtual) -> DestKey | None:
    if v.fallback is None:
        return None
    fb = v.fallback
    return kernel_dest_port(v.key, DestKey(fb.address, fb.port), fb.forward)


# The last config's virtuals by key. Built once per config, not per op: a start-up at 10,000 reals
# applies 10,000 ops, and rebuilding the map (each key parses an address) made that quadratic.
_by_key: tuple[Config, dict[ServiceKey, Virtual]] | None = None


def _virtuals_by_key(config: Config) -> dict[ServiceKey, Virtual]:
    global _by_key
    # read once: `lvsmon plan` describes another config's ops in a thread, and the global may
    # change under this function between its test and its return
    cached = _by_key
    if cached is None or cached[0] is not config:
        cached = _by_key = (config, {v.key: v for v in config.virtuals})
    return cached[1]


def describe(op: Op, config: Config, stopping: bool = False) -> str:
    virtuals = _virtuals_by_key(config)
    if isinstance(op, AddService):
        return f"Added virtual server: {virtual_label(op.service)}"
    if isinstance(op, EditService):
        return f"Changed virtual server: {virtual_label(op.service)}"
    if isinstance(op, DeleteService):
        what = "Purged virtual server (stop)" if stopping else "Deleted virtual server"
        return f"{what}: {virtual_label(op.service)}"
    v = virtuals.get(op.service)
    kind = "fallback" if v is not None and fallback_dest(v) == op.dest else "real"
    where = f"{op.dest} ({virtual_label(op.service)})"
    if isinstance(op, DeleteDest):
        return f"Deleted {kind} server: {where}"
    weight = op.conf.weight
    if isinstance(op, AddDest):
        word = "Readd Quiescent" if weight == 0 and kind == "real" else "Added"
        return f"{word} {kind} server: {where} (Weight set to {weight})"
    assert isinstance(op, EditDest)
    word = "Quiescent" if weight == 0 else "Restored"
    return f"{word} {kind} server: {where} (Weight set to {weight})"


FORWARD_FLAG = {Forward.GATE: "-g", Forward.MASQ: "-m", Forward.IPIP: "-i"}
