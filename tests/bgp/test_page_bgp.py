"""The status page's BGP fact and event lines, in headless Chromium against the page's own
routes with a synthetic status (tests/api/test_page.py's harness)."""

from __future__ import annotations

from typing import Any

from lvsmon.engine.events import RouteChanged
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

WITHDRAWN = "tcp:192.0.2.11:80: 0 of 3 reals healthy, 1 needed"


def bgp(drained: bool = False) -> dict[str, Any]:
    vip = {
        "vip": "192.0.2.10",
        "announced": True,
        "reason": "tcp:192.0.2.10:80: 3 of 3 reals healthy",
        "since": 1796593438.0,
        "med": 100,
        "communities": [],
        "speaker": "bird",
    }
    other = {**vip, "vip": "192.0.2.11", "announced": False, "med": None, "reason": WITHDRAWN}
    return {"speaker": "bird", "drained": drained, "vips": [vip, other]}


def test_the_bgp_fact_and_its_events(browser: Any, loop: Loop) -> None:  # noqa: F811
    driver = browser
    status = synthetic_status(2, 3)
    app = Synthetic(status)
    loop.run(app.start())
    try:
        driver.get(app.url)
        wait(driver, lambda d: js(d, "return document.body.dataset.loaded === '1';"), "loaded")
        wait(driver, lambda d: text_of(d, "#stream") == "live", "event stream connected")
        # without bgp in the status: no fact
        assert js(driver, "return document.getElementById('bgp-fact').hidden;") is True
        status["bgp"] = bgp()
        loop.call(lambda: app.feed.on_event(RouteChanged("192.0.2.11", False, WITHDRAWN, "bird")))
        wait(driver, lambda d: text_of(d, "#bgp") == "1/2 announced (bird)", "the BGP fact")
        assert js(driver, "return document.getElementById('bgp').className;") == "warn"
        title = js(driver, "return document.getElementById('bgp').title;")
        assert "192.0.2.11: withdrawn since " in title and WITHDRAWN in title, title
        line = f"BGP: VIP 192.0.2.11 withdrawn: {WITHDRAWN}"
        wait(driver, lambda d: any(line in t for t in events_text(d)), "the event line")
        status["bgp"] = bgp(drained=True)
        loop.call(lambda: app.feed.on_event(RouteChanged("192.0.2.10", False, "x", "bird")))
        wait(driver, lambda d: text_of(d, "#bgp") == "drained (bird)", "drained")
        assert_no_browser_errors(driver)
    finally:
        loop.run(app.stop())
