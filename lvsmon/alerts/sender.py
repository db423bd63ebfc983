"""The e-mail alert part of the daemon: a subscriber of the engine's event stream.

Kernel changes (`KernelOp`, ldirectord's wording) and daemon phases (`PhaseChanged`) go into the
pure `AlertPolicy`, which decides what mail is due and when (coalescing window, reminders, rate
limit, `emailalertstatus`). One task of its own wakes when the next mail is due, renders it and
hands it to the `Outbox`, whose task sends with retries. Nothing here runs on the check loop or
the reconciler: the event stream gives this subscriber its own bounded queue, and a dead relay
costs an error line per failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from lvsmon.alerts.arpalert import arp_changes
from lvsmon.alerts.bgpalert import RouteAlerts
from lvsmon.alerts.certalert import cert_change
from lvsmon.alerts.changes import change_of, depool_change
from lvsmon.alerts.delivery import Outbox, SmtpSettings, default_sender
from lvsmon.alerts.policy import AlertPolicy, Mail, Relay
from lvsmon.alerts.render import render
from lvsmon.config.model import Config
from lvsmon.engine.events import (
    ArpConflict,
    ArpConflictCleared,
    CertificateExpiring,
    DepoolLimited,
    Event,
    KernelOp,
    PhaseChanged,
    RouteChanged,
)
from lvsmon.ipvs.model import ServiceKey

log = logging.getLogger("lvsmon")

SMTP_TIMEOUT_S = 30.0  # one deadline per delivery attempt (connect, TLS, AUTH, mail, QUIT)
RETRY_FIRST_S = 5.0  # the first retry after a failed attempt; the wait doubles up to:
RETRY_MAX_S = 60.0  # so a relay that comes back gets the waiting mails within a minute
GIVE_UP_S = 3600.0  # a mail not sent within an hour is dropped, with an error line
OUTBOX_CAP = 1000  # mails waiting per relay; one more drops the oldest, with an error line


def smtp_settings(config: Config, relay: Relay | None = None) -> SmtpSettings:
    """How to reach `relay` (the global `smtp` when None). A virtual may name its own relay, as in
    ldirectord; authentication and TLS are global lvsmon settings, the same for every relay."""
    s = config.settings
    host, port = relay if relay is not None else (s.smtp, s.smtpport)
    return SmtpSettings(
        host=host,
        port=port,
        user=s.smtpuser or "",
        password=s.smtppassword or "",
        tls=s.smtptls,
        timeout_s=SMTP_TIMEOUT_S,
        sender=default_sender(),
    )


KINDS = (
    KernelOp,
    PhaseChanged,
    DepoolLimited,
    ArpConflict,
    ArpConflictCleared,
    RouteChanged,
    CertificateExpiring,
)
"""The event kinds `Alerts` handles: its subscription's filter."""


class Alerts:
    """Turns events into mails; `__call__` is the event handler (cheap, never blocks)."""

    def __init__(
        self, config: Config, *, hostname: str | None = None, spawn: Spawn | None = None
    ) -> None:
        self._spawn = spawn or _create_task
        self.hostname = hostname or socket.gethostname()
        self._config = config
        self.routes = RouteAlerts()  # which BGP changes are mailed
        self.policy = AlertPolicy(
            config,
            window_s=float(config.settings.emailalertwindow),
            rate_per_hour=config.settings.emailalertrate,
            hostname=self.hostname,
        )
        # One outbox (queue and sending task) per relay: a dead relay holds back only its own mails.
        self.outboxes: dict[Relay, Outbox] = {}
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._outbox_tasks: list[asyncio.Task[None]] = []

    @property
    def sent(self) -> int:
        return sum(o.sent for o in self.outboxes.values())

    @property
    def lost(self) -> int:
        return sum(o.lost for o in self.outboxes.values())

    def outbox(self, relay: Relay) -> Outbox:
        box = self.outboxes.get(relay)
        if box is None:
            box = self.outboxes[relay] = Outbox(
                smtp_settings(self._config, relay),
                cap=OUTBOX_CAP,
                first_backoff_s=RETRY_FIRST_S,
                max_backoff_s=RETRY_MAX_S,
                give_up_after_s=GIVE_UP_S,
            )
            if self._pump_task is not None:  # started: the new relay gets its task now
                self._outbox_tasks.append(
                    self._spawn(box.run(), f"lvsmon-alerts-outbox-{_relay_name(relay)}")
                )
        return box

    def use(self, config: Config) -> None:
        """A reload: reminder state of reals still configured survives; queued mails stay and
        are sent with the new settings (authentication, TLS) for their relay."""
        self._config = config
        self.policy.use(config)
        for relay, box in self.outboxes.items():
            box.use(smtp_settings(config, relay))
        self._wake.set()

    def known_down(self, service: ServiceKey, real: str) -> None:
        """A real found down at start: reminders without a first mail."""
        self.policy.known_down(service, real, time.time())
        self._wake.set()

    def __call__(self, event: Event) -> None:
        if isinstance(event, PhaseChanged):
            self.policy.phase(str(event.phase))
        elif isinstance(event, KernelOp):
            change = change_of(event, time.time())
            if change is None:
                return
            self.policy.feed(change, time.time())
        elif isinstance(event, DepoolLimited):
            self.policy.feed(depool_change(event, time.time()), time.time())
        elif isinstance(event, ArpConflict | ArpConflictCleared):
            for change in arp_changes(event, time.time()):
                self.policy.feed(change, time.time())
        elif isinstance(event, RouteChanged):
            for change in self.routes.changes(event, self._config, time.time()):
                self.policy.feed(change, time.time())
        elif isinstance(event, CertificateExpiring):
            self.policy.feed(cert_change(event, time.time()), time.time())
        else:
            return
        self._wake.set()

    async def start(self) -> None:
        self._pump_task = self._spawn(self._pump(), "lvsmon-alerts")
        self._outbox_tasks = [
            self._spawn(box.run(), f"lvsmon-alerts-outbox-{_relay_name(relay)}")
            for relay, box in self.outboxes.items()
        ]

    async def stop(self, bound: float) -> None:
        """Send what is due now (the "stopping" mails), then end every task within `bound`."""
        self._send(self.policy.flush(time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await asyncio.gather(*(box.drain() for box in self.outboxes.values()))
        tasks = [t for t in (self._pump_task, *self._outbox_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pump_task = None
        self._outbox_tasks = []

    async def _pump(self) -> None:
        while True:
            self._send(self.policy.due(time.time()))
            self._wake.clear()
            due = self.policy.next_due()
            wait = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _send(self, mails: list[Mail]) -> None:
        for mail in mails:
            subject, body = render(mail, self._config, self.hostname)
            box = self.outbox(mail.relay)
            sender = self._config.settings.emailalertfrom or box.settings.sender
            box.put(mail.to, subject, body, sender, changes=len(mail.changes))


Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]
"""Starts a task; the daemon passes its supervisor (a crash stops the daemon, loudly)."""


def _create_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)


def _relay_name(relay: Relay) -> str:
    host, port = relay
    return "sendmail" if host is None else f"{host}:{port}"
