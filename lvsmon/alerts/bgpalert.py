"""The BGP announcement's mails (lvsmon's own): a VIP withdrawn while lvsmon runs (its pool
failed, a depool threshold tripped: the routers now send its traffic to the other directors,
or nowhere), a speaker that refused an announcement or a withdrawal, and the announcement that
ends a withdrawal mailed before. One change per announced virtual on the VIP, so each
virtual's `emailalert` recipients hear of it, batched and rate limited like every other change
(alerts/policy.py). The stop's and `drain --director`'s own withdrawals are the operator's
doing: not mailed."""

from __future__ import annotations

from lvsmon.alerts.changes import Change
from lvsmon.config.model import Config
from lvsmon.engine.events import RouteChanged

# reasons of withdrawals an operator asked for (engine/bgp.py)
ASKED = ("lvsmon stopped", "director drained")


class RouteAlerts:
    def __init__(self) -> None:
        self.withdrawn: set[str] = set()  # VIPs whose withdrawal was mailed
        self.failing: set[str] = set()  # VIPs whose speaker error was mailed

    def changes(self, event: RouteChanged, config: Config, at: float) -> list[Change]:
        vip = event.vip
        if event.error is not None:
            if vip in self.failing:
                return []  # retried every second or so: the first failure is the news
            self.failing.add(vip)
            what = "announce" if event.announced else "withdraw"
            subject = f"BGP: cannot {what} VIP {vip} ({event.speaker}): {event.error}"
        else:
            self.failing.discard(vip)
            if event.announced:
                if event.graceful or vip not in self.withdrawn:
                    return []
                self.withdrawn.discard(vip)
                subject = f"BGP: announcing VIP {vip} again: {event.reason}"
            else:
                if event.reason.startswith(ASKED):
                    return []
                self.withdrawn.add(vip)
                subject = f"BGP: withdrew VIP {vip}: {event.reason}"
        services = [v.key for v in config.virtuals if v.bgp is not None and v.address == vip]
        return [Change("bgp", subject, service, "", at) for service in services]
