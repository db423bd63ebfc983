"""sslexpirywarn's rule (engine/certexpiry.py): a CertificateExpiring event when a real's
certificate is first seen within its virtual's days, then at most once a day per real (so the
log line and the mail too), afresh for a new certificate; the metric's notAfter per real; the
log's words; the mail (alerts/certalert.py) through the alert policy."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lvsmon.alerts.certalert import cert_change
from lvsmon.alerts.policy import summary_subject
from lvsmon.alerts.sender import KINDS, Alerts
from lvsmon.config import parse_config
from lvsmon.engine.certexpiry import REPEAT_S, CertWatch, expiry_text
from lvsmon.engine.eventlog import LOGGED, log_event
from lvsmon.engine.events import CertificateExpiring, Event
from lvsmon.engine.jobs import RealRef, build_plan

DAY = 86400.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC

CONFIG = parse_config(
    "emailalert = ops@example.com\n"
    "virtual=10.0.0.1:443\n\treal=10.0.0.2:443 gate\n\treal=10.0.0.3:443 gate\n"
    "\tservice=https\n\tsslexpirywarn = 14\n"
    "virtual=10.0.0.1:8443\n\treal=10.0.0.2:443 gate\n\tservice=https\n",
    "a.cf",
    check_support=False,
)
PLAN = build_plan(CONFIG)
WARNED, OTHER = CONFIG.virtuals[0].key, CONFIG.virtuals[1].key
A = RealRef(WARNED, "10.0.0.2", 443)
B = RealRef(WARNED, "10.0.0.3", 443)
A_ELSEWHERE = RealRef(OTHER, "10.0.0.2", 443)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def watch() -> tuple[CertWatch, list[CertificateExpiring], Clock]:
    events: list[CertificateExpiring] = []
    clock = Clock()

    def publish(event: Event) -> None:
        assert isinstance(event, CertificateExpiring)
        events.append(event)

    w = CertWatch(publish, clock)
    w.configure(CONFIG, PLAN.rules)
    return w, events, clock


def test_once_a_day_per_real() -> None:
    w, events, clock = watch()
    ends = T0 + 10 * DAY
    w.observe((A, A_ELSEWHERE), ends)
    assert events == [CertificateExpiring(A, ends, 14, T0)]  # the other virtual did not ask
    assert w.expiry == {A: ends}
    for step in range(1, 24):  # every hour of the day: nothing more
        clock.now = T0 + step * 3600
        w.observe((A,), ends)
    assert len(events) == 1
    clock.now = T0 + REPEAT_S
    w.observe((A,), ends)
    assert [e.at for e in events] == [T0, T0 + REPEAT_S]
    w.observe((B,), ends)  # another real: its own day
    assert [e.ref for e in events] == [A, A, B]


def test_far_off_is_quiet_and_a_new_certificate_counts_afresh() -> None:
    w, events, clock = watch()
    w.observe((A,), T0 + 30 * DAY)
    assert events == [] and w.expiry == {A: T0 + 30 * DAY}
    w.observe((A,), T0 + 5 * DAY)
    clock.now += 3600
    w.observe((A,), T0 + 4 * DAY)  # replaced by another near-expiry one: said at once
    assert [e.not_after for e in events] == [T0 + 5 * DAY, T0 + 4 * DAY]
    w.observe((A,), T0 + 90 * DAY)  # renewed: quiet, and the next near one is news
    clock.now += 3600
    w.observe((A,), T0 + 4 * DAY)
    assert len(events) == 3


def test_an_expired_certificate_is_warned_of_too() -> None:
    w, events, _ = watch()
    w.observe((A,), T0 - DAY)
    (event,) = events
    assert expiry_text(event) == (
        "TLS certificate of real server 10.0.0.2:443 (tcp:10.0.0.1:443) expired on "
        "2027-01-14 08:00:00 UTC"
    )


def test_a_reload_forgets_reals_no_longer_watched() -> None:
    w, _, _ = watch()
    w.observe((A, B), T0 + DAY)
    config = parse_config(
        "virtual=10.0.0.1:443\n\treal=10.0.0.2:443 gate\n\tservice=https\n\tsslexpirywarn=7\n",
        "a.cf",
        check_support=False,
    )
    w.configure(config, build_plan(config).rules)
    assert set(w.expiry) == {A}
    w.configure(parse_config("virtual=10.0.0.1:443\n\treal=10.0.0.2:443 gate\n", "a.cf"))
    assert w.expiry == {} and not w.watching


def test_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert CertificateExpiring in LOGGED
    with caplog.at_level(logging.INFO, "lvsmon"):
        log_event(CertificateExpiring(A, T0 + 3 * DAY, 14, T0))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "TLS certificate of real server 10.0.0.2:443 (tcp:10.0.0.1:443) expires on "
            "2027-01-18 08:00:00 UTC (in 3 days; sslexpirywarn = 14)",
        )
    ]


def test_mailed_to_the_virtuals_recipients() -> None:
    async def scenario() -> None:
        alerts = Alerts(CONFIG, hostname="director1")
        assert CertificateExpiring in KINDS
        alerts.policy.phase("running")
        alerts(CertificateExpiring(A, T0 + 3 * DAY, 14, T0))
        (mail,) = alerts.policy.flush(0.0)
        assert mail.to == ("ops@example.com",)
        assert [c.subject for c in mail.changes] == [
            "TLS certificate of real server 10.0.0.2:443 (tcp:10.0.0.1:443) expires on "
            "2027-01-18 08:00:00 UTC (in 3 days; sslexpirywarn = 14)"
        ]

    asyncio.run(scenario())
    change = cert_change(CertificateExpiring(A, T0 + 3 * DAY, 14, T0), T0)
    assert (change.kind, change.real, change.reminder) == ("cert", "10.0.0.2:443", False)
    assert summary_subject([change, change], "d1") == "[lvsmon] 2 certificates expiring on d1"
