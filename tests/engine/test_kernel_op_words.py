"""What each subscriber makes of the reconciler's kernel ops, pinned byte for byte: the log line
(ldirectord's wording), the /events JSON, and the mail change. A run through the engine with a
real going down, its fallback, a refused op and its retry, drift repaired, and the purge at stop."""

from __future__ import annotations

import json
import logging
import re

import pytest

from lvsmon.alerts.changes import change_of
from lvsmon.api.eventfeed import EventFeed
from lvsmon.engine.engine import Engine
from lvsmon.engine.eventlog import LOGGED, log_event
from lvsmon.engine.events import Event, EventBus, KernelOp
from lvsmon.ipvs.model import ServiceKey
from lvsmon.ipvs.ops import DeleteDest
from tests.helpers import wait_for

from .conftest import cfg
from .faulty import FaultyBackend
from .test_events import CONFIG, Scripted

V = ServiceKey.inet("tcp", "127.0.0.100", 80)
# the log lines of kernel ops (not those of health: "Real server ...", "Soft failure ...")
KERNEL_WORDS = re.compile(
    r"(failed: |Repaired drift: )?(Added|Deleted|Purged|Changed|Readd|Quies|Resto)"
)

LOG = [
    ("ERROR", "failed: Deleted real server: 127.0.0.1:8001 (127.0.0.100:80): injected failure"),
    ("INFO", "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to 1)"),
    ("INFO", "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to 1)"),
    ("INFO", "Added real server: 127.0.0.1:8001 (127.0.0.100:80) (Weight set to 1)"),
    ("INFO", "Added real server: 127.0.0.1:8002 (127.0.0.100:80) (Weight set to 3)"),
    ("INFO", "Added virtual server: 127.0.0.100:80"),
    ("INFO", "Deleted fallback server: 127.0.0.1:9000 (127.0.0.100:80)"),
    ("INFO", "Deleted real server: 127.0.0.1:8001 (127.0.0.100:80)"),
    ("INFO", "Deleted real server: 127.0.0.1:8002 (127.0.0.100:80)"),
    ("INFO", "Purged virtual server (stop): 127.0.0.100:80"),
    (
        "INFO",
        "Repaired drift: Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to 1)",
    ),
    ("INFO", "Repaired drift: Added virtual server: 127.0.0.100:80"),
]

FEED = [
    '{"type": "KernelOp", "op": {"kind": "AddDest", "virtual": "tcp:127.0.0.100:80", "real": '
    '"127.0.0.1:8001", "ipvsadm": "-a -t 127.0.0.100:80 -r 127.0.0.1:8001 -m -w 1 -x 0 -y '
    '0"}, "text": "Added real server: 127.0.0.1:8001 (127.0.0.100:80) (Weight set to 1)", '
    '"error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "AddDest", "virtual": "tcp:127.0.0.100:80", "real": '
    '"127.0.0.1:8002", "ipvsadm": "-a -t 127.0.0.100:80 -r 127.0.0.1:8002 -m -w 3 -x 0 -y '
    '0"}, "text": "Added real server: 127.0.0.1:8002 (127.0.0.100:80) (Weight set to 3)", '
    '"error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "AddDest", "virtual": "tcp:127.0.0.100:80", "real": '
    '"127.0.0.1:9000", "ipvsadm": "-a -t 127.0.0.100:80 -r 127.0.0.1:9000 -m -w 1 -x 0 -y '
    '0"}, "text": "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to '
    '1)", "error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "AddDest", "virtual": "tcp:127.0.0.100:80", "real": '
    '"127.0.0.1:9000", "ipvsadm": "-a -t 127.0.0.100:80 -r 127.0.0.1:9000 -m -w 1 -x 0 -y '
    '0"}, "text": "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to '
    '1)", "error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "AddDest", "virtual": "tcp:127.0.0.100:80", "real": '
    '"127.0.0.1:9000", "ipvsadm": "-a -t 127.0.0.100:80 -r 127.0.0.1:9000 -m -w 1 -x 0 -y '
    '0"}, "text": "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to '
    '1)", "error": null, "drift": true}',
    '{"type": "KernelOp", "op": {"kind": "AddService", "virtual": "tcp:127.0.0.100:80", '
    '"real": null, "ipvsadm": "-A -t 127.0.0.100:80 -s wrr"}, "text": "Added virtual server: '
    '127.0.0.100:80", "error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "AddService", "virtual": "tcp:127.0.0.100:80", '
    '"real": null, "ipvsadm": "-A -t 127.0.0.100:80 -s wrr"}, "text": "Added virtual server: '
    '127.0.0.100:80", "error": null, "drift": true}',
    '{"type": "KernelOp", "op": {"kind": "DeleteDest", "virtual": "tcp:127.0.0.100:80", '
    '"real": "127.0.0.1:8001", "ipvsadm": "-d -t 127.0.0.100:80 -r 127.0.0.1:8001"}, "text": '
    '"Deleted real server: 127.0.0.1:8001 (127.0.0.100:80)", "error": "injected failure", '
    '"drift": false}',
    '{"type": "KernelOp", "op": {"kind": "DeleteDest", "virtual": "tcp:127.0.0.100:80", '
    '"real": "127.0.0.1:8001", "ipvsadm": "-d -t 127.0.0.100:80 -r 127.0.0.1:8001"}, "text": '
    '"Deleted real server: 127.0.0.1:8001 (127.0.0.100:80)", "error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "DeleteDest", "virtual": "tcp:127.0.0.100:80", '
    '"real": "127.0.0.1:8002", "ipvsadm": "-d -t 127.0.0.100:80 -r 127.0.0.1:8002"}, "text": '
    '"Deleted real server: 127.0.0.1:8002 (127.0.0.100:80)", "error": null, "drift": false}',
    '{"type": "KernelOp", "op": {"kind": "DeleteDest", "virtual": "tcp:127.0.0.100:80", '
    '"real": "127.0.0.1:9000", "ipvsadm": "-d -t 127.0.0.100:80 -r 127.0.0.1:9000"}, "text": '
    '"Deleted fallback server: 127.0.0.1:9000 (127.0.0.100:80)", "error": null, "drift": '
    "false}",
    '{"type": "KernelOp", "op": {"kind": "DeleteService", "virtual": "tcp:127.0.0.100:80", '
    '"real": null, "ipvsadm": "-D -t 127.0.0.100:80"}, "text": "Purged virtual server '
    '(stop): 127.0.0.100:80", "error": null, "drift": false}',
]

MAIL = [
    ("down", "Deleted real server: 127.0.0.1:8001 (127.0.0.100:80)", "127.0.0.1:8001"),
    ("down", "Deleted real server: 127.0.0.1:8002 (127.0.0.100:80)", "127.0.0.1:8002"),
    ("fallback", "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to 1)", ""),
    ("fallback", "Added fallback server: 127.0.0.1:9000 (127.0.0.100:80) (Weight set to 1)", ""),
    ("fallback", "Deleted fallback server: 127.0.0.1:9000 (127.0.0.100:80)", ""),
    (
        "up",
        "Added real server: 127.0.0.1:8001 (127.0.0.100:80) (Weight set to 1)",
        "127.0.0.1:8001",
    ),
    (
        "up",
        "Added real server: 127.0.0.1:8002 (127.0.0.100:80) (Weight set to 3)",
        "127.0.0.1:8002",
    ),
]


async def test_every_subscriber_words_kernel_ops_as_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lvsmon")
    pool, backend, bus, feed = Scripted(), FaultyBackend(), EventBus(), EventFeed(replay=1000)
    events: list[Event] = []
    bus.subscribe("log", log_event, kinds=LOGGED)
    bus.subscribe("feed", feed.on_event)
    bus.subscribe("test", events.append)
    engine = Engine(cfg(CONFIG), backend, run_check=pool.check, events=bus, resync_s=0.2)
    await bus.start()
    await engine.start()  # the empty table: the service and its fallback
    await engine.wait_programmed()  # the reals up, the fallback out
    job_of = engine.plan.job_of
    ref1, ref2 = sorted(job_of)
    # a refused delete, retried from a fresh dump
    backend.refuse, backend.refusals_left = (lambda op: isinstance(op, DeleteDest)), 1
    pool.up[8001] = False
    for _ in range(2):
        await engine.run_once(job_of[ref1])
    await wait_for(lambda: ports(backend) == {8002} and engine.reconciler.retry_at is None)
    pool.up[8002] = False  # the last real down: the fallback again
    for _ in range(2):
        await engine.run_once(job_of[ref2])
    await wait_for(lambda: ports(backend) == {9000})
    # ipvsadm -C behind lvsmon's back: repaired as drift
    backend.table.clear()
    await wait_for(lambda: any(e.drift for e in ops_of(events)) and ports(backend) == {9000})
    await engine.stop(clean=True)
    await bus.stop()

    logged = sorted(
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.module == "eventlog" and KERNEL_WORDS.match(r.getMessage())
    )
    assert logged == LOG
    frames = [f.decode() for f in feed.recent if b"event: KernelOp" in f]
    data = sorted(
        re.sub(r'"seq": \d+, "at": [0-9.]+, ', "", f.split("data: ", 1)[1].strip()) for f in frames
    )
    assert data == FEED
    for text in data:  # what the encoder wrote is what a client parses
        assert json.dumps(json.loads(text)) == text
    mails = sorted(
        (c.kind, c.subject, c.real) for e in ops_of(events) if (c := change_of(e, 0.0)) is not None
    )
    assert mails == MAIL


def ports(backend: FaultyBackend) -> set[int]:
    service = backend.table.get(V)
    return set() if service is None else {d.port for d in service.dests}


def ops_of(events: list[Event]) -> list[KernelOp]:
    return [e for e in events if isinstance(e, KernelOp)]
