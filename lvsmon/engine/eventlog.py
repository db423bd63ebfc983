"""The log as a subscriber of the event stream, in ldirectord's wording where ldirectord has a
line for it (log watchers keep matching)."""

from __future__ import annotations

import logging
import time

from lvsmon.engine.agentlog import AgentLines
from lvsmon.engine.certexpiry import expiry_text
from lvsmon.engine.events import (
    AgentChanged,
    ArpConflict,
    ArpConflictCleared,
    CertificateExpiring,
    ConfigLoaded,
    ConfigRejected,
    DepoolLimited,
    DrainChanged,
    Event,
    FirstCheckDown,
    KernelOp,
    RampChanged,
    RealChanged,
    RealLeaving,
    RouteChanged,
    SoftFailure,
    SoftReset,
    SyncDaemonOp,
)
from lvsmon.engine.wording import kernel_op_text

log = logging.getLogger("lvsmon")
_agent_lines = AgentLines()

LOGGED = (
    KernelOp,
    RealChanged,
    FirstCheckDown,
    SoftFailure,
    SoftReset,
    ConfigLoaded,
    ConfigRejected,
    SyncDaemonOp,
    DrainChanged,
    RampChanged,
    AgentChanged,
    RealLeaving,
    DepoolLimited,
    ArpConflict,
    ArpConflictCleared,
    RouteChanged,
    CertificateExpiring,
)


def log_event(event: Event) -> None:
    if isinstance(event, RouteChanged):
        _log_route(event)
    elif isinstance(event, KernelOp):
        text = kernel_op_text(event)
        if event.error is None:
            log.info("Repaired drift: %s" if event.drift else "%s", text)
        else:
            log.error("failed: %s: %s", text, event.error)
    elif isinstance(event, RealChanged):
        log.info("Real server %s is %s: %s", event.ref, "up" if event.up else "down", event.reason)
    elif isinstance(event, FirstCheckDown):
        log.info("Real server %s is down from its first check: %s", event.ref, event.reason)
    elif isinstance(event, SoftFailure):
        log.info(
            "Soft failure real server: %s failure %d/%d: %s",
            event.ref,
            event.failcount,
            event.failurecount,
            event.reason,
        )
    elif isinstance(event, SoftReset):
        log.info("Resetting soft failure count: %s", event.ref)
    elif isinstance(event, ConfigLoaded):
        log.info("Configuration %s loaded: %d virtual services", event.path, event.virtuals)
    elif isinstance(event, ConfigRejected):
        log.error(
            "Error reading file %s: %s (keeping the running configuration)",
            event.path,
            event.message,
        )
    elif isinstance(event, AgentChanged):
        # the agent's words passed text.clean where they came in (engine/agentcheck.py)
        line = _agent_lines.line(event, time.monotonic())
        if line is not None:
            log.info("%s", line)
    elif isinstance(event, DrainChanged):
        log.info("%s real server: %s", "Drained" if event.drained else "Undrained", event.ref)
    elif isinstance(event, RealLeaving):
        _log_leaving(event)
    elif isinstance(event, RampChanged):
        if event.started:
            log.info(
                "Slow start of real server %s: ramping to weight %d over %g s in %d steps",
                event.ref,
                event.weight,
                event.seconds,
                event.steps,
            )
        elif event.reason == "done":
            log.info("Slow start of real server %s done: weight %d", event.ref, event.weight)
        else:
            log.info("Slow start of real server %s ended: %s", event.ref, event.reason)
    elif isinstance(event, DepoolLimited):
        # loud: checks say more reals are down than the pool may lose
        if event.active:
            log.warning(
                "Depool threshold reached on %s: %d real server%s kept in although %s checks"
                " fail: %s",
                event.service,
                len(event.kept),
                "" if len(event.kept) == 1 else "s",
                "its" if len(event.kept) == 1 else "their",
                ", ".join(str(ref.dest) for ref in event.kept),
            )
        else:
            log.warning(
                "Depool threshold no longer reached on %s: checks decide again",
                event.service,
            )
    elif isinstance(event, SyncDaemonOp):
        if event.error is None:
            log.info("%s: %s", "Started" if event.action == "start" else "Stopped", event.daemon)
        else:
            # connections will not survive a failover: say so loudly
            log.error("connection sync: cannot %s %s: %s", event.action, event.daemon, event.error)
    elif isinstance(event, ArpConflict):
        # loud: clients of the VIP reach that host instead of the director
        log.error(
            "ARP conflict: %s answers ARP for VIP %s on %s (a real server without"
            " arp_ignore=1/arp_announce=2 takes the VIP's traffic)",
            event.mac,
            event.vip,
            event.interface,
        )
    elif isinstance(event, CertificateExpiring):
        log.warning("%s", expiry_text(event))  # at most once a day per real (certexpiry.py)
    elif isinstance(event, ArpConflictCleared):
        log.warning(
            "ARP conflict over: %s for VIP %s on %s (%s)",
            event.mac,
            event.vip,
            event.interface,
            event.reason,
        )


def _log_route(event: RouteChanged) -> None:
    if event.error is not None:
        what = "announce" if event.announced else "withdraw"
        log.error("BGP: cannot %s %s (%s): %s", what, event.vip, event.speaker, event.error)
    elif event.announced:
        extra = " with GRACEFUL_SHUTDOWN" if event.graceful else ""
        log.info("BGP: announcing %s (MED %s)%s: %s", event.vip, event.med, extra, event.reason)
    else:
        log.warning("BGP: withdrawing %s: %s", event.vip, event.reason)


def _log_leaving(event: RealLeaving) -> None:
    where = f"{event.dest} ({event.service})"
    if event.started:
        log.info(
            "Leaving real server: %s, %s: weight 0 until no active connection, %g s at most",
            where,
            event.reason,
            event.seconds,
        )
    else:
        log.info(
            "Real server %s stopped leaving after %.1f s: %s", where, event.seconds, event.reason
        )
