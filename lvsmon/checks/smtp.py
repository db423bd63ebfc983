"""negotiate checks for service=smtp and submission (aiosmtplib): greeting, EHLO or HELO, QUIT.

What ldirectord's `Net::SMTP->new` did: the server's greeting must be a success, then EHLO must
be accepted, or, if the server refuses EHLO outright (5xx), HELO. The name sent is Net::SMTP's
default, "localhost.localdomain", so a server that accepted ldirectord's check accepts ours, and
no check waits for a name lookup (aiosmtplib's default is `socket.getfqdn()`). QUIT is sent
without waiting for its answer: the verdict is in, and ldirectord ignored that answer too.

Never STARTTLS, on submission either: Net::SMTP never did, and aiosmtplib's opportunistic
STARTTLS (its default) verifies certificates. We connect the socket ourselves so a timeout names
the step it struck ("connect" or "smtp greeting"); the one deadline is `run_check`'s, and
aiosmtplib's own per-command timeout (the same length, started later) never fires first.

A peer's bytes are bounded (issue 21, class 1): aiosmtplib refuses a reply over 32 KiB or a line
over 8 KiB ("response too large" here too), and the socket we hand it is a `CountingSocket`, so
that whatever else a peer streams (aiosmtplib drops data that arrives between commands, but
reads it) ends the check past PEER_BYTES as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Final

import aiosmtplib
from aiosmtplib import (
    SMTPConnectError,
    SMTPHeloError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.budget import Budget, CountingSocket, too_large
from lvsmon.checks.dialogue import shown
from lvsmon.checks.drive import family_of
from lvsmon.checks.step import Step

HELLO_NAME: Final = "localhost.localdomain"
"""What Net::SMTP says in EHLO/HELO when not told otherwise (ldirectord never told it)."""

_QUIT: Final = b"QUIT\r\n"

_TOO_LONG: Final = "Response too long"
"""aiosmtplib's message past its own bounds (a reply over 4 x 8 KiB, a line over 8 KiB)."""
_ITS_BOUND: Final = "response too large (a reply over 32 KiB or a line over 8 KiB)"


def _reply(exc: SMTPResponseException) -> str:
    """The server's reply for a reason: code and first line ("554 5.7.1 ... Access denied")."""
    text = shown(exc.message.split("\n", 1)[0].encode("utf-8", "surrogateescape"))
    if exc.code < 0:  # aiosmtplib's own verdict on what it read: no code of the server's
        return text[:1].lower() + text[1:]
    return f"{exc.code} {text}".rstrip()


def _first_line(response: SMTPResponse) -> str:
    return shown(response.message.split("\n", 1)[0].encode("utf-8", "surrogateescape"))


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    service = spec.service
    family = family_of(spec)
    loop = asyncio.get_running_loop()
    step.name = "connect"
    budget = Budget(service)
    sock = CountingSocket.create(family, budget)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (spec.host, spec.port))
        smtp = aiosmtplib.SMTP(
            sock=sock,
            local_hostname=HELLO_NAME,
            timeout=spec.timeout,
            start_tls=False,
        )
    except BaseException:
        sock.close()
        raise
    # from here the socket is aiosmtplib's: its transport closes it, or connect() fails and
    # asyncio closes it
    try:
        step.name = f"{service} greeting"
        await _command(smtp.connect(), service, "greeting", budget)
        response = await _hello(smtp, service, step, budget)
        if isinstance(smtp.transport, asyncio.WriteTransport):
            smtp.transport.write(_QUIT)  # a courtesy: Postfix logs a hang-up as lost connection
        return CheckResult(True, f"{service}: {response.code} {_first_line(response)}")
    finally:
        smtp.close()


async def _hello(smtp: aiosmtplib.SMTP, service: str, step: Step, budget: Budget) -> SMTPResponse:
    """EHLO, and HELO if EHLO was refused as unknown (5xx): Net::SMTP's `hello`."""
    step.name = f"{service} ehlo"
    try:
        return await _command(smtp.ehlo(), service, "ehlo", budget)
    except _Refused as refused:
        if refused.code // 100 != 5 or not smtp.is_connected:
            raise CheckFailed(f"{service}: ehlo: {refused.reply}") from None
        ehlo = refused.code
    step.name = f"{service} helo"
    try:
        return await _command(smtp.helo(), service, "helo", budget)
    except _Refused as refused:
        raise CheckFailed(f"{service}: helo: {refused.reply} (after ehlo {ehlo})") from None


class _Refused(Exception):
    def __init__(self, code: int, reply: str) -> None:
        super().__init__(reply)
        self.code = code
        self.reply = reply


async def _command(
    command: Coroutine[object, object, SMTPResponse], service: str, name: str, budget: Budget
) -> SMTPResponse:
    """Run one command; a refusal becomes `_Refused`, anything else the server did `CheckFailed`."""
    try:
        return await command
    except SMTPTimeoutError:
        raise  # the deadline: run_check names the step
    except SMTPHeloError as exc:
        raise _Refused(exc.code, _reply(exc)) from None
    except SMTPResponseException as exc:  # a bad greeting; garbage; a line too long
        if exc.code < 0 and exc.message == _TOO_LONG:
            raise CheckFailed(f"{service}: {name}: {_ITS_BOUND}") from None
        raise CheckFailed(f"{service}: {name}: {_reply(exc)}") from None
    except (SMTPServerDisconnected, SMTPConnectError):  # the latter: closed before the greeting
        if budget.exceeded:  # the counting socket ended the connection
            raise CheckFailed(too_large(f"{service}: {name}")) from None
        raise CheckFailed(f"{service}: {name}: connection closed by the server") from None
