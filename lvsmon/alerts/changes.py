"""What an alert is about: one real (or fallback) server whose place in the kernel changed.

`change_of` turns the reconciler's `KernelOp` events into `Change`s. The kind comes from the op
itself (a delete or a weight of 0 takes a real out of service; a positive weight puts it back)
and the event's `fallback` fact, never from parsing text; the subject is ldirectord's wording
of the op (lvsmon/engine/wording.py), on which existing mail filters match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lvsmon.engine.events import DepoolLimited, KernelOp
from lvsmon.engine.wording import kernel_op_text, virtual_label
from lvsmon.ipvs.model import ServiceKey
from lvsmon.ipvs.ops import AddDest, DeleteDest, EditDest

# arp, bgp, cert: alerts/*alert.py
Kind = Literal["down", "up", "fallback", "depool", "arp", "bgp", "cert"]

REMINDER = "Inaccessible real server: "
"""ldirectord's subject prefix for the reminder of a real that stays down."""


@dataclass(frozen=True, slots=True)
class Change:
    """`kind` "down" starts reminders for `real` ("rip:port", "" for fallback changes), "up"
    clears them, "fallback", "depool" (lvsmon's depool threshold) and "arp" (its ARP guard) do
    neither. `subject` is
    ldirectord's mail subject."""

    kind: Kind
    subject: str
    service: ServiceKey
    real: str
    at: float

    @property
    def reminder(self) -> bool:
        return self.subject.startswith(REMINDER)


def reminder_of(service: ServiceKey, real: str, label: str, at: float) -> Change:
    """The reminder for a real still down: "Inaccessible real server: rip:port (vip:port)"."""
    return Change("down", f"{REMINDER}{real} ({label})", service, real, at)


def change_of(event: KernelOp, at: float) -> Change | None:
    """The alert for one applied kernel op; None for a failed op, a service-level op, and a
    drift repair (the table was fixed behind lvsmon's back: no real changed health)."""
    op = event.op
    if event.error is not None or event.drift:
        return None
    if not isinstance(op, AddDest | EditDest | DeleteDest):
        return None
    subject = kernel_op_text(event)
    # ldirectord logs "Readd Quiescent ..." but mails "Quiescent ..." (ld_emailalert_send at
    # L4059): the mail keeps the mail's wording so filters written for ldirectord still match.
    if subject.startswith("Readd Quiescent "):
        subject = subject.removeprefix("Readd ")
    # the one thing the op alone cannot tell (it needs the config): the reconciler says it
    if event.fallback:
        return Change("fallback", subject, op.service, "", at)
    down = isinstance(op, DeleteDest) or op.conf.weight == 0
    return Change("down" if down else "up", subject, op.service, str(op.dest), at)


def depool_change(event: DepoolLimited, at: float) -> Change:
    """The depool threshold started keeping reals in (lvsmon's own: ldirectord has no such mail;
    the wording follows its "...: rip:port (vip:port)" subjects), or stopped."""
    label = virtual_label(event.service)
    n = len(event.kept)
    if event.active:
        subject = (
            f"Depool threshold reached on {label}: {n} real server{'s' if n != 1 else ''} kept in"
            f" although {'its' if n == 1 else 'their'} checks fail:"
            f" {', '.join(str(ref.dest) for ref in event.kept)}"
        )
    else:
        subject = f"Depool threshold no longer reached on {label}: checks decide again"
    return Change("depool", subject, event.service, "", at)
