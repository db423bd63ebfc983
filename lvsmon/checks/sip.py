"""negotiate check for service=sip: one OPTIONS request, up iff the final answer is 200.

The request is ldirectord's (check_sip): `OPTIONS sip:<login> SIP/2.0` with Via, Max-Forwards,
To, From (with a tag), a random Call-ID, CSeq, Contact, Accept and Content-Length: 0. `login`
is the user@host of the request URI (the config's default is ldirectord's
`ldirectord@<hostname>`). It goes over UDP when the virtual's protocol is udp, else over TCP
(fwm included), as ldirectord's socket did; TCP runs on the prober.

Differences from ldirectord, each because of what a SIP server may rightly do:

* ldirectord required the status line to match `^SIP/2.0 200 OK`; the reason phrase is free
  text (RFC 3261 21), so here any `SIP/2.0 200` is up and every other final code is down
  ("sip: 404 Not here");
* a provisional 1xx answer (a proxy's "100 Trying") is skipped: the final answer decides;
* the Via names the transport really used (ldirectord always wrote UDP) and carries `rport`
  (RFC 3581) without a port: the UDP socket's port is only known to the datagram driver, and
  `rport` makes the server answer the port the request came from. Its branch is random per
  request, as RFC 3261 wants (ldirectord's was a constant);
* a lost UDP datagram is sent again (0.5 s, 1 s, 2 s...) within the one deadline.
"""

from __future__ import annotations

import functools
import random
import socket
from typing import Final

from lvsmon.addr import bracketed
from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.dialogue import Dialogue, LineBuffer, LineTooLong, Outcome, shown
from lvsmon.checks.drive import drive, family_of, plain_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step

SIP_VERSION: Final = b"SIP/2.0 "


def default_login() -> str:
    """ldirectord's default `login` for sip, which the config also applies."""
    return f"ldirectord@{socket.gethostname()}"


@functools.lru_cache(maxsize=4096)
def source_address(family: int, host: str) -> str:
    """The local address the kernel sends from to `host`, for the Via. Cached: with `rport` the
    server answers where the request came from, so a stale value after a route change is
    harmless."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, 9))  # a UDP connect only picks the route: nothing is sent
            return str(sock.getsockname()[0])
        except OSError:
            return "::" if family == socket.AF_INET6 else "0.0.0.0"


def options_request(login: str, transport: str, local: str) -> bytes:
    """ldirectord's OPTIONS request for `login`, sent over `transport` ("UDP", "TCP") from
    `local`."""
    if not login or any(c <= " " or c in "<>\x7f" for c in login):
        raise CheckFailed(f"sip: login {login!r} cannot be the user@host of a SIP URI")
    via_host = bracketed(local)
    branch, tag, call_id = (f"{random.getrandbits(64):016x}" for _ in range(3))
    return (
        f"OPTIONS sip:{login} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host};rport;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:{login}>\r\n"
        f"From: <sip:{login}>;tag={tag}\r\n"
        f"Call-ID: {call_id}@{via_host}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:{login}>\r\n"
        "Accept: application/sdp\r\n"
        "User-Agent: lvsmon\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def judge(status_line: bytes) -> CheckResult | None:
    """The verdict on a response's status line; None for a provisional (1xx) one."""
    code = status_line[len(SIP_VERSION) : len(SIP_VERSION) + 3]
    if not status_line.startswith(SIP_VERSION) or not code.isdigit():
        return CheckResult(False, f"sip: not a SIP response: {shown(status_line)}")
    if code.startswith(b"1"):
        return None
    return CheckResult(code == b"200", f"sip: {shown(status_line[len(SIP_VERSION) :])}")


class SipDialogue(Dialogue):
    """Send the OPTIONS, judge the first final response.

    Over UDP a datagram is one whole response: its first line is the status line. Over TCP the
    responses follow each other on the stream; a provisional one's headers are skipped up to
    its empty line (a 1xx to OPTIONS carries no body).
    """

    step = "sip options"

    def __init__(self, request: bytes, *, datagram: bool) -> None:
        self.request = request
        self.datagram = datagram
        self._lines = LineBuffer()
        self._in_headers = False  # within a provisional response, before its empty line

    def opening(self) -> bytes:
        return self.request

    def feed(self, data: bytes) -> Outcome:
        if self.datagram:
            return judge(data.split(b"\n", 1)[0].rstrip(b"\r"))
        try:
            lines = self._lines.lines(data)
        except LineTooLong as exc:
            return CheckResult(False, f"sip: {exc}")
        for line in lines:
            if self._in_headers:
                self._in_headers = line != b""
            elif line:  # RFC 3261 7.5: empty lines before a message are ignored
                verdict = judge(line)
                if verdict is not None:
                    return verdict
                self._in_headers = True
        return None

    def feed_eof(self) -> CheckResult:
        return CheckResult(False, "sip: connection closed by the server without a final answer")


def _request(spec: CheckSpec, transport: str) -> bytes:
    local = source_address(family_of(spec), spec.host)
    return options_request(spec.login or default_login(), transport, local)


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    """SIP over TCP runs on the prober; over UDP it goes through `check`."""
    if spec.protocol == "udp":
        return None
    try:
        _request(spec, "TCP")
    except CheckFailed:
        return None  # the general path reports it
    return plain_plan(spec, lambda: SipDialogue(_request(spec, "TCP"), datagram=False))


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    if spec.protocol == "udp":
        return await drive(spec, step, SipDialogue(_request(spec, "UDP"), datagram=True), "udp")
    return await drive(spec, step, SipDialogue(_request(spec, "TCP"), datagram=False))
