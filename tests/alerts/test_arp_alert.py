"""The ARP guard's mail: ArpConflict / ArpConflictCleared → a Change of kind "arp" per guarded
virtual on the VIP (each virtual's recipients), no reminders, its subject, a summary subject
counting it, and the Alerts handler feeding it to the policy."""

from __future__ import annotations

import asyncio

from lvsmon.alerts.arpalert import arp_changes
from lvsmon.alerts.policy import AlertPolicy, summary_subject
from lvsmon.alerts.render import render
from lvsmon.alerts.sender import KINDS, Alerts
from lvsmon.engine.events import ArpConflict, ArpConflictCleared
from lvsmon.ipvs.model import ServiceKey

from .helpers import cfg, quiesce

CONFIG = cfg(
    """
    emailalert=ops@example.com
    emailalertfreq=60
    arpguard=yes
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    \tservicename=web
    virtual=10.0.0.1:443
    \treal=10.0.0.2:443 gate
    \temailalert=tls@example.com
"""
)
WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
TLS = ServiceKey.inet("tcp", "10.0.0.1", 443)
MAC = "0a:1b:2c:3d:4e:5f"


def test_subjects() -> None:
    (one,) = arp_changes(ArpConflict("10.0.0.1", MAC, "eth1", (WEB,)), 1.0)
    assert (one.kind, one.real, one.service, one.reminder) == ("arp", "", WEB, False)
    assert (
        one.subject == "ARP conflict on VIP 10.0.0.1: 0a:1b:2c:3d:4e:5f answers ARP for it on eth1"
    )
    (end,) = arp_changes(
        ArpConflictCleared("10.0.0.1", MAC, "eth1", (WEB,), "no answer in the last round"), 2.0
    )
    assert end.subject == (
        "ARP conflict over on VIP 10.0.0.1: 0a:1b:2c:3d:4e:5f on eth1 (no answer in the last round)"
    )
    assert summary_subject([quiesce(CONFIG, "10.0.0.2"), one], "director1") == (
        "[lvsmon] 1 real server down, 1 ARP guard change on director1"
    )


def test_each_virtuals_recipients_get_it_once_and_no_reminders() -> None:
    p = AlertPolicy(CONFIG, window_s=0, rate_per_hour=0, hostname="director1")
    p.phase("running")
    for change in arp_changes(ArpConflict("10.0.0.1", MAC, "eth1", (WEB, TLS)), 10.0):
        p.feed(change, 10.0)
    mails = p.due(10.0)
    assert sorted(m.to for m in mails) == [("ops@example.com",), ("tls@example.com",)]
    web = next(m for m in mails if m.to == ("ops@example.com",))
    assert (
        web.subject
        == "[web] ARP conflict on VIP 10.0.0.1: 0a:1b:2c:3d:4e:5f answers ARP for it on eth1"
    )
    assert p.reminders == frozenset() and p.next_due() is None
    subject, body = render(web, CONFIG, "director1")
    assert subject == web.subject
    assert "ARP conflict on VIP 10.0.0.1" in body


def test_the_handler_takes_both_edges() -> None:
    async def scenario() -> None:
        alerts = Alerts(CONFIG, hostname="director1")
        assert ArpConflict in KINDS and ArpConflictCleared in KINDS
        alerts.policy.phase("running")
        alerts(ArpConflict("10.0.0.1", MAC, "eth1", (WEB,)))
        alerts(ArpConflictCleared("10.0.0.1", MAC, "eth1", (WEB,), "no longer guarded"))
        (mail,) = alerts.policy.flush(0.0)
        assert [c.subject for c in mail.changes] == [
            "ARP conflict on VIP 10.0.0.1: 0a:1b:2c:3d:4e:5f answers ARP for it on eth1",
            "ARP conflict over on VIP 10.0.0.1: 0a:1b:2c:3d:4e:5f on eth1 (no longer guarded)",
        ]

    asyncio.run(scenario())
