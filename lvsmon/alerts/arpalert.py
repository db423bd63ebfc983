"""The ARP guard's mails (lvsmon's own: ldirectord has no such alert): one change per guarded
virtual on the VIP, so each virtual's `emailalert` recipients hear of it, batched and rate
limited like every other change (alerts/policy.py). The text is the event's, which lvsmon
formatted itself (the MAC from its bytes, the interface name cleaned)."""

from __future__ import annotations

from lvsmon.alerts.changes import Change
from lvsmon.engine.events import ArpConflict, ArpConflictCleared


def arp_changes(event: ArpConflict | ArpConflictCleared, at: float) -> list[Change]:
    if isinstance(event, ArpConflict):
        subject = (
            f"ARP conflict on VIP {event.vip}: {event.mac} answers ARP for it on {event.interface}"
        )
    else:
        subject = (
            f"ARP conflict over on VIP {event.vip}: {event.mac} on {event.interface}"
            f" ({event.reason})"
        )
    return [Change("arp", subject, service, "", at) for service in event.services]
