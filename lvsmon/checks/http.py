"""negotiate checks for service=http, https and http_proxy: the I/O around `http_request`.

One HTTP/1.1 request with `Connection: close`, the response parsed by the sans-IO
`ResponseParser`, the verdict from `http_request.verdict`, all wrapped as a `Dialogue`. Plain HTTP
and HTTPS to an address literal run on the `prober` (no task, no transport: see there for why and
what it costs; HTTPS as a `tls.TlsDialogue` around the HTTP one, resuming the real's TLS session);
absolute URLs naming a host go through `stream.converse`. Certificates are verified as the
virtual's `sslverify` says (checks/tlsverify.py; by default not at all; Debian 12's ldirectord
verifies the chain, not the host name: docs/compatibility.md D18).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Hashable
from typing import Final

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.budget import PEER_BYTES
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.drive import probe_in_task
from lvsmon.checks.http_parser import DEFAULT_BODY_LIMIT, HttpProtocolError, ResponseParser
from lvsmon.checks.http_request import Target, authority, build_target, verdict
from lvsmon.checks.prober import DialoguePlan, ProbePlan, prober_for
from lvsmon.checks.step import Step
from lvsmon.checks.stream import converse
from lvsmon.checks.tls import TlsDialogue, TlsSetting


class HttpDialogue(Dialogue):
    """Send the request, parse the response, judge it."""

    step = "http"
    budget = DEFAULT_BODY_LIMIT + PEER_BYTES  # the body it keeps, and the peer's bytes around it

    def __init__(self, spec: CheckSpec, request: bytes) -> None:
        self.spec = spec
        self.request = request
        self.parser = ResponseParser(head=spec.httpmethod == "HEAD")

    def opening(self) -> bytes:
        return self.request

    def feed(self, data: bytes) -> Outcome:
        try:
            if not self.parser.feed(data):
                return None
        except HttpProtocolError as exc:
            return CheckResult(False, f"http: {exc}")
        return verdict(self.spec, self.parser)

    def feed_eof(self) -> CheckResult:
        try:
            self.parser.feed_eof()
        except HttpProtocolError as exc:
            return CheckResult(False, f"http: {exc}")
        return verdict(self.spec, self.parser)


class HttpPlan(ProbePlan):
    """A plain HTTP check's plan: its request kept in slots, its dialogue made from them (no
    closure per real: some 250 bytes each at 10,000 reals). The request is kept in three parts,
    up to the Host header's value, the value, the rest: the first and the last are the same
    bytes for every real of a virtual (one object), the value most often the real's own
    address; they are joined for each check (some 100 ns) to keep 90 bytes less per real. A
    Host value that is the real's own authority (no virtualhost) is not kept but made again
    for each check from the spec (some 200 ns, 51 bytes a real less)."""

    __slots__ = ("parts",)
    SCHEME = "http"

    def __init__(
        self, spec: CheckSpec, family: int, addr: tuple[str, int] | None, request: bytes
    ) -> None:
        super().__init__(spec, family, addr)
        parts = _shared_parts(request)
        # one slot for the three parts, the tuple shared by the virtual's reals: (head, tail)
        # when the Host value is the real's own, else (head, host, tail) (16 bytes a real less)
        self.parts: tuple[bytes, ...] = (
            _head_tail(parts[0], parts[2]) if parts[1] == self._own_host() else parts
        )

    def _own_host(self) -> bytes:
        spec = self.spec
        return authority(spec.host, spec.port, self.SCHEME).encode("utf-8", "surrogateescape")

    @property
    def request(self) -> bytes:
        parts = self.parts
        if len(parts) == 2:
            return parts[0] + self._own_host() + parts[1]
        return b"".join(parts)

    def make_dialogue(self) -> Dialogue:
        return HttpDialogue(self.spec, self.request)


class TlsHttpPlan(HttpPlan):
    """An HTTPS check's plan: the HTTP one, plus the SNI name and the real's key in the TLS
    session cache (made once per job); its dialogue is the HTTP one wrapped in TLS."""

    __slots__ = ("tls",)
    SCHEME = "https"

    def __init__(
        self,
        spec: CheckSpec,
        family: int,
        addr: tuple[str, int] | None,
        request: bytes,
        tls: TlsSetting,
    ) -> None:
        super().__init__(spec, family, addr, request)
        self.tls = tls

    @property
    def sni(self) -> str:
        return self.tls.sni

    @property
    def key(self) -> Hashable:
        return self.tls.key

    def make_dialogue(self) -> Dialogue:
        return TlsDialogue(HttpDialogue(self.spec, self.request), *self.tls.args())


_HOST: Final = b"\r\nHost: "
_last_parts = (b"", b"", b"")  # the last plan's: the next real's of a virtual shares most


def _shared_parts(request: bytes) -> tuple[bytes, bytes, bytes]:
    global _last_parts
    start = request.find(_HOST)
    if start < 0:
        parts = (request, b"", b"")
    else:
        start += len(_HOST)
        end = request.find(b"\r\n", start)
        parts = (request[:start], request[start:end], request[end:])
    last = _last_parts
    if parts == last:
        return last  # the same request as the last real's: not even a tuple of its own
    parts = _last_parts = (
        last[0] if parts[0] == last[0] else parts[0],
        last[1] if parts[1] == last[1] else parts[1],  # a virtualhost
        last[2] if parts[2] == last[2] else parts[2],
    )
    return parts


_last_head_tail = (b"", b"")


def _head_tail(head: bytes, tail: bytes) -> tuple[bytes, bytes]:
    """(head, tail), the last plan's tuple when it is the same (the virtual's other reals)."""
    global _last_head_tail
    last = _last_head_tail
    if last[0] is head and last[1] is tail:
        return last
    _last_head_tail = last = (head, tail)
    return last


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    """The prober's plan for HTTP or HTTPS to an address literal; None for the general path."""
    try:
        # not the cached build_target: the plan is made once per job, and keeps what it needs
        target = build_target.__wrapped__(spec)
    except CheckFailed:
        return None  # the general path reports it
    if target.family is None:
        return None
    return _plan(spec, target, target.family)


def _plan(spec: CheckSpec, target: Target, family: int) -> HttpPlan:
    host, port = target.connect_host, target.connect_port
    addr = None if (host, port) == (spec.host, spec.port) else (host, port)
    if not target.tls:
        return HttpPlan(spec, family, addr, target.request)
    tls = TlsSetting(spec, host, port, target.server_hostname)
    return TlsHttpPlan(spec, family, addr, target.request, tls)


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    target = build_target(spec)
    loop = asyncio.get_running_loop()
    step.name = "connect"
    if target.family is not None:  # an address literal: the prober's plan, https too
        return await probe_in_task(_plan(spec, target, target.family), step)
    family, addr = await _address(loop, target)
    dialogue = HttpDialogue(spec, target.request)
    if not target.tls:
        plan = DialoguePlan(spec, family, addr, lambda: dialogue)
        return await prober_for(loop).probe(plan, step)
    tls = TlsSetting(spec, target.connect_host, target.connect_port, target.server_hostname)
    return await converse(
        dialogue,
        family,
        addr,
        step,
        tls=True,
        server_hostname=tls.wanted or tls.sni,  # the name verified is the name sent
        context=tls.context(),
    )


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
