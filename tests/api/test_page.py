"""The status page at / (lvsmon/api/page.py, lvsmon/api/static) in a real browser: Debian's
headless Chromium, driven by chromedriver, against a real daemon process (memory backend, real
HTTP servers on loopback) while a real goes down and comes back; then against a synthetic
10,000-real status served through the same page routes.

The screenshots are saved under the test's tmp_path (the path is printed; `pytest -s` shows it),
and also into $LVSMON_SCREENSHOT_DIR when set (for CI to keep). LVSMON_UPDATE_SCREENSHOT=1 copies
the one of a real down to docs/images/status-page.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from lvsmon.api import page, server
from lvsmon.api.app import FEED
from lvsmon.api.eventfeed import EventFeed
from lvsmon.daemon import pidfile
from lvsmon.engine import events
from lvsmon.engine.events import AgentChanged, DrainChanged, RealChanged
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import ServiceKey
from realservers.base import free_port
from tests.helpers import Web, alive

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "status-page.png"
WAIT_S = 30.0  # bounds a hung test; the page normally answers in well under a second
T = TypeVar("T")


# ---- the page over HTTP, without a browser ----------------------------------------------------


class Loop:
    """An asyncio loop in a thread: servers keep answering while the test blocks on the
    browser (selenium's calls are synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="servers", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT_S)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T]) -> T:
        async def in_loop() -> T:
            return fn()

        return self.run(in_loop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT_S)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


class Synthetic:
    """The page's routes, a /status the test sets and an /events fed through lvsmon's own
    EventFeed and SSE handler: the page at any scale without 10,000 real servers."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.feed = EventFeed()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app[FEED] = self.feed
        app.router.add_get("/status", self._status)
        app.router.add_get("/events", server.get_events)
        page.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.feed.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _status(self, _request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.status), content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def synthetic_status(virtuals: int, per_virtual: int) -> dict[str, Any]:
    """A pool with a few of everything: down reals, one in maintenance, drained ones, latency."""
    groups = []
    for v in range(virtuals):
        reals = []
        for r in range(per_virtual):
            down = r % 50 == 49
            reals.append(
                {
                    "address": f"10.{v // 250}.{v % 250}.{r + 1}",
                    "port": 80,
                    "state": "maintenance" if (v, r) == (3, 5) else ("down" if down else "up"),
                    "checked": True,
                    "failcount": 3 if down else 0,
                    "reason": "connect: connection refused" if down else "http: status 200",
                    "kernel_weight": 0 if down else 10,
                    "weight": 10,
                    "drained": r == 7,
                    "latency_ms": 0.4 + (r % 13) / 10,
                }
            )
            if v == 9 and down:  # depoolthreshold keeps the first in, rise and damping
                reals[-1] |= (
                    {"kept_by_threshold": True, "kernel_weight": 10}
                    if r == 49
                    else {"held_until": time.time() + 90}
                )
            elif v == 9 and r == 3:
                reals[-1] |= {"state": "down", "rising": "1/3", "kernel_weight": None}
            elif v == 9 and r == 5:  # slow start
                reals[-1] |= {
                    "kernel_weight": 3,
                    "steering": {
                        "caps": {"ramp": 3},
                        "ramp": "3/10",
                        "ramp_until": time.time() + 9,
                    },
                }
            elif v == 9 and r == 10:  # the agent check: a share, then a word
                reals[-1] |= {"kernel_weight": 3, "agent": "weight 3/10"}
            elif v == 9 and r == 11:
                reals[-1] |= {"kernel_weight": 0, "agent": "drain"}
        key = f"tcp:192.0.2.{v % 250}:{8000 + v}"
        groups.append({"name": key, "key": key, "file": "/etc/big.cf", "line": 1, "reals": reals})
    return {
        "pid": 4242,
        "started_at": time.time() - 3600,
        "phase": "running",
        "config": "/etc/big.cf",
        "backend": "memory",
        "virtuals": groups,
        "stats": {"checks_done": 123456, "checks_failed": 200, "lateness_ms": {"p99": 2.5}},
    }


async def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, dict(response.headers), await response.read()


def test_page_files_headers_and_nothing_from_elsewhere(loop: Loop) -> None:
    app = Synthetic(synthetic_status(1, 2))
    loop.run(app.start())
    try:
        status, headers, body = loop.run(fetch(app.url))
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        html = body.decode()
        # the policy allows no inline script: every script is a file, no handler attributes
        assert '<script src="static/app.js"' in html and "<script>" not in html
        assert " onclick=" not in html and " style=" not in html
        for name, kind in page.FILES.items():
            status, headers, _ = loop.run(fetch(f"{app.url}static/{name}"))
            expect = 404 if name == "index.html" else 200  # served at / only
            assert status == expect, name
            if status == 200:
                assert headers["Content-Type"].startswith(kind)
                assert headers["Content-Security-Policy"] == page.CSP
        for bad in ("static/nope.js", "static/..%2fpage.py", "static/%2e%2e/page.py", "x"):
            assert loop.run(fetch(app.url + bad))[0] == 404, bad
    finally:
        loop.run(app.stop())
    folder = Path(page.__file__).parent / "static"
    # every shipped file is served, and none refers to another origin
    assert sorted(p.name for p in folder.iterdir()) == sorted(page.FILES)
    for name in page.FILES:
        text = (folder / name).read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        for other in ("http:", "https:", "url(", "@import", '="//'):
            assert other not in text, (name, other)


def test_the_page_listens_to_every_event_kind_the_feed_sends() -> None:
    """EventSource hands named frames only to listeners of that name: a kind missing from
    app.js's list would never reach the page."""
    source = (Path(page.__file__).parent / "static" / "app.js").read_text()
    listed = re.search(r"EVENT_TYPES = \[(.*?)\];", source, re.S)
    assert listed is not None
    names = set(re.findall(r'"(\w+)"', listed.group(1)))
    sent = {k.__name__ for k in typing.get_args(events.Event)} - {"CheckDone"}
    assert sent <= names, sent - names


# ---- the browser -------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(
            f"the page test needs Debian's chromium and chromium-driver ({CHROMIUM}, "
            f"{CHROMEDRIVER}: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager must not look for drivers on the net: the driver is given
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,900",
        "--no-first-run",
        "--no-default-browser-check",
        # tests talk to loopback only: no background traffic, and no name resolves elsewhere
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>;127.0.0.1",
    ):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with it
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, cond: Callable[[Any], T], what: str, within: float = WAIT_S) -> T:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, within, poll_frequency=0.1).until(cond, message=what)


def js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def text_of(driver: Any, selector: str) -> str:
    """An element's text ("" when there is no such element)."""
    found = js(
        driver,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        selector,
    )
    return str(found)


def row_cells(driver: Any, real: str) -> list[str] | None:
    """The cells of a real's row as the page shows them (None: no such row built)."""
    cells = js(
        driver,
        "const tr = document.querySelector(`tr[data-real='${arguments[0]}']`);"
        " return tr ? [...tr.cells].map((c) => c.textContent) : null;",
        real,
    )
    return None if cells is None else [str(c) for c in cells]


def state_of(driver: Any, real: str, virtual: str | None = None) -> str | None:
    scope = f".vgroup[data-key='{virtual}'] " if virtual else ""
    return js(  # type: ignore[no-any-return]
        driver,
        "const s = document.querySelector(arguments[0]); return s ? s.textContent : null;",
        f"{scope}tr[data-real='{real}'] .state",
    )


def events_text(driver: Any) -> list[str]:
    """The recent events pane's lines, newest first."""
    lines = js(
        driver,
        "return [...document.querySelectorAll('#events li')].map((li) => li.textContent);",
    )
    return [str(t) for t in lines]


def assert_only_own_origin(driver: Any, base: str) -> None:
    urls = js(driver, "return performance.getEntriesByType('resource').map((e) => e.name);")
    urls.append(js(driver, "return location.href;"))
    assert urls and all(str(u).startswith(base) for u in urls), urls


def assert_no_browser_errors(driver: Any) -> None:
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


def screenshot(driver: Any, path: Path, for_docs: bool = False) -> None:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    keep = os.environ.get("LVSMON_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copyfile(path, os.path.join(keep, path.name))
    if for_docs and os.environ.get("LVSMON_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOT)
        print(f"screenshot copied to {DOCS_SCREENSHOT}")


# ---- a real daemon -----------------------------------------------------------------------------


def lvsmon_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lvsmon", "--backend", "memory", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def webs(loop: Loop) -> Iterator[list[Web]]:
    servers = [Web(0) for _ in range(3)]
    for s in servers:
        loop.run(s.start())
    yield servers
    for s in servers:
        loop.run(s.stop())


@pytest.fixture
def daemon_url(webs: list[Web]) -> Iterator[str]:
    """`lvsmon --listen ... start` (it forks and returns once the table is programmed) with
    two virtuals on the three servers: HTTP negotiate on one, TCP connect on the other."""
    # a short path: the page shows it, and the screenshot goes in the docs
    workdir = Path(tempfile.mkdtemp(prefix="lvsmon-page-"))
    cf, pid = workdir / "web.cf", workdir / "web.pid"
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq {i + 1}\n" for i, w in enumerate(webs))
    cf.write_text(
        f'checktimeout=2\ncheckinterval=1\nlogfile="{workdir}/web.log"\n'
        f"virtual=127.0.0.100:80\n{reals}\tservice=http\n\tchecktype=negotiate\n"
        '\trequest="/"\n\treceive="still alive"\n'
        f"virtual=127.0.0.100:443\n{reals}\tchecktype=connect\n"
    )
    port = free_port()
    done = lvsmon_cli("--pid-file", str(pid), "--listen", f"127.0.0.1:{port}", str(cf), "start")
    assert done.returncode == 0, done.stderr
    daemon = pidfile.read_pid(str(pid))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        lvsmon_cli("--pid-file", str(pid), str(cf), "stop")
        if daemon and alive(daemon):
            os.kill(daemon, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


HTTP_VIRTUAL = "tcp:127.0.0.100:80"


def test_the_page_shows_a_real_going_down_and_back_live(
    browser: Any, daemon_url: str, webs: list[Web], loop: Loop, tmp_path: Path
) -> None:
    driver = browser
    reals = [f"127.0.0.1:{w.port}" for w in webs]
    driver.get(daemon_url)
    wait(driver, lambda d: js(d, "return document.body.dataset.loaded === '1';"), "page loaded")
    wait(driver, lambda d: text_of(d, "#stream") == "live", "event stream connected")
    assert text_of(driver, "#phase") == "running"
    assert text_of(driver, "#config").endswith("/web.cf")
    assert text_of(driver, "#backend") == "memory"
    assert js(driver, "return document.querySelectorAll('.vgroup').length;") == 2
    # a small pool is shown open: every real with its state, weights and last check
    wait(
        driver,
        lambda d: (
            all(state_of(d, r, HTTP_VIRTUAL) == "up" for r in reals)
            and text_of(d, "#reals-up") == "6/6"
        ),
        "every real up",
    )
    for i, real in enumerate(reals):
        cells = row_cells(driver, real)
        assert cells is not None
        assert cells[0] == real and cells[2] == str(i + 1) and cells[3] == str(i + 1), cells
        assert "200" in cells[6] or cells[6].startswith("http"), cells
    summary = text_of(driver, f".vgroup[data-key='{HTTP_VIRTUAL}'] .vsum")
    assert summary == "3/3 up"

    # the same page, and the same row element, must show the change: no reload
    row = f".vgroup[data-key='{HTTP_VIRTUAL}'] tr[data-real='{reals[1]}']"
    js(
        driver,
        "window.__sameDocument = true; document.querySelector(arguments[0]).__sameRow = true;",
        row,
    )
    loop.call(lambda: setattr(webs[1], "status", 503))
    wait(driver, lambda d: state_of(d, reals[1], HTTP_VIRTUAL) == "down", "real shown down")
    assert js(driver, "return window.__sameDocument === true;")
    assert js(driver, "return document.querySelector(arguments[0]).__sameRow === true;", row)
    # the TCP connect virtual still sees it up: one server, two views
    assert state_of(driver, reals[1], "tcp:127.0.0.100:443") == "up"
    wait(
        driver,
        lambda d: (
            "503" in text_of(d, f"{row} .c6")
            and text_of(d, f".vgroup[data-key='{HTTP_VIRTUAL}'] .vsum") == "2/3 up"
            and text_of(d, "#reals-up") == "5/6"
        ),
        "reason, summary and totals follow",
    )
    assert "1 down" in text_of(driver, f".vgroup[data-key='{HTTP_VIRTUAL}'] .vbadges")
    down_line = f"{reals[1]} ({HTTP_VIRTUAL}) down"
    wait(driver, lambda d: any(down_line in t for t in events_text(d)), "the event in the pane")
    # figures from the periodic refresh (every 5 s)
    wait(driver, lambda d: text_of(d, "#checks-rate") != "…", "checks per second")
    assert float(text_of(driver, "#checks-rate")) > 0
    assert text_of(driver, "#lateness").endswith(" ms")
    screenshot(driver, tmp_path / "status-page-down.png", for_docs=True)

    loop.call(lambda: setattr(webs[1], "status", 200))
    wait(driver, lambda d: state_of(d, reals[1], HTTP_VIRTUAL) == "up", "real shown up again")
    up_line = f"{reals[1]} ({HTTP_VIRTUAL}) up"
    wait(driver, lambda d: any(up_line in t for t in events_text(d)), "the up event in the pane")
    lines = events_text(driver)
    # newest first: it came back after it went down
    first_up = next(i for i, t in enumerate(lines) if up_line in t)
    first_down = next(i for i, t in enumerate(lines) if down_line in t)
    assert first_up < first_down, lines
    assert js(driver, "return window.__sameDocument === true;")
    wait(driver, lambda d: text_of(d, "#reals-up") == "6/6", "totals back")
    screenshot(driver, tmp_path / "status-page-up.png")

    assert_only_own_origin(driver, daemon_url)
    assert_no_browser_errors(driver)


def test_the_page_at_10000_reals(browser: Any, loop: Loop, tmp_path: Path) -> None:
    driver = browser
    app = Synthetic(synthetic_status(100, 100))
    loop.run(app.start())
    try:
        began = time.monotonic()
        driver.get(app.url)
        wait(driver, lambda d: js(d, "return document.body.dataset.loaded === '1';"), "loaded")
        wait(driver, lambda d: text_of(d, "#stream") == "live", "event stream connected")
        # interactive: the page answers a script and shows the pool, within a generous bound
        assert js(driver, "return 1;") == 1
        assert time.monotonic() - began < WAIT_S
        print(f"10,000 reals: loaded and interactive in {time.monotonic() - began:.2f} s")

        assert js(driver, "return document.querySelectorAll('.vgroup').length;") == 100
        # collapsed: a summary per virtual, no rows built
        assert js(driver, "return document.querySelectorAll('tr[data-real]').length;") == 0
        first = ".vgroup[data-key='tcp:192.0.2.0:8000']"
        assert text_of(driver, f"{first} .vsum") == "98/100 up"
        assert "2 down" in text_of(driver, f"{first} .vbadges")
        assert "1 drained" in text_of(driver, f"{first} .vbadges")
        assert text_of(driver, "#reals-up") == "9,798/10,000"

        # the filter finds one real among 10,000 and opens its group only
        box = driver.find_element("id", "filter")
        box.send_keys("10.0.42.17:80")
        wait(driver, lambda d: text_of(d, "#match-count") == "1 of 10,000 reals", "one match")
        visible = js(
            driver,
            "return [...document.querySelectorAll('.vgroup')].filter((g) => !g.hidden)"
            ".map((g) => g.dataset.key);",
        )
        assert visible == ["tcp:192.0.2.42:8042"]
        assert js(driver, "return document.querySelectorAll('tr[data-real]').length;") == 1
        # by reason and state, across groups
        box.clear()
        box.send_keys("refused")
        wait(driver, lambda d: text_of(d, "#match-count") == "200 of 10,000 reals", "by reason")
        box.clear()
        box.send_keys("maintenance")
        wait(driver, lambda d: text_of(d, "#match-count") == "1 of 10,000 reals", "by state")
        box.clear()
        box.send_keys(" ")  # clear() sends no input event
        wait(driver, lambda d: text_of(d, "#match-count") == "", "filter off")
        assert js(driver, "return document.querySelectorAll('tr[data-real]').length;") == 0

        # one group opened by hand: its rows, with latency and the drained marker
        group = ".vgroup[data-key='tcp:192.0.2.7:8007']"
        driver.find_element("css selector", f"{group} .vhead").click()
        wait(
            driver,
            lambda d: js(d, "return document.querySelectorAll('tr[data-real]').length;") == 100,
            "one group open",
        )
        cells = row_cells(driver, "10.0.7.8:80")
        assert cells is not None and cells[1] == "updrained" and cells[4].endswith(" ms"), cells
        assert js(driver, "return !document.body.classList.contains('no-latency');")

        # depool threshold, rise and damping: a badge on the group and marks on the rows
        held = ".vgroup[data-key='tcp:192.0.2.9:8009']"
        assert "1 kept by threshold" in text_of(driver, f"{held} .vbadges")
        driver.find_element("css selector", f"{held} .vhead").click()
        wait(driver, lambda d: row_cells(d, "10.0.9.50:80") is not None, "group 9 open")
        assert row_cells(driver, "10.0.9.50:80")[1] == "downkept by threshold"  # type: ignore[index]
        assert (row_cells(driver, "10.0.9.4:80") or ["", ""])[1] == "downrising 1/3"
        assert (row_cells(driver, "10.0.9.100:80") or ["", ""])[1].startswith("downheld until ")
        assert (row_cells(driver, "10.0.9.6:80") or ["", ""])[1].startswith("upramping 3/10 until ")
        assert (row_cells(driver, "10.0.9.11:80") or ["", ""])[1] == "upweight 3/10 by agent"
        assert (row_cells(driver, "10.0.9.12:80") or ["", ""])[1] == "upagent: drain"
        agent_ref = RealRef(ServiceKey.inet("tcp", "192.0.2.9", 8009), "10.0.9.12", 80)
        loop.call(lambda: app.feed.on_event(AgentChanged(agent_ref, "weight 5/10", 5, 10)))
        wait(
            driver,
            lambda d: (row_cells(d, "10.0.9.12:80") or ["", ""])[1] == "upweight 5/10 by agent",
            "an agent's event applied",
        )
        driver.find_element("css selector", f"{held} .vhead").click()
        wait(
            driver,
            lambda d: js(d, "return document.querySelectorAll('tr[data-real]').length;") == 100,
            "group 9 closed, group 7 still open",
        )
        js(driver, "window.scrollTo(0, 0);")  # as the steps below found the page

        # an event updates its row in place
        target = f"{group} tr[data-real='10.0.7.3:80']"
        js(driver, "document.querySelector(arguments[0]).__sameRow = true;", target)
        ref = RealRef(ServiceKey.inet("tcp", "192.0.2.7", 8007), "10.0.7.3", 80)
        loop.call(lambda: app.feed.on_event(RealChanged(ref, False, "http: status 503")))
        wait(driver, lambda d: text_of(d, f"{target} .state") == "down", "event applied")
        assert js(driver, "return document.querySelector(arguments[0]).__sameRow;", target)
        assert text_of(driver, f"{target} .c6") == "http: status 503"
        assert text_of(driver, f"{group} .vsum") == "97/100 up"

        # drain and undrain as the daemon announces them
        loop.call(lambda: app.feed.on_event(DrainChanged(ref, True)))
        wait(driver, lambda d: "drained" in text_of(d, f"{target} .c1"), "drained marker")
        assert "2 drained" in text_of(driver, f"{group} .vbadges")
        loop.call(lambda: app.feed.on_event(DrainChanged(ref, False)))
        wait(driver, lambda d: text_of(d, f"{target} .c1") == "down", "drained marker gone")

        # text from the daemon is text: a reason that looks like markup is shown, not parsed
        markup = '<img src="x" class="injected">'
        loop.call(lambda: app.feed.on_event(RealChanged(ref, False, markup)))
        wait(driver, lambda d: text_of(d, f"{target} .c6") == markup, "markup shown as text")
        assert js(driver, "return document.querySelectorAll('.injected').length;") == 0

        # the stream ends (a daemon restarting): the page reconnects by itself, and the events
        # replayed on the new connection are not shown twice
        before = events_text(driver)
        loop.call(app.feed.close)
        wait(driver, lambda d: text_of(d, "#stream") != "live", "stream seen lost")
        wait(driver, lambda d: text_of(d, "#stream") == "live", "stream reconnected")
        wait(driver, lambda d: events_text(d) == before, "the same events, once")

        # every group open: 10,000 rows, and the page still answers
        began = time.monotonic()
        driver.find_element("id", "expand-all").click()
        wait(
            driver,
            lambda d: js(d, "return document.querySelectorAll('tr[data-real]').length;") == 10000,
            "every row built",
        )
        print(f"10,000 rows built in {time.monotonic() - began:.2f} s")
        screenshot(driver, tmp_path / "status-page-10000.png")
        driver.find_element("id", "collapse-all").click()
        wait(
            driver,
            lambda d: js(d, "return document.querySelectorAll('tr[data-real]').length;") == 0,
            "rows let go",
        )
        assert_only_own_origin(driver, app.url)
        assert_no_browser_errors(driver)
    finally:
        loop.run(app.stop())
