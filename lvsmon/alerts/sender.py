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

from lvsmon.alerts.changes import change_of
from lvsmon.alerts.delivery import Outbox, SmtpSettings, default_sender
from lvsmon.alerts.policy import AlertPolicy, Mail
from lvsmon.alerts.render import render
from lvsmon.config.model import Config
from lvsmon.engine.events import Event, KernelOp, PhaseChanged
from lvsmon.ipvs.model import ServiceKey

log = logging.getLogger("lvsmon")


def smtp_settings(config: Config) -> SmtpSettings:
    """Where mail goes, from the global settings. (ldirectord lets a virtual name its own relay;
    `Virtual.smtp` is parsed, sending through it is not done yet.)"""
    s = config.settings
    return SmtpSettings(
        host=s.smtp,
        port=s.smtpport,
        user=s.smtpuser or "",
        password=s.smtppassword or "",
        tls=s.smtptls,
        sender=default_sender(),
    )


class Alerts:
    """Turns events into mails; `__call__` is the event handler (cheap, never blocks)."""

    def __init__(self, config: Config, *, hostname: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self._config = config
        self.policy = AlertPolicy(
            config,
            window_s=float(config.settings.emailalertwindow),
            rate_per_hour=config.settings.emailalertrate,
            hostname=self.hostname,
        )
        self.outbox = Outbox(smtp_settings(config))
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def use(self, config: Config) -> None:
        """A reload: reminder state of reals still configured survives."""
        self._config = config
        self.policy.use(config)
        self.outbox.use(smtp_settings(config))
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
        else:
            return
        self._wake.set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(), name="lvsmon-alerts"),
            loop.create_task(self.outbox.run(), name="lvsmon-alerts-outbox"),
        ]

    async def stop(self, bound: float) -> None:
        """Send what is due now (the "stopping" mails), then end both tasks within `bound`."""
        self._send(self.policy.flush(time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await self.outbox.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

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
            sender = self._config.settings.emailalertfrom or self.outbox.settings.sender
            self.outbox.put(mail.to, subject, body, sender, changes=len(mail.changes))
