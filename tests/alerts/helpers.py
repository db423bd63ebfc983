"""Configs and changes for the alert tests, made the way the daemon makes them: ldirectord.cf
text through the real parser, kernel op events with the reconciler's own facts."""

from __future__ import annotations

import textwrap

from lvsmon.alerts.changes import Change, change_of
from lvsmon.config import Config, parse_config
from lvsmon.engine.desired import fallbacks_of
from lvsmon.engine.events import KernelOp
from lvsmon.engine.wording import is_fallback
from lvsmon.ipvs.model import DestConf, DestKey, Forward, ServiceKey
from lvsmon.ipvs.ops import AddDest, DeleteDest, EditDest, Op


def cfg(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "test.cf")


def svc(vip: str = "10.0.0.1", port: int = 80) -> ServiceKey:
    return ServiceKey.inet("tcp", vip, port)


def dest(rip: str, port: int = 80) -> DestKey:
    return DestKey.of(rip, port)


def event(op: Op, config: Config, **kw: object) -> KernelOp:
    fallback = is_fallback(op, fallbacks_of(config))
    return KernelOp(op, fallback=fallback, **kw)  # type: ignore[arg-type]


def _change(op: Op, config: Config, at: float) -> Change:
    change = change_of(event(op, config), at)
    assert change is not None
    return change


def quiesce(config: Config, rip: str, vip: str = "10.0.0.1", at: float = 0.0) -> Change:
    """A real taken out with quiescent=yes: its weight set to 0."""
    return _change(EditDest(svc(vip), dest(rip), DestConf(Forward.GATE, 0)), config, at)


def delete(config: Config, rip: str, vip: str = "10.0.0.1", at: float = 0.0) -> Change:
    return _change(DeleteDest(svc(vip), dest(rip)), config, at)


def restore(config: Config, rip: str, vip: str = "10.0.0.1", at: float = 0.0) -> Change:
    return _change(EditDest(svc(vip), dest(rip), DestConf(Forward.GATE, 1)), config, at)


def add(config: Config, rip: str, vip: str = "10.0.0.1", at: float = 0.0) -> Change:
    return _change(AddDest(svc(vip), dest(rip), DestConf(Forward.GATE, 1)), config, at)
