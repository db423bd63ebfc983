"""The depool threshold's mail: DepoolLimited → a Change of its own kind (no reminders), its
subject, a summary subject counting it, and the Alerts handler feeding it to the policy."""

from __future__ import annotations

import asyncio

from lvsmon.alerts.changes import depool_change
from lvsmon.alerts.policy import AlertPolicy, summary_subject
from lvsmon.alerts.render import render
from lvsmon.alerts.sender import KINDS, Alerts
from lvsmon.engine.events import DepoolLimited
from lvsmon.engine.jobs import RealRef

from .helpers import cfg, quiesce, svc

CONFIG = cfg(
    """
    emailalert=ops@example.com
    emailalertfreq=60
    quiescent=yes
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    \treal=10.0.0.3:80 gate
    \treal=10.0.0.4:80 gate
    \tdepoolthreshold=0.5
    \tservicename=web
"""
)
REFS = [RealRef(svc(), f"10.0.0.{n}", 80) for n in (2, 3, 4)]


def test_subjects() -> None:
    one = depool_change(DepoolLimited(svc(), (REFS[2],), True), 1.0)
    assert (one.kind, one.real, one.service, one.reminder) == ("depool", "", svc(), False)
    assert one.subject == (
        "Depool threshold reached on 10.0.0.1:80: 1 real server kept in although its checks"
        " fail: 10.0.0.4:80"
    )
    two = depool_change(DepoolLimited(svc(), tuple(REFS[1:]), True), 1.0)
    assert two.subject == (
        "Depool threshold reached on 10.0.0.1:80: 2 real servers kept in although their checks"
        " fail: 10.0.0.3:80, 10.0.0.4:80"
    )
    end = depool_change(DepoolLimited(svc(), (), False), 2.0)
    assert end.subject == "Depool threshold no longer reached on 10.0.0.1:80: checks decide again"
    assert summary_subject([quiesce(CONFIG, "10.0.0.2"), one], "director1") == (
        "[lvsmon] 1 real server down, 1 depool threshold change on director1"
    )


def test_a_lone_depool_mail_and_no_reminders() -> None:
    p = AlertPolicy(CONFIG, window_s=0, rate_per_hour=0, hostname="director1")
    p.phase("running")
    p.feed(depool_change(DepoolLimited(svc(), (REFS[2],), True), 10.0), 10.0)
    (mail,) = p.due(10.0)
    assert mail.to == ("ops@example.com",)
    assert mail.subject.startswith("[web] Depool threshold reached on 10.0.0.1:80: 1 real server")
    assert p.reminders == frozenset() and p.next_due() is None
    subject, body = render(mail, CONFIG, "director1")
    assert subject == mail.subject
    assert "Log-Message: [web] Depool threshold reached on 10.0.0.1:80" in body


def test_the_handler_takes_it() -> None:
    async def scenario() -> None:
        alerts = Alerts(CONFIG, hostname="director1")
        assert DepoolLimited in KINDS
        alerts.policy.phase("running")
        alerts(DepoolLimited(svc(), (REFS[0],), True))
        (mail,) = alerts.policy.flush(0.0)
        assert "Depool threshold reached on 10.0.0.1:80" in mail.subject

    asyncio.run(scenario())
