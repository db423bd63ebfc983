"""negotiate checks for service=http, https and http_proxy: the I/O around `http_request`.

One HTTP/1.1 request with `Connection: close`, the response parsed by the sans-IO
`ResponseParser`, the verdict from `http_request.verdict`. Plain HTTP runs on the `prober` (no
task, no transport: see there for why and what it costs). HTTPS uses asyncio's TLS transport with
a tiny Protocol; certificates are not verified (same as ldirectord). The deadline is not ours:
`run_check` wraps the whole exchange (connect, TLS, request, body) in one `asyncio.timeout`, and
the `finally` blocks close the socket when it fires, so no I/O outlives the check.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.http_parser import HttpProtocolError, ResponseParser
from lvsmon.checks.http_request import Target, build_target, verdict
from lvsmon.checks.prober import ProbePlan, prober_for
from lvsmon.checks.step import Step

_tls_context: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The one client TLS context: no certificate or hostname checks, like ldirectord."""
    global _tls_context
    if _tls_context is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _tls_context = ctx
    return _tls_context


class _Exchange(asyncio.Protocol):
    """Sends the request once connected, feeds the parser, resolves `done` at the verdict."""

    __slots__ = ("done", "parser", "request", "step", "transport")

    def __init__(
        self, request: bytes, parser: ResponseParser, done: asyncio.Future[None], step: Step
    ) -> None:
        self.request = request
        self.parser = parser
        self.done = done
        self.step = step
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)
        self.step.name = "http"

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            if self.parser.feed(data):
                self.done.set_result(None)
        except HttpProtocolError as exc:
            self.done.set_exception(CheckFailed(f"http: {exc}"))

    def eof_received(self) -> bool:
        if not self.done.done():
            try:
                self.parser.feed_eof()
            except HttpProtocolError as exc:
                self.done.set_exception(CheckFailed(f"http: {exc}"))
            else:
                self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or CheckFailed("http: connection closed early"))


async def check_http(spec: CheckSpec, step: Step) -> CheckResult:
    target = build_target(spec)
    loop = asyncio.get_running_loop()
    step.name = "connect"
    family, addr = await _address(loop, target)
    if not target.tls:
        plan = ProbePlan(spec, family, addr, target.request)
        return await prober_for(loop).probe(plan, step)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    parser = ResponseParser(head=spec.httpmethod == "HEAD")
    await _exchange_tls(loop, sock, target, parser, step)
    return verdict(spec, parser)


async def _address(loop: asyncio.AbstractEventLoop, target: Target) -> tuple[int, tuple[str, int]]:
    """Family and address to connect to, resolving the host only for an absolute URL."""
    addr = (target.connect_host, target.connect_port)
    if target.family is not None:
        return target.family, addr
    resolved = await loop.getaddrinfo(*addr, type=socket.SOCK_STREAM)
    if not resolved:
        raise CheckFailed(f"connect: {target.connect_host} did not resolve")
    family, _, _, _, sockaddr = resolved[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


async def _exchange_tls(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    target: Target,
    parser: ResponseParser,
    step: Step,
) -> None:
    done: asyncio.Future[None] = loop.create_future()
    transport: asyncio.Transport | None = None
    step.name = "tls"
    try:
        transport, _ = await loop.create_connection(
            lambda: _Exchange(target.request, parser, done, step),
            sock=sock,
            ssl=tls_context(),
            server_hostname=target.server_hostname,
        )
        await done
    finally:
        if transport is None:
            sock.close()
        elif done.done() and not done.cancelled() and done.exception() is None:
            transport.close()
        else:
            transport.abort()
