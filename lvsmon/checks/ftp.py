"""negotiate check for service=ftp: log in, fetch a file, match it.

As ldirectord's check_ftp (Net::FTP): log in as `login` with `passwd` (anonymous and
"ldirectord@<hostname>" when unset, as the config does), CWD /, TYPE I, a passive RETR of
`request` into memory, up iff the content matches `receive`. aioftp does the protocol; passive
mode tries EPSV first (the only way over IPv6), then PASV, and always connects the data channel to
the real's own address, never to one a PASV reply names.

Deliberate differences from ldirectord, whose check ignored every reply and only matched what
landed in its temporary file:
* every step must succeed: a refused login, CWD or RETR is down, and the reason says which
  ("ftp: login rejected: 530 Login incorrect.");
* an empty `receive` is up iff the file was retrieved whole. Perl's empty pattern matched
  anything, even the empty file left by a server that was not there at all;
* an empty `request` (the default "/") retrieves nothing: up iff login and CWD / succeed, so a
  login-only check is possible; with `receive` set it is a configuration error;
* only the first MAX_DOWNLOAD bytes are read and matched (Net::FTP read the whole file to disk).

A peer's bytes on the control connection are bounded (issue 21, class 1): aioftp keeps every
line of a reply and asyncio's readline takes lines of up to 64 KiB, so 1,000 lines of 64 KiB
held 64 MB per check. Every line passes `_Client.parse_line`, which counts it against the
check's budget (PEER_BYTES) and its number against MAX_REPLY_LINES; past either, or on a line
longer than asyncio's 64 KiB, the check is down with "<step>: response too large (...)".
"""

from __future__ import annotations

import contextlib
import socket
from typing import Final

import aioftp

from lvsmon.checks.base import (
    RECEIVE_TIMEOUT,
    CheckFailed,
    CheckResult,
    CheckSpec,
    compile_receive,
)
from lvsmon.checks.budget import Budget, OverBudget, too_large
from lvsmon.checks.dialogue import shown
from lvsmon.checks.step import Step

MAX_DOWNLOAD: Final = 1 << 20
MAX_REPLY_LINES: Final = 1000
"""Reply lines one check reads at most: aioftp keeps every line of a reply, and reads on past
lines without a code, so a server streaming lines would otherwise grow memory until the
deadline."""
ANONYMOUS: Final = "anonymous"
HOSTNAME: Final = socket.gethostname()


class _Client(aioftp.Client):
    """aioftp's client, reading replies leniently and boundedly: a byte that is not UTF-8 (a
    Latin-1 greeting) is replaced, not fatal; an end of stream and a flood are reasons."""

    def __init__(self, step: Step, timeout: float) -> None:
        super().__init__(socket_timeout=timeout, connection_timeout=timeout, path_timeout=timeout)
        self.step = step
        self.lines = 0
        self.budget = Budget("ftp")

    async def parse_line(self) -> tuple[aioftp.Code, str]:
        line: bytes = await self.stream.readline()
        if not line:
            self.stream.close()
            raise CheckFailed(f"{self.step.name}: connection closed by the server")
        self.lines += 1
        if self.lines > MAX_REPLY_LINES:
            raise CheckFailed(
                f"{self.step.name}: response too large (more than {MAX_REPLY_LINES} reply lines)"
            )
        try:
            self.budget.take(len(line))
        except OverBudget:
            raise CheckFailed(too_large(self.step.name)) from None
        text = line.decode(self.encoding, errors="replace").rstrip()
        return aioftp.Code(text[:3]), text[3:]


def _reply(exc: aioftp.StatusCodeError) -> str:
    """The server's reply from aioftp's error: "530 Login incorrect."."""
    code = exc.received_codes[-1] if exc.received_codes else "???"
    info = exc.info if isinstance(exc.info, list) else [exc.info]
    text = str(info[-1]).strip() if info else ""
    return shown(f"{code} {text}".strip().encode())


async def _session(client: _Client, spec: CheckSpec, step: Step, path: str) -> CheckResult:
    step.name = "connect"
    await aioftp.BaseClient.connect(client, spec.host, spec.port)
    step.name = "ftp greeting"
    try:
        await client.command(None, "220", "120")
    except aioftp.StatusCodeError as exc:
        raise CheckFailed(f"ftp: greeting: {_reply(exc)}") from None
    step.name = "ftp login"
    try:
        await client.login(spec.login or ANONYMOUS, spec.passwd or f"ldirectord@{HOSTNAME}")
    except aioftp.StatusCodeError as exc:
        raise CheckFailed(f"ftp: login rejected: {_reply(exc)}") from None
    step.name = "ftp cwd"
    try:
        await client.change_directory("/")
    except aioftp.StatusCodeError as exc:
        raise CheckFailed(f"ftp: cwd /: {_reply(exc)}") from None
    if not path:
        return CheckResult(True, "ftp: logged in")
    step.name = "ftp retrieve"
    try:
        data, whole = await _retrieve(client, path)
    except aioftp.StatusCodeError as exc:
        raise CheckFailed(f"ftp: retrieve {shown(path.encode())}: {_reply(exc)}") from None
    return judge(spec, path, data, whole)


async def _retrieve(client: _Client, path: str) -> tuple[bytes, bool]:
    """The first MAX_DOWNLOAD bytes of `path`, and whether that is the whole file.

    aioftp's download_stream, unrolled so that the data connection is ours to close: it leaves
    the connection open when RETR is refused."""
    reader, writer = await client.get_passive_connection("I")  # TYPE I, then EPSV or PASV
    try:
        await client.command(f"RETR {path}", "1xx")
        data = bytearray()
        while len(data) < MAX_DOWNLOAD:
            block = await reader.read(MAX_DOWNLOAD - len(data))
            if not block:
                writer.close()
                await client.command(None, "2xx", "1xx")  # 226: the transfer was complete
                return bytes(data), True
            client.budget.got(len(block))
            data += block
        return bytes(data), False  # enough: the server's 426 for the rest is not awaited
    finally:
        writer.close()


def judge(spec: CheckSpec, path: str, data: bytes, whole: bool) -> CheckResult:
    """The verdict on the retrieved bytes (pure: unit-tested without a server)."""
    name = shown(path.encode())
    size = f"{len(data)} bytes" if whole else f"first {len(data)} bytes"
    regex = compile_receive(spec.receive)
    if regex is not None:
        try:
            found = regex.search(data, timeout=RECEIVE_TIMEOUT)
        except TimeoutError:
            return CheckResult(False, f"ftp: receive regex took longer than {RECEIVE_TIMEOUT:g} s")
        if found is None:
            return CheckResult(False, f"ftp: {name} ({size}) does not match receive")
    return CheckResult(True, f"ftp: retrieved {name} ({size})")


def _path(spec: CheckSpec) -> str:
    path = spec.request.removeprefix("/")
    if "\r" in path or "\n" in path:
        raise CheckFailed("ftp: request must not contain CR or LF")
    if not path and spec.receive:
        raise CheckFailed("ftp: receive is set but request names no file to retrieve")
    return path


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    path = _path(spec)
    # aioftp's own timeouts bound each read, write and connect; run_check's deadline the whole
    client = _Client(step, spec.timeout)
    try:
        result = await _session(client, spec, step, path)
        with contextlib.suppress(OSError, TimeoutError):
            await client.command("QUIT")  # written, not awaited: the verdict is in
        return result
    except UnicodeError:  # a login, passwd or request Python cannot encode as UTF-8
        raise CheckFailed(f"{step.name}: a setting that is not UTF-8") from None
    except ValueError as exc:  # asyncio's readline past its 64 KiB limit, a bad EPSV/PASV reply
        raise CheckFailed(f"{step.name}: {_value_error(exc)}") from None
    finally:
        client.close()


def _value_error(exc: ValueError) -> str:
    text = str(exc)
    if "limit" in text:
        return "response too large (a reply line over 64 KiB)"
    return shown(text.encode()) or type(exc).__name__
