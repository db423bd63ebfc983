"""A timeout on the prober says whether the server had its turn (issue 21, class 2).

The prober reads every ready socket before it looks at a deadline, so a timeout means nothing
the server sent is waiting unread; `CheckResult.peer_turn_s` says how long the server had had
its turn (since our last bytes went out). The lag rule (lvsmon/engine/lag.py) forgives a late
timeout only when the server did not have its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.prober import DialoguePlan, ProbePlan, Prober
from lvsmon.engine.lag import LAG_SHARE, late_timeout

TIMEOUT = 1.0
Serve = Callable[[socket.socket, threading.Event], None]


class Greeted(Dialogue):
    """The server speaks first; any bytes are a pass."""

    step = "greeting"

    def feed(self, data: bytes) -> Outcome:
        return CheckResult(True, "greeted")


class Asks(Dialogue):
    """We speak first; a whole line is a pass."""

    step = "answer"

    def opening(self) -> bytes:
        return b"ask\n"

    def feed(self, data: bytes) -> Outcome:
        return CheckResult(True, "answered") if data.endswith(b"\n") else None


class GreetedThenAsks(Dialogue):
    """The server greets, we ask, a whole line answers."""

    step = "greeting"

    def feed(self, data: bytes) -> Outcome:
        if self.step == "greeting":
            self.step = "answer"
            return b"ask\n"
        return CheckResult(True, "answered") if data.endswith(b"\n") else None


@contextlib.contextmanager
def server(serve: Serve, backlog: int = 2048) -> Iterator[int]:
    """A loopback listener whose connections `serve(conn)` handles, each in a thread."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            conn.close()


def greet(conn: socket.socket, stop: threading.Event) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(b"hi\n")


def trickle(conn: socket.socket, stop: threading.Event) -> None:
    with contextlib.suppress(OSError):
        conn.recv(100)
        while not stop.wait(0.05):
            conn.sendall(b"x")  # never a whole line


def greet_and_answer(conn: socket.socket, stop: threading.Event) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(b"hi\n")
        conn.recv(100)
        conn.sendall(b"ok\n")


def spec_with_timeout(port: int) -> CheckSpec:
    return CheckSpec(
        kind="negotiate", service="simpletcp", host="127.0.0.1", port=port, timeout=TIMEOUT
    )


async def probe_all(
    prober: Prober, plans: Sequence[ProbePlan], stall: float = 0.0
) -> list[CheckResult]:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in plans]
    for p, future in zip(plans, futures, strict=True):
        prober.start(p, future.set_result)
    if stall:
        time.sleep(stall)  # noqa: ASYNC251  (the loop stalls: a CPU hog, a blocking call)
    async with asyncio.timeout(TIMEOUT * 10):
        return list(await asyncio.gather(*futures))


async def test_a_server_that_trickles_had_its_turn() -> None:
    with server(trickle) as port:
        prober = Prober(asyncio.get_running_loop())
        try:
            p = DialoguePlan(spec_with_timeout(port), socket.AF_INET, ("127.0.0.1", port), Asks)
            (result,) = await probe_all(prober, [p])
        finally:
            prober.close()
    assert result.timed_out and result.received > 0
    assert result.peer_turn_s >= TIMEOUT * 0.9
    # however late the daemon was meanwhile, that timeout is the server's
    assert not late_timeout(lost=TIMEOUT, timeout=TIMEOUT, received=result.received,
                            peer_turn=result.peer_turn_s)  # fmt: skip


async def test_a_request_sent_late_leaves_the_server_no_turn() -> None:
    """The loop stalls while the server's greeting waits: our request goes out after the
    deadline, the server had no time, the timeout stays the daemon's (unknown)."""
    with server(greet_and_answer) as port:
        prober = Prober(asyncio.get_running_loop())
        try:
            addr = ("127.0.0.1", port)
            p = DialoguePlan(spec_with_timeout(port), socket.AF_INET, addr, GreetedThenAsks)
            (result,) = await probe_all(prober, [p], stall=TIMEOUT * 1.5)
        finally:
            prober.close()
    assert result.timed_out and result.reason == "timeout after 1s during answer"
    assert result.peer_turn_s < TIMEOUT * (1 - LAG_SHARE)
    assert late_timeout(lost=TIMEOUT * 1.5, timeout=TIMEOUT, received=0,
                        peer_turn=result.peer_turn_s)  # fmt: skip


async def test_answers_a_stall_left_waiting_are_read_before_any_deadline() -> None:
    """More sockets ready after a stall than one epoll batch (1,024): every answer waiting is
    read before a deadline is looked at, none is timed out."""
    count = 1100
    with server(greet) as port:
        prober = Prober(asyncio.get_running_loop())
        try:
            plans = [
                DialoguePlan(spec_with_timeout(port), socket.AF_INET, ("127.0.0.1", port), Greeted)
                for _ in range(count)
            ]
            results = await probe_all(prober, plans, stall=TIMEOUT * 1.5)
        finally:
            prober.close()
    assert [r.reason for r in results if not r.ok] == []
