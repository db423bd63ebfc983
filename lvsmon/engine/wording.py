"""ldirectord's log wording for kernel changes, so existing log watchers keep matching."""

from __future__ import annotations

from collections.abc import Mapping

from lvsmon.addr import host_port
from lvsmon.config.model import Config
from lvsmon.engine.desired import fallbacks_of
from lvsmon.engine.events import KernelOp
from lvsmon.ipvs.model import DestKey, Forward, ServiceKey
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


def is_fallback(op: Op, fallbacks: Mapping[ServiceKey, DestKey | None]) -> bool:
    """Does `op` move its virtual's fallback server (`fallbacks`: fallbacks_of(config))?"""
    dest = getattr(op, "dest", None)
    return dest is not None and fallbacks.get(op.service) == dest


def describe(op: Op, config: Config, stopping: bool = False) -> str:
    """`op` as a reconcile under `config` would log it (`lvsmon plan`'s text)."""
    return describe_op(op, is_fallback(op, fallbacks_of(config)), stopping)


def kernel_op_text(event: KernelOp) -> str:
    """A kernel op in ldirectord's words: the log line, the mail subject, /events' text."""
    return describe_op(event.op, event.fallback, event.stopping)


def describe_op(op: Op, fallback: bool, stopping: bool) -> str:
    """`fallback`: the op's destination is the virtual's fallback server; `stopping`: a purge
    as the daemon stops."""
    if isinstance(op, AddService):
        return f"Added virtual server: {virtual_label(op.service)}"
    if isinstance(op, EditService):
        return f"Changed virtual server: {virtual_label(op.service)}"
    if isinstance(op, DeleteService):
        what = "Purged virtual server (stop)" if stopping else "Deleted virtual server"
        return f"{what}: {virtual_label(op.service)}"
    kind = "fallback" if fallback else "real"
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
