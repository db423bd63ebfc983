"""The values every check shares: what to check (`CheckSpec`) and what came of it (`CheckResult`).

A check never raises for a server's misbehaviour: the outcome is a `CheckResult` whose `reason`
names the step that failed ("connect: connection refused", "http: status 503"). Inside a check,
`CheckFailed` is the one way to abort with such a reason; `run_check` turns it (and OSError, TLS
errors, the deadline) into a result. `CheckSpecError` is different: it means the spec itself is
unusable (our input, not the server), and is raised when the spec is built.
"""

from __future__ import annotations

import contextvars
import functools
import ipaddress
import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeVar, cast, get_args

import regex  # type: ignore[import-untyped]

from lvsmon.checks.tlsverify import verify_reason

CheckKind = Literal["connect", "negotiate", "external", "external-perl", "ping", "on", "off"]
CheckProtocol = Literal["tcp", "udp", "fwm"]
HttpMethod = Literal["GET", "HEAD"]

CHECK_KINDS: frozenset[str] = frozenset(get_args(CheckKind))
PROTOCOLS: frozenset[str] = frozenset(get_args(CheckProtocol))
HTTP_METHODS: frozenset[str] = frozenset(get_args(HttpMethod))
_V = TypeVar("_V")


class CheckSpecError(ValueError):
    """The spec cannot describe a check (unknown kind, bad port, regex Python cannot compile...)."""


class CheckFailed(Exception):
    """Raised inside a check to end it as down; `reason` is the whole user-facing reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    reason: str
    latency_s: float = 0.0
    # the check's own deadline ended it: the engine may judge that unknown when the daemon was
    # late meanwhile (lvsmon/engine/lag.py); a kernel's ETIMEDOUT is not this
    timed_out: bool = False
    # the peer's bytes the check received (run_check fills it from `Received`): a check that
    # was busy receiving earns no forgiveness for a late timeout. Not part of a result's value
    received: int = field(default=0, compare=False)
    # a timeout on the prober: how long the peer had had its turn (since our last bytes went
    # out, or since the connect began) when the deadline ended the check, every ready socket
    # read first, less the time the loop lost to lag meanwhile. A server that had its time and
    # sent nothing that ended the check is down whatever the daemon's lag (lag.py); 0: not
    # known (a check run as a task)
    peer_turn_s: float = field(default=0.0, compare=False)
    # a TLS check's server certificate: its notAfter (seconds since the epoch), when its virtual
    # asked for it (sslexpirywarn, checks/tlsverify.py); None: not read
    cert_not_after: float | None = field(default=None, compare=False)


class Received:
    """The peer's bytes one check run as a task received: `run_check` sets one per check in
    `RECEIVED`, and what reads the peer for the check adds to it (the stream and datagram
    drivers, `budget.Budget` under the library checks). Taken when the reader is made, in the
    check's task, so a reader in a pool thread (ldap3) counts into the right check."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


RECEIVED: contextvars.ContextVar[Received | None] = contextvars.ContextVar(
    "lvsmon_received", default=None
)


def received_counter() -> Received:
    """The counter of the check running in this context; outside run_check a throwaway one."""
    return RECEIVED.get() or Received()


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """What a CheckSpec holds beside its kind, real and deadline: the same for every real of a
    virtual but for an external check's, so one object for them all (CheckSpec interns it)."""

    service: str = "none"
    protocol: CheckProtocol = "tcp"
    request: str = "/"
    receive: str = ""
    virtualhost: str = ""
    httpmethod: HttpMethod = "GET"
    login: str = ""
    passwd: str = field(default="", repr=False)  # a repr ends up in logs and tracebacks
    database: str = ""
    secret: str = field(default="", repr=False)
    checkcommand: str = ""
    vip: str = ""
    vport: int = 0
    rport: int = 0
    checkcount: int = 1
    # checks through the VIP (checks/viapath.py): "real", "vip" or "both"; with vip/both the
    # virtual's address and the real's forwarding (gate, ipip), which pick its probe service
    checkpath: str = "real"
    pathvip: str = ""
    pathforward: str = ""
    # TLS checks (checks/tlsverify.py): "no", "chain" or "name"; the CA file ("": the system
    # store); the name verified ("": virtualhost, else the address connected to); whether the
    # certificate's notAfter is read into the result (sslexpirywarn)
    sslverify: str = "no"
    sslcafile: str = ""
    sslname: str = ""
    sslexpiry: bool = False


CHECK_PATHS: Final = frozenset({"real", "vip", "both"})
_DEFAULT_SETTINGS: Final = CheckSettings()
_settings: dict[CheckSettings, CheckSettings] = {_DEFAULT_SETTINGS: _DEFAULT_SETTINGS}
_SETTINGS_MAX: Final = 4096  # distinct settings remembered (per virtual; per real for external)


def _shared_settings(settings: CheckSettings) -> CheckSettings:
    found = _settings.get(settings)
    if found is None:
        if len(_settings) >= _SETTINGS_MAX:
            _settings.clear()  # reloads with ever new settings: start again
        found = _settings[settings] = settings
    return found


@dataclass(frozen=True, slots=True, init=False, repr=False)
class CheckSpec:
    """Everything one check needs; the engine builds it from the effective config.

    Hashable on purpose: a real that sits in several virtuals with identical settings yields equal
    specs, and the engine runs one check for all of them.

    `timeout` is the single deadline for the whole exchange. For `ping` it covers all `checkcount`
    attempts (ldirectord waited checktimeout per attempt, so pass checktimeout * checkcount to
    keep its behaviour). `host` is the real's address literal; `port` the effective check port
    (checkport, else the real's port, else the service default). `vip` is the virtual's address,
    or the fwmark as a decimal string for fwmark virtuals; `vport`/`rport` are 0 where there is
    no port.

    Kept per real at 10,000 reals and more: its own slots are the kind, the real, the deadline;
    the rest (CheckSettings, read through properties) is one object shared by every spec with
    the same settings (72 bytes a spec where 19 slots took 184).
    """

    kind: CheckKind
    host: str
    port: int
    timeout: float
    settings: CheckSettings

    def __init__(
        self,
        kind: CheckKind,
        host: str,
        port: int,
        timeout: float,
        service: str = "none",
        protocol: CheckProtocol = "tcp",
        request: str = "/",
        receive: str = "",
        virtualhost: str = "",
        httpmethod: HttpMethod = "GET",
        login: str = "",
        passwd: str = "",
        database: str = "",
        secret: str = "",
        checkcommand: str = "",
        vip: str = "",
        vport: int = 0,
        rport: int = 0,
        checkcount: int = 1,
        settings: CheckSettings | None = None,
        checkpath: str = "real",
        pathvip: str = "",
        pathforward: str = "",
        sslverify: str = "no",
        sslcafile: str = "",
        sslname: str = "",
        sslexpiry: bool = False,
    ) -> None:
        if settings is None:
            settings = CheckSettings(
                service, protocol, request, receive, virtualhost, httpmethod, login, passwd,
                database, secret, checkcommand, vip, vport, rport, checkcount,
                checkpath, pathvip, pathforward, sslverify, sslcafile, sslname, sslexpiry,
            )  # fmt: skip
        setattr_ = object.__setattr__
        # one object per distinct kind and timeout: a builder's str(enum member) or float(int)
        # is a new object each time
        setattr_(self, "kind", _shared_value(kind))
        setattr_(self, "host", host)
        setattr_(self, "port", port)
        setattr_(self, "timeout", _shared_value(timeout))
        setattr_(self, "settings", _shared_settings(settings))
        self._validate()

    def _validate(self) -> None:
        if self.kind not in CHECK_KINDS:
            raise CheckSpecError(f"unknown check kind {self.kind!r}")
        if self.protocol not in PROTOCOLS:
            raise CheckSpecError(f"unknown protocol {self.protocol!r}")
        if self.httpmethod not in HTTP_METHODS:
            raise CheckSpecError(f"httpmethod must be GET or HEAD, not {self.httpmethod!r}")
        if not 0 <= self.port <= 65535:
            raise CheckSpecError(f"check port {self.port} out of range 0..65535")
        if not self.timeout > 0:
            raise CheckSpecError(f"timeout must be > 0, not {self.timeout!r}")
        if self.checkpath != "real":
            self._validate_path()
        if self.sslverify not in ("no", "chain", "name"):
            raise CheckSpecError(f"sslverify must be no, chain or name, not {self.sslverify!r}")
        if self.checkcount < 1:
            raise CheckSpecError(f"checkcount must be >= 1, not {self.checkcount}")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise CheckSpecError(f"real address {self.host!r} is not an IP literal") from None
        if self.kind in ("external", "external-perl") and not self.checkcommand:
            raise CheckSpecError(f"checktype={self.kind} needs a checkcommand")
        compile_receive(self.receive)

    def _validate_path(self) -> None:
        if self.checkpath not in CHECK_PATHS:
            raise CheckSpecError(f"checkpath must be real, vip or both, not {self.checkpath!r}")
        if self.pathforward not in ("gate", "ipip"):
            raise CheckSpecError(f"checkpath={self.checkpath} needs gate or ipip forwarding")
        try:
            vip = ipaddress.ip_address(self.pathvip)
        except ValueError:
            raise CheckSpecError(f"VIP {self.pathvip!r} is not an IP literal") from None
        if (vip.version == 6) != self.is_ipv6:
            raise CheckSpecError(f"VIP {self.pathvip} and real {self.host} differ in family")

    def __hash__(self) -> int:
        # the real and the kind only (equal specs have them equal): the engine's check jobs are
        # specs and dict keys in the plan, the runner and a reload, where hashing the 22 fields
        # of their settings on each lookup was the bulk of a reload's plan
        return hash((self.kind, self.host, self.port))

    def __repr__(self) -> str:
        settings = repr(self.settings).removeprefix("CheckSettings(")
        return (
            f"CheckSpec(kind={self.kind!r}, host={self.host!r}, port={self.port!r},"
            f" timeout={self.timeout!r}, {settings}"
        )

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    # the settings, read as the spec's own fields
    @property
    def service(self) -> str:
        return self.settings.service

    @property
    def protocol(self) -> CheckProtocol:
        return self.settings.protocol

    @property
    def request(self) -> str:
        return self.settings.request

    @property
    def receive(self) -> str:
        return self.settings.receive

    @property
    def virtualhost(self) -> str:
        return self.settings.virtualhost

    @property
    def httpmethod(self) -> HttpMethod:
        return self.settings.httpmethod

    @property
    def login(self) -> str:
        return self.settings.login

    @property
    def passwd(self) -> str:
        return self.settings.passwd

    @property
    def database(self) -> str:
        return self.settings.database

    @property
    def secret(self) -> str:
        return self.settings.secret

    @property
    def checkcommand(self) -> str:
        return self.settings.checkcommand

    @property
    def vip(self) -> str:
        return self.settings.vip

    @property
    def vport(self) -> int:
        return self.settings.vport

    @property
    def rport(self) -> int:
        return self.settings.rport

    @property
    def checkcount(self) -> int:
        return self.settings.checkcount

    @property
    def checkpath(self) -> str:
        return self.settings.checkpath

    @property
    def pathvip(self) -> str:
        return self.settings.pathvip

    @property
    def pathforward(self) -> str:
        return self.settings.pathforward

    @property
    def sslverify(self) -> str:
        return self.settings.sslverify

    @property
    def sslcafile(self) -> str:
        return self.settings.sslcafile

    @property
    def sslname(self) -> str:
        return self.settings.sslname

    @property
    def sslexpiry(self) -> bool:
        return self.settings.sslexpiry


_shared: dict[object, object] = {}
_SHARED_MAX: Final = 1024


def _shared_value(value: _V) -> _V:
    """One object per distinct exact str or float value (not an int for an equal float)."""
    if type(value) not in (str, float):
        return value
    found = _shared.get(value)
    if found is None:
        if len(_shared) >= _SHARED_MAX:
            _shared.clear()
        _shared[value] = value
        return value
    return found if type(found) is type(value) else value


RECEIVE_TIMEOUT: Final = 0.1
"""Seconds one `receive` search may take. It runs on the event loop, and a pattern that
backtracks catastrophically would otherwise stall every other check for as long as it runs."""

MAX_RECEIVE_NESTING: Final = 100
"""Deepest group nesting a `receive` regex may have: the compiler recurses per level, and a few
thousand levels end in RecursionError at daemon start-up."""

MAX_RECEIVE_SIZE: Final = 100_000
"""Largest size of a `receive` regex once its counted repeats are written out: the compiler
expands `x{n}`, so nested counts such as `(?:(?:a{1000}){1000}){1000}` take minutes and
gigabytes to compile."""

_COUNT = re.compile(rb"\{(\d*)(?:,(\d*))?\}")


class ReceiveRegex(Protocol):
    """The part of a compiled `regex` pattern the http check uses (the module has no stubs)."""

    def search(self, string: bytes, *, timeout: float | None = None) -> object | None: ...


class _Literal:
    """A `receive` without a regex metacharacter (most of them: "still alive"): a substring
    search, an order of magnitude cheaper per check than a bounded regex search, same answer."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text

    def search(self, string: bytes, *, timeout: float | None = None) -> object | None:
        return True if self.text in string else None


_METACHARACTERS = frozenset(b".^$*+?{}[]\\|()")


def _class_end(raw: bytes, i: int) -> int:
    """Index after the character class that starts at raw[i] == '['."""
    i += 1
    if raw[i : i + 1] == b"^":
        i += 1
    if raw[i : i + 1] == b"]":
        i += 1  # a ']' first is a member, not the end
    while i < len(raw):
        c = raw[i : i + 1]
        if c == b"\\":
            i += 2
        elif c == b"]":
            return i + 1
        else:
            i += 1
    return i


def receive_shape(raw: bytes) -> tuple[int, int]:
    """Deepest group nesting of a regex, and an upper bound of its size with every counted
    repeat written out. A rough scan, not a parser: it only has to be on the safe side."""
    stack = [[0, 0]]  # per open group: its size so far, the size of its last item
    deepest = 0
    i = 0
    while i < len(raw):
        c = raw[i : i + 1]
        item = 1
        if c == b"\\":
            i += 2
        elif c == b"[":
            i = _class_end(raw, i)
        elif c == b"(":
            stack.append([0, 0])
            deepest = max(deepest, len(stack) - 1)
            i += 1
            continue
        elif c == b")" and len(stack) > 1:
            item = stack.pop()[0]
            i += 1
        elif c == b"{" and (m := _COUNT.match(raw, i)) and any(m.groups()):
            # the largest number written counts, whether the engine expands min or max
            counts = [int(d) if len(d) < 10 else 10**9 for d in m.groups() if d]
            top = stack[-1]
            top[0] += top[1] * (max(counts) - 1)
            top[1] *= max(counts)
            i = m.end()
            continue
        else:
            i += 1
        top = stack[-1]
        top[0] += item
        top[1] = item
    return deepest, sum(frame[0] for frame in stack)


def _short(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 60 else pattern[:60] + "...")


@functools.lru_cache(maxsize=4096)
def compile_receive(pattern: str) -> ReceiveRegex | None:
    """Compile a `receive` regex for matching raw response bytes, as Perl matched raw content.

    It uses the `regex` module (re-compatible syntax, closer to Perl's, and a search that takes
    a timeout: see RECEIVE_TIMEOUT). A pattern it rejects, or that is too deep or too large to
    compile safely, is a `CheckSpecError` naming the pattern rather than a real that is silently
    always down or a daemon that never starts.
    """
    if not pattern:
        return None
    raw = pattern.encode("utf-8", "surrogateescape")
    if not _METACHARACTERS.intersection(raw):
        return _Literal(raw)
    deepest, size = receive_shape(raw)
    if deepest > MAX_RECEIVE_NESTING:
        raise CheckSpecError(
            f"receive regex {_short(pattern)} is not usable: groups nested {deepest} deep "
            f"(at most {MAX_RECEIVE_NESTING})"
        )
    if size > MAX_RECEIVE_SIZE:
        raise CheckSpecError(
            f"receive regex {_short(pattern)} is not usable: its counted repeats make it "
            f"{size} items long (at most {MAX_RECEIVE_SIZE})"
        )
    try:
        return cast(ReceiveRegex, regex.compile(raw))
    except regex.error as exc:
        raise CheckSpecError(f"receive regex {_short(pattern)} is not usable: {exc}") from None
    except (RecursionError, MemoryError, OverflowError, ValueError) as exc:
        raise CheckSpecError(
            f"receive regex {_short(pattern)} is not usable: too complex ({type(exc).__name__})"
        ) from None


def describe_error(exc: BaseException) -> str:
    """A short, lower-case description of an I/O error for a reason string."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return verify_reason(exc)  # no chain here: a reason without dates or names
    if isinstance(exc, ssl.SSLError):
        return f"{exc.reason or exc}".lower().replace("_", " ")
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror}"
    if isinstance(exc, OSError) and (exc.errno or exc.strerror):
        # asyncio's sock_connect replaces strerror by "Connect call failed (...)"; errno is truer
        text = os.strerror(exc.errno) if exc.errno else str(exc.strerror)
        return text[:1].lower() + text[1:]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
