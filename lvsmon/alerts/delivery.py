"""Sending alert mail: one `deliver()` per mail (SMTP relay or the local sendmail) and an `Outbox`
that retries with backoff for a bounded time, in a bounded queue, and never raises.

Transport, as ldirectord: with a relay (`smtp=`) the mail goes over SMTP (aiosmtplib); without
one, through the local sendmail (`sendmail -t -i`, recipients from the headers; ldirectord's
Mail::Send did the same). The envelope sender is `SmtpSettings.sender` (ldirectord:
`<user>@<hostname>`, see `default_sender()`); the From header is `emailalertfrom`, else the
sender. The whole exchange (connect, TLS, AUTH, the mail, QUIT; or the sendmail run) runs under
one deadline, `timeout_s`: a relay that accepts and never answers costs that long, then the
connection is closed and nothing is left running.

TLS and certificate verification (the decision):

* ``tls="starttls"`` (default): STARTTLS when the server offers it, plain SMTP otherwise, and the
  certificate is NOT verified. This is opportunistic TLS (RFC 7435; Postfix's own
  ``smtp_tls_security_level = may``): it keeps alert text away from passive listeners, and it can
  never make a mail fail where ldirectord, which always sent plain SMTP, delivered it. Internal
  relays with self-signed certificates are common, and an active attacker can strip the STARTTLS
  offer anyway, so verification would add failures without adding protection.
* ``tls="starttls"`` with a user set: a password is at stake, so STARTTLS becomes mandatory (a
  server that does not offer it fails the delivery: the password never goes in clear) and the
  certificate IS verified (system CAs, or `cafile`).
* ``tls="tls"``: implicit TLS (port 465 style), certificate verified (system CAs, or `cafile`):
  the operator asked for TLS by name, so it is authenticated TLS.
* ``tls="none"``: plain SMTP, as ldirectord; AUTH then goes in clear if configured (explicit).

Outbox: FIFO; the head is retried with a backoff doubling from `first_backoff_s` up to
`max_backoff_s` (a warning line per failed attempt), the others wait behind it (the relay is down
for all of them). A mail not sent `give_up_after_s` after it was queued is dropped with an error
line naming its recipients, subject and number of changes. At most `cap` mails wait (the one
being tried excluded); putting one more drops the oldest waiting one, with an error line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import logging
import os
import pwd
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

from lvsmon.addr import host_port
from lvsmon.text import clean

log = logging.getLogger("lvsmon")

DEFAULT_SENDMAIL = "/usr/sbin/sendmail"


class DeliveryError(Exception):
    """A mail was not handed over; the message says where it failed."""


@dataclass(frozen=True)
class SmtpSettings:
    """How to send. `host` None = the local sendmail at `sendmail` (ldirectord without `smtp`)."""

    host: str | None
    port: int = 25
    user: str = ""
    password: str = field(default="", repr=False)  # a secret: never in a log line
    tls: Literal["starttls", "tls", "none"] = "starttls"
    timeout_s: float = 30.0
    sender: str = ""  # envelope sender; "" = default_sender()
    sendmail: str = DEFAULT_SENDMAIL
    cafile: str | None = None  # CAs for verified TLS instead of the system store


def default_sender() -> str:
    """ldirectord's envelope sender: the daemon's user name at the host name."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = "root"
    return f"{user}@{socket.gethostname()}"


def message(to: tuple[str, ...], subject: str, body: str, from_header: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = from_header
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    # make_msgid() alone asks DNS for this host's FQDN (blocking): name the domain ourselves
    msg["Message-ID"] = email.utils.make_msgid(domain=from_header.rpartition("@")[2] or "lvsmon")
    msg.set_content(body)
    return msg


async def deliver(
    settings: SmtpSettings,
    to: tuple[str, ...],
    subject: str,
    body: str,
    from_header: str = "",
) -> None:
    """Hand one mail to the relay (or sendmail); DeliveryError on any failure or at the timeout."""
    # imported by the first mail: a daemon that sends none does not carry aiosmtplib's modules
    import aiosmtplib

    if not to:
        raise DeliveryError("no recipients")
    sender = settings.sender or default_sender()
    msg = message(to, subject, body, from_header or sender)
    try:
        async with asyncio.timeout(settings.timeout_s):
            if settings.host is None:
                await _sendmail(settings.sendmail, msg)
            else:
                await _smtp(settings, sender, to, msg)
    except TimeoutError:
        raise DeliveryError(
            f"{_where(settings)}: no answer within {settings.timeout_s:g}s"
        ) from None
    except DeliveryError:
        raise
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
        raise DeliveryError(f"{_where(settings)}: {_reason(exc)}") from exc


def _where(settings: SmtpSettings) -> str:
    if settings.host is None:
        return settings.sendmail
    return f"smtp {host_port(settings.host, settings.port)}"


def _reason(exc: BaseException) -> str:
    """What a relay (or sendmail) said, for one log line: its lines joined, then clean
    (lvsmon/text.py: no control character, bounded), whatever the server sent."""
    text = str(exc).strip() or type(exc).__name__
    return clean(" ".join(text.split()))


def _tls_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _smtp(
    settings: SmtpSettings, sender: str, to: tuple[str, ...], msg: EmailMessage
) -> None:
    auth = bool(settings.user)
    use_tls = settings.tls == "tls"
    start_tls: bool | None = False
    if settings.tls == "starttls":
        start_tls = True if auth else None  # None: only if offered (opportunistic)
    verify = use_tls or (auth and settings.tls == "starttls")
    import aiosmtplib

    client = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        username=settings.user or None,
        password=settings.password if auth else None,
        # given, so aiosmtplib does not resolve our FQDN in a thread (uncancellable)
        local_hostname=socket.gethostname(),
        timeout=settings.timeout_s,
        use_tls=use_tls,
        start_tls=start_tls,
        tls_context=_tls_context(verify, settings.cafile) if settings.tls != "none" else None,
    )
    try:
        await client.connect()  # EHLO, STARTTLS and AUTH as configured
        await client.send_message(msg, sender=sender, recipients=list(to))
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()  # the mail is accepted: a failed QUIT loses nothing
    finally:
        client.close()  # after a timeout or an error: the socket goes now


async def _sendmail(path: str, msg: EmailMessage) -> None:
    proc = await asyncio.create_subprocess_exec(
        path,
        "-t",
        "-i",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await proc.communicate(msg.as_bytes())
    finally:
        if proc.returncode is None:  # cancelled (the timeout): no orphan, no zombie
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        said = _reason(Exception(output.decode(errors="replace"))) if output else "no output"
        raise DeliveryError(f"{path} exited {proc.returncode}: {said}")


@dataclass
class _Queued:
    to: tuple[str, ...]
    subject: str
    body: str
    from_header: str
    changes: int
    deadline: float

    def describe(self) -> str:
        return f"to {', '.join(self.to)}, subject {self.subject!r}, {self.changes} change(s)"


Deliver = Callable[[SmtpSettings, tuple[str, ...], str, str, str], Awaitable[None]]


class Outbox:
    """Mails waiting to be sent, retried with backoff; `run()` is the one task that sends.

    `put()` never blocks and never raises; neither does `run()` (until cancelled)."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        cap: int = 1000,
        first_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        give_up_after_s: float = 3600.0,
        send: Deliver = deliver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.cap = cap
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.give_up_after_s = give_up_after_s
        self._send = send
        self._clock = clock
        self._waiting: collections.deque[_Queued] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # nothing waiting, nothing being tried
        self._idle.set()
        self.sent = 0
        self.lost = 0

    def use(self, settings: SmtpSettings) -> None:
        """A reload: the next attempt uses these settings (queued mails stay)."""
        self.settings = settings

    def __len__(self) -> int:
        return len(self._waiting)

    def put(
        self,
        to: tuple[str, ...],
        subject: str,
        body: str,
        from_header: str = "",
        *,
        changes: int = 1,
    ) -> None:
        item = _Queued(
            to, subject, body, from_header, changes, self._clock() + self.give_up_after_s
        )
        while len(self._waiting) >= max(self.cap, 1):
            dropped = self._waiting.popleft()
            self.lost += 1
            log.error("alert mail dropped, outbox full (%d): %s", self.cap, dropped.describe())
        self._waiting.append(item)
        self._idle.clear()
        self._wakeup.set()

    async def drain(self) -> None:
        """Until every mail put so far is sent or given up (bound it with a timeout: a dead relay
        holds a mail for up to `give_up_after_s`)."""
        await self._idle.wait()

    async def run(self) -> None:
        backoff = self.first_backoff_s
        while True:
            while not self._waiting:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            # out of the deque while it is tried: a full queue drops the oldest *waiting* mail
            item = self._waiting.popleft()
            attempt = 0
            while True:
                attempt += 1
                error = await self._attempt(item)
                if error is None:
                    self.sent += 1
                    backoff = self.first_backoff_s
                    break
                left = item.deadline - self._clock()
                if left <= 0:
                    self.lost += 1
                    log.error(
                        "alert mail lost after %d attempt(s) (%s): %s",
                        attempt,
                        error,
                        item.describe(),
                    )
                    break
                wait = min(backoff, left)
                log.warning(
                    "alert mail not sent (%s), retrying in %gs: %s", error, wait, item.describe()
                )
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _attempt(self, item: _Queued) -> str | None:
        """None if sent, else why not (a bug in the transport included: this loop must live)."""
        try:
            await self._send(self.settings, item.to, item.subject, item.body, item.from_header)
        except DeliveryError as exc:
            return str(exc)
        except Exception as exc:
            log.exception("alert mail: unexpected failure")
            return _reason(exc)
        return None
