"""alerts/delivery against a real Postfix on loopback that delivers to a Maildir (headers, body,
opportunistic STARTTLS, the local sendmail, a relay that goes away and comes back), and aiosmtpd
in-process where a scripted behaviour is needed (implicit TLS, AUTH, a verified certificate).
Misbehaving relays: a closed port, a silent peer, a fake sendmail."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import os
import ssl
import stat
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from lvsmon.alerts.delivery import DeliveryError, Outbox, SmtpSettings, deliver
from realservers.base import (
    Forwarder,
    Server,
    SilentPeer,
    free_port,
    open_sockets,
    sockets_settled,
)
from realservers.postfix import maildir, running_postfix

TO = ("ops@lvsmon.test",)
SENDER = "lvsmon@director1.lvsmon.test"
SUBJECT = "Quiescent real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 0)"
BODY = "ldirectord host: director1\nLog-Message: " + SUBJECT + "\nDaemon-Status: running\n"


@pytest.fixture(scope="module")
def postfix() -> Iterator[Server]:
    with running_postfix() as server:
        yield server


def relay(server: Server | None, listener: str = "smtp", **kw: Any) -> SmtpSettings:
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": server.ports[listener] if server else 0,
        "tls": "starttls",
        "timeout_s": 5.0,
        "sender": SENDER,
    }
    fields.update(kw)
    return SmtpSettings(**fields)


class Mailbox:
    """The mails Postfix delivers from now on (the Maildir is shared by the module's tests)."""

    def __init__(self, server: Server) -> None:
        self.dir = maildir(server)
        self.seen = set(os.listdir(self.dir)) if self.dir.exists() else set()

    async def next(self, timeout: float = 10.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # polled: the virtual agent writes when it will
            if self.dir.exists():
                for name in sorted(set(os.listdir(self.dir)) - self.seen):
                    self.seen.add(name)
                    raw = (self.dir / name).read_bytes()
                    return email.message_from_bytes(raw, policy=email.policy.default)
            await asyncio.sleep(0.02)
        raise AssertionError(f"no mail in {self.dir} within {timeout:g}s")


class Maillog:
    """Postfix's log lines from now on."""

    def __init__(self, server: Server) -> None:
        self.path = server.dir / "maillog"
        self.offset = self.path.stat().st_size

    async def disconnect(self) -> str:
        """The next "disconnect from" line of a session that said something."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = self.path.read_bytes()[self.offset :].decode(errors="replace")
            for line in text.splitlines():
                if ": disconnect from " in line and not line.endswith(" commands=0/0"):
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError("no disconnect line in maillog")


def assert_alert(mail: EmailMessage, from_header: str) -> None:
    assert mail["To"] == TO[0]
    assert mail["From"] == from_header
    assert mail["Subject"] == SUBJECT
    assert mail["Return-Path"] == f"<{SENDER}>"  # the envelope sender
    assert mail["Date"] and mail["Message-ID"]
    assert mail.get_content() == BODY


# ---- SMTP to a real Postfix --------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_mail_arrives_with_headers_and_body(postfix: Server, host: str) -> None:
    box = Mailbox(postfix)
    await deliver(relay(postfix, host=host), TO, SUBJECT, BODY, "alerts@lvsmon.test")
    assert_alert(await box.next(), "alerts@lvsmon.test")


async def test_from_defaults_to_the_sender(postfix: Server) -> None:
    box = Mailbox(postfix)
    await deliver(relay(postfix), TO, SUBJECT, BODY, "")
    assert_alert(await box.next(), SENDER)


async def test_several_recipients_one_mail(postfix: Server) -> None:
    box = Mailbox(postfix)
    await deliver(relay(postfix), ("a@lvsmon.test", "b@lvsmon.test"), SUBJECT, BODY, "")
    # one Maildir gets both copies: two deliveries of the same message
    first, second = await box.next(), await box.next()
    assert first["To"] == second["To"] == "a@lvsmon.test, b@lvsmon.test"
    assert first["Message-ID"] == second["Message-ID"]


async def test_starttls_used_when_offered(postfix: Server) -> None:
    """Postfix's certificate is self-signed: opportunistic STARTTLS does not verify it."""
    log, box = Maillog(postfix), Mailbox(postfix)
    await deliver(relay(postfix), TO, SUBJECT, BODY, "")
    assert " starttls=1 " in await log.disconnect()
    assert_alert(await box.next(), SENDER)


async def test_tls_none_stays_plain(postfix: Server) -> None:
    log, box = Maillog(postfix), Mailbox(postfix)
    await deliver(relay(postfix, tls="none"), TO, SUBJECT, BODY, "")
    assert "starttls" not in await log.disconnect()
    assert_alert(await box.next(), SENDER)


async def test_submission_requires_starttls(postfix: Server) -> None:
    box = Mailbox(postfix)
    await deliver(relay(postfix, "submission"), TO, SUBJECT, BODY, "")
    assert_alert(await box.next(), SENDER)
    with pytest.raises(DeliveryError, match=r"smtp 127\.0\.0\.1:\d+: .*STARTTLS"):
        await deliver(relay(postfix, "submission", tls="none"), TO, SUBJECT, BODY, "")


async def test_relay_refuses(postfix: Server) -> None:
    with pytest.raises(DeliveryError, match="554"):
        await deliver(relay(postfix, "reject_greeting"), TO, SUBJECT, BODY, "")


# ---- a relay that is not there, or never answers -----------------------------------------------


async def test_relay_down_fails_quickly(closed: int) -> None:
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=rf"smtp 127\.0\.0\.1:{closed}: "):
        await deliver(relay(None, port=closed), TO, SUBJECT, BODY, "")
    assert time.monotonic() - started < 2  # refused at once; generous for a loaded CI


async def test_silent_relay_times_out_and_leaves_nothing() -> None:
    tasks, sockets = len(asyncio.all_tasks()), open_sockets()
    async with SilentPeer() as peer:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"no answer within 0\.5s"):
            await deliver(relay(None, port=peer.port, timeout_s=0.5), TO, SUBJECT, BODY, "")
        assert 0.45 < time.monotonic() - started < 3
    await sockets_settled(sockets)
    assert open_sockets() <= sockets
    assert len(asyncio.all_tasks()) == tasks


@pytest.fixture
def closed() -> int:
    """A loopback port nobody listens on."""
    return free_port()


# ---- aiosmtpd: implicit TLS, AUTH, verification ------------------------------------------------


class Sink:
    """aiosmtpd handler keeping every envelope."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SmtpServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def mail(self) -> EmailMessage:
        [envelope] = self.envelopes
        assert isinstance(envelope.content, bytes)
        return email.message_from_bytes(envelope.content, policy=email.policy.default)


class Logins:
    """aiosmtpd authenticator accepting lvsmon/secret; remembers every try."""

    def __init__(self) -> None:
        self.tries: list[tuple[bytes, bytes]] = []

    def __call__(
        self, server: SmtpServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.tries.append((data.login, data.password))
        ok = (data.login, data.password) == (b"lvsmon", b"secret")
        return AuthResult(success=ok, handled=False)  # handled=True: aiosmtpd would say nothing


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


@contextlib.asynccontextmanager
async def aiosmtpd(handler: Sink, **kw: Any) -> AsyncIterator[int]:
    """aiosmtpd on 127.0.0.1 (its own thread and loop); yields the port."""
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kw)
    await asyncio.to_thread(controller.start)
    try:
        yield controller.port
    finally:
        await asyncio.to_thread(controller.stop)


async def test_implicit_tls_verified(ca: trustme.CA, cafile: str) -> None:
    sink = Sink()
    async with aiosmtpd(sink, ssl_context=server_context(ca)) as port:
        await deliver(relay(None, port=port, tls="tls", cafile=cafile), TO, SUBJECT, BODY, "")
        mail = sink.mail()
        assert (mail["Subject"], mail["From"], sink.envelopes[0].mail_from) == (
            SUBJECT,
            SENDER,
            SENDER,
        )
        # the operator asked for TLS by name: an unknown CA fails the delivery
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            await deliver(relay(None, port=port, tls="tls"), TO, SUBJECT, BODY, "")


async def test_auth_over_verified_starttls(ca: trustme.CA, cafile: str) -> None:
    sink, logins = Sink(), Logins()
    kw = {"tls_context": server_context(ca), "authenticator": logins, "auth_required": True}
    async with aiosmtpd(sink, **kw) as port:
        auth = relay(None, port=port, user="lvsmon", password="secret", cafile=cafile)
        await deliver(auth, TO, SUBJECT, BODY, "")
        assert sink.mail()["Subject"] == SUBJECT
        assert logins.tries == [(b"lvsmon", b"secret")]
        with pytest.raises(DeliveryError, match="535"):
            await deliver(
                relay(None, port=port, user="lvsmon", password="wrong", cafile=cafile),
                TO,
                SUBJECT,
                BODY,
                "",
            )
        tried = len(logins.tries)
        # with a password at stake the certificate is verified, even on STARTTLS
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
            await deliver(
                relay(None, port=port, user="lvsmon", password="secret"), TO, SUBJECT, BODY, ""
            )
        assert len(logins.tries) == tried  # no password to an unverified peer
    assert "secret" not in repr(auth)


async def test_no_password_in_clear_without_starttls() -> None:
    sink, logins = Sink(), Logins()
    controller = Controller(
        sink, hostname="127.0.0.1", port=free_port(), authenticator=logins, auth_require_tls=False
    )
    await asyncio.to_thread(controller.start)
    try:
        with pytest.raises(DeliveryError, match=r"(?i)starttls"):
            await deliver(
                relay(None, port=controller.port, user="lvsmon", password="secret"),
                TO,
                SUBJECT,
                BODY,
                "",
            )
    finally:
        await asyncio.to_thread(controller.stop)
    assert logins.tries == [] and sink.envelopes == []


# ---- the local sendmail ------------------------------------------------------------------------


def script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_sendmail_gets_the_mail_on_stdin(tmp_path: Path) -> None:
    fake = script(tmp_path / "sendmail", f'echo "$@" > {tmp_path}/args\ncat > {tmp_path}/stdin\n')
    settings = SmtpSettings(host=None, sender=SENDER, sendmail=fake, timeout_s=5)
    await deliver(settings, TO, SUBJECT, BODY, "alerts@lvsmon.test")
    assert (tmp_path / "args").read_text() == "-t -i\n"  # recipients from the headers
    mail = email.message_from_bytes((tmp_path / "stdin").read_bytes(), policy=email.policy.default)
    assert (mail["To"], mail["From"], mail["Subject"]) == (TO[0], "alerts@lvsmon.test", SUBJECT)
    assert mail.get_content() == BODY


async def test_sendmail_failures(tmp_path: Path) -> None:
    failing = script(
        tmp_path / "failing", "cat >/dev/null\necho 'queue file write error' >&2\nexit 75\n"
    )
    with pytest.raises(DeliveryError, match=r"failing exited 75: queue file write error"):
        await deliver(SmtpSettings(host=None, sendmail=failing), TO, SUBJECT, BODY, "")
    with pytest.raises(DeliveryError, match="No such file"):
        await deliver(
            SmtpSettings(host=None, sendmail=str(tmp_path / "none")), TO, SUBJECT, BODY, ""
        )


async def test_sendmail_hanging_is_killed_at_the_timeout(tmp_path: Path) -> None:
    hanging = script(tmp_path / "hanging", f"echo $$ > {tmp_path}/pid\nexec sleep 60\n")
    started = time.monotonic()
    with pytest.raises(DeliveryError, match=r"no answer within 0\.5s"):
        await deliver(
            SmtpSettings(host=None, sendmail=hanging, timeout_s=0.5), TO, SUBJECT, BODY, ""
        )
    assert time.monotonic() - started < 3
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped: not even a zombie
        os.kill(pid, 0)


async def test_real_sendmail_into_the_test_postfix(postfix: Server, tmp_path: Path) -> None:
    """Postfix's own sendmail, pointed at the test instance's config (`-C`): maildrop, pickup."""
    wrapper = script(
        tmp_path / "sendmail", f'exec /usr/sbin/sendmail -C {postfix.dir / "etc"} "$@"\n'
    )
    box = Mailbox(postfix)
    await deliver(SmtpSettings(host=None, sender=SENDER, sendmail=wrapper), TO, SUBJECT, BODY, "")
    mail = await box.next()
    assert (mail["To"], mail["From"], mail["Subject"]) == (TO[0], SENDER, SUBJECT)
    assert mail.get_content() == BODY


# ---- Outbox ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(outbox: Outbox) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(outbox.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_outbox_sends_after_the_relay_returns(
    postfix: Server, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder = Forwarder(postfix.ports["smtp"])
    box = Mailbox(postfix)
    accepted: list[str] = []

    async def send(settings: SmtpSettings, to: tuple[str, ...], subject: str, *rest: str) -> None:
        await deliver(settings, to, subject, *rest)
        accepted.append(subject)

    outbox = Outbox(
        relay(postfix, port=forwarder.port), first_backoff_s=0.05, max_backoff_s=0.2, send=send
    )
    restored = "Restored real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 1)"
    caplog.set_level(logging.WARNING, "lvsmon")
    async with running(outbox):
        outbox.put(TO, SUBJECT, BODY, "", changes=1)
        outbox.put(TO, restored, BODY, "")
        await asyncio.sleep(1.0)  # the relay is down for a second: attempts fail, mails wait
        assert outbox.sent == 0 and len(outbox) == 1  # one is being tried, one waits
        await forwarder.open()
        try:
            async with asyncio.timeout(5):
                await outbox.drain()
            arrived = {(await box.next())["Subject"], (await box.next())["Subject"]}
        finally:
            await forwarder.close()
    assert accepted == [SUBJECT, restored]  # handed over in order (Postfix may reorder)
    assert arrived == {SUBJECT, restored}
    assert (outbox.sent, outbox.lost) == (2, 0)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    # the backoff doubles up to its cap: a few attempts, not a busy loop
    assert 3 <= len(retries) <= 10
    assert all(r.levelno == logging.WARNING for r in retries)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_outbox_gives_up_with_one_error_line(
    closed: int, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = Outbox(
        relay(None, port=closed), first_backoff_s=0.05, max_backoff_s=0.1, give_up_after_s=0.5
    )
    caplog.set_level(logging.WARNING, "lvsmon")
    async with running(outbox) as task:
        outbox.put(("a@lvsmon.test", "b@lvsmon.test"), SUBJECT, BODY, "", changes=3)
        started = time.monotonic()
        async with asyncio.timeout(5):
            await outbox.drain()
        assert 0.45 < time.monotonic() - started < 3  # bounded (generous: a loaded CI)
        assert not task.done()  # the loop lives on for the next mail
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = error.getMessage()
    assert text.startswith("alert mail lost after ")
    assert "to a@lvsmon.test, b@lvsmon.test" in text and repr(SUBJECT) in text
    assert "3 change(s)" in text and f":{closed}" in text
    assert (outbox.sent, outbox.lost) == (0, 1)


async def test_outbox_full_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    outbox = Outbox(relay(None), cap=2)
    caplog.set_level(logging.WARNING, "lvsmon")
    for n in range(3):
        outbox.put(TO, f"mail {n}", BODY, "", changes=n + 1)
    assert len(outbox) == 2 and outbox.lost == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.getMessage() == (
        "alert mail dropped, outbox full (2): to ops@lvsmon.test, subject 'mail 0', 1 change(s)"
    )

    sent: list[str] = []

    async def record(settings: SmtpSettings, to: tuple[str, ...], subject: str, *_: str) -> None:
        sent.append(subject)

    outbox._send = record
    async with running(outbox):
        async with asyncio.timeout(5):
            await outbox.drain()
    assert sent == ["mail 1", "mail 2"]


async def test_outbox_survives_a_transport_bug(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    async def buggy(settings: SmtpSettings, to: tuple[str, ...], subject: str, *_: str) -> None:
        calls.append(subject)
        if len(calls) == 1:
            raise RuntimeError("boom")

    outbox = Outbox(relay(None), first_backoff_s=0.01, send=buggy)
    caplog.set_level(logging.WARNING, "lvsmon")
    async with running(outbox):
        outbox.put(TO, SUBJECT, BODY, "")
        async with asyncio.timeout(5):
            await outbox.drain()
    assert calls == [SUBJECT, SUBJECT] and outbox.sent == 1
    assert any("unexpected failure" in r.getMessage() for r in caplog.records)
