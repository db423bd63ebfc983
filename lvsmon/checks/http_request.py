"""What a negotiate http/https/http_proxy check sends and what counts as up: pure, no I/O.

What counts as up (ldirectord §3.3): a 2xx status, and the body matches `receive` (a regex searched
anywhere in the raw body bytes) when `receive` is set. Deliberate differences from ldirectord
(LWP), see bug #17:
* redirects are not followed: a 3xx is down. LWP followed up to 7, even to other hosts, so a real
  redirecting to a healthy sibling looked healthy itself.
* with `virtualhost` set, TLS SNI carries it too (ldirectord sent no SNI), so SNI-routed servers are
  checked on the right site. Without it, or for an IP literal, no SNI is sent.
* only the first 1 MiB of the body is read and matched, and one search may take at most
  RECEIVE_TIMEOUT (0.1 s): it runs on the event loop, and Perl had no such bound.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Final
from urllib.parse import quote, urlsplit

from lvsmon.addr import bracketed
from lvsmon.checks.base import (
    RECEIVE_TIMEOUT,
    CheckFailed,
    CheckResult,
    CheckSpec,
    compile_receive,
)
from lvsmon.checks.http_parser import ResponseParser

USER_AGENT: Final = "lvsmon"
_DEFAULT_PORT: Final = {"http": 80, "https": 443}


def authority(host: str, port: int, scheme: str) -> str:
    """A Host header's value for `host`:`port`, the port left out when it is the scheme's."""
    literal = bracketed(host)
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
    host_header = spec.virtualhost or authority(spec.host, spec.port, scheme)
    tls = scheme == "https"
    sni = _sni_for(spec.virtualhost) if tls else ""
    request_bytes = _request_bytes(spec.httpmethod, path, host_header)
    return Target(spec.host, spec.port, tls, sni, request_bytes)


def verdict(spec: CheckSpec, parser: ResponseParser) -> CheckResult:
    status = parser.status
    if not 200 <= status < 300:
        if 300 <= status < 400:
            location = dict(parser.headers).get(b"location", b"").decode("latin-1")
            where = f" to {location[:200]}" if location else ""
            return CheckResult(False, f"http: status {status} (redirect{where} not followed)")
        return CheckResult(False, f"http: status {status}")
    pattern = compile_receive(spec.receive)
    if pattern is not None:
        try:
            found = pattern.search(parser.body, timeout=RECEIVE_TIMEOUT)
        except TimeoutError:
            return CheckResult(False, f"http: receive regex took longer than {RECEIVE_TIMEOUT:g} s")
        if found is None:
            return CheckResult(False, "http: body does not match receive")
    reason = _OK_REASONS.get(status)
    if reason is None:
        reason = _OK_REASONS[status] = f"http: status {status}"  # 200-299: 100 at most
    return CheckResult(True, reason)


# one text per good status, shared: a healthy real's health and its job keep the last reason
_OK_REASONS: dict[int, str] = {}
