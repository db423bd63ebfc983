"""Issue 21, class 6: one sanitiser for outside text (lvsmon/text.py `clean`).

The function itself (every control class replaced, the length bound, idempotent, printable text
of any script kept), each place outside text enters (the check runner, `shown`, the monitorfile
writer, a relay's error, `lvsmon status`, the drain listing and its log line, the drain command's
printout), and end to end: an HTTP real whose redirect carries a CR, terminal escapes, C1
controls and NUL in its Location, and drain files named with a newline, escapes and a bidi
override, against an in-process daemon: none of it reaches the log records, the status JSON,
`render_status`, /events or the monitorfile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsmon.alerts.delivery import _reason
from lvsmon.alerts.hooks import MonitorFiles
from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import shown
from lvsmon.cli.drain import _print_listing
from lvsmon.config import load_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine.drain import DrainDir, DrainEntry, DrainIndex, DrainState, listing
from lvsmon.engine.events import CheckDone
from lvsmon.engine.jobs import CheckJob, RealRef
from lvsmon.engine.runner import CheckRunner
from lvsmon.engine.status import Stats, render_status
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey
from lvsmon.text import ELLIPSIS, LIMIT, clean
from tests.helpers import wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 80)

# one of each: C0 (NUL, BEL, BS, TAB, LF, CR, ESC), DEL, C1 (NEL, CSI), the line and paragraph
# separators, bidi overrides and isolates, zero-width and BOM (format), a non-ASCII space,
# a lone surrogate, private use, unassigned
HOSTILE = (
    "\x00\x07\x08\t\n\r\x1b\x7f\x85\x9b\u2028\u2029\u202a\u202e\u2066\u2069"
    "\u200b\u200d\ufeff\xa0\u3000\ud800\ue000\U000e0001\U0010ffff"
)


def printable(text: str) -> bool:
    return text.isprintable()


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


# ---- the function ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", list(HOSTILE))
def test_every_control_class_is_replaced(char: str) -> None:
    assert clean(f"a{char}b") == "a?b"


def test_a_forged_log_line_and_terminal_escapes_become_one_printable_line() -> None:
    text = "http: status 302\rReal server 10.0.0.1:80 is up\n\x1b[2J\x1b]0;title\x07\x9b6n"
    out = clean(text)
    assert out == "http: status 302?Real server 10.0.0.1:80 is up??[2J?]0;title??6n"


def test_printable_text_of_any_script_is_kept() -> None:
    for text in ("http: status 200", "Grüße, 日本語, ελληνικά, עברית, русский 🙂", "a b", ""):
        assert clean(text) is text  # the fast path: not even copied


def test_the_length_is_bounded() -> None:
    assert clean("x" * LIMIT) == "x" * LIMIT
    long = clean("y" * (LIMIT + 1))
    assert long == "y" * LIMIT + ELLIPSIS
    assert clean("z" * 10_000_000, limit=20) == "z" * 20 + ELLIPSIS
    assert clean("\x1b" * 10_000, limit=5) == "?????" + ELLIPSIS


@given(st.text(), st.integers(min_value=0, max_value=600))
def test_idempotent_printable_and_bounded(text: str, limit: int) -> None:
    once = clean(text, limit)
    assert clean(once, limit) == once
    assert printable(once)
    assert len(once) <= limit + len(ELLIPSIS)
    if printable(text) and len(text) <= limit:
        assert once == text


def test_shown_is_the_same_rule() -> None:
    line = "* BYE \x1b[2J\u2028\u202egone\x00".encode()
    assert shown(line) == clean(line.decode().strip(), 120) == "* BYE ?[2J??gone?"
    assert shown(b"x" * 500) == "x" * 120 + ELLIPSIS


# ---- where outside text enters -----------------------------------------------------------------

SPEC = CheckSpec("connect", "127.0.0.1", 80, 1.0)
REF = RealRef(VKEY, "127.0.0.1", 80)


async def test_the_runner_hands_the_engine_clean_reasons() -> None:
    seen: list[CheckResult] = []

    def on_result(refs: tuple[RealRef, ...], result: CheckResult) -> bool:
        seen.append(result)
        return True

    async def never(spec: CheckSpec) -> CheckResult:
        raise AssertionError("not run")

    runner = CheckRunner(on_result, Stats(), run_check=never)
    job = CheckJob(SPEC, 1.0)
    run = runner._runs[job] = runner._new_run(job, (REF,))
    hostile = CheckResult(False, "http: " + HOSTILE + "x" * 1000, 0.01)
    runner._done(run, False, hostile)
    good = CheckResult(True, "imap: OK \x1b[2J ready")
    for _ in range(3):
        runner._done(run, False, good)
    assert [r.reason for r in seen] == [clean(hostile.reason), "imap: OK ?[2J ready"]
    assert seen[0].latency_s == 0.01 and not seen[0].ok
    # a clean good reason is taken as it is, and the steady shortcut still holds
    plain = CheckResult(True, "http: status 200")
    runner._done(run, False, plain)
    runner._done(run, False, plain)
    assert seen[-1] is plain and len(seen) == 3


def test_the_monitorfile_writer_cleans(tmp_path: Path) -> None:
    mon = tmp_path / "mon.log"
    writer = MonitorFiles.__new__(MonitorFiles)
    writer.path_of = {VKEY: str(mon)}
    writer(CheckDone(REF, False, "http: 302\r\nReal server is up\x1b[2J|%\u202e"))
    [line] = mon.read_text(encoding="utf-8").splitlines()
    assert printable(line)
    assert line.endswith("[down] http: 302??Real server is up?[2J%7C%25?")


def test_a_relays_error_is_clean() -> None:
    said = _reason(Exception("550 5.7.1 \x1b[2Jno\r\nReal server 10.0.0.1:80 is up\u202e" * 40))
    assert printable(said) and len(said) <= LIMIT + len(ELLIPSIS)
    assert said.startswith("550 5.7.1 ?[2Jno Real server 10.0.0.1:80 is up?")


def test_lvsmon_status_renders_an_edited_status_file_clean() -> None:
    status: Any = {
        "phase": "running\x1b[2J",
        "virtuals": [
            {
                "name": "tcp:127.0.0.100:80\n\x1b]0;owned\x07",
                "reals": [
                    {
                        "address": "127.0.0.1\r",
                        "port": 80,
                        "state": "up\u202e",
                        "kernel_weight": 1,
                        "reason": "http: status 302\rReal server 10.0.0.9:80 is up\x9b" * 100,
                    }
                ],
            }
        ],
        "sync": [{"state": "master", "error": "boom\n\x1b[31m", "running": "", "wanted": ""}],
    }
    lines = render_status(status).split("\n")
    assert len(lines) == 4  # phase, virtual, real, sync: nothing split or forged
    assert all(printable(line) for line in lines)
    assert all(len(line) <= 2 * LIMIT + len(ELLIPSIS) for line in lines)


DRAIN_NAMES = [
    "evil\nReal server 127.0.0.1:80 (127.0.0.100:80) is up",
    "\x1b[2Jclear",
    "c1\x9b6n",
    "bidi\u202etxt.exe",
    "line\u2028sep",
]


def make_drain_dir(path: Path) -> None:
    path.mkdir()
    for name in DRAIN_NAMES:
        (path / f"{name}.drain").touch()


def test_the_drain_listing_and_its_log_line_are_clean(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    maint = tmp_path / "maint"
    make_drain_dir(maint)
    store = DrainDir(str(maint))
    index = DrainIndex.plain([REF])
    body = listing(store, index)
    assert body["ignored"], body  # read, ignored, shown
    assert all(printable(s) for s in strings(body))
    assert os.path.exists(maint / f"{DRAIN_NAMES[3]}.drain")  # shown clean, left as it is
    cf = tmp_path / "lb.cf"
    cf.write_text(f"maintenancedir={maint}\nvirtual=127.0.0.100:80\n\treal=127.0.0.1:80 masq\n")
    config = load_config(str(cf))
    state = DrainState(None)
    assert state.drained(config, index) == frozenset()
    assert caplog.messages and all(printable(m) for m in caplog.messages)
    # and what the drain command prints of a (hostile) daemon's answer
    _print_listing({"drained": [{"real": "a\x1b[2J", "virtual": "v\n"}], "ignored": DRAIN_NAMES})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + len(DRAIN_NAMES) and all(printable(line) for line in out)


def test_entries_keep_their_names_for_the_files() -> None:
    """Cleaning is for showing: an entry still names its file (undrain removes that file)."""
    entry = DrainEntry.parse("c1\x9b6n")
    assert entry is None or entry.real == "c1\x9b6n"


# ---- end to end ------------------------------------------------------------------------------

LOCATION = (
    b"/next\rReal server 127.0.0.1:80 (127.0.0.100:80) is up\x1b[2J\x1b]0;owned\x07"
    b"\x9b6n\x00\x7f\xe2\x80\xa8\xe2\x80\xae"
)


class HostileWeb:
    """Healthy until `hostile` is set; then a 302 whose Location carries control bytes."""

    def __init__(self) -> None:
        self.hostile = False
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.hostile:
                writer.write(
                    b"HTTP/1.1 302 Found\r\nLocation: " + LOCATION + b"\r\n"
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nstill alive"
                )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def hostile_web() -> AsyncIterator[HostileWeb]:
    web = HostileWeb()
    await web.start()
    yield web
    await web.stop()


async def read_events(sock: str, until: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    connector = aiohttp.UnixConnector(path=sock)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://lvsmon/events") as response,
    ):
        async with asyncio.timeout(20):
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                    if until(seen[-1]):
                        return seen
    raise AssertionError(f"stream ended; saw {seen}")


async def get_json(sock: str, path: str) -> Any:
    connector = aiohttp.UnixConnector(path=sock)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://lvsmon{path}") as response,
    ):
        return json.loads(await response.text())


async def test_hostile_text_reaches_no_surface(
    hostile_web: HostileWeb, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lvsmon")
    maint = tmp_path / "maint"
    make_drain_dir(maint)
    mon = tmp_path / "mon.log"
    cf = tmp_path / "lb.cf"
    cf.write_text(
        f"checktimeout=2\ncheckinterval=1\nfailurecount=1\nquiescent=no\nmaintenancedir={maint}\n"
        f"virtual=127.0.0.100:80\n\treal=127.0.0.1:{hostile_web.port} masq\n"
        f'\tservice=http\n\trequest="/"\n\treceive="still alive"\n\tchecktype=negotiate\n'
        f"\tmonitorfile={mon}\n"
    )
    sock = str(tmp_path / "l.sock")
    status_path = tmp_path / "l.status.json"
    daemon = Daemon(load_config(str(cf)), MemoryBackend(), str(status_path), control_socket=sock)
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    ref = RealRef(VKEY, "127.0.0.1", hostile_web.port)
    try:
        await wait_for(lambda: daemon.engine.health[ref].up, within=15)
        hostile_web.hostile = True
        events = await read_events(
            sock, lambda e: e["type"] == "RealChanged" and not e["up"] and "302" in str(e)
        )
        reason = daemon.engine.health[ref].reason
        assert reason.startswith("http: status 302 (redirect to /next?Real server"), reason
        assert printable(reason)
        assert all(printable(s) for e in events for s in strings(e))
        drains = await get_json(sock, "/drains")
        assert drains["ignored"] and all(printable(s) for s in strings(drains))
        status = json.loads(daemon.status_json(max_age=0.0))
        assert all(printable(s) for s in strings(status))
        assert "302" in json.dumps(status)
        await wait_for(lambda: "302" in json.dumps(json.loads(status_path.read_bytes())))
        on_disk = json.loads(status_path.read_bytes())
        assert all(printable(s) for s in strings(on_disk))
        rendered = render_status(on_disk).split("\n")
        assert any("302" in line for line in rendered)
        assert all(printable(line) for line in rendered)
        await wait_for(lambda: b"302" in mon.read_bytes())
    finally:
        daemon.request_stop()
        assert await task == 0
    lines = mon.read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert all(printable(line.decode("utf-8")) for line in lines)
    messages = [r.getMessage() for r in caplog.records]
    assert any("302" in m for m in messages)
    assert any("names no real server" in m for m in messages)
    bad = [m for m in messages if not printable(m)]
    assert not bad, bad
