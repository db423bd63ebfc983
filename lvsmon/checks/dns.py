"""negotiate check for service=dns: ask the real for a name (A, then AAAA) or an address (PTR).

ldirectord (check_dns) asked Net::DNS `search(request)`: qtype A for a name, PTR for an IP
literal, and was up iff an answer's A address or PTR name matched `receive`. Here:

* a name is asked for A first and, only if no A record matched, for AAAA on the same socket:
  up iff an A or AAAA address (RFC 5952 text, "2001:db8::10") matches `receive`. ldirectord
  could not check AAAA at all;
* an IP literal is asked for PTR; its target is matched without the final dot, as Net::DNS
  gives it;
* an empty `receive` means "any record of the type asked": ldirectord was always down with it;
* NXDOMAIN, REFUSED, SERVFAIL... end the check with that code in the reason; the name is taken as
  absolute (Net::DNS appended the director's resolv.conf search domains, which say nothing about
  the real).

dnspython builds and parses the messages; the I/O is lvsmon's own drivers, so a lost UDP
datagram is sent again (0.5 s, 1 s, 2 s...) within the one deadline, an ICMP port unreachable
ends the check at once, and over TCP (the virtual's protocol is tcp; ldirectord used UDP for udp
and fwm) the check runs on the prober like every plain-TCP dialogue. A UDP answer with TC set
that matches nothing is asked again over TCP, as Net::DNS did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.reversename
from dns.rdata import Rdata

from lvsmon.checks.base import (
    RECEIVE_TIMEOUT,
    CheckFailed,
    CheckResult,
    CheckSpec,
    ReceiveRegex,
    compile_receive,
)
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.drive import drive, plain_plan
from lvsmon.checks.prober import ProbePlan
from lvsmon.checks.step import Step

A: Final = dns.rdatatype.A
AAAA: Final = dns.rdatatype.AAAA
PTR: Final = dns.rdatatype.PTR
MAX_SHOWN: Final = 4
"""Records that did not match named in the reason; more are counted, not listed."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the check asks: the request as the user wrote it, the query name, the types in order."""

    shown: str
    qname: dns.name.Name
    qtypes: tuple[dns.rdatatype.RdataType, ...]


def lookup(request: str) -> Lookup:
    """The lookup `request` (ldirectord's, one leading "/" dropped) asks for."""
    text = request[1:] if request.startswith("/") else request
    if not text:
        raise CheckFailed("dns: request is empty: set it to the name or address to look up")
    if dns.inet.is_address(text):
        return Lookup(text, dns.reversename.from_address(text), (PTR,))
    try:
        qname = dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise CheckFailed(f"dns: request {text!r} is not a domain name: {exc}") from None
    return Lookup(text, qname, (A, AAAA))


def _value(rdata: Rdata) -> str:
    if rdata.rdtype == PTR:
        return str(rdata.target.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return str(rdata.address)  # type: ignore[attr-defined]


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class DnsDialogue(Dialogue):
    """One query at a time; the answer to the first query that matches ends it up.

    Over TCP each message carries RFC 1035's two-byte length. Over UDP a datagram is one message,
    and the driver's resends repeat only the first query: an answer to an earlier query after the
    dialogue moved on means a datagram was lost, so the current query is sent again.
    """

    step = "dns query"

    def __init__(self, target: Lookup, receive: str, *, tcp: bool) -> None:
        self.target = target
        self.receive_text = receive
        self.receive: ReceiveRegex | None = compile_receive(receive)
        self.tcp = tcp
        self.queries = [dns.message.make_query(target.qname, qtype) for qtype in target.qtypes]
        self.asked = 0
        self.seen: list[str] = []  # values of the records that did not match
        self.truncated = False
        self._buf = bytearray()  # TCP: a message under way, with its length

    def _wire(self, index: int) -> bytes:
        wire = self.queries[index].to_wire()
        return len(wire).to_bytes(2, "big") + wire if self.tcp else wire

    def opening(self) -> bytes:
        return self._wire(0)

    def feed(self, data: bytes) -> Outcome:
        if not self.tcp:
            return self._message(data)
        # a bytearray, cut at its front: a message fed a byte at a time costs O(its length)
        buf = self._buf
        buf += data
        while len(buf) >= 2:
            end = 2 + int.from_bytes(buf[:2], "big")
            if len(buf) < end:
                return None
            message = bytes(buf[2:end])
            del buf[:end]
            outcome = self._message(message)
            if outcome is not None:
                return outcome
        return None

    def feed_eof(self) -> CheckResult:
        qtype = dns.rdatatype.to_text(self.target.qtypes[self.asked])
        return CheckResult(False, f"dns: connection closed by the server before the {qtype} answer")

    def _message(self, wire: bytes) -> Outcome:
        try:
            response = dns.message.from_wire(wire)
        except Exception as exc:  # whatever the parser makes of a server's bytes is its fault
            return CheckResult(False, f"dns: malformed answer: {exc or type(exc).__name__}")
        if not self.queries[self.asked].is_response(response):
            if self.tcp:
                return CheckResult(False, "dns: answer does not match the query")
            if any(q.is_response(response) for q in self.queries[: self.asked]):
                return self._wire(self.asked)
            return None  # a stray datagram: the answer may still come
        return self._judge(response)

    def _judge(self, response: dns.message.Message) -> Outcome:
        target = self.target
        qtype = target.qtypes[self.asked]
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return CheckResult(False, f"dns: NXDOMAIN for {target.shown}")
        if rcode != dns.rcode.NOERROR:
            name = dns.rcode.to_text(rcode)
            return CheckResult(
                False, f"dns: {name} for {target.shown} ({dns.rdatatype.to_text(qtype)})"
            )
        for rrset in response.answer:
            if rrset.rdtype != qtype:
                continue  # the CNAMEs of a chain
            for rdata in rrset:
                value = _value(rdata)
                if self._matches(value):
                    kind = dns.rdatatype.to_text(qtype)
                    return CheckResult(True, f"dns: {target.shown} {kind} {value}")
                self.seen.append(value)
        if response.flags & dns.flags.TC and not self.tcp:
            self.truncated = True
            return CheckResult(False, f"dns: answer for {target.shown} truncated")
        self.asked += 1
        if self.asked < len(self.queries):
            return self._wire(self.asked)
        return CheckResult(False, self._miss())

    def _matches(self, value: str) -> bool:
        if self.receive is None:
            return True
        try:
            return self.receive.search(value.encode(), timeout=RECEIVE_TIMEOUT) is not None
        except TimeoutError:
            return False

    def _miss(self) -> str:
        kinds = " or ".join(dns.rdatatype.to_text(t) for t in self.target.qtypes)
        reason = f"dns: no {kinds} record for {self.target.shown}"
        if self.receive is not None:
            reason += f" matching {_short(self.receive_text)}"
        if self.seen:
            got = ", ".join(self.seen[:MAX_SHOWN])
            if len(self.seen) > MAX_SHOWN:
                got += f" and {len(self.seen) - MAX_SHOWN} more"
            reason += f" (got {got})"
        return reason


def probe_plan(spec: CheckSpec) -> ProbePlan | None:
    """DNS over TCP runs on the prober; UDP (virtuals of protocol udp and fwm) does not."""
    if spec.protocol != "tcp":
        return None
    try:
        target = lookup(spec.request)
    except CheckFailed:
        return None  # the general path reports it
    receive = spec.receive
    return plain_plan(spec, lambda: DnsDialogue(target, receive, tcp=True))


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    target = lookup(spec.request)
    if spec.protocol != "tcp":
        dialogue = DnsDialogue(target, spec.receive, tcp=False)
        result = await drive(spec, step, dialogue, "udp")
        if not dialogue.truncated:
            return result
    return await drive(spec, step, DnsDialogue(target, spec.receive, tcp=True))
