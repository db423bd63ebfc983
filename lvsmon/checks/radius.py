"""negotiate check for service=radius: one Access-Request, up iff Access-Accept.

As ldirectord's check_radius (Authen::Radius check_pwd): User-Name = `login`, User-Password =
`passwd` (PAP, hidden with the shared `secret`), always over UDP whatever the virtual's
protocol. pyrad encodes the request (with a Message-Authenticator, the Blast-RADIUS hardening
that current servers require) and verifies the reply's authenticators; the exchange runs as a
`Dialogue` on `datagram.converse_datagram`, which resends the same request after 0.5 s, 1 s,
2 s... within the check's one deadline and ends the check at once on an ICMP port unreachable.

A reply that fails verification (not signed with our secret, or forged) is ignored, as RFC 2865
says; a server with another secret usually drops the request silently. Both end as a timeout at
the deadline, and the step then says a reply failed verification if one came.
"""

from __future__ import annotations

import io
import random
import socket
from typing import Any, Final

from pyrad import packet as rad
from pyrad.dictionary import Dictionary

from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.datagram import converse_datagram
from lvsmon.checks.dialogue import Dialogue, Outcome, shown
from lvsmon.checks.step import Step

NAS_IDENTIFIER: Final = "lvsmon"
"""RFC 2865 wants a NAS-IP-Address or NAS-Identifier in every Access-Request."""

# pyrad needs a dictionary to encode by name; these are all the attributes the check uses
DICTIONARY: Final = Dictionary(
    io.StringIO(
        "ATTRIBUTE User-Name 1 string\n"
        "ATTRIBUTE User-Password 2 string encrypt=1\n"
        "ATTRIBUTE Reply-Message 18 string\n"
        "ATTRIBUTE NAS-Identifier 32 string\n"
        "ATTRIBUTE Message-Authenticator 80 octets\n"
    )
)

_CODES: Final = {
    rad.AccessAccept: "Access-Accept",
    rad.AccessReject: "Access-Reject",
    rad.AccessChallenge: "Access-Challenge",
}


def build_request(spec: CheckSpec) -> tuple[Any, bytes]:
    """The Access-Request for `spec`, as a pyrad AuthPacket (to verify the reply against) and
    as bytes; CheckFailed if it cannot be built (a passwd over 128 bytes, a login over 253)."""
    try:
        request = rad.AuthPacket(
            id=random.randrange(256),
            secret=spec.secret.encode(),
            dict=DICTIONARY,
            message_authenticator=True,
        )
        request["User-Name"] = spec.login
        request["User-Password"] = request.PwCrypt(spec.passwd)
        request["NAS-Identifier"] = NAS_IDENTIFIER
        raw: bytes = request.RequestPacket()
    except (ValueError, TypeError) as exc:
        raise CheckFailed(f"radius: cannot build the request: {exc}") from None
    return request, raw


class RadiusDialogue(Dialogue):
    """Send the request; judge the first reply that verifies."""

    step = "radius"

    def __init__(self, spec: CheckSpec, step: Step | None = None) -> None:
        self.request, self.raw = build_request(spec)
        self.progress = step  # the check's Step, told when a reply fails verification

    def opening(self) -> bytes:
        return self.raw

    def feed(self, data: bytes) -> Outcome:
        try:
            reply = rad.Packet(packet=data, dict=DICTIONARY)
            valid = bool(self.request.VerifyReply(reply, data))
        except Exception:  # pyrad raises PacketError and a few others on garbage
            valid = False
        if not valid:
            self.step = "radius (a reply failed verification: wrong secret?)"
            if self.progress is not None:
                self.progress.name = self.step
            return None
        return verdict(reply)

    def feed_eof(self) -> CheckResult:  # UDP has no end of stream; kept total
        return CheckResult(False, "radius: no reply")


def verdict(reply: Any) -> CheckResult:
    """Up iff Access-Accept; a Reject names the server's Reply-Message, if any."""
    code = int(reply.code)
    name = _CODES.get(code, f"reply code {code}")
    if code == rad.AccessAccept:
        return CheckResult(True, "radius: Access-Accept")
    messages: list[Any] = []
    if "Reply-Message" in reply:
        messages = list(reply["Reply-Message"])
    raw = b" ".join(m if isinstance(m, bytes) else str(m).encode() for m in messages)
    text = shown(raw)
    return CheckResult(False, f"radius: {name}: {text}" if text else f"radius: {name}")


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    if not spec.secret:
        raise CheckFailed("radius: secret must be set for this check")
    if not spec.login:
        raise CheckFailed("radius: login must be set for this check")
    dialogue = RadiusDialogue(spec, step)
    family = socket.AF_INET6 if spec.is_ipv6 else socket.AF_INET
    return await converse_datagram(dialogue, family, (spec.host, spec.port), step)
