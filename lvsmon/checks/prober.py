"""Plain-TCP checks — `connect`, and every negotiate dialogue without TLS — on one epoll.

Why not one asyncio task per check: at 10,000 checks a second the machinery around a check (a
task, futures, a selector registration and its removal, a timer for the deadline) cost more CPU
than the check itself: the whole daemon spent 135 µs per check and topped out at 7,300 checks/s on
one core. Here a check is one small object. Its non-blocking socket is registered once in a
private epoll whose readiness one loop reader drains in batches; closing the socket is its removal
from the epoll; deadlines wait in FIFO queues, one per distinct timeout, so arming and expiring
them costs O(1) per check and one loop timer in all. The result goes to a callback (the engine's
hot path) or resolves a future (`probe`, which `run_check` awaits, so the check tests exercise
this same code).

After the connect, the conversation is a sans-IO `Dialogue` (http, pop, imap, nntp, sip over TCP,
simpletcp): the same object the TLS driver (`stream.converse`) runs, so both give the same reasons
("connect: connection refused", "http: status 503", "timeout after 3s during imap login"). A spec
this cannot run (TLS, a host name to resolve, UDP, a library's protocol) is `None` from
`registry.plan_probe` and goes the general way. The prober knows no service: a check module
builds its ProbePlan (its `probe_plan`), the registry finds it.

A peer's bytes are untrusted: each recv takes at most 64 KiB and costs the probe one subtraction
from the dialogue's `budget`; past it the check is down ("imap login: response too large (over
256 KiB)") and the rest is never fed, whatever the peer streams before the deadline.

One prober per event loop (`prober_for`): the check runner holds it for its life
(`hold_prober`/`release_prober`), and the checks that run as tasks use the same one.

Its `fds` is the loop's budget of descriptors for the checks (lvsmon/checks/fds.py), shared with
the check runner's gate: a probe takes one while it has a socket; past the budget, starts wait in
its FIFO, and a probe's deadline starts when it gets its descriptor, so that a wait behind
silent reals never times out a healthy one.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import functools
import os
import select
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, describe_error
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.fds import HELD, FdBudget, check_budget, fd_limit
from lvsmon.checks.step import Step
from lvsmon.checks.viapath import Route

ProbeDone = Callable[[CheckResult], None]
DialogueFactory = Callable[[], Dialogue]
_T = TypeVar("_T")

_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_CONNECTING: Final = (errno.EINPROGRESS, errno.EALREADY)
_CONNECTED: Final = (0, errno.EISCONN)
_CONNECTED_REASON: Final = "connect: connected"
_STREAM: Final = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_BATCH: Final = 1024  # events taken from the epoll per poll
MAX_IN_FLIGHT: Final = 16384  # the budget's bound whatever RLIMIT_NOFILE allows


class ProbePlan:
    """What one check needs at run time, computed once per check job; this class's own plans
    are connect checks (no dialogue: the check is done once connected).

    Kept per real at 10,000 reals and more: three slots. The deadline is the spec's `timeout`
    (read through the spec, one load more per check); a dialogue factory is DialoguePlan's own
    slot (HttpPlan builds its dialogue from its own slots and keeps none); a checkpath=vip
    plan's Route sits in `addr`, which it replaces: the address connected to is the one the
    Route steers to (three slots of 8 bytes less a plan than `timeout`, `via`, `dialogue`)."""

    __slots__ = ("addr", "family", "spec")

    def __init__(self, spec: CheckSpec, family: int, addr: tuple[str, int] | Route | None) -> None:
        self.spec = spec
        self.family = family
        # None: the spec's host and port (one tuple less per real); a Route: checkpath=vip, the
        # connect is steered through the real's probe service (viapath.py); a plan made from
        # another keeps that one's Route (and what it caches)
        if spec.checkpath == "vip" and not isinstance(addr, Route):
            addr = Route(spec)
        self.addr = addr

    @property
    def via(self) -> Route | None:
        """The Route of a checkpath=vip plan, else None (off the prober's per-check path)."""
        addr = self.addr
        return addr if isinstance(addr, Route) else None

    def make_dialogue(self) -> Dialogue | None:
        """The dialogue of one check, once connected; None: a connect check, done then. A
        subclass builds it from its own slots (http: no closure per real)."""
        return None


class DialoguePlan(ProbePlan):
    """A plan whose dialogue comes from a factory called once per check (the line protocols,
    a task's own dialogue)."""

    __slots__ = ("dialogue",)

    def __init__(
        self,
        spec: CheckSpec,
        family: int,
        addr: tuple[str, int] | Route | None,
        dialogue: DialogueFactory,
    ) -> None:
        super().__init__(spec, family, addr)
        self.dialogue = dialogue

    def make_dialogue(self) -> Dialogue:
        return self.dialogue()


def _no_loss(_now: float) -> float:
    return 0.0


def _os_reason(step: str, err: int) -> str:
    return f"{step}: {describe_error(OSError(err, os.strerror(err)))}"


class _Probe:
    __slots__ = (
        "arg",
        "deadline",
        "dialogue",
        "done",
        "ended_in",
        "held",
        "pending",
        "plan",
        "room",
        "sock",
        "started",
        "turn",
        "turn_lost",
    )

    def __init__(
        self, plan: ProbePlan, done: Callable[..., None], arg: object, started: float
    ) -> None:
        self.plan = plan
        self.done = done
        self.arg = arg  # None: done(result), else done(arg, result)
        self.started = started
        self.deadline = started + plan.spec.timeout  # set again if it waited for a descriptor
        # since when the peer has had its turn: the start (the kernel connects without us; a
        # server that speaks first needs nothing of ours), then the moment our last bytes went
        # out; and the time the loop had lost by then (Prober.lost). At a timeout they tell
        # whether the server had its time while the daemon was on time (lag.py)
        self.turn = started
        self.turn_lost = 0.0
        self.held = False  # it holds one of the budget's descriptors
        # the C type under socket.socket: its constructor and close() are C calls, where the
        # subclass adds two Python frames to each (some 1.5 µs a check of 20 in Python)
        self.sock: _socket.socket | None = None  # None once finished
        self.dialogue: Dialogue | None = None  # set once connected
        self.pending = b""  # bytes the socket has not taken yet
        self.room = 0  # the peer's bytes the dialogue may still be fed (its budget, once connected)
        self.ended_in = ""  # the stage it finished in, once the dialogue is dropped

    @property
    def stage(self) -> str:
        """What a deadline names: "connect", then the dialogue's step."""
        if self.ended_in:
            return self.ended_in
        return "connect" if self.dialogue is None else self.dialogue.step


class Prober:
    """Runs probes on `loop`; one per loop (see `prober_for`)."""

    holders = 0  # long-lived users (hold_prober): the last to let go closes it

    def __init__(self, loop: asyncio.AbstractEventLoop, max_in_flight: int | None = None) -> None:
        """`max_in_flight`: the descriptors its budget holds; by default what RLIMIT_NOFILE
        leaves the checks (`fds.check_budget`), at most MAX_IN_FLIGHT."""
        self._loop = loop
        self._epoll = select.epoll()
        self._by_fd: dict[int, _Probe] = {}
        self._by_fd_peak = 0  # its most entries since it was last made anew (see _compact)
        self._queues: dict[float, deque[_Probe]] = {}  # by timeout: deadlines in start order
        if max_in_flight is None:
            max_in_flight = min(MAX_IN_FLIGHT, check_budget(fd_limit()))
        self.fds = FdBudget(max_in_flight)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._clock = time.monotonic
        # the time the loop has lost to lag up to a moment (the check runner sets its
        # LagMonitor.lost_at): a server's turn is counted only while the daemon was on time
        self.lost: Callable[[float], float] = _no_loss
        loop.add_reader(self._epoll.fileno(), self._on_ready)

    @property
    def in_flight(self) -> int:
        return len(self._by_fd)

    def close(self) -> None:
        """Abort everything in flight (their callbacks are not called) and release the epoll."""
        for probe in list(self._by_fd.values()):
            self._drop(probe)
        self.fds.queue.clear()
        if self._timer is not None:
            self._timer.cancel()
        if not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()

    # ---- starting -----------------------------------------------------------------------------

    def start(self, plan: ProbePlan, done: ProbeDone, *, metered: bool = True) -> _Probe:
        """Start one check; `done` gets its result exactly once, unless it is aborted. It may be
        called before this returns (a refused connect on loopback is known at once). Past the
        budget it waits for a descriptor, and its deadline runs from then on. `metered=False`:
        its descriptor is counted already (a check task's, `fds.HELD`)."""
        return self._start(plan, done, None, metered)

    def start_with(
        self, plan: ProbePlan, done: Callable[[_T, CheckResult], None], arg: _T
    ) -> _Probe:
        """start(), the result going to `done(arg, result)`: one callback shared by many
        callers (the check runner's, `arg` its job) instead of a closure or a partial each."""
        return self._start(plan, done, arg, True)

    def _start(
        self, plan: ProbePlan, done: Callable[..., None], arg: object, metered: bool
    ) -> _Probe:
        probe = _Probe(plan, done, arg, self._clock())
        probe.turn_lost = self.lost(probe.started)
        if metered:
            fds = self.fds
            if fds.queue or fds.used >= fds.total:
                fds.wait(1, functools.partial(self._granted, probe))
                return probe
            fds.used += 1
            probe.held = True
        self._begin(probe)
        return probe

    def _begin(self, probe: _Probe) -> None:
        """Arm its deadline, then connect."""
        timeout = probe.plan.spec.timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        queue.append(probe)
        if probe.deadline < self._timer_at:
            self._arm(probe.deadline)
        self._connect(probe)

    def _granted(self, probe: _Probe) -> bool:
        """A waiting probe got its descriptor: its deadline runs from now."""
        if probe.done is _ignore:  # aborted while it waited
            return False
        probe.held = True
        probe.started = now = self._clock()
        probe.deadline = now + probe.plan.spec.timeout
        self._take_turn(probe, now)
        self._begin(probe)
        return True

    def abort(self, probe: _Probe) -> None:
        """Stop a probe without a result (its caller gave up)."""
        self._drop(probe)
        probe.done = _ignore
        probe.arg = None
        if self.fds.queue:
            self.fds.admit()

    def _connect(self, probe: _Probe) -> None:
        plan = probe.plan
        try:
            sock = _socket.socket(plan.family, _STREAM)
        except OSError as exc:
            self._finish(probe, CheckResult(False, _os_reason("connect", exc.errno or 0)))
            return
        probe.sock = sock
        via = plan.addr
        if via is None:
            spec = plan.spec
            addr = (spec.host, spec.port)
        elif isinstance(via, Route):
            try:
                addr = via.steer(sock, probe.started)
            except CheckFailed as exc:
                self._finish(probe, CheckResult(False, exc.reason))
                return
        else:
            addr = via
        err = sock.connect_ex(addr)
        if err in _CONNECTING:
            # on loopback and a LAN the handshake is usually done by now: asking again saves an
            # epoll round trip for most checks
            err = sock.connect_ex(addr)
        if err in _CONNECTING:
            self._register(probe, _OUT)
        elif err in _CONNECTED:
            self._connected(probe, register=True)
        else:
            self._finish(probe, CheckResult(False, _os_reason("connect", err)))

    def _register(self, probe: _Probe, events: int) -> None:
        sock = probe.sock
        assert sock is not None
        fd = sock.fileno()
        by_fd = self._by_fd
        by_fd[fd] = probe
        if len(by_fd) > self._by_fd_peak:
            self._by_fd_peak = len(by_fd)
        self._epoll.register(fd, events)

    def _connected(self, probe: _Probe, *, register: bool) -> None:
        plan = probe.plan
        sock = probe.sock
        assert sock is not None
        dialogue = plan.make_dialogue()
        if dialogue is None:
            self._finish(probe, CheckResult(True, _CONNECTED_REASON))
            return
        probe.dialogue = dialogue
        probe.room = dialogue.budget
        opening = dialogue.opening()
        if register:
            self._register(probe, _IN)
        if opening and not self._send(probe, opening):
            return
        if dialogue.shut_wr and not probe.pending:
            self._shut_wr(probe)
        if not register or probe.pending:
            self._epoll.modify(sock.fileno(), _IN | _OUT if probe.pending else _IN)

    def _send(self, probe: _Probe, data: bytes) -> bool:
        """Send what the socket takes now, queue the rest; False if the probe finished."""
        sock = probe.sock
        assert sock is not None
        if probe.pending:
            probe.pending += data
            return True
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._finish(probe, CheckResult(False, _os_reason(probe.stage, exc.errno or 0)))
            return False
        probe.pending = data[sent:]
        if not probe.pending:
            self._take_turn(probe, self._clock())
        return True

    def _shut_wr(self, probe: _Probe) -> None:
        sock = probe.sock
        assert sock is not None
        with contextlib.suppress(OSError):  # the read side tells what happened
            sock.shutdown(socket.SHUT_WR)

    # ---- events -------------------------------------------------------------------------------

    def _on_ready(self) -> None:
        self._handle_ready()
        self._expire(self._clock())
        if self._by_fd_peak > 1024 and len(self._by_fd) * 8 < self._by_fd_peak:
            # a dict never gives back its table: the start-up's first round (every check in
            # flight at once) left one of 10,000 entries for the ten or so in flight since
            self._by_fd = dict(self._by_fd)
            self._by_fd_peak = len(self._by_fd)

    def _handle_ready(self) -> None:
        """Every socket that is ready now, before any deadline is looked at: after a stall an
        answer waiting in a socket is taken, never timed out (a timeout then means the server
        had its turn and sent nothing that ended the check)."""
        by_fd = self._by_fd
        while True:
            ready = self._epoll.poll(0, _BATCH)
            for fd, events in ready:
                probe = by_fd.get(fd)
                if probe is None:
                    continue
                if probe.dialogue is None:
                    self._on_connect_ready(probe)
                elif probe.pending and events & _OUT:
                    self._on_writable(probe)
                else:
                    self._on_readable(probe)
            if len(ready) < _BATCH:
                return

    def _on_connect_ready(self, probe: _Probe) -> None:
        sock = probe.sock
        assert sock is not None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._finish(probe, CheckResult(False, _os_reason("connect", err)))
        else:
            self._connected(probe, register=False)

    def _on_writable(self, probe: _Probe) -> None:
        sock, dialogue = probe.sock, probe.dialogue
        assert sock is not None and dialogue is not None
        try:
            sent = sock.send(probe.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(probe, CheckResult(False, _os_reason(probe.stage, exc.errno or 0)))
            return
        probe.pending = probe.pending[sent:]
        if not probe.pending:
            self._take_turn(probe, self._clock())
            if dialogue.shut_wr:
                self._shut_wr(probe)
            self._epoll.modify(sock.fileno(), _IN)

    def _on_readable(self, probe: _Probe) -> None:
        sock, dialogue = probe.sock, probe.dialogue
        assert sock is not None and dialogue is not None
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(probe, CheckResult(False, _os_reason(probe.stage, exc.errno or 0)))
            return
        # one subtraction per recv holds the check to its budget, whatever the peer streams
        room = probe.room = probe.room - len(data)
        if room < 0:
            self._finish(probe, dialogue.over_budget())
            return
        outcome = dialogue.feed(data) if data else dialogue.feed_eof()
        if outcome is None:
            return
        if isinstance(outcome, bytes):
            if outcome and self._send(probe, outcome) and probe.pending:
                self._epoll.modify(sock.fileno(), _IN | _OUT)
            return
        if dialogue.farewell:
            with contextlib.suppress(OSError):  # a courtesy: the verdict stands
                sock.send(dialogue.farewell)
        self._finish(probe, outcome)

    # ---- ending -------------------------------------------------------------------------------

    def _drop(self, probe: _Probe) -> None:
        """Close its socket and give its descriptor back (waiters are admitted by the caller,
        once the probe's result is out)."""
        if probe.held:
            probe.held = False
            self.fds.used -= 1
        sock = probe.sock
        if sock is None:
            return
        probe.sock = None
        fd = sock.fileno()
        if self._by_fd.get(fd) is probe:
            del self._by_fd[fd]
        sock.close()  # also takes it out of the epoll

    def _finish(self, probe: _Probe, result: CheckResult) -> None:
        self._drop(probe)
        # the peer's bytes it was fed, from its budget's countdown (the lag rule reads them)
        dialogue = probe.dialogue
        received = 0 if dialogue is None else dialogue.budget - probe.room
        # it waits in its deadline queue until those started before it are done: keep it small
        probe.ended_in = probe.stage
        probe.dialogue = None
        probe.pending = b""
        done, probe.done = probe.done, _ignore
        arg, probe.arg = probe.arg, None
        # out of its deadline queue now if it heads it, and the finished ones behind it: on a
        # LAN checks end in start order, and none waits out its timeout there (at 10,000 checks
        # a second and checktimeout=3 that was 30,000 finished probes kept)
        queue = self._queues.get(probe.plan.spec.timeout)
        if queue and queue[0] is probe:
            queue.popleft()
            while queue and queue[0].done is _ignore:
                queue.popleft()
        elapsed = self._clock() - probe.started
        result = CheckResult(
            result.ok,
            result.reason,
            elapsed,
            result.timed_out,
            received,
            result.peer_turn_s,
            result.cert_not_after,
        )
        if arg is None:
            done(result)
        else:
            done(arg, result)
        if self.fds.queue:
            self.fds.admit()

    def _expire(self, now: float) -> None:
        earliest = float("inf")
        for queue in self._queues.values():
            while queue:
                probe = queue[0]
                if probe.done is _ignore:
                    queue.popleft()  # finished long ago: its deadline no longer matters
                elif probe.deadline <= now:
                    queue.popleft()
                    self._time_out(probe)
                else:
                    earliest = min(earliest, probe.deadline)
                    break
        if earliest < self._timer_at or self._timer is None:
            self._arm(earliest)

    def _time_out(self, probe: _Probe) -> None:
        step = probe.stage
        reason = f"timeout after {probe.plan.spec.timeout:g}s during {step}"
        now = self._clock()
        # the server's turn, less what the loop lost meanwhile: a stall of the whole machine
        # (a paused VM, a suspend; a test's servers in the daemon's own loop) stops the server's
        # answer on its way in as well
        turn = (now - probe.turn) - (self.lost(now) - probe.turn_lost)
        self._finish(probe, CheckResult(False, reason, 0.0, True, peer_turn_s=max(0.0, turn)))

    def _take_turn(self, probe: _Probe, now: float) -> None:
        probe.turn = now
        probe.turn_lost = self.lost(now)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when != float("inf"):
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._handle_ready()  # what a stall left in the sockets first (asyncio runs I/O first, too)
        self._expire(self._clock())

    # ---- awaiting -----------------------------------------------------------------------------

    async def probe(self, plan: ProbePlan, step: Step | None = None) -> CheckResult:
        """One check as a coroutine; cancelling it aborts the probe and closes its socket, and
        leaves in `step` where it was."""
        future: asyncio.Future[CheckResult] = self._loop.create_future()

        def done(result: CheckResult) -> None:
            if not future.done():
                future.set_result(result)

        probe = self.start(plan, done, metered=not HELD.get())
        try:
            return await future
        finally:
            if step is not None:
                step.name = probe.stage
            if probe.done is not _ignore:
                self.abort(probe)


def _ignore(result: CheckResult) -> None:
    pass


_probers: dict[asyncio.AbstractEventLoop, Prober] = {}


def prober_for(loop: asyncio.AbstractEventLoop | None = None) -> Prober:
    """The prober of `loop` (the running loop by default), made on first use."""
    loop = loop or asyncio.get_running_loop()
    prober = _probers.get(loop)
    if prober is None:
        for old in [lp for lp in _probers if lp.is_closed()]:
            _probers.pop(old)._epoll.close()
        prober = _probers[loop] = Prober(loop)
    return prober


def hold_prober(loop: asyncio.AbstractEventLoop | None = None) -> Prober:
    """The loop's prober, for a user that lets go of it with `release_prober` (the check
    runner): it stays open until its last holder lets go."""
    prober = prober_for(loop)
    prober.holders += 1
    return prober


def release_prober(prober: Prober) -> None:
    """Let go of a held prober; the last holder closes it (what it has in flight is dropped
    without results) and the loop gets a new one on its next use."""
    prober.holders -= 1
    if prober.holders > 0:
        return
    prober.close()
    for loop in [lp for lp, p in _probers.items() if p is prober]:
        del _probers[loop]
