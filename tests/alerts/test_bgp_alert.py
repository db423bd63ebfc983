"""The BGP announcement's mails: RouteChanged -> a Change of kind "bgp" per announced virtual on
the VIP (each virtual's recipients), for a withdrawal while running, the first failure of the
speaker, and the announcement that ends a mailed withdrawal; not for the stop's or the director
drain's own withdrawals, graceful announcements, or the first announcement."""

from __future__ import annotations

import asyncio

from lvsmon.alerts.bgpalert import RouteAlerts
from lvsmon.alerts.policy import AlertPolicy, summary_subject
from lvsmon.alerts.render import render
from lvsmon.alerts.sender import KINDS, Alerts
from lvsmon.engine.events import RouteChanged
from lvsmon.ipvs.model import ServiceKey

from .helpers import cfg, quiesce

CONFIG = cfg(
    """
    emailalert=ops@example.com
    bgp=bird
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    \tservicename=web
    \tscheduler=mh
    virtual=10.0.0.1:443
    \treal=10.0.0.2:443 gate
    \temailalert=tls@example.com
    \tscheduler=mh
    virtual=10.0.0.1:25
    \treal=10.0.0.2:25 gate
    \tbgp=no
    \tscheduler=mh
"""
)
WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
TLS = ServiceKey.inet("tcp", "10.0.0.1", 443)
DOWN = "tcp:10.0.0.1:80: 0 of 1 reals healthy, 1 needed"


def subjects(alerts: RouteAlerts, event: RouteChanged) -> list[tuple[str, ServiceKey]]:
    return [(c.subject, c.service) for c in alerts.changes(event, CONFIG, 1.0)]


def test_which_changes_are_mailed() -> None:
    a = RouteAlerts()
    assert subjects(a, RouteChanged("10.0.0.1", True, "ok", "bird", 100)) == []  # the first
    withdrawn = subjects(a, RouteChanged("10.0.0.1", False, DOWN, "bird"))
    assert withdrawn == [
        (f"BGP: withdrew VIP 10.0.0.1: {DOWN}", WEB),
        (f"BGP: withdrew VIP 10.0.0.1: {DOWN}", TLS),  # not the opted-out :25
    ]
    back = subjects(a, RouteChanged("10.0.0.1", True, "tcp:10.0.0.1:80: 1 of 1", "bird", 100))
    assert [s for s, _ in back] == [
        "BGP: announcing VIP 10.0.0.1 again: tcp:10.0.0.1:80: 1 of 1"
    ] * 2
    failed = RouteChanged("10.0.0.1", True, "x", "bird", 100, error="netlink: denied")
    assert next(s for s, _ in subjects(a, failed)) == (
        "BGP: cannot announce VIP 10.0.0.1 (bird): netlink: denied"
    )
    assert subjects(a, failed) == []  # its retries are not news
    for asked in ("lvsmon stopped", "director drained (lvsmon drain --director)"):
        assert subjects(a, RouteChanged("10.0.0.1", False, asked, "bird")) == []
    graceful = RouteChanged("10.0.0.1", True, "graceful stop", "bird", 4294967295, (), True)
    assert subjects(a, graceful) == []


def test_recipients_summary_and_handler() -> None:
    p = AlertPolicy(CONFIG, window_s=0, rate_per_hour=0, hostname="director1")
    p.phase("running")
    for change in RouteAlerts().changes(RouteChanged("10.0.0.1", False, DOWN, "bird"), CONFIG, 10):
        p.feed(change, 10.0)
    mails = p.due(10.0)
    assert sorted(m.to for m in mails) == [("ops@example.com",), ("tls@example.com",)]
    web = next(m for m in mails if m.to == ("ops@example.com",))
    assert web.subject == f"[web] BGP: withdrew VIP 10.0.0.1: {DOWN}"
    subject, body = render(web, CONFIG, "director1")
    assert subject == web.subject and "BGP: withdrew VIP 10.0.0.1" in body
    (change,) = RouteAlerts().changes(RouteChanged("10.0.0.1", False, DOWN, "bird"), CONFIG, 1)[:1]
    assert summary_subject([quiesce(CONFIG, "10.0.0.2"), change], "director1") == (
        "[lvsmon] 1 real server down, 1 BGP change on director1"
    )

    async def scenario() -> None:
        alerts = Alerts(CONFIG, hostname="director1")
        assert RouteChanged in KINDS
        alerts.policy.phase("running")
        alerts(RouteChanged("10.0.0.1", False, DOWN, "bird"))
        mails = alerts.policy.flush(0.0)
        assert len(mails) == 2

    asyncio.run(scenario())
