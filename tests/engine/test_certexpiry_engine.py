"""sslexpirywarn in the running engine: an https real on nginx whose certificate openssl made
to expire in 3 days, the in-memory backend. The check reads the certificate (sslverify no and
chain alike), the engine publishes CertificateExpiring once (not per check), /events can carry
it, and /metrics has lvsmon_real_certificate_expiry_seconds for the real."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsmon.api.eventfeed import event_json
from lvsmon.api.metrics import Layout, cert_family
from lvsmon.config import load_config
from lvsmon.engine.engine import Engine
from lvsmon.engine.events import CertificateExpiring, Event
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import ServiceKey
from realservers.base import Server, server_dir
from realservers.tlsservers import EXPIRING_DAYS, NAME, make_certs, running_nginx
from tests.helpers import wait_for

VKEY = ServiceKey.inet("tcp", "127.0.0.100", 443)
DAY = 86400.0


@pytest.fixture(scope="module")
def nginx() -> Iterator[tuple[Path, Server]]:
    with server_dir("tls-certs") as d:
        certs = make_certs(d / "certs")
        with running_nginx({k: certs[k] for k in ("good", "expiring")}) as server:
            yield d / "certs" / "ca.pem", server


async def _no_pause() -> None:
    await asyncio.sleep(0)


@pytest.mark.parametrize("verify", ["no", "name"])
async def test_expiring_certificate_event_once_and_metric(
    nginx: tuple[Path, Server], tmp_path: Path, verify: str
) -> None:
    ca, server = nginx
    cf = tmp_path / "lb.cf"
    cf.write_text(
        f"checktimeout=2\ncheckinterval=1\nsslexpirywarn=14\nsslverify={verify}\n"
        + (f"sslcafile={ca}\nsslname={NAME}\n" if verify != "no" else "")
        + "virtual=127.0.0.100:443\n"
        f"\treal=127.0.0.1:{server.ports['expiring']} masq\n"
        f"\treal=127.0.0.1:{server.ports['good']} masq\n"
        "\tservice=https\n"
    )
    engine = Engine(load_config(str(cf)), MemoryBackend())
    seen: list[Event] = []
    engine.events.subscribe("test", seen.append, kinds=(CertificateExpiring,))
    await engine.start()
    try:
        expiring = RealRef(VKEY, "127.0.0.1", server.ports["expiring"])
        good = RealRef(VKEY, "127.0.0.1", server.ports["good"])
        await wait_for(lambda: len(seen) >= 1 and good in engine.certs.expiry)
        await asyncio.sleep(2.5)  # two more checks of each real: no second event
        assert engine.stats.checks_done >= 4
    finally:
        await engine.stop()
    (event,) = seen
    assert isinstance(event, CertificateExpiring)
    assert (event.ref, event.days) == (expiring, 14)
    left = event.not_after - time.time()
    assert (EXPIRING_DAYS - 1) * DAY < left <= EXPIRING_DAYS * DAY
    body = event_json(event, 1, event.at)  # what /events sends
    assert json.loads(json.dumps(body))["not_after"] == event.not_after
    # the metric: both reals (the good one's certificate is 30 days off: no event)
    layout = Layout(engine)
    await layout.build(engine, _no_pause)
    out: list[str] = []
    cert_family(out, engine, layout, time.time())
    samples = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in "".join(out).splitlines()
        if line.startswith("lvsmon_real_certificate_expiry_seconds{")
    }
    labels = 'virtual="tcp:127.0.0.100:443",real="127.0.0.1:{}"'
    assert set(samples) == {labels.format(p) for p in (expiring.port, good.port)}
    assert samples[labels.format(expiring.port)] == pytest.approx(left, abs=30)
    assert 29 * DAY < samples[labels.format(good.port)] <= 30 * DAY
