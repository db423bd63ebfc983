"""RouteChanged: the log's words for it and its /events JSON."""

from __future__ import annotations

import logging

import pytest

from lvsmon.api.eventfeed import event_json
from lvsmon.engine.eventlog import LOGGED, log_event
from lvsmon.engine.events import RouteChanged


def test_the_log_says_announced_withdrawn_graceful_and_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert RouteChanged in LOGGED
    caplog.set_level(logging.INFO, logger="lvsmon")
    log_event(
        RouteChanged("192.0.2.10", True, "tcp:192.0.2.10:80: 2 of 2 reals healthy", "bird", 100)
    )
    log_event(
        RouteChanged("192.0.2.10", True, "graceful stop", "bird", 4294967295, ("65535:0",), True)
    )
    log_event(RouteChanged("192.0.2.10", False, "tcp:192.0.2.10:80: 0 of 2 reals healthy", "bird"))
    log_event(RouteChanged("192.0.2.10", False, "x", "bird", error="netlink: (1, 'denied')"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "BGP: announcing 192.0.2.10 (MED 100): tcp:192.0.2.10:80: 2 of 2 reals healthy"),
        (
            "INFO",
            "BGP: announcing 192.0.2.10 (MED 4294967295) with GRACEFUL_SHUTDOWN: graceful stop",
        ),
        ("WARNING", "BGP: withdrawing 192.0.2.10: tcp:192.0.2.10:80: 0 of 2 reals healthy"),
        ("ERROR", "BGP: cannot withdraw 192.0.2.10 (bird): netlink: (1, 'denied')"),
    ]


def test_events_json() -> None:
    body = event_json(RouteChanged("192.0.2.10", True, "ok", "exabgp", 100, ("65000:1",)), 1, 2.0)
    assert body == {
        "type": "RouteChanged",
        "seq": 1,
        "at": 2.0,
        "vip": "192.0.2.10",
        "announced": True,
        "reason": "ok",
        "speaker": "exabgp",
        "med": 100,
        "communities": ["65000:1"],
        "graceful": False,
        "error": None,
    }
