"""Lines → directives: which directive a line is, in which scope, and its parsed value.

The result (RawConfig) keeps what was written, with line numbers; defaults, overrides and
name resolution happen afterwards in effective.py.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from lvsmon.config import (
    agentconf,
    bgpconf,
    checkpathconf,
    removalconf,
    syncconf,
    syntax,
    tlsconf,
    values,
)
from lvsmon.config.errors import Diagnostic
from lvsmon.config.lexer import TAB_WIDTH, Line, OddBlank, split_lines
from lvsmon.config.model import CheckType, HttpMethod, Service
from lvsmon.config.raw import RawConfig, RawVirtual, Setting
from lvsmon.config.values import Invalid, Warn


@dataclass(frozen=True, slots=True)
class Context:
    """What a value parser may need besides the value: the scope and a way to warn."""

    name: str
    inet6: bool
    warn: Warn


Parse = Callable[[str, Context], object]


# -- value parsers, by kind -------------------------------------------------------------------


def _int(what: str, minimum: int = 1, maximum: int | None = None) -> Parse:
    return lambda v, c: values.integer(v, what, c.warn, minimum=minimum, maximum=maximum)


def _yes_no(v: str, c: Context) -> object:
    return values.yes_no(v, c.name)


def _quoted(v: str, c: Context) -> object:
    return values.quoted(v, c.name, c.warn)


def _receive(v: str, c: Context) -> object:
    return values.receive_regex(values.quoted(v, c.name, c.warn))


def _maybe_quoted(v: str, c: Context) -> object:
    return values.maybe_quoted(v, c.name)


def _free(v: str, c: Context) -> object:
    if not v:
        raise Invalid(f"{c.name} must not be empty")
    return v


def _deprecated(replacement: str) -> Parse:
    def parse(v: str, c: Context) -> object:
        raise Invalid(f"{c.name} directive deprecated in favour of {replacement}")

    return parse


def _checkcount(v: str, c: Context) -> object:
    n = values.integer(v, "check count", c.warn)
    c.warn(
        "checkcount is deprecated (ldirectord only uses it as the number of ping attempts); "
        "see failurecount"
    )
    return n


def _request(v: str, c: Context) -> object:
    return syntax.normalise_request(values.quoted(v, c.name, c.warn))


def _checktype(v: str, c: Context) -> object:
    # Anything holding a digit is "combined" with N = the first number in it: that is how
    # ldirectord reads it, and how the documented "checktimeoutN" spelling happens to work.
    if m := re.search(r"\d+", v):
        return (CheckType.COMBINED, values.decimal(m.group(0), "checktype"))
    m = re.match(r"[\w-]+", v)
    if m is not None and m.group(0) in CheckType.__members__.values() and m.group(0) != "combined":
        if v[m.end() :].strip():
            c.warn(f"ignoring trailing text {v[m.end() :].strip()!r}")
        return (CheckType(m.group(0)), 0)
    raise Invalid(
        'checktype must be "connect", "negotiate", "on", "off", "ping", "external", '
        f'"external-perl" or a positive number, not {v!r}'
    )


def _service(v: str, c: Context) -> object:
    m = re.match(r"\w+", v)
    if m is None or m.group(0) not in Service.__members__.values():
        allowed = ", ".join(s.value for s in Service)
        raise Invalid(f"service must be one of {allowed}; not {v!r}")
    if v[m.end() :].strip():
        c.warn(f"ignoring trailing text {v[m.end() :].strip()!r}")
    return Service(m.group(0))


def _httpmethod(v: str, c: Context) -> object:
    m = re.match(r"\w+", v)
    if m is None or m.group(0).upper() not in ("GET", "HEAD"):
        raise Invalid(f"httpmethod must be GET or HEAD, not {v!r}")
    return HttpMethod(m.group(0).upper())


def _protocol(v: str, c: Context) -> object:
    m = re.match(r"\w+", v)
    if m is None:
        raise Invalid("invalid protocol")
    if m.group(0) not in ("tcp", "udp", "fwm"):
        raise Invalid(f"protocol must be tcp or udp (or fwm for a firewall mark), not {v!r}")
    return m.group(0)


# Linux's IPVS schedulers (net/netfilter/ipvs/ip_vs_*.c); Debian 12's kernel builds all but twos.
SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "fo",
    "ovf",
    "mh",
    "twos",
)


def _scheduler(v: str, c: Context) -> object:
    name = values.word(
        v, r"[a-z]+", "invalid scheduler, should be only lowercase letters (a-z)", c.warn
    )
    # A warning, not an error: ldirectord takes any name and a kernel may have more (an
    # out-of-tree ip_vs_NAME module); without one, creating the virtual service fails.
    if name not in SCHEDULERS:
        c.warn(
            f'unknown scheduler "{name}" (Linux has {" ".join(SCHEDULERS)}): the kernel will '
            f"refuse this virtual service unless a module ip_vs_{name} provides it"
        )
    return name


def _schedflags(v: str, c: Context) -> object:
    return values.word(v, r"\S+", "invalid schedflags", c.warn)


def _netmask(v: str, c: Context) -> object:
    if c.inet6:
        if not re.fullmatch(r"\d+", v) or not 1 <= (values.small_int(v) or 0) <= 128:
            raise Invalid("invalid netmask: a prefix length between 1 and 128 is required")
        return v
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)\.(\d+)", v)
    if m is None:
        raise Invalid("invalid netmask: dotted quad notation is required")
    parts = [values.small_int(part) for part in m.groups()]
    if any(part is None or part > 255 for part in parts):
        raise Invalid(f"invalid netmask: {values.shorten(v, 40)} is not a dotted quad")
    return ".".join(str(part) for part in parts)


def _smtp(v: str, c: Context) -> object:
    return syntax.parse_smtp(v, c.warn)


SMTP_TLS = ("starttls", "tls", "none")


def _smtptls(v: str, c: Context) -> object:
    wanted = "smtptls must be starttls, tls or none"
    mode = values.word(v, r"\w+", f"{wanted}, not {values.shorten(v)!r}", c.warn)
    if mode not in SMTP_TLS:
        raise Invalid(f"{wanted}, not {values.shorten(mode)!r}")
    return mode


def _virtualhost(v: str, c: Context) -> object:
    m = re.match(r'"?([^"]*)"?', v)
    assert m is not None  # the pattern matches any string
    return m.group(1)


def _load(v: str, c: Context) -> object:
    inner = values.quoted(v, c.name, c.warn)
    m = re.search(r"\w+", inner)
    if m is None:
        raise Invalid("invalid string for load testing")
    return m.group(0)


def _emailalert(v: str, c: Context) -> object:
    return values.email_addresses(v)


def _emailalertstatus(v: str, c: Context) -> object:
    return values.email_status(v)


def _fallback(v: str, c: Context) -> object:
    return syntax.parse_fallback(v)


def _supervised(v: str, c: Context) -> object:
    return values.yes_no(v, c.name)


def _logfile(v: str, c: Context) -> object:
    return values.quoted(v, c.name, c.warn)


# -- the directive tables -----------------------------------------------------------------------

MAX_COUNT = 1_000_000
MAX_SECONDS = 10 * 365 * 86400

# Directives valid both at the top level and inside a virtual block.
_SHARED: dict[str, Parse] = {
    "checktimeout": _int("check timeout"),
    "negotiatetimeout": _int("negotiate timeout"),
    "connecttimeout": _deprecated("negotiatetimeout"),
    "timeout": _deprecated("checktimeout and negotiatetimeout"),
    "checkinterval": _int("check interval"),
    "checkcount": _checkcount,
    "failurecount": _int("failure count"),
    "fallback": _fallback,
    "fallback6": _fallback,
    "fallbackcommand": _maybe_quoted,
    "quiescent": _yes_no,
    "emailalert": _emailalert,
    "emailalertfreq": _int("email alert frequency", minimum=0),
    "emailalertstatus": _emailalertstatus,
    "cleanstop": _yes_no,
    "smtp": _smtp,
    # lvsmon's own (ldirectord rejects them): rise and flap damping (engine/health.py), off by
    # default; the limits keep `now + hold` and the window exact in a float
    "risecount": _int("rise count", maximum=MAX_COUNT),
    "flapcount": _int("flap count", minimum=0, maximum=MAX_COUNT),
    "flapwindow": _int("flap window", maximum=MAX_SECONDS),
    "flaphold": _int("flap hold time", maximum=MAX_SECONDS),
    # lvsmon's own: the most of a virtual's reals failing checks may take out (engine/desired.py)
    "depoolthreshold": lambda v, c: values.share(v, "depool threshold"),
    # lvsmon's own: ARP who-has for the VIPs toward gate reals (engine/arpguard.py)
    "arpguard": _yes_no,
    "arpguardinterval": _int("arp guard interval", maximum=MAX_SECONDS),
    # lvsmon's own: check gate/ipip reals through the VIP (checkpathconf.py)
    "checkpath": lambda v, c: checkpathconf.parse_checkpath(v, c.warn),
    # lvsmon's own: announce the VIPs over BGP while their pools are healthy (bgpconf.py)
    "bgp": lambda v, c: bgpconf.parse_mode(v, c.warn),
    "bgpmed": lambda v, c: bgpconf.parse_med(v, c.warn),
    "bgpminup": lambda v, c: bgpconf.parse_minup(v, c.warn),
    "bgpholddown": lambda v, c: bgpconf.parse_holddown(v, c.warn),
    "bgpcommunity": lambda v, c: bgpconf.parse_communities(v, c.warn),
    # lvsmon's own: a real that comes up ramps its weight over this many s (engine/slowstart.py)
    "slowstart": _int("slow start", minimum=0, maximum=86400),
    # lvsmon's own: how reals leave (removalconf.py)
    "removedrain": lambda v, c: removalconf.parse_removedrain(v, c.warn),
    "deadconns": lambda v, c: removalconf.parse_deadconns(v, c.warn),
    # lvsmon's own: the agent check, HAProxy's agent-check protocol (agentconf.py)
    "agentport": lambda v, c: agentconf.parse_port(v, c.warn),
    "agentinterval": lambda v, c: agentconf.parse_seconds("agentinterval")(v, c.warn),
    "agenttimeout": lambda v, c: agentconf.parse_seconds("agenttimeout")(v, c.warn),
    "agentsend": lambda v, c: agentconf.parse_send(v, c.warn),
    "agentfail": lambda v, c: agentconf.parse_fail(v, c.warn),
    # lvsmon's own: TLS verification of the checks (tlsconf.py)
    "sslverify": lambda v, c: tlsconf.parse_verify(v, c.warn),
    "sslcafile": lambda v, c: tlsconf.parse_cafile(v, c.warn),
    "sslname": lambda v, c: tlsconf.parse_name(v, c.warn),
    "sslexpirywarn": lambda v, c: tlsconf.parse_expirywarn(v, c.warn),
}

GLOBAL: dict[str, Parse] = {
    **_SHARED,
    "autoreload": _yes_no,
    "callback": _quoted,
    "logfile": _logfile,
    "execute": _free,
    "fork": _yes_no,
    "supervised": _supervised,
    "readdquiescent": _yes_no,
    "emailalertfrom": _free,
    "maintenancedir": _free,
    # lvsmon's own from here on: ldirectord rejects them ("Unknown command")
    "resyncinterval": _int("resync interval"),
    "emailalertwindow": _int("email alert window", minimum=0),
    "emailalertrate": _int("email alert rate", minimum=0),
    "emailalerttemplates": _maybe_quoted,
    "smtpuser": _maybe_quoted,
    "smtppassword": _maybe_quoted,
    "smtptls": _smtptls,
    # connection synchronisation between directors (syncconf.py)
    "syncdaemon": lambda v, c: syncconf.parse_mode(v, c.warn),
    "syncinterface": lambda v, c: syncconf.parse_interface(v, c.warn),
    "syncid": lambda v, c: syncconf.parse_syncid(v, c.warn),
    "syncmaxlen": lambda v, c: syncconf.parse_maxlen(v, c.warn),
    "syncgroup": lambda v, c: syncconf.parse_group(v, c.warn),
    "syncport": lambda v, c: syncconf.parse_port(v, c.warn),
    "syncttl": lambda v, c: syncconf.parse_ttl(v, c.warn),
    # the firewall marks of the probe services of checkpath (checkpathconf.py)
    "checkmarkbase": lambda v, c: checkpathconf.parse_markbase(v, c.warn),
    # BGP announcements: one speaker a director (bgpconf.py)
    "bgptable": lambda v, c: bgpconf.parse_table(v, c.warn),
    "bgpprotocol": lambda v, c: bgpconf.parse_protocol(v, c.warn),
    "bgpdrain": lambda v, c: bgpconf.parse_drain(v, c.warn),
    "bgprequire": lambda v, c: bgpconf.parse_require(v, c.warn),
    "bgpexabgpconf": lambda v, c: bgpconf.parse_path(v, c.warn),
}

BLOCK: dict[str, Parse] = {
    **_SHARED,
    "checktype": _checktype,
    "checkcommand": _maybe_quoted,
    "checkport": _int("checkport", 1, 65535),
    "request": _request,
    "receive": _receive,
    "login": _quoted,
    "passwd": _quoted,
    "database": _quoted,
    "secret": _quoted,
    "load": _load,
    "scheduler": _scheduler,
    "schedflags": _schedflags,
    "persistent": _int("persistent timeout", minimum=0),
    "netmask": _netmask,
    "protocol": _protocol,
    "ops": _yes_no,
    "service": _service,
    "httpmethod": _httpmethod,
    "virtualhost": _virtualhost,
    "monitorfile": _maybe_quoted,
    "servicename": _maybe_quoted,
    "comment": _maybe_quoted,
}

OPENERS = ("virtual", "virtual6")
REALS = ("real", "real6")
ALL_NAMES = sorted({*GLOBAL, *BLOCK, *OPENERS, *REALS} - {"timeout", "connecttimeout"})

_DIRECTIVE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(.*)\Z", re.S)
_BARE_WORD = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(?:\s+(.*))?\Z", re.S)


# Free text, where a no-break space inside the value may be meant (an e-mail subject).
FREE_TEXT = frozenset({"servicename", "comment"})


def _misplaced_blank(line: Line) -> OddBlank | None:
    """The first Unicode blank (other than space and tab) the line has where a blank separates
    things: ldirectord reads it as part of a word and rejects the line or misreads the value."""
    if not line.odd_blanks:
        return None
    m = _DIRECTIVE.match(line.text)
    free = m.start(2) if m is not None and m.group(1) in FREE_TEXT else None
    for blank in line.odd_blanks:
        if free is None or not free <= blank.offset < len(line.text):
            return blank
    return None


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), ALL_NAMES, n=1, cutoff=0.75)
    return f'; did you mean "{close[0]}"?' if close else ""


class LineParser:
    """Feeds lines in file order into one RawConfig (parse_lines; the parts of a file that
    lvsmon/config/incremental.py parses one by one)."""

    def __init__(self, path: str) -> None:
        self.raw = RawConfig(path)
        self.block: RawVirtual | None = None
        self.line = 0

    def error(self, message: str, line: int | None = None) -> None:
        self.raw.errors.append(Diagnostic(self.raw.path, line or self.line, message))

    def warn(self, message: str) -> None:
        self.raw.warnings.append(Diagnostic(self.raw.path, self.line, message))

    def feed(self, line: Line) -> None:
        self.line = line.number
        if (blank := _misplaced_blank(line)) is not None:
            self.error(f"{blank}: replace it with a space or a tab")
        if line.indent == 0:
            self.block = None
            self.top_level(line.text)
        elif line.indent < TAB_WIDTH:
            self.error(
                f"line indented by {line.indent} space(s): lines of a virtual block need at "
                "least 4 spaces or a tab, other lines none"
            )
        elif self.block is None:
            self.error("indented line outside a virtual block (no virtual= or virtual6= above it)")
        else:
            self.in_block(self.block, line.text)

    def split(self, text: str) -> tuple[str, str] | None:
        if m := _DIRECTIVE.match(text):
            return m.group(1), m.group(2).strip()
        if m := _BARE_WORD.match(text):
            name = m.group(1)
            known = name in GLOBAL or name in BLOCK or name in OPENERS or name in REALS
            if known and name != "supervised":
                self.error(f'missing "=" after "{name}"')
            elif not known:
                self.error(f'unknown directive "{name}"{_suggest(name)}')
            return (name, "") if name == "supervised" else None
        self.error(f'expected "directive = value", not {text!r}')
        return None

    def top_level(self, text: str) -> None:
        parts = self.split(text)
        if parts is None:
            return
        name, value = parts
        if name in OPENERS:
            self.open_virtual(name, value)
        elif name == "supervised" and value == "":
            self.warn('bare "supervised" means "supervised = yes"; please write it out')
            self.store(self.raw.settings, name, True)
        elif name in GLOBAL:
            self.apply(GLOBAL[name], name, value, self.raw.settings, inet6=False)
        elif name in BLOCK or name in REALS:
            self.error(
                f"{name} is only valid inside a virtual block (indent it by at least 4 spaces or "
                "a tab, below a virtual= line)"
            )
        else:
            self.error(f'unknown directive "{name}"{_suggest(name)}')

    def open_virtual(self, name: str, value: str) -> None:
        inet6 = name == "virtual6"
        try:
            spec = syntax.parse_virtual(value, inet6, self.warn)
        except Invalid as exc:
            self.error(str(exc))
            # Still open a block so that its indented lines are read (and checked) as such.
            spec = syntax.VirtualSpec(None, None, None)
        self.block = RawVirtual(self.line, inet6, spec)
        if spec.host is not None or spec.fwmark is not None:
            self.raw.virtuals.append(self.block)

    def in_block(self, block: RawVirtual, text: str) -> None:
        parts = self.split(text)
        if parts is None:
            return
        name, value = parts
        if name in REALS:
            if (name == "real6") != block.inet6:
                want = "real6" if block.inet6 else "real"
                self.error(f'cannot specify "{name}" here; please use "{want}" instead')
                return
            try:
                real = syntax.parse_real(value, self.warn)
                if real.receive:
                    values.receive_regex(real.receive)
                block.reals.append((real, self.line))
            except Invalid as exc:
                self.error(str(exc))
        elif name in ("fallback", "fallback6") and (name == "fallback6") != block.inet6:
            want = "fallback6" if block.inet6 else "fallback"
            self.error(f'cannot specify "{name}" here; please use "{want}" instead')
        elif name in BLOCK:
            key = "fallback" if name == "fallback6" else name
            self.apply(BLOCK[name], name, value, block.settings, inet6=block.inet6, key=key)
        elif name in GLOBAL:
            self.error(f"{name} is a global directive; it cannot be used inside a virtual block")
        elif name in OPENERS:
            self.error(f"{name}= must start at the beginning of the line (it opens a new block)")
        else:
            self.error(f'unknown directive "{name}"{_suggest(name)}')

    def apply(
        self,
        parse: Parse,
        name: str,
        value: str,
        into: dict[str, Setting],
        *,
        inet6: bool,
        key: str | None = None,
    ) -> None:
        try:
            parsed = parse(value, Context(name, inet6, self.warn))
        except Invalid as exc:
            self.error(str(exc))
            return
        if name == "execute" and into is self.raw.settings:
            self.raw.execute.append(str(parsed))
            return
        self.store(into, key or name, parsed)

    def store(self, into: dict[str, Setting], key: str, value: object) -> None:
        if key in into:
            self.warn(f"{key} overrides the value set at line {into[key].line}")
        into[key] = Setting(value, self.line)

    def feed_part(self, data: bytes, first: int) -> bool:
        """Lex and feed a part of a file, its first line numbered `first`. False when the part
        has a comment in another encoding: the lexer words that warning for a whole file."""
        lines, errors, warnings = split_lines(data, self.raw.path, first)
        self.raw.errors.extend(errors)
        for line in lines:
            self.feed(line)
        return not warnings


def parse_lines(data: bytes | str, path: str) -> RawConfig:
    lines, errors, warnings = split_lines(data, path)
    parser = LineParser(path)
    parser.raw.errors.extend(errors)
    parser.raw.warnings.extend(warnings)
    for line in lines:
        parser.feed(line)
    return parser.raw
