"""The status page's facts for checks through the VIP (issue 23): the probe services (how many
the kernel has as wanted) and the ARP guard's conflicts, in headless Chromium against the page's
own routes with a synthetic status (tests/api/test_page.py's harness)."""

from __future__ import annotations

import time
from typing import Any

from lvsmon.engine.events import ArpConflict, ArpConflictCleared, CertificateExpiring
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import ServiceKey
from tests.api.test_page import (  # noqa: F401  (browser and loop are fixtures)
    Loop,
    Synthetic,
    assert_no_browser_errors,
    browser,
    events_text,
    js,
    loop,
    synthetic_status,
    text_of,
    wait,
)

VIRTUAL = (ServiceKey.inet("tcp", "192.0.2.10", 80),)


def hidden(driver: Any, fact: str) -> bool:
    return bool(js(driver, f"return document.getElementById('{fact}').hidden;"))


def test_probe_services_and_arp_conflicts(browser: Any, loop: Loop) -> None:  # noqa: F811
    driver = browser
    status = synthetic_status(2, 3)
    status["probes"] = {"markbase": 1280704512, "services": 6, "in_kernel": 4}
    status["arp_conflicts"] = []
    app = Synthetic(status)
    loop.run(app.start())
    try:
        driver.get(app.url)
        wait(driver, lambda d: js(d, "return document.body.dataset.loaded === '1';"), "loaded")
        wait(driver, lambda d: text_of(d, "#stream") == "live", "event stream connected")
        assert text_of(driver, "#probes") == "4 of 6 in the kernel"
        assert js(driver, "return document.getElementById('probes').className;") == "warn"
        assert "firewall marks from 1280704512" in js(
            driver, "return document.getElementById('probes').title;"
        )
        assert hidden(driver, "arp-fact")  # no conflict: no fact

        status["probes"] = {"markbase": 1280704512, "services": 6, "in_kernel": 6}
        status["arp_conflicts"] = [
            {"vip": "192.0.2.10", "mac": "02:00:00:00:00:0b", "interface": "eth1", "since": 1.8e9}
        ]
        conflict = ArpConflict("192.0.2.10", "02:00:00:00:00:0b", "eth1", VIRTUAL)
        loop.call(lambda: app.feed.on_event(conflict))
        wait(driver, lambda d: text_of(d, "#arp") == "1 conflict", "the ARP fact")
        assert js(driver, "return document.getElementById('arp').className;") == "bad"
        title = js(driver, "return document.getElementById('arp').title;")
        assert title.startswith("192.0.2.10 answered by 02:00:00:00:00:0b on eth1 since "), title
        assert text_of(driver, "#probes") == "6 in the kernel"

        status["arp_conflicts"] = []
        status["probes"] = None
        cleared = ArpConflictCleared(
            "192.0.2.10", "02:00:00:00:00:0b", "eth1", VIRTUAL, "no answer"
        )
        loop.call(lambda: app.feed.on_event(cleared))
        wait(driver, lambda d: hidden(d, "arp-fact"), "the ARP fact gone")
        assert hidden(driver, "probes-fact")
        assert_no_browser_errors(driver)
    finally:
        loop.run(app.stop())


def test_a_certificate_expiring_event_line(browser: Any, loop: Loop) -> None:  # noqa: F811
    """The TLS helper's CertificateExpiring reaches the page's recent events, in words."""
    driver = browser
    app = Synthetic(synthetic_status(1, 2))
    loop.run(app.start())
    try:
        driver.get(app.url)
        wait(driver, lambda d: text_of(d, "#stream") == "live", "event stream connected")
        ref = RealRef(VIRTUAL[0], "192.0.2.21", 443)
        soon = time.time() + 3.5 * 86400
        loop.call(lambda: app.feed.on_event(CertificateExpiring(ref, soon, 14)))
        day = time.strftime("%Y-%m-%d", time.gmtime(soon))
        line = f"192.0.2.21:443 (tcp:192.0.2.10:80) TLS certificate expires on {day} (in 3 days)"
        wait(driver, lambda d: any(line in t for t in events_text(d)), "the event line")
        loop.call(lambda: app.feed.on_event(CertificateExpiring(ref, 1609459200.0, 14)))
        gone = "192.0.2.21:443 (tcp:192.0.2.10:80) TLS certificate expired on 2021-01-01"
        wait(driver, lambda d: any(gone in t for t in events_text(d)), "the expired line")
        assert_no_browser_errors(driver)
    finally:
        loop.run(app.stop())
