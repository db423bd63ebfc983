"""The effective configuration: immutable, typed, every value already resolved.

Every value here is the one that applies (a per-virtual override, else the global value, else
the default), hostnames and service names are resolved to canonical address literals and port
numbers, and every virtual, real and fallback remembers the file and line it came from.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from lvsmon.addr import host_port
from lvsmon.config.agentsettings import NO_AGENT, AgentConf, AgentGlobal
from lvsmon.config.bgpsettings import NO_BGP, BgpGlobal, BgpVirtual
from lvsmon.config.errors import Diagnostic
from lvsmon.config.tlssettings import NO_TLS, TlsCheck
from lvsmon.ipvs.model import DestKey, Family, Forward, ServiceConf, ServiceKey
from lvsmon.ipvs.sync import SyncDaemon

__all__ = [
    "DAEMON_STATES",
    "DEFAULT_CHECKMARKBASE",
    "DEFAULT_SMTP_PORT",
    "CheckPath",
    "CheckType",
    "Config",
    "DeadConns",
    "Fallback",
    "Family",
    "Forward",
    "GlobalFallback",
    "GlobalSettings",
    "HttpMethod",
    "Real",
    "RealSettings",
    "Service",
    "SmtpTls",
    "Virtual",
    "VirtualProtocol",
    "VirtualSettings",
    "real_but_line",
]


class VirtualProtocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"
    FWM = "fwm"  # firewall-mark service (either family)


class CheckType(enum.StrEnum):
    CONNECT = "connect"
    NEGOTIATE = "negotiate"
    EXTERNAL = "external"
    EXTERNAL_PERL = "external-perl"
    PING = "ping"
    ON = "on"
    OFF = "off"
    COMBINED = "combined"  # `checktype = N`: negotiate, then N connect checks, repeat


class Service(enum.StrEnum):
    """The negotiate protocols ldirectord knows (whether lvsmon implements them: support.py)."""

    DNS = "dns"
    FTP = "ftp"
    HTTP = "http"
    HTTPS = "https"
    HTTP_PROXY = "http_proxy"
    IMAP = "imap"
    IMAPS = "imaps"
    LDAP = "ldap"
    LDAPS = "ldaps"
    MYSQL = "mysql"
    NNTP = "nntp"
    NONE = "none"
    ORACLE = "oracle"
    PGSQL = "pgsql"
    POP = "pop"
    POPS = "pops"
    RADIUS = "radius"
    SIMPLETCP = "simpletcp"
    SIP = "sip"
    SMTP = "smtp"
    SUBMISSION = "submission"


# well-known ports of the negotiate services, both ways
SERVICE_PORTS: dict[Service, int] = {
    Service.FTP: 21,
    Service.SMTP: 25,
    Service.DNS: 53,
    Service.HTTP: 80,
    Service.POP: 110,
    Service.NNTP: 119,
    Service.IMAP: 143,
    Service.LDAP: 389,
    Service.HTTPS: 443,
    Service.SUBMISSION: 587,
    Service.LDAPS: 636,
    Service.IMAPS: 993,
    Service.POPS: 995,
    Service.ORACLE: 1521,
    Service.RADIUS: 1812,
    Service.HTTP_PROXY: 3128,
    Service.MYSQL: 3306,
    Service.SIP: 5060,
    Service.PGSQL: 5432,
}

PORT_SERVICES: dict[int, Service] = {port: svc for svc, port in SERVICE_PORTS.items()}


def service_for_port(port: int) -> Service:
    return PORT_SERVICES.get(port, Service.NONE)


class CheckPath(enum.StrEnum):
    """Where a gate/ipip real is checked (lvsmon's `checkpath`, config/checkpathconf.py)."""

    REAL = "real"  # its own address, as ldirectord does
    VIP = "vip"  # VIP:checkport, steered to it by its probe service (engine/probepath.py)
    BOTH = "both"  # both, and the reason says which one answers


class DeadConns(enum.StrEnum):
    """What happens to the connections of a real that is down (lvsmon's `deadconns`,
    config/removalconf.py)."""

    KEEP = "keep"  # they stay on it (quiesced at weight 0, or deleted), as ldirectord does
    EXPIRE = "expire"  # it is deleted, quiescent or not: the kernel expires them


# the first firewall mark of the block lvsmon's probe services take ("LV" << 16)
DEFAULT_CHECKMARKBASE = 0x4C560000


class HttpMethod(enum.StrEnum):
    GET = "GET"
    HEAD = "HEAD"


DAEMON_STATES: tuple[str, ...] = ("starting", "running", "stopping", "reloading")
"""Daemon states in which e-mail alerts may be sent (``emailalertstatus``), in canonical order."""

DEFAULT_SMTP_PORT = 25  # ldirectord's Net::SMTP always uses it; lvsmon's smtp=host:port may not

SmtpTls = Literal["starttls", "tls", "none"]


@dataclass(frozen=True, slots=True)
class Fallback:
    """The server put into a virtual service while none of its reals is up (weight always 1)."""

    address: str
    port: int
    forward: Forward
    file: str
    line: int

    @property
    def weight(self) -> int:
        return 1


@dataclass(frozen=True, slots=True)
class GlobalFallback:
    """A global ``fallback``/``fallback6``: without a port it takes each virtual's port."""

    address: str
    port: int | None
    forward: Forward
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class RealSettings:
    """What a real line sets besides its address, port and line: one object for all the reals
    that set the same (most of a virtual's), kept by Real.settings. `line_block`: the real's
    line less its last 8 bits (the Real keeps those: a small int, one object in CPython, where
    each line past 256 was an int object of 28 bytes a real)."""

    forward: Forward
    weight: int
    lower: int  # lower connection threshold (l:N), 0 = none
    upper: int  # upper connection threshold (u:N), 0 = none
    request: str  # effective: the real's own "request" or the virtual's
    receive: str  # effective: the real's own "receive" or the virtual's
    file: str
    line_block: int  # a multiple of 256


# equal settings are one object (issue 22: 48 bytes a real less), found by their values;
# emptied when it grows past SETTINGS_KEEP, so that a daemon reloaded for months keeps no
# settings of old configs
SETTINGS_KEEP = 4096
_settings: dict[tuple[Forward, int, int, int, str, str, str, int], RealSettings] = {}


def shared_settings(
    forward: Forward,
    weight: int,
    lower: int,
    upper: int,
    request: str,
    receive: str,
    file: str,
    line_block: int,
) -> RealSettings:
    """The one RealSettings of these values."""
    key = (forward, weight, lower, upper, request, receive, file, line_block)
    known = _settings.get(key)
    if known is not None:
        return known
    if len(_settings) >= SETTINGS_KEEP:
        _settings.clear()
    known = _settings[key] = RealSettings(*key)
    return known


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Real:
    """One real server line. Its address and port are its destination key's (DestKey: the
    key checks its address by parsing it, built once here), its other settings but its line
    one shared object (RealSettings) with its line's upper bits, its line's last 8 bits its
    own; all are read through properties of their names, and it is made, compared, hashed,
    shown and dumped (config/dump.py) as the ten values it was."""

    # its (address, port) as a destination key; the kernel may store it under another port
    # (ipvs.model.kernel_dest_port)
    dest: DestKey
    settings: RealSettings
    low: int  # line = settings.line_block + low

    # the values a Real is made of, in this order (dump.py shows them so)
    VALUES = (
        "address", "port", "forward", "weight", "lower", "upper", "request", "receive", "file",
        "line",
    )  # fmt: skip

    def __init__(
        self,
        address: str = "",
        port: int = 0,
        forward: Forward | None = None,
        weight: int = 1,
        lower: int = 0,
        upper: int = 0,
        request: str = "/",
        receive: str = "",
        file: str = "",
        line: int | None = None,
        *,
        dest: DestKey | None = None,
        settings: RealSettings | None = None,
        low: int | None = None,
    ) -> None:
        """From its ten values (`address`: a canonical literal, no brackets; `port`: the
        virtual's when the line gave none, 0 for fwmark services), or from `dest`, `settings`
        and `line` or `low` (a copy: dataclasses.replace, which passes `low`, and `line` when
        it changes it)."""
        if line is None:
            line = 0 if settings is None or low is None else settings.line_block + low
        block = line - (line & 255)
        if settings is None:
            assert forward is not None, "a Real needs its forward or its settings"
            settings = shared_settings(forward, weight, lower, upper, request, receive, file, block)
        elif settings.line_block != block:
            o = settings
            settings = shared_settings(
                o.forward, o.weight, o.lower, o.upper, o.request, o.receive, o.file, block
            )
        object.__setattr__(self, "dest", DestKey(address, port) if dest is None else dest)
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "low", line & 255)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.VALUES)
        return f"Real({values})"

    @property
    def line(self) -> int:
        return self.settings.line_block + self.low

    def at_line(self, line: int) -> Real:
        """The same real on another line (a reload that moved it): its key not parsed again."""
        return Real(dest=self.dest, settings=self.settings, line=line)

    @property
    def address(self) -> str:
        return self.dest.address

    @property
    def port(self) -> int:
        return self.dest.port

    @property
    def forward(self) -> Forward:
        return self.settings.forward

    @property
    def weight(self) -> int:
        return self.settings.weight

    @property
    def lower(self) -> int:
        return self.settings.lower

    @property
    def upper(self) -> int:
        return self.settings.upper

    @property
    def request(self) -> str:
        return self.settings.request

    @property
    def receive(self) -> str:
        return self.settings.receive

    @property
    def file(self) -> str:
        return self.settings.file


# what == compares of a Real but its line, as one tuple at C speed (a block moved by lines
# added above it is the same: engine/planning.py's same_but_lines)
real_but_line = attrgetter(
    "dest", *(f"settings.{f.name}" for f in fields(RealSettings) if f.name != "line_block")
)


@dataclass(frozen=True, slots=True)
class VirtualSettings:
    """What a virtual sets besides its identity, its file and line and its reals: one object for
    the virtuals that set the same (most of a config's), kept by Virtual.settings and read
    through Virtual's properties of the same names."""

    # IPVS service settings
    scheduler: str = "wrr"
    schedflags: str | None = None
    persistent: int | None = None
    netmask: str | None = None
    ops: bool = False
    # the check
    checktype: CheckType = CheckType.NEGOTIATE
    num_connects: int = 0  # N of `checktype = N` (combined), else 0
    service: Service = Service.NONE
    service_from_port: bool = False  # no service= line: the virtual's port chose it
    checkcommand: str = "/bin/true"
    checkport: int | None = None
    request: str = "/"
    receive: str = ""
    virtualhost: str | None = None
    httpmethod: HttpMethod = HttpMethod.GET
    login: str = ""
    passwd: str = field(default="", repr=False)  # a repr ends up in logs and tracebacks
    database: str = ""
    secret: str = field(default="", repr=False)
    load: str | None = None  # parsed by ldirectord, never used
    checktimeout: int = 5
    negotiatetimeout: int = 30
    checkinterval: int = 10
    checkcount: int = 1
    failurecount: int = 1
    # lvsmon's own (ldirectord rejects them), off by default: passes in a row that bring a real
    # back; more than flapcount state changes within flapwindow s hold it down until its state
    # has not changed for flaphold s (flapcount 0: no damping)
    risecount: int = 1
    flapcount: int = 0
    flapwindow: int = 300
    flaphold: int = 120
    # lvsmon's own, off (None) by default: the largest share of the reals that failing checks
    # may take out of service; the latest failures beyond it stay in (engine/desired.py)
    depoolthreshold: float | None = None
    # lvsmon's own, off by default: ask ARP who has the VIP every arpguardinterval s toward the
    # gate reals; an answer from a MAC not the director's is a conflict (engine/arpguard.py)
    arpguard: bool = False
    arpguardinterval: int = 10
    # lvsmon's own: check gate/ipip reals through the VIP (config/checkpathconf.py)
    checkpath: CheckPath = CheckPath.REAL
    # lvsmon's own: seconds over which a real that comes up ramps its weight (engine/slowstart.py)
    slowstart: int = 0
    # lvsmon's own: seconds a real a reload removes keeps its connections at weight 0 (0: none);
    # and whether a dead real's connections are expired (config/removalconf.py)
    removedrain: int = 0
    deadconns: DeadConns = DeadConns.KEEP
    # lvsmon's own: this virtual's part in its VIP's BGP announcement; None: not announced
    # (config/bgpconf.py, engine/announce.py)
    bgp: BgpVirtual | None = None
    # what happens when reals fail
    quiescent: bool = False
    fallbackcommand: str | None = None
    cleanstop: bool = True
    # alerts and logging
    emailalert: tuple[str, ...] = ()
    emailalertfreq: int = 0
    emailalertstatus: tuple[str, ...] = DAEMON_STATES
    smtp: str | None = None  # the relay's host (IPv6 without brackets); None = local sendmail
    smtpport: int = DEFAULT_SMTP_PORT
    monitorfile: str | None = None
    servicename: str | None = None
    comment: str | None = None
    # lvsmon's own: the agent check (config/agentconf.py, engine/agentcheck.py); None: off
    agent: AgentConf | None = None
    # lvsmon's own: TLS verification of its checks (config/tlsconf.py, checks/tlsverify.py)
    tls: TlsCheck = NO_TLS


VIRTUAL_SETTINGS: tuple[str, ...] = tuple(f.name for f in fields(VirtualSettings))
# a Virtual's own fallback stands between these in its values (the order they are shown in)
_SETTINGS_BEFORE_FALLBACK = VIRTUAL_SETTINGS[: VIRTUAL_SETTINGS.index("fallbackcommand")]
_SETTINGS_AFTER_FALLBACK = VIRTUAL_SETTINGS[len(_SETTINGS_BEFORE_FALLBACK) :]

# equal settings are one object (issue 22: some 500 bytes a virtual less), found by their values;
# emptied past SETTINGS_KEEP, so that a daemon reloaded for months keeps no old configs' settings
_virtual_settings: dict[VirtualSettings, VirtualSettings] = {}


def shared_virtual_settings(settings: VirtualSettings) -> VirtualSettings:
    """The one VirtualSettings equal to `settings`."""
    known = _virtual_settings.get(settings)
    if known is not None:
        return known
    if len(_virtual_settings) >= SETTINGS_KEEP:
        _virtual_settings.clear()
    _virtual_settings[settings] = settings
    return settings


@dataclass(frozen=True, slots=True, init=False, repr=False)
class Virtual:
    """One virtual service. Its own slots are its identity, its file and line, its reals, its
    fallback (which has a line of its own) and its derived key; everything else is one shared
    VirtualSettings, read through properties of the same names (made below the class from
    VirtualSettings' fields). It is made (the same positional and keyword arguments),
    compared, hashed, shown and dumped (config/dump.py) as the values it was: == and hash
    compare the settings by value."""

    family: Family
    protocol: VirtualProtocol
    address: str | None  # None for fwmark services
    port: int  # 0 for fwmark services
    fwmark: int  # 0 unless protocol is fwm
    file: str
    line: int
    reals: tuple[Real, ...]
    # its own: a fallback= line in the block is at a line of its own, which in the settings
    # would make every such virtual's settings its own object (bench/many_virtuals.py's are)
    fallback: Fallback | None
    settings: VirtualSettings
    # the IPVS identity of this virtual service: derived, built once here (parsing the address
    # on every use made per-event lookups at 2,284 virtuals cost seconds); not compared, not
    # shown, not dumped
    key: ServiceKey = field(init=False, repr=False, compare=False)

    if TYPE_CHECKING:  # VirtualSettings' fields, read through the properties made below
        scheduler: str
        schedflags: str | None
        persistent: int | None
        netmask: str | None
        ops: bool
        checktype: CheckType
        num_connects: int
        service: Service
        service_from_port: bool
        checkcommand: str
        checkport: int | None
        request: str
        receive: str
        virtualhost: str | None
        httpmethod: HttpMethod
        login: str
        passwd: str
        database: str
        secret: str
        load: str | None
        checktimeout: int
        negotiatetimeout: int
        checkinterval: int
        checkcount: int
        failurecount: int
        risecount: int
        flapcount: int
        flapwindow: int
        flaphold: int
        depoolthreshold: float | None
        arpguard: bool
        arpguardinterval: int
        checkpath: CheckPath
        slowstart: int
        removedrain: int
        deadconns: DeadConns
        bgp: BgpVirtual | None
        quiescent: bool
        fallbackcommand: str | None
        cleanstop: bool
        emailalert: tuple[str, ...]
        emailalertfreq: int
        emailalertstatus: tuple[str, ...]
        smtp: str | None
        smtpport: int
        monitorfile: str | None
        servicename: str | None
        comment: str | None
        agent: AgentConf | None
        tls: TlsCheck

    # the values a Virtual is made of, in this order (dump.py shows them so)
    VALUES: ClassVar[tuple[str, ...]] = (
        "family", "protocol", "address", "port", "fwmark", "file", "line", "reals",
        *_SETTINGS_BEFORE_FALLBACK, "fallback", *_SETTINGS_AFTER_FALLBACK,
    )  # fmt: skip

    def __init__(
        self,
        family: Family,
        protocol: VirtualProtocol,
        address: str | None,
        port: int,
        fwmark: int,
        file: str,
        line: int,
        reals: tuple[Real, ...] = (),
        *,
        fallback: Fallback | None = None,
        settings: VirtualSettings | None = None,
        **values: Any,
    ) -> None:
        """From its values (the settings by keyword, VirtualSettings' defaults for the others),
        or from `settings` and the values that change (a copy: dataclasses.replace)."""
        if settings is None:
            settings = VirtualSettings(**values)
        elif values:
            settings = dataclasses.replace(settings, **values)
        setattr_ = object.__setattr__
        setattr_(self, "family", family)
        setattr_(self, "protocol", protocol)
        setattr_(self, "address", address)
        setattr_(self, "port", port)
        setattr_(self, "fwmark", fwmark)
        setattr_(self, "file", file)
        setattr_(self, "line", line)
        setattr_(self, "reals", reals)
        setattr_(self, "fallback", fallback)
        setattr_(self, "settings", shared_virtual_settings(settings))
        if protocol is VirtualProtocol.FWM:
            key = ServiceKey.fwm(fwmark, family)
        else:
            assert address is not None
            key = ServiceKey.inet(protocol.value, address, port)
        setattr_(self, "key", key)

    def __repr__(self) -> str:
        values = ", ".join(f"{n}={getattr(self, n)!r}" for n in _VIRTUAL_REPR)
        return f"Virtual({values})"

    @property
    def service_conf(self) -> ServiceConf:
        flags = frozenset(f for f in (self.schedflags or "").split(",") if f)
        return ServiceConf(
            scheduler=self.scheduler,
            sched_flags=flags,
            persistent=self.persistent,
            netmask=self.netmask if self.persistent is not None else None,
            ops=self.ops,
        )

    @property
    def name(self) -> str:
        """ldirectord's id for the virtual (``tcp:192.0.2.1:80``, ``fwm:7``, ``fwm6:7``)."""
        if self.protocol is VirtualProtocol.FWM:
            return ("fwm6:" if self.family is Family.INET6 else "fwm:") + str(self.fwmark)
        return f"{self.protocol}:{host_port(str(self.address), self.port)}"

    def check_port(self, real: Real) -> int:
        """The port a check of ``real`` connects to: checkport, else the real's port, else the
        service's well-known port (0 when there is none)."""
        if self.checkport is not None:
            return self.checkport
        if real.port > 0:
            return real.port
        return SERVICE_PORTS.get(self.service, 0)


# Virtual's settings, read through its properties: attrgetter is a C call, a property over it
# as cheap as a property can be
for _name in VIRTUAL_SETTINGS:
    setattr(Virtual, _name, property(attrgetter(f"settings.{_name}")))
del _name
_VIRTUAL_REPR = tuple(
    n for n in Virtual.VALUES if n not in {f.name for f in fields(VirtualSettings) if not f.repr}
)


@dataclass(frozen=True, slots=True)
class GlobalSettings:
    checktimeout: int | None = None  # as written; the effective value is per virtual
    negotiatetimeout: int | None = None  # as written; the effective value is per virtual
    checkinterval: int = 10
    checkcount: int = 1
    failurecount: int = 1
    fallback: GlobalFallback | None = None
    fallback6: GlobalFallback | None = None
    fallbackcommand: str | None = None
    autoreload: bool = False
    callback: str | None = None
    logfile: str = "/var/log/ldirectord.log"  # a value without a leading "/" is a syslog facility
    execute: tuple[str, ...] = ()
    fork: bool = False
    supervised: bool = False
    quiescent: bool = False  # the code's default; ldirectord's man page claims "yes"
    readdquiescent: bool = False
    emailalert: tuple[str, ...] = ()
    emailalertfreq: int = 0
    emailalertstatus: tuple[str, ...] = DAEMON_STATES
    emailalertfrom: str | None = None
    cleanstop: bool = True
    smtp: str | None = None  # the relay's host (IPv6 without brackets); None = local sendmail
    smtpport: int = DEFAULT_SMTP_PORT
    maintenancedir: str | None = None
    # lvsmon's own directives (ldirectord rejects them)
    resyncinterval: int = 5  # seconds between full comparisons with the kernel table
    risecount: int = 1  # passes in a row that bring a down real back
    flapcount: int = 0  # more state changes than this within flapwindow hold a real; 0 = off
    flapwindow: int = 300  # seconds
    flaphold: int = 120  # seconds without a state change that end a hold
    depoolthreshold: float | None = None  # share of a virtual's reals checks may take out
    arpguard: bool = False  # ARP who-has for the VIPs toward gate reals (engine/arpguard.py)
    arpguardinterval: int = 10  # seconds between two rounds of the ARP guard
    checkpath: CheckPath = CheckPath.REAL  # where gate/ipip reals are checked (checkpathconf.py)
    checkmarkbase: int = DEFAULT_CHECKMARKBASE  # first fwmark of the probe services' block
    slowstart: int = 0  # seconds a real that comes up ramps its weight (engine/slowstart.py)
    removedrain: int = 0  # seconds a removed real drains at weight 0 (removalconf.py)
    deadconns: DeadConns = DeadConns.KEEP  # a dead real's connections: kept or expired
    bgp: BgpGlobal = NO_BGP  # the BGP speaker and its defaults (config/bgpconf.py)
    emailalertwindow: int = 5  # seconds changes are gathered into one mail; 0 = one per change
    emailalertrate: int = 60  # mails per recipient set per sliding hour; 0 = unlimited
    emailalerttemplates: str | None = None  # directory replacing the shipped templates
    smtpuser: str = ""  # AUTH with the relay when set
    smtppassword: str = field(default="", repr=False)  # a repr ends up in logs and tracebacks
    smtptls: SmtpTls = "starttls"
    # connection sync daemons to run (syncdaemon and the sync* settings): master, backup or both
    syncdaemon: tuple[SyncDaemon, ...] = ()
    # the global agent check lines, each a virtual's default (config/agentconf.py)
    agent: AgentGlobal = NO_AGENT
    # the global TLS verification lines, each a virtual's default (config/tlsconf.py)
    tls: TlsCheck = NO_TLS


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    digest: str  # sha256 hex of exactly the bytes that were parsed
    settings: GlobalSettings  # "global" in the JSON view
    virtuals: tuple[Virtual, ...] = ()
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
