"""TLS without a task: a sans-IO client layer over memory BIOs, and a `Dialogue` that wraps another.

Why: an https check through `stream.converse` costs a task, a future, asyncio's SSL protocol and
transport and its shutdown dance: 1,353 µs of CPU per check at 200 reals against keepalived's
639 µs (bench/README.md, issue 22 goal 3). OpenSSL's own work for one handshake and one request
is some 400 µs; the rest is machinery. Here TLS is bytes in, bytes out (`ssl.MemoryBIO` and
`SSLContext.wrap_bio`, an `ssl.SSLObject`), so the prober can drive it on its own epoll like any
plain dialogue (bench/tls_cost.py measures each step).

* `TlsLayer`: one client connection. `start()` gives the ClientHello; `receive(ciphertext)` gives
  `(plaintext, ciphertext to send)` and sets `handshake_done` and `eof` (close_notify, or a TCP
  end the peer did not announce: asyncio's reading too); `send(plaintext)` gives ciphertext,
  `close_notify()` the alert. TLS errors raise `ssl.SSLError`. `b""` given to `receive` is the
  TCP end.
* `TlsDialogue(inner, ...)`: a `Dialogue` that runs `inner` (http, pop, imap...) over a
  `TlsLayer`. It is the prober integration: the prober needs **no change**, a plan only makes
  its dialogue this way (`make_dialogue`: `TlsDialogue(HttpDialogue(spec, request), sni, key)`).
  What the prober already does then does TLS:

  - connect: `opening()` is the ClientHello (`step` is "tls" until the handshake is done:
    "timeout after 3s during tls", "tls: connection reset by peer", as today);
  - `_on_readable`: `feed(ciphertext)` returns what to send (the handshake's next flight; once
    it is done, the client's last flight and the inner opening, encrypted, in one send), or
    the verdict; the plaintext goes to `inner.feed` and its replies are encrypted. A TLS error
    is a verdict, never an exception (the prober's reader must not raise): "tls: <reason>"
    during the handshake, "<inner step>: <reason>" after it (today's wording: registry.py,
    stream.py);
  - the budget counts ciphertext: `budget` = the inner's, an eighth more for record overhead,
    and HANDSHAKE_BYTES for the server's certificate chain; the inner dialogue is still fed at
    most its own budget of plaintext (then `inner.over_budget()`);
  - the verdict: `farewell` (which the prober sends after it, as a courtesy) is the inner's
    farewell encrypted plus close_notify;
  - `shut_wr` is never set: a half-close under TLS would end the handshake (no TLS service
    asks for it).

* Sessions (`SessionCache`, one per process, at most MAX_SESSIONS reals, ~6 KiB each): a check
  offers the session its real last gave, keyed by (address, port, SNI); a resumed handshake
  skips the certificate, its parsing and the signature check (the server's too: its RSA
  signature is most of nginx's cost per check). Two facts of CPython 3.11 shape it (measured:
  bench/README.md):

  - reading `SSLObject.session` and passing `session=` each cost ~100 µs: CPython copies a
    session by serialising and parsing it again (`_ssl_session_dup`, certificate included),
    and on 3.11 the getter leaks that copy (python/cpython#116810). lvsmon/checks/tlssession.py
    takes and offers sessions through libssl instead (a reference each way, ~1 µs, nothing
    leaked) where the interpreter's layout checks out, else through CPython's API. Either way
    the session is read only after a full handshake; a resumed check puts the session it
    offered back (a ticket serves many handshakes until its lifetime: nginx's 300 s).
  - TLS 1.3 gives a resumable session only after the handshake, in NewSessionTicket messages
    the client reads with the first application data: `session` is read at the verdict, and
    kept only if it holds a ticket (TLS 1.2: a ticket or a session id).

  A session is taken out of the cache when it is offered and put back only by a check that
  reached its verdict over a sound TLS connection: a check that dies in TLS, times out or is
  aborted leaves none, so the next handshake is a full one. A TLS error after a session was
  offered, or a server that does not resume what it was offered twice in a row, makes the key
  quiet for QUIET_S (no offer): a server whose resumption fails cannot make its real flap, and
  one that never resumes (no tickets, no session cache) costs no offer per check. Sessions are
  never offered past their ticket's lifetime hint. A session is bound to the SSLContext that
  made it (CPython refuses another's): one context per verification setting, shared by every
  check with that setting (checks/tlsverify.py; `client_context` is sslverify = no's, no
  certificate or host name check: docs/compatibility.md D18), and the cache's key names the
  setting (`session_key`), so a session made unverified is never offered to a verifying check.

Wired in as follows (http.TlsHttpPlan, drive.login_plan; bench/tls_cost.py has the model):

1. http.py `probe_plan`: for `target.tls` with an address literal, a plan (HttpPlan with two
   more slots: the SNI name and the session key, made once per job) whose `make_dialogue` is
   `TlsDialogue(HttpDialogue(spec, request), target.server_hostname, key)`, key =
   `session_key(connect_host, connect_port, server_hostname)`; `check` (the task path) probes
   the same plan. A URL naming a host still goes through `stream.converse` after resolving.
2. drive.py `login_plan` and `drive(via="tls")` (pops, imaps): `plain_plan(spec, lambda:
   TlsDialogue(make(service, login, passwd), "", session_key(spec.host, spec.port, "")))`.
3. What changes for the rest: `received` (the lag rule's) is ciphertext; TLS checks take the
   prober's metered descriptors instead of a task's; tests/hostile/test_driver_bounds.py's TLS
   cases and the https/pops/imaps tests run on the prober (their reasons are unchanged:
   tests/checks/test_tls.py). ldaps (ldap3) and the library checks keep their own sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
import time
from collections.abc import Callable, Hashable
from typing import Final

from lvsmon.checks.base import CheckResult, CheckSpec, describe_error
from lvsmon.checks.dialogue import Dialogue, Outcome
from lvsmon.checks.stream import tls_context
from lvsmon.checks.tlssession import Session, session_of, wrap
from lvsmon.checks.tlsverify import (
    NO_VERIFY,
    ContextKey,
    context_for,
    context_key,
    is_ip,
    not_after,
    verify_reason,
    wanted_name,
)

HANDSHAKE_BYTES: Final = 64 * 1024
"""The server's bytes a handshake may take on top of the inner dialogue's budget (a certificate
chain is a few KiB; OpenSSL caps it at 100 KiB by default)."""

QUIET_S: Final = 600.0
"""How long a real whose resumption failed is offered no session."""

MAX_SESSIONS: Final = 4096
"""Reals with an entry at most: a session holds its server's certificate, some 6 KiB
(bench/tls_cost.py), so ~25 MiB at most. Past it a new real is admitted only in place of one
unused for STALE_S (a real that left the config): evicting the least recently used instead
would, with more TLS reals than room checked in turn, evict each entry before its next check
and pay a session copy per check for nothing."""

STALE_S: Final = 300.0
"""An entry not used for this long belongs to a real that is gone (a live one is put back at
each check): the next put drops it."""

_READ: Final = 16384  # a record's plaintext at most: one read each, no larger buffer made


def client_context() -> ssl.SSLContext:
    """The one client context of every TLS check (sessions are bound to it)."""
    return tls_context()


class TlsLayer:
    """One TLS client connection, sans-IO."""

    __slots__ = ("_in", "_obj", "_out", "eof", "handshake_done", "offered")

    def __init__(
        self,
        server_hostname: str = "",
        session: Session | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        """`server_hostname`: the SNI name ("" sends none); `session`: one to offer (not
        offered if it is another context's)."""
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        ctx = context or client_context()
        self._obj, self.offered = wrap(ctx, self._in, self._out, server_hostname or None, session)
        self.handshake_done = False
        self.eof = False  # the peer ended its side (close_notify or the TCP end)

    def start(self) -> bytes:
        """The ClientHello."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self._obj.do_handshake()
        return self._out.read()

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        """Take the peer's `data` (b"": the TCP end); give the plaintext it completes and the
        ciphertext to send. Raises ssl.SSLError (SSLEOFError: the TCP end during the
        handshake)."""
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()
        if not self.handshake_done:
            try:
                self._obj.do_handshake()
            except ssl.SSLWantReadError:
                return b"", self._out.read()
            self.handshake_done = True
        return self._read(), self._out.read()

    def _read(self) -> bytes:
        obj = self._obj
        parts: list[bytes] = []
        try:
            while True:
                chunk = obj.read(_READ)
                if not chunk:  # close_notify
                    self.eof = True
                    break
                parts.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLEOFError:  # the TCP end without close_notify: an end all the same
            self.eof = True
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def send(self, plaintext: bytes) -> bytes:
        """`plaintext` as records to send (only once the handshake is done)."""
        self._obj.write(plaintext)
        return self._out.read()

    def close_notify(self) -> bytes:
        """The close_notify alert to send; b"" if it cannot be made (the verdict stands)."""
        # SSLWantReadError: made, and the peer's is not awaited
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()
        return self._out.read()

    @property
    def session(self) -> Session | None:
        """The connection's session (lvsmon/checks/tlssession.py: a reference, or CPython's
        copy, ~100 µs); TLS 1.3's is resumable only once its ticket was read, after some
        application data."""
        return session_of(self._obj)

    @property
    def session_reused(self) -> bool:
        return self._obj.session_reused

    def version(self) -> str | None:
        return self._obj.version()

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._obj

    def not_after(self) -> float | None:
        """The server certificate's notAfter (None: none, or one that does not parse)."""
        der = self._obj.getpeercert(binary_form=True)
        return not_after(der) if der else None


class SessionEntry:
    """A real's entry: the session to offer (None: quiet until `until`), and how many offers
    in a row its server did not resume."""

    __slots__ = ("session", "strikes", "until", "used")

    def __init__(self, session: Session | None, strikes: int = 0, until: float = 0.0):
        self.session = session
        self.strikes = strikes
        self.until = until
        self.used = 0.0  # when it was last put in the cache


class SessionCache:
    """The session each real last gave, to offer on its next check. An entry is taken when its
    session is offered and put back by a check that reached its verdict over sound TLS;
    bounded (`max_entries`, see MAX_SESSIONS)."""

    __slots__ = ("_clock", "_entries", "_wall", "max_entries", "quiet_s")

    def __init__(
        self,
        max_entries: int = MAX_SESSIONS,
        quiet_s: float = QUIET_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.quiet_s = quiet_s
        self._clock = clock
        self._wall = wall  # SSLSession.time is the wall clock's
        self._entries: dict[Hashable, SessionEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def offer(self, key: Hashable) -> SessionEntry | None:
        """The entry whose session `key`'s next handshake offers, taken out of the cache."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        session = entry.session
        if session is None:  # quiet
            if self._clock() < entry.until:
                self._entries[key] = entry
            return None
        hint = session.ticket_lifetime_hint
        if hint and self._wall() >= session.time + hint:
            return None  # its ticket has expired: a full handshake, a fresh session
        return entry

    def keep(self, key: Hashable, layer: TlsLayer, entry: SessionEntry | None) -> None:
        """After a sound check's verdict (`entry`: what it offered): what to offer next time."""
        strikes = 0
        if not self._room(key):
            return  # before the session is read: no copy for a real it cannot keep
        if entry is not None:
            if layer.session_reused:
                self._put(key, entry)  # the same ticket serves again: no copy
                return
            strikes = entry.strikes + 1
            if strikes >= 2:
                self.quiet(key)  # it does not resume what it is offered
                return
        session = layer.session  # a full handshake: a reference (CPython's API: a copy)
        if session is None or not (
            session.has_ticket or (session.id and layer.version() != "TLSv1.3")
        ):
            self.quiet(key)  # nothing to resume with: no copy per check
            return
        self._put(key, SessionEntry(session, strikes))

    def quiet(self, key: Hashable) -> None:
        """Offer `key` nothing for `quiet_s`."""
        if self._room(key):
            self._put(key, SessionEntry(None, 0, self._clock() + self.quiet_s))

    def drop(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def _room(self, key: Hashable) -> bool:
        """Whether `key` may have an entry: it has one, there is room, or the least recently
        used entry is stale and goes."""
        entries = self._entries
        if len(entries) < self.max_entries or key in entries:
            return True
        oldest = next(iter(entries))
        if self._clock() - entries[oldest].used > STALE_S:
            del entries[oldest]
            return True
        return False

    def _put(self, key: Hashable, entry: SessionEntry) -> None:
        entries = self._entries
        entries.pop(key, None)
        now = entry.used = self._clock()
        entries[key] = entry  # the most recently used last
        # the least recently used first: a real a reload removed leaves its entry (and its
        # session, ~6 KiB) there; it goes once stale, not only when the cache is full (the
        # soak's edits grew it by every TLS real they ever added)
        stale = []
        for old_key, old in entries.items():
            if now - old.used <= STALE_S:
                break  # and so are the ones put after it
            if old.session is not None or now >= old.until:  # not one still quiet
                stale.append(old_key)
        for old_key in stale:
            del entries[old_key]


SESSIONS: Final = SessionCache()
"""The process's sessions, one per real (keyed by `session_key`)."""


def session_key(
    host: str, port: int, server_hostname: str, setting: ContextKey = NO_VERIFY
) -> Hashable:
    """A real's key in the session cache. A session is kept per verification setting
    (`setting`, tlsverify.context_key): one made without verification is never offered to a
    check that verifies (the handshake it would skip is the verification)."""
    if setting == NO_VERIFY:
        return (host, port, server_hostname)
    return (host, port, server_hostname, *setting)


class TlsSetting:
    """What a TLS check's dialogues share, made once per job from its spec (sslverify and its
    friends, checks/tlsverify.py): the SNI name, the name verified, the session key, and the
    context setting (looked up for each dialogue: a changed CA file is noticed)."""

    __slots__ = ("key", "read_cert", "setting", "sni", "wanted")

    def __init__(self, spec: CheckSpec, host: str, port: int, sni: str) -> None:
        """`host`, `port`: where the check connects; `sni`: what it sends unverified."""
        verify = spec.sslverify
        self.setting = context_key(verify, spec.sslcafile)
        self.wanted = ""
        if verify == "name":
            # CPython checks the name it sends: an address literal is checked, not sent
            self.wanted = sni = wanted_name(spec.sslname, spec.virtualhost, host)
        self.sni = "" if is_ip(sni) else sni
        self.key = session_key(host, port, self.wanted or self.sni, self.setting)
        self.read_cert = spec.sslexpiry

    def context(self) -> ssl.SSLContext | None:
        setting = self.setting
        return None if setting == NO_VERIFY else context_for(*setting)

    def args(self) -> tuple[str, Hashable, SessionCache, ssl.SSLContext | None, str, bool]:
        """TlsDialogue's arguments after `inner`, for one check (the server_hostname: the name
        verified, which CPython also sends unless it is an address)."""
        return (
            self.wanted or self.sni,
            self.key,
            SESSIONS,
            self.context(),
            self.wanted,
            self.read_cert,
        )


class TlsDialogue(Dialogue):
    """`inner` over TLS, as one `Dialogue`: what the prober runs for https, pops, imaps."""

    def __init__(
        self,
        inner: Dialogue,
        server_hostname: str = "",
        key: Hashable | None = None,
        cache: SessionCache | None = SESSIONS,
        context: ssl.SSLContext | None = None,
        wanted: str = "",
        read_cert: bool = False,
    ) -> None:
        """`key`: the real's in `cache` (None: no session is offered or kept); `context`: a
        verifying one (checks/tlsverify.py) or None (no verification); `wanted`: the name it
        verifies, for the reason; `read_cert`: read the certificate's notAfter into the result
        (sslexpirywarn)."""
        self.inner = inner
        self.wanted = wanted
        self.read_cert = read_cert
        self.not_after: float | None = None
        self.step = "tls"
        self.budget = inner.budget + inner.budget // 8 + HANDSHAKE_BYTES
        self.room = inner.budget  # the plaintext the inner may still be fed
        self.received = 0  # the ciphertext fed (`drive.probe_in_task`: the lag rule's count)
        self.cache = cache if key is not None else None
        self.key = key
        self.entry = self.cache.offer(key) if self.cache is not None else None
        session = None if self.entry is None else self.entry.session
        self.layer = TlsLayer(server_hostname, session, context)
        if self.layer.offered is None:
            self.entry = None  # refused by the context: not an offer

    def opening(self) -> bytes:
        return self.layer.start()

    def feed(self, data: bytes) -> Outcome:
        self.received += len(data)
        layer = self.layer
        was_done = layer.handshake_done
        try:
            plain, out = layer.receive(data)
            if not layer.handshake_done:
                return out
            inner = self.inner
            if not was_done:
                self.step = inner.step
                if self.read_cert:  # a resumed session still has the server's certificate
                    self.not_after = layer.not_after()
                opening = inner.opening()
                if opening:
                    out += layer.send(opening)
            outcome: Outcome = None
            if plain:
                room = self.room = self.room - len(plain)
                if room < 0:
                    return self._verdict(inner.over_budget(), out)
                outcome = inner.feed(plain)
                self.step = inner.step
            if outcome is None and layer.eof:
                outcome = inner.feed_eof()
            if isinstance(outcome, CheckResult):
                return self._verdict(outcome, out)
            if outcome:
                out += layer.send(outcome)
            return out
        except ssl.SSLEOFError:  # the TCP end during the handshake
            return self._failed("connection closed by the server")
        except ssl.SSLCertVerificationError as exc:  # sslverify: what failed, with its dates
            return self._failed(verify_reason(exc, layer.ssl_object, self.wanted))
        except ssl.SSLError as exc:
            return self._failed(describe_error(exc))

    def feed_eof(self) -> CheckResult:
        outcome = self.feed(b"")
        if isinstance(outcome, CheckResult):
            return outcome
        return self._failed("connection closed by the server")  # not reached: the layer ends

    def _verdict(self, result: CheckResult, out: bytes) -> CheckResult:
        layer = self.layer
        if self.inner.farewell:
            with contextlib.suppress(ssl.SSLError):  # a courtesy: the verdict stands
                out += layer.send(self.inner.farewell)
        self.farewell = out + layer.close_notify()
        if self.cache is not None:
            self.cache.keep(self.key, layer, self.entry)
        if self.not_after is not None:
            return dataclasses.replace(result, cert_not_after=self.not_after)
        return result

    def _failed(self, reason: str) -> CheckResult:
        if self.cache is not None and self.entry is not None:
            self.cache.quiet(self.key)  # its resumed handshake failed: full ones for a while
        step = self.inner.step if self.layer.handshake_done else "tls"
        return CheckResult(False, f"{step}: {reason}")

    def over_budget(self) -> CheckResult:
        if self.layer.handshake_done:
            return self.inner.over_budget()
        return super().over_budget()  # "tls: response too large (over ...)"
