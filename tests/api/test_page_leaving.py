"""The status page's leaving fact (issue 25 point 3, removedrain): how many reals leave, each in
its tooltip, shown by a RealLeaving event and gone with the last; in headless Chromium against
the page's own routes with a synthetic status (tests/api/test_page.py's harness)."""

from __future__ import annotations

from typing import Any

from lvsmon.engine.events import RealLeaving
from lvsmon.ipvs.model import DestKey, ServiceKey
from tests.api.test_page import (  # noqa: F401  (browser and loop are fixtures)
    Loop,
    Synthetic,
    assert_no_browser_errors,
    browser,
    js,
    loop,
    synthetic_status,
    text_of,
    wait,
)

KEY = ServiceKey.inet("tcp", "192.0.2.10", 80)
DEST = DestKey("192.0.2.99", 80)


def hidden(driver: Any, fact: str) -> bool:
    return bool(js(driver, f"return document.getElementById('{fact}').hidden;"))


def test_the_leaving_fact(browser: Any, loop: Loop) -> None:  # noqa: F811
    driver = browser
    status = synthetic_status(2, 3)
    status["leaving"] = []
    app = Synthetic(status)
    loop.run(app.start())
    try:
        driver.get(app.url)
        wait(driver, lambda d: js(d, "return document.body.dataset.loaded === '1';"), "loaded")
        wait(driver, lambda d: text_of(d, "#stream") == "live", "event stream connected")
        assert hidden(driver, "leaving-fact")

        status["leaving"] = [
            {
                "virtual": str(KEY),
                "real": str(DEST),
                "since": 1.8e9,
                "deadline": 1.8e9 + 30,
                "connections": 3,
            }
        ]
        loop.call(lambda: app.feed.on_event(RealLeaving(KEY, DEST, True, "removed", 30.0)))
        wait(driver, lambda d: text_of(d, "#leaving") == "1 real leaving", "the leaving fact")
        title = js(driver, "return document.getElementById('leaving').title;")
        assert title.startswith(f"{DEST} of {KEY}: weight 0, 3 connections, deleted at "), title

        status["leaving"] = []
        ended = RealLeaving(KEY, DEST, False, "no active connections", 1.2)
        loop.call(lambda: app.feed.on_event(ended))
        wait(driver, lambda d: hidden(d, "leaving-fact"), "the leaving fact gone")
        assert_no_browser_errors(driver)
    finally:
        loop.run(app.stop())
