"""The event stream as JSON for clients: a ring of the last events (replayed to each new client
of `/events`) and one bounded queue per connected client.

A subscriber of the engine's EventBus like the log: it never waits. A client that does not read
fast enough loses its connection (its queue is full), never the daemon's time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import json
import time
from collections import deque
from typing import Any, cast

from lvsmon.addr import host_port
from lvsmon.engine.events import CheckDone, Event, KernelOp
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.planning import op_fields
from lvsmon.engine.wording import kernel_op_text
from lvsmon.ipvs.model import DestKey, ServiceKey

REPLAY = 500  # events replayed to a client that connects
CLIENT_QUEUE = 4096  # events a client may lag behind before it is cut off


def _plain(value: Any) -> Any:
    if isinstance(value, RealRef):
        return {"virtual": str(value.service), "real": host_port(value.address, value.port)}
    if isinstance(value, ServiceKey | DestKey):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(map(str, value))
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _kernel_op(event: KernelOp) -> dict[str, Any]:
    """A kernel op as /events has always shown it: the op (as `ipvsadm` would be told it, and
    the keys to filter on), ldirectord's words for it, its error, and whether it repaired drift
    (its wording facts, fallback and stopping, are in the words)."""
    return {
        "op": op_fields(event.op),
        "text": kernel_op_text(event),
        "error": event.error,
        "drift": event.drift,
    }


def event_json(event: Event, seq: int, at: float) -> dict[str, Any]:
    """One event as a JSON object: its type, a sequence number, when lvsmon saw it, its fields."""
    body = _kernel_op(event) if isinstance(event, KernelOp) else _plain(event)
    assert isinstance(body, dict)
    body.pop("at", None)
    return {"type": type(event).__name__, "seq": seq, "at": round(at, 3), **body}


class EventFeed:
    """Subscribe `feed.on_event` to the EventBus (all kinds but CheckDone)."""

    def __init__(self, replay: int = REPLAY) -> None:
        # the replay ring: frames, encoded once whatever the number of clients; while no client
        # follows, the events themselves (frozen), encoded only when one attaches: a start-up
        # of 37,000 reals emits some 75,000 events that nobody may ever read
        self._recent: deque[bytes | _Unsent] = deque(maxlen=replay)
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._seq = itertools.count(1)
        self.cut_off = 0  # clients disconnected for lagging

    @property
    def recent(self) -> deque[bytes]:
        """The replay ring, every frame encoded."""
        ring = self._recent
        if not all(isinstance(item, bytes) for item in ring):
            ring = deque(map(_frame, ring), maxlen=ring.maxlen)
            self._recent = ring
        return cast("deque[bytes]", ring)

    def on_event(self, event: Event) -> None:
        if isinstance(event, CheckDone):
            return
        unsent = (event, next(self._seq), getattr(event, "at", None) or time.time())
        if not self._clients:
            self._recent.append(unsent)
            return
        item = _frame(unsent)
        self._recent.append(item)
        for queue in list(self._clients):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self._clients.discard(queue)
                self.cut_off += 1
                # the client's reader sees None and ends its response
                queue.get_nowait()
                queue.put_nowait(None)

    def attach(self) -> tuple[list[bytes], asyncio.Queue[bytes | None]]:
        """A new client: the frames to replay, then its queue of live ones."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(queue)
        return list(self.recent), queue

    def detach(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._clients.discard(queue)

    def close(self) -> None:
        """End every client's stream (the daemon stops)."""
        for queue in list(self._clients):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._clients.clear()

    @property
    def clients(self) -> int:
        return len(self._clients)


_Unsent = tuple[Event, int, float]  # an event, its sequence number, when lvsmon saw it


def _frame(item: bytes | _Unsent) -> bytes:
    if isinstance(item, bytes):
        return item
    return sse_frame(event_json(*item))


def sse_frame(item: dict[str, Any]) -> bytes:
    return f"id: {item['seq']}\nevent: {item['type']}\ndata: {json.dumps(item)}\n\n".encode()
