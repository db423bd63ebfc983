"""GET /metrics (lvsmon/api/metrics.py, lvsmon/engine/checkstats.py): a real daemon on the memory
backend checks real HTTP servers on loopback; a real goes down and comes back; the body is read
over the control socket (and over TCP, as Prometheus would) and must pass both
prometheus_client's parser and `promtool check metrics` without a word."""

from __future__ import annotations

import asyncio
import gzip
import re
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsmon.api import metrics
from lvsmon.api.metricdefs import FAMILIES
from lvsmon.api.metrics import CONTENT_TYPE, escape_label
from lvsmon.checks.base import CheckResult
from lvsmon.config import load_config
from lvsmon.config.watch import ConfigWatcher
from lvsmon.daemon.daemon import Daemon
from lvsmon.engine.checkstats import DURATION_BUCKETS, REASON_CLASSES, CheckCounts, classify
from lvsmon.ipvs.memory import MemoryBackend
from realservers.base import free_port
from tests.helpers import Web

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

# ---- the reason classifier: pure -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("connect: connection refused", "refused"),
        ("dns: connection refused", "refused"),  # UDP: an ICMP port unreachable
        ("timeout after 3s during http", "timeout"),
        ("timeout after 0.5s during connect", "timeout"),
        ("connect: connection timed out", "timeout"),
        ("ldap: timed out", "timeout"),
        ("radius: no reply", "timeout"),
        ("http: connection reset by peer", "reset"),
        ("smtp: broken pipe", "reset"),
        ("imap login: connection closed by the server", "reset"),
        ("nntp: connection closed before the greeting", "reset"),
        ("connect: no route to host", "unreachable"),
        ("connect: network is unreachable", "unreachable"),
        ("connect: host is down", "unreachable"),
        ("tls: certificate verify failed", "tls"),
        ("tls: wrong version number", "tls"),
        ("tls: sslv3 alert handshake failure", "tls"),
        ("connect: name resolution failed: Name or service not known", "dns"),
        ("connect: www.example.test did not resolve", "dns"),
        ("http: status 503", "response"),
        ("http: body does not match receive", "response"),
        ("smtp: ehlo: 554 go away", "response"),
        ("pgsql: login rejected: password authentication failed", "response"),
        ("mysql: query returned no rows", "response"),
        ("dns: NXDOMAIN for www.example.test", "response"),
        ("external: exit 1", "response"),
        ("sip: 503 Service Unavailable", "response"),
        ("radius: secret must be set for this check", "other"),
        ("checktype=negotiate service=foo is not implemented", "other"),
        ("external: cannot execute /bin/nope: No such file or directory", "other"),
        ("check failed: RuntimeError('boom')", "other"),
        ("connect: cannot assign requested address", "other"),
        ("something without a step", "other"),
    ],
)
def test_reason_classes(reason: str, cls: str) -> None:
    assert REASON_CLASSES[classify(reason)] == cls


def test_duration_buckets_are_upper_bounds_inclusive() -> None:
    counts = CheckCounts()
    for latency in (0.0, DURATION_BUCKETS[0], DURATION_BUCKETS[0] * 1.01, 99.0):
        counts.record(CheckResult(True, "http: status 200", latency))
    counts.record(CheckResult(False, "connect: connection refused", 0.0))
    assert counts.buckets[0] == 3  # 0, the first bound itself, and the failure
    assert counts.buckets[1] == 1
    assert counts.buckets[-1] == 1  # +Inf
    assert counts.checks == 5
    assert counts.failures[REASON_CLASSES.index("refused")] == 1
    assert counts.seconds == pytest.approx(99.0 + DURATION_BUCKETS[0] * 2.01)


def test_label_values_are_escaped() -> None:
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_docs_list_every_metric() -> None:
    text = DOCS.read_text()
    assert "## Metrics (Prometheus)" in text
    section = text.split("## Metrics (Prometheus)", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(lvsmon_[a-z_]+)`", section))
    missing = set(FAMILIES) - documented
    assert not missing, f"metrics not in docs/operations.md: {sorted(missing)}"
    unknown = {
        m
        for m in documented - set(FAMILIES)
        if not any(m == f + suffix for f in FAMILIES for suffix in ("_bucket", "_sum", "_count"))
    }
    assert not unknown, f"docs/operations.md names metrics that do not exist: {sorted(unknown)}"


def test_docs_scrape_config_and_alert_rules_pass_promtool(tmp_path: Path) -> None:
    section = DOCS.read_text().split("## Metrics (Prometheus)", 1)[1].split("\n## ", 1)[0]
    scrape, rules = re.findall(r"```yaml\n(.*?)```", section, re.S)
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "prometheus.yml").write_text(scrape + f"rule_files: [{tmp_path}/rules.yml]\n")
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: prometheus)")
    for what in (["check", "rules", "rules.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run(
            ["promtool", *what], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


async def test_a_rejected_autoreload_counts_once(tmp_path: Path) -> None:
    cfg = tmp_path / "t.cf"
    cfg.write_text("virtual=127.0.0.100:80\n\treal=127.0.0.1:8080 masq\n")
    watcher = ConfigWatcher(str(cfg), load_config(str(cfg)).digest)
    cfg.write_text("virtual=127.0.0.100:80\n\tnonsense=1\n")
    for _ in range(4):  # seen, settled (rejected), then the same content again and again
        await watcher.poll(autoreload=True)
    assert watcher.rejected == 1
    cfg.write_text("virtual=127.0.0.100:80\n\tmore nonsense\n")
    for _ in range(3):
        await watcher.poll(autoreload=False)  # not asked to reload: nothing rejected
    assert watcher.rejected == 1


# ---- a running daemon ---------------------------------------------------------------------------

CHECK = '\tservice=http\n\trequest="/"\n\treceive="still alive"\n\tchecktype=negotiate\n'


def config_text(tmp: Path, webs: list[Web], closed: int) -> str:
    w0, w1, w2 = (w.port for w in webs)
    return (
        f'checktimeout=2\ncheckinterval=1\nlogfile="{tmp}/lvsmon.log"\n'
        f"virtual=127.0.0.100:80\n\treal=127.0.0.1:{w0} masq\n\treal=127.0.0.1:{w1} masq\n"
        + CHECK
        # every real down: one refuses connections, one answers 503
        + f"virtual=127.0.0.101:80\n\treal=127.0.0.1:{closed} masq\n"
        f"\treal=127.0.0.1:{w2} masq\n\tfallback=127.0.0.1:{w0} masq\n"
        + CHECK
        # the first virtual's first real again, same check: one check job feeds both
        + f"virtual=127.0.0.102:80\n\treal=127.0.0.1:{w0} masq\n"
        + CHECK
    )


class Running(NamedTuple):
    daemon: Daemon
    socket: str
    port: int
    config: Path
    closed: int  # a real's port where nothing listens


@pytest.fixture
async def running(tmp_path: Path, webs: list[Web]) -> AsyncIterator[Running]:
    webs[2].status = 503
    cfg = tmp_path / "t.cf"
    closed = free_port()
    cfg.write_text(config_text(tmp_path, webs, closed))
    sock, port = str(tmp_path / "l.sock"), free_port()
    daemon = Daemon(
        load_config(str(cfg)),
        MemoryBackend(),
        control_socket=sock,
        listen=f"127.0.0.1:{port}",
    )
    ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(daemon.run(ready.set_result))
    assert await ready is None
    yield Running(daemon, sock, port, cfg, closed)
    daemon.request_stop()
    assert await task == 0


async def fetch(sock: str | None = None, port: int = 0) -> tuple[str, str]:
    """(content type, body) of /metrics, over the Unix socket or over TCP."""
    connector = aiohttp.UnixConnector(path=sock) if sock else None
    url = "http://lvsmon/metrics" if sock else f"http://127.0.0.1:{port}/metrics"
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url) as response,
    ):
        assert response.status == 200
        return response.headers["Content-Type"], await response.text()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and every family's type, through the official parser."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for fam in text_string_to_metric_families(body):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def promtool(body: str) -> None:
    """`promtool check metrics`: exit 0 and not a word (lint problems are printed)."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian: prometheus)")
    done = subprocess.run(
        ["promtool", "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr
    )


def real(samples: Samples, name: str, virtual: str, port: int, **more: str) -> float | None:
    labels = {"virtual": f"tcp:{virtual}:80", "real": f"127.0.0.1:{port}", **more}
    return samples.get((name, frozenset(labels.items())))


def virtual(samples: Samples, name: str, vip: str) -> float | None:
    return samples.get((name, frozenset({("virtual", f"tcp:{vip}:80")})))


def one(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def metrics_until(
    r: Running, cond: object, within: float = 20.0
) -> tuple[Samples, dict[str, str], str]:
    """Scrape until `cond(samples)` holds (`within` only bounds a hung test)."""
    deadline = time.monotonic() + within
    while True:
        _, body = await fetch(r.socket)
        samples, types = parse(body)
        if cond(samples):  # type: ignore[operator]
            return samples, types, body
        if time.monotonic() > deadline:
            raise AssertionError("metrics never showed the expected state:\n" + body[:4000])
        await asyncio.sleep(0.1)


V1, V2, V3 = "127.0.0.100", "127.0.0.101", "127.0.0.102"
REFUSED = {"reason": "refused"}


async def test_metrics_follow_a_real_down_and_back(running: Running, webs: list[Web]) -> None:
    w0, w1, w2 = (w.port for w in webs)
    closed = running.closed

    def settled(s: Samples) -> bool:
        return (
            virtual(s, "lvsmon_virtual_reals_up", V1) == 2
            and virtual(s, "lvsmon_virtual_fallback_active", V2) == 1
            and (real(s, "lvsmon_real_check_failures_total", V2, closed, **REFUSED) or 0) >= 1
            and (real(s, "lvsmon_real_check_failures_total", V2, w2, reason="response") or 0) >= 1
        )

    s, types, body = await metrics_until(running, settled)
    promtool(body)
    content_type, tcp_body = await fetch(port=running.port)  # what Prometheus scrapes
    assert content_type == CONTENT_TYPE
    promtool(tcp_body)

    # every family, with its type (the parser names a counter without its _total)
    for name, (kind, _) in FAMILIES.items():
        assert types.get(name.removesuffix("_total") if kind == "counter" else name) == kind, name
    assert real(s, "lvsmon_real_up", V1, w0) == 1
    assert real(s, "lvsmon_real_weight", V1, w0) == 1
    assert real(s, "lvsmon_real_up", V2, closed) == 0
    assert real(s, "lvsmon_real_maintenance", V1, w0) == 0
    assert real(s, "lvsmon_real_drained", V1, w0) == 0
    assert virtual(s, "lvsmon_virtual_reals", V2) == 2
    assert virtual(s, "lvsmon_virtual_reals_up", V2) == 0
    assert virtual(s, "lvsmon_virtual_fallback_active", V1) == 0
    assert virtual(s, "lvsmon_virtual_fallback_active", V3) == 0  # no fallback configured
    # one check job feeds V1's and V3's w0: the same figures, and 4 jobs in all
    assert one(s, "lvsmon_check_jobs") == 4
    count = real(s, "lvsmon_check_duration_seconds_count", V1, w0)
    assert count and count == real(s, "lvsmon_check_duration_seconds_count", V3, w0)
    assert real(s, "lvsmon_check_duration_seconds_bucket", V1, w0, le="+Inf") == count
    # a healthy real's checks are counted though they change nothing (the steady fast path)
    await metrics_until(
        running, lambda t: (real(t, "lvsmon_check_duration_seconds_count", V1, w0) or 0) > count
    )
    assert real(s, "lvsmon_real_check_failures_total", V1, w0, **REFUSED) is None
    assert (one(s, "lvsmon_checks_total") or 0) >= 4
    assert (one(s, "lvsmon_check_failures_total") or 0) >= 2
    assert one(s, "lvsmon_check_start_lateness_seconds", quantile="0.99") is not None
    # the admission window: nothing held back on a daemon that is on time
    assert one(s, "lvsmon_check_slots_deferred_total") == 0
    assert (one(s, "lvsmon_check_admission_window") or 0) >= 256
    assert (one(s, "lvsmon_reconcile_ops_total", result="applied") or 0) >= 1
    assert one(s, "lvsmon_reconcile_ops_total", result="failed") == 0
    assert one(s, "lvsmon_alert_mails_total", result="dropped") == 0
    assert one(s, "lvsmon_events_dropped_total") == 0
    ups = real(s, "lvsmon_real_transitions_total", V1, w1, direction="up") or 0
    downs = real(s, "lvsmon_real_transitions_total", V1, w1, direction="down")
    assert downs == 0

    # w1 stops: its connections are refused, it goes down
    await webs[1].stop()
    s, _, body = await metrics_until(running, lambda t: real(t, "lvsmon_real_up", V1, w1) == 0)
    assert real(s, "lvsmon_real_transitions_total", V1, w1, direction="down") == 1
    assert (real(s, "lvsmon_real_check_failures_total", V1, w1, **REFUSED) or 0) >= 1
    assert virtual(s, "lvsmon_virtual_reals_up", V1) == 1
    promtool(body)

    # and comes back
    await webs[1].start()
    s, _, body = await metrics_until(running, lambda t: real(t, "lvsmon_real_up", V1, w1) == 1)
    assert real(s, "lvsmon_real_transitions_total", V1, w1, direction="up") == ups + 1
    assert real(s, "lvsmon_real_transitions_total", V1, w1, direction="down") == 1
    assert virtual(s, "lvsmon_virtual_reals_up", V1) == 2
    promtool(body)

    # reloads: a broken file is rejected, the good one applied
    before = one(s, "lvsmon_config_last_reload_success_timestamp_seconds") or 0
    good = running.config.read_text()
    running.config.write_text(good + "virtual=127.0.0.103:80\n\tnonsense=yes\n")
    assert await running.daemon.reload() is False
    running.config.write_text(good.replace("checktimeout=2", "checktimeout=3"))
    assert await running.daemon.reload() is True
    _, body = await fetch(running.socket)
    s, _ = parse(body)
    assert one(s, "lvsmon_config_reloads_total", result="rejected") == 1
    assert one(s, "lvsmon_config_reloads_total", result="ok") == 1
    assert (one(s, "lvsmon_config_last_reload_success_timestamp_seconds") or 0) > before
    promtool(body)


async def test_a_build_lets_checks_run_and_is_shared(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every real a slice of its own, and the event loop runs between any two
    monkeypatch.setattr(metrics, "SLICE", 1)
    monkeypatch.setattr(metrics, "HOLD_S", 0.0)
    exporter = metrics.Exporter(running.daemon)
    bodies = await asyncio.gather(*(exporter.scrape() for _ in range(3)))
    assert bodies[0] is bodies[1] is bodies[2]  # the later scrapes waited for the first build
    body = b"".join(bodies[0]).decode()
    s, _ = parse(body)
    assert virtual(s, "lvsmon_virtual_reals", V1) == 2
    promtool(body)


def raw_get(sock: str, path: str, accept_encoding: str | None) -> tuple[dict[str, str], bytes]:
    """One HTTP/1.0 GET over the Unix socket, bytes as they come (no client decoding)."""
    head = f"GET {path} HTTP/1.0\r\nHost: lvsmon\r\n"
    if accept_encoding is not None:
        head += f"Accept-Encoding: {accept_encoding}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall((head + "\r\n").encode())
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    assert lines[0].split()[1] == "200", lines[0]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return headers, body


@pytest.mark.parametrize("accept", ["gzip", "deflate, gzip;q=1.0, *;q=0.5", "x-gzip"])
async def test_a_client_that_takes_gzip_gets_the_same_body_gzipped(
    running: Running, accept: str
) -> None:
    loop = asyncio.get_running_loop()
    _, plain = await loop.run_in_executor(None, raw_get, running.socket, "/metrics", None)
    headers, body = await loop.run_in_executor(None, raw_get, running.socket, "/metrics", accept)
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body) < len(plain) / 2
    text = gzip.decompress(body).decode()
    s, _ = parse(text)
    assert one(s, "lvsmon_check_jobs") == 4
    promtool(text)


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "deflate"])
async def test_a_client_that_does_not_take_gzip_gets_plain_text(
    running: Running, accept: str | None
) -> None:
    loop = asyncio.get_running_loop()
    headers, body = await loop.run_in_executor(None, raw_get, running.socket, "/metrics", accept)
    assert "content-encoding" not in headers
    assert int(headers["content-length"]) == len(body)
    s, _ = parse(body.decode())
    assert one(s, "lvsmon_check_jobs") == 4


async def test_gzip_is_made_once_per_build(running: Running) -> None:
    exporter = metrics.Exporter(running.daemon)
    first = await asyncio.gather(*(exporter.scrape_gzip() for _ in range(3)))
    assert first[0] is first[1] is first[2]  # one build, compressed once
    again = await exporter.scrape_gzip()
    assert again is not first[0]  # a later scrape: a new build, compressed anew


# ---- bodies built ahead of a scraper's beat --------------------------------------------------


@pytest.fixture
def quick_beat(monkeypatch: pytest.MonkeyPatch) -> float:
    """The beat machinery at a test's pace: a beat of 0.3 s is found after 5 scrapes."""
    monkeypatch.setattr(metrics, "FRESH_S", 0.5)
    monkeypatch.setattr(metrics, "PREBUILD_LEAD_S", 0.1)
    return 0.3


async def scrape_at(exporter: metrics.Exporter, gaps: list[float]) -> list[tuple[float, float]]:
    """Scrapes (gzip, as Prometheus) `gaps` apart: per scrape (asked, built), Unix time."""
    out = []
    for gap in gaps:
        asked = time.time()
        body = gzip.decompress((await exporter.serve(True))[0]).decode()
        built = one(parse(body)[0], "lvsmon_metrics_built_timestamp_seconds")
        assert built is not None
        out.append((asked, built))
        await asyncio.sleep(max(0.0, asked + gap - time.time()))
    return out


async def test_a_scraper_on_a_beat_gets_a_body_built_ahead(
    running: Running, quick_beat: float
) -> None:
    exporter = metrics.Exporter(running.daemon)
    served = await scrape_at(exporter, [quick_beat] * 10)
    # the first ones are built when asked; once the beat is known, before
    assert all(built >= asked - 0.002 for asked, built in served[:5])
    ahead = [asked - built for asked, built in served[6:]]
    assert all(0.02 < age <= metrics.FRESH_S for age in ahead), ahead
    assert exporter.built_ahead >= 4
    # and gzipped ahead too: the scrape only copies
    assert exporter._last is not None and exporter._last.gzipped is not None
    assert exporter._last.gzipped.done()
    await exporter.close()
    made = exporter.built_ahead
    await asyncio.sleep(2 * quick_beat)
    assert exporter.built_ahead == made  # closed: nothing built ahead any more


async def test_a_client_off_the_beat_gets_a_body_built_for_it(
    running: Running, quick_beat: float
) -> None:
    exporter = metrics.Exporter(running.daemon)
    served = await scrape_at(exporter, [0.1, 0.5, 0.2, 0.6, 0.1, 0.45, 0.3])
    assert exporter.built_ahead == 0
    assert all(built >= asked - 0.002 for asked, built in served)


async def test_off_the_beat_a_body_built_ahead_is_not_served_stale(
    running: Running, quick_beat: float
) -> None:
    exporter = metrics.Exporter(running.daemon)
    await scrape_at(exporter, [quick_beat] * 6)  # the beat is known, a body is built ahead
    await asyncio.sleep(metrics.FRESH_S + 0.2)  # the scraper missed its beat
    asked = time.time()
    body = gzip.decompress((await exporter.serve(True))[0]).decode()
    built = one(parse(body)[0], "lvsmon_metrics_built_timestamp_seconds")
    assert built is not None and built >= asked - 0.002
    await exporter.close()
