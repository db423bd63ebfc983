"""The depool threshold end to end: an in-process daemon on the memory backend checking four real
HTTP servers on loopback, with a threshold of 0.5. Three fail one after the other: two go out,
the last failure stays in; the fourth fails: it stays in too. The state is logged, published,
mailed (aiosmtpd on loopback) and scraped once when it starts and once when it ends."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
from collections.abc import AsyncIterator
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session

from lvsmon.api.metrics import Exporter
from lvsmon.engine.events import DepoolLimited, Event
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.status import render_status
from realservers.base import free_port
from tests.helpers import Web, closed_port, wait_for

from .conftest import VKEY, Running, start


class Sink:
    """aiosmtpd handler keeping every mail."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        return "250 OK"

    def subjects(self, start: str) -> list[str]:
        # a long Subject is folded: its text may start on the continuation line
        found = [str(m["Subject"]).strip() for m in self.mails]
        return [s for s in found if s.startswith(start)]


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Sink, int]]:
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    await asyncio.to_thread(controller.start)
    try:
        yield sink, controller.port
    finally:
        await asyncio.to_thread(controller.stop)


@pytest.fixture
async def four() -> AsyncIterator[list[Web]]:
    servers = [Web(0) for _ in range(4)]
    for s in servers:
        await s.start()
    yield servers
    for s in servers:
        await s.stop()


def status(r: Running) -> dict:  # type: ignore[type-arg]
    return json.loads(r.daemon.status_json(max_age=0.0))  # type: ignore[no-any-return]


async def metric(r: Running, exporter: Exporter) -> str:
    body = b"".join(await exporter.scrape()).decode()
    (line,) = [x for x in body.splitlines() if x.startswith("lvsmon_virtual_depool_limited{")]
    return line.rsplit(" ", 1)[1]


async def test_half_of_four_reals_stay_in_the_last_failures_kept(
    four: list[Web],
    smtp: tuple[Sink, int],
    tmp_path: object,
    stopper: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, port = smtp
    a, b, c, d = four
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq 2\n" for w in four)
    cf = tmp_path / "lb.cf"  # type: ignore[operator]
    cf.write_text(
        "checktimeout=1\ncheckinterval=1\ndepoolthreshold=0.5\n"
        f'emailalert="ops@lvsmon.test"\nsmtp=127.0.0.1:{port}\nsmtptls=none\n'
        "emailalertwindow=0\nemailalertfrom=lvsmon@lvsmon.test\n"
        f"virtual=127.0.0.100:80\n{reals}\tfallback=127.0.0.1:{closed_port()} masq\n"
        '\tservice=http\n\treceive="alive"\n'
    )
    caplog.set_level(logging.INFO, logger="lvsmon")
    r = await start(cf)
    stopper.append(r)
    seen: list[Event] = []
    r.daemon.events.subscribe("test", seen.append, kinds=(DepoolLimited,))
    exporter = Exporter(r.daemon)
    ports = {w.port for w in four}
    await wait_for(lambda: r.weights() == dict.fromkeys(ports, 2), within=15)
    assert await metric(r, exporter) == "0"

    def down(w: Web) -> bool:
        ref = RealRef(VKEY, "127.0.0.1", w.port)
        return not r.daemon.engine.health[ref].up

    # one after the other: a and b may go (half of four), c stays in although it fails
    for w in (a, b, c):
        w.status = 503
        await wait_for(lambda w=w: down(w), within=15)  # type: ignore[misc]
    await wait_for(lambda: r.weights() == {c.port: 2, d.port: 2}, within=10)
    await wait_for(lambda: bool(seen), within=5)  # the reconcile's end publishes it
    shown = status(r)["virtuals"][0]
    assert shown["depool_limited"] is True
    by_port = {x["port"]: x for x in shown["reals"]}
    assert by_port[c.port]["state"] == "down" and by_port[c.port]["kept_by_threshold"] is True
    assert by_port[c.port]["kernel_weight"] == 2  # in service at its configured weight
    assert [by_port[w.port]["kept_by_threshold"] for w in (a, b, d)] == [False, False, False]
    text = render_status(status(r))  # type: ignore[arg-type]
    assert "(depool threshold reached)" in text and "down kept in by depool threshold" in text
    assert await metric(r, exporter) == "1"

    # the fourth fails too: it stays in with c; still one state, not a new one
    d.status = 503
    await wait_for(lambda: down(d), within=15)
    await wait_for(lambda: len(r.daemon.engine.depool_limited.get(VKEY, ())) == 2, within=5)
    assert r.weights() == {c.port: 2, d.port: 2}  # no fallback: two serve
    kept = [x["port"] for x in status(r)["virtuals"][0]["reals"] if x["kept_by_threshold"]]
    assert kept == [c.port, d.port]
    assert await metric(r, exporter) == "2"

    await wait_for(lambda: len(sink.subjects("Depool threshold reached")) == 1, within=10)
    assert sink.subjects("Depool threshold reached") == [
        "Depool threshold reached on 127.0.0.100:80: 1 real server kept in although its checks"
        f" fail: 127.0.0.1:{c.port}"
    ]

    # they recover: checks decide again, and the state ends
    for w in four:
        w.status = 200
    await wait_for(lambda: r.weights() == dict.fromkeys(ports, 2), within=15)
    await wait_for(lambda: any(not getattr(e, "active", True) for e in seen), within=5)
    assert status(r)["virtuals"][0]["depool_limited"] is False
    assert await metric(r, exporter) == "0"
    c_ref = RealRef(VKEY, "127.0.0.1", c.port)
    assert seen == [DepoolLimited(VKEY, (c_ref,), True), DepoolLimited(VKEY, (), False)]
    logged = [m for m in caplog.messages if "Depool threshold" in m]
    assert logged == [
        f"Depool threshold reached on {VKEY}: 1 real server kept in although its checks fail:"
        f" 127.0.0.1:{c.port}",
        f"Depool threshold no longer reached on {VKEY}: checks decide again",
    ]
    await wait_for(lambda: len(sink.subjects("Depool threshold no longer")) == 1, within=10)
    assert sink.subjects("Depool threshold no longer") == [
        "Depool threshold no longer reached on 127.0.0.100:80: checks decide again"
    ]
