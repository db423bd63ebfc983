"""negotiate checks for service=http, https and http_proxy.

One HTTP/1.1 request with `Connection: close`, the response parsed by the sans-IO
`ResponseParser`. Plain HTTP uses no transport at all: a non-blocking socket, one `send`, and one
reader callback that feeds the parser and wakes the check once, when the verdict is in. HTTPS uses
asyncio's TLS transport with a tiny Protocol. Chosen over aiohttp's client for cost: the daemon
must run 10,000 plain-HTTP checks a second on two cores (about 50 µs of our CPU per check), and
`bench/checks_http.py` against a local nginx measured, on an idle machine, ~61 µs per check for
this path (26 µs user, 35 µs kernel, most of it the loopback TCP handshake and teardown) at 13,000
checks/s, against ~150-250 µs and ~4,000 checks/s for aiohttp's client (its session, connector,
request/response objects and header multidicts are built for every check; nothing here needs
them). The deadline is not ours: `run_check` wraps the whole exchange (connect, TLS, request,
body) in one `asyncio.timeout`, and the `finally` blocks below close the socket when it fires, so
no I/O outlives the check.

What counts as up (ldirectord §3.3): a 2xx status, and the body matches `receive` (a regex searched
anywhere in the raw body bytes) when `receive` is set. Deliberate differences from ldirectord
(LWP), see bug #17:
* redirects are not followed: a 3xx is down. LWP followed up to 7, even to other hosts, so a real
  redirecting to a healthy sibling looked healthy itself.
* with `virtualhost` set, TLS SNI carries it too (ldirectord sent no SNI), so SNI-routed servers are
  checked on the right site. Without it, or for an IP literal, no SNI is sent.
* certificates are not verified (same as ldirectord).
* only the first 1 MiB of the body is read and matched.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import socket
import ssl
from typing import Final
from urllib.parse import quote, urlsplit

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec, compile_receive
from lvsmon.checks.http_parser import HttpProtocolError, ResponseParser
from lvsmon.checks.step import Step

USER_AGENT: Final = "lvsmon"
_DEFAULT_PORT: Final = {"http": 80, "https": 443}

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


def _authority(host: str, port: int, scheme: str) -> str:
    literal = f"[{host}]" if ":" in host else host
    return literal if _DEFAULT_PORT.get(scheme) == port else f"{literal}:{port}"


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _sni_for(virtualhost: str) -> str:
    """SNI name from virtualhost: drop a :port, send nothing for an address literal."""
    if not virtualhost:
        return ""
    name = virtualhost
    if name.startswith("["):
        return ""
    if name.count(":") == 1:
        name = name.split(":", 1)[0]
    return "" if _is_ip_literal(name) else name


class Target:
    """Where to connect and what to send, derived from a spec once (it is hashable and reused)."""

    __slots__ = ("connect_host", "connect_port", "family", "request", "server_hostname", "tls")

    def __init__(
        self,
        connect_host: str,
        connect_port: int,
        tls: bool,
        server_hostname: str,
        request: bytes,
    ) -> None:
        self.family: int | None = None  # None: a name, resolved at check time
        if _is_ip_literal(connect_host):
            self.family = socket.AF_INET6 if ":" in connect_host else socket.AF_INET
        self.connect_host = connect_host
        self.connect_port = connect_port
        self.tls = tls
        self.server_hostname = server_hostname
        self.request = request


def _request_bytes(method: str, target: str, host_header: str) -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    ).encode("utf-8", "surrogateescape")


# what may stay literal in a request-target; the rest (spaces, controls, non-ASCII) is
# percent-encoded as LWP's URI module did, which also rules out header injection
_TARGET_SAFE: Final = "!#$%&'()*+,/:;=?@[]~-._"


def _quote_target(text: str) -> str:
    return quote(text, safe=_TARGET_SAFE)


def _check_virtualhost(virtualhost: str) -> None:
    if any(c.isspace() or not c.isprintable() for c in virtualhost):
        raise CheckFailed(f"http: virtualhost {virtualhost!r} has whitespace or control characters")


@functools.lru_cache(maxsize=65536)
def build_target(spec: CheckSpec) -> Target:
    """Turn a spec into the connection and request bytes (raises CheckFailed on an unusable one)."""
    request = _quote_target(spec.request or "/")
    _check_virtualhost(spec.virtualhost)
    absolute = request.startswith(("http://", "https://"))
    if spec.service == "http_proxy":
        if not absolute:
            raise CheckFailed(
                f"http_proxy: request {request!r} must be an absolute URL (http://...)"
            )
        url = urlsplit(request)
        host_header = spec.virtualhost or url.netloc
        # the real is the proxy: plain HTTP to it, the absolute URL as request target
        return Target(
            spec.host, spec.port, False, "", _request_bytes(spec.httpmethod, request, host_header)
        )
    if absolute:
        # per-real absolute URL: it names scheme, host and port itself
        url = urlsplit(request)
        try:
            port = url.port
        except ValueError:
            raise CheckFailed(f"http: bad port in request URL {request!r}") from None
        if not url.hostname:
            raise CheckFailed(f"http: no host in request URL {request!r}")
        scheme = url.scheme
        port = port or _DEFAULT_PORT[scheme]
        path = url.path or "/"
        if url.query:
            path = f"{path}?{url.query}"
        host_header = spec.virtualhost or url.netloc
        tls = scheme == "https"
        sni = _sni_for(spec.virtualhost or url.hostname) if tls else ""
        request_bytes = _request_bytes(spec.httpmethod, path, host_header)
        return Target(url.hostname, port, tls, sni, request_bytes)
    scheme = "https" if spec.service == "https" else "http"
    path = request if request.startswith("/") else "/" + request
    host_header = spec.virtualhost or _authority(spec.host, spec.port, scheme)
    tls = scheme == "https"
    sni = _sni_for(spec.virtualhost) if tls else ""
    request_bytes = _request_bytes(spec.httpmethod, path, host_header)
    return Target(spec.host, spec.port, tls, sni, request_bytes)


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
    parser = ResponseParser(head=spec.httpmethod == "HEAD")
    step.name = "connect"
    sock = await _connect(loop, target)
    if target.tls:
        await _exchange_tls(loop, sock, target, parser, step)
    else:
        step.name = "http"
        await _exchange_plain(loop, sock, target.request, parser)
    return verdict(spec, parser)


async def _exchange_plain(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, request: bytes, parser: ResponseParser
) -> None:
    """The lean path: no transport, one reader callback feeding the parser, one task wake-up."""
    fd = sock.fileno()
    done: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if done.done():
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            done.set_exception(exc)
            return
        try:
            if data:
                if parser.feed(data):
                    done.set_result(None)
            else:
                parser.feed_eof()
                done.set_result(None)
        except HttpProtocolError as exc:
            done.set_exception(CheckFailed(f"http: {exc}"))

    try:
        try:
            sent = sock.send(request)  # a fresh connection takes a small request whole
        except BlockingIOError:
            sent = 0
        if sent < len(request):
            await loop.sock_sendall(sock, request[sent:])
        loop.add_reader(fd, on_readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        sock.close()


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


def verdict(spec: CheckSpec, parser: ResponseParser) -> CheckResult:
    status = parser.status
    if not 200 <= status < 300:
        if 300 <= status < 400:
            location = dict(parser.headers).get(b"location", b"").decode("latin-1")
            where = f" to {location[:200]}" if location else ""
            return CheckResult(False, f"http: status {status} (redirect{where} not followed)")
        return CheckResult(False, f"http: status {status}")
    pattern = compile_receive(spec.receive)
    if pattern is not None and pattern.search(parser.body) is None:
        return CheckResult(False, "http: body does not match receive")
    return CheckResult(True, f"http: status {status}")


async def _connect(loop: asyncio.AbstractEventLoop, target: Target) -> socket.socket:
    """A connected non-blocking TCP socket (resolving the host only for an absolute URL)."""
    family = target.family
    addr: tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
    addr = (target.connect_host, target.connect_port)
    if family is None:
        resolved = await loop.getaddrinfo(*addr, type=socket.SOCK_STREAM)
        if not resolved:
            raise CheckFailed(f"connect: {target.connect_host} did not resolve")
        family, _, _, _, addr = resolved[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        try:
            sock.connect(addr)
        except BlockingIOError:
            # A non-blocking connect says "in progress" even on loopback, where the handshake is
            # in fact complete when the call returns. Asking again costs one syscall and saves a
            # selector round trip (add/remove writer, a future, a loop pass) on most checks.
            err = sock.connect_ex(addr)
            if err in (errno.EALREADY, errno.EINPROGRESS):
                await _writable(loop, sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err and err != errno.EISCONN:
                raise OSError(err, os.strerror(err)) from None
    except BaseException:
        sock.close()
        raise
    return sock


async def _writable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    fd = sock.fileno()
    ready: asyncio.Future[None] = loop.create_future()

    def on_writable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, on_writable)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
