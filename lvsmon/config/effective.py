"""RawConfig → Config: defaults, global/per-virtual overrides, name resolution, cross checks."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar, cast

from lvsmon.config import (
    agentconf,
    alerting,
    arpguardconf,
    bgpconf,
    checkpathconf,
    syncconf,
    syntax,
    tlsconf,
)
from lvsmon.config.bgpsettings import BgpVirtual
from lvsmon.config.errors import Diagnostic
from lvsmon.config.model import (
    DAEMON_STATES,
    DEFAULT_CHECKMARKBASE,
    DEFAULT_SMTP_PORT,
    CheckPath,
    CheckType,
    Config,
    DeadConns,
    Fallback,
    GlobalFallback,
    GlobalSettings,
    HttpMethod,
    Real,
    Service,
    Virtual,
    VirtualProtocol,
    VirtualSettings,
    service_for_port,
)
from lvsmon.config.raw import RawConfig, RawVirtual, Setting
from lvsmon.config.resolve import NotAnAddress, Resolver, literal
from lvsmon.config.values import shorten
from lvsmon.ipvs.model import DestKey, Family, ServiceKey, kernel_dest_port

T = TypeVar("T")

MAX_RANGE = 65536
DEFAULT_CHECKTIMEOUT = 5
DEFAULT_NEGOTIATETIMEOUT = 30


@dataclass(frozen=True, slots=True)
class Settled:
    """What Builder.settings gave: the global settings, the errors and the warnings it added."""

    settings: GlobalSettings
    errors: tuple[Diagnostic, ...]
    warnings: tuple[Diagnostic, ...]


class Builder:
    """RawConfig → Config (build); its steps are also run one block at a time by
    lvsmon/config/incremental.py."""

    def __init__(self, raw: RawConfig, resolver: Resolver, hostname: str) -> None:
        self.raw = raw
        self.path = raw.path
        self.resolver = resolver
        self.hostname = hostname
        self.errors: list[Diagnostic] = list(raw.errors)
        self.warnings: list[Diagnostic] = list(raw.warnings)
        self._told: set[tuple[int, str]] = set()  # warnings given once for every virtual
        # a virtual's warning was worded at a global line (or would have been, had it not been
        # given already): what it says depends on more than its block (incremental.py)
        self.cited_global = False

    def error(self, line: int, message: str) -> None:
        self.errors.append(Diagnostic(self.path, line, message))

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(Diagnostic(self.path, line, message))

    # -- names ---------------------------------------------------------------------------------

    def host(self, name: str, family: Family, line: int, what: str) -> str | None:
        try:
            lit = literal(name, family)
        except NotAnAddress as exc:
            self.error(line, f"invalid address for {what}: {exc}")
            return None
        if lit is not None:
            return lit
        resolved = self.resolver.host(name, family)
        if resolved is None:
            v = "IPv6" if family is Family.INET6 else "IPv4"
            self.error(
                line, f"invalid address for {what}: could not resolve {name!r} to an {v} address"
            )
        return resolved

    def port(self, name: str, protocol: str | None, line: int, what: str) -> int | None:
        number = self.resolver.port(name, protocol)
        if number is None:
            if name.isdigit():
                self.error(line, f"invalid port {shorten(name)} for {what} (0..65535)")
            else:
                self.error(
                    line, f"invalid port {shorten(name)!r} for {what} (unknown service name)"
                )
        return number

    # -- globals -------------------------------------------------------------------------------

    def global_fallback(self, setting: Setting | None, family: Family) -> GlobalFallback | None:
        if setting is None:
            return None
        spec = cast(syntax.FallbackSpec, setting.value)
        address = self.host(spec.host, family, setting.line, "fallback server")
        port = None
        if spec.port is not None:
            port = self.port(spec.port, None, setting.line, "fallback server")
            if port is None:
                return None
        if address is None:
            return None
        return GlobalFallback(address, port, spec.forward, self.path, setting.line)

    def settings(self, blocks: Iterable[Mapping[str, Setting]] | None = None) -> GlobalSettings:
        """The global settings; `blocks`: each virtual block's settings (smtp_warnings reads
        their relays), by default the raw config's."""
        g = self.raw.settings
        if blocks is None:
            blocks = (rv.settings for rv in self.raw.virtuals)

        def get(name: str, default: T) -> T:
            s = g.get(name)
            return default if s is None else cast(T, s.value)

        maintdir = get("maintenancedir", cast(str | None, None))
        if maintdir is not None and not os.path.isdir(maintdir):
            self.warn(g["maintenancedir"].line, f"maintenance directory {maintdir} does not exist")
        logfile = get("logfile", "/var/log/ldirectord.log")
        if logfile.startswith("/"):
            self.check_writable(logfile, g["logfile"].line if "logfile" in g else 0, "logfile")
        for line, message in alerting.template_problems(g):
            self.error(line, message)
        for line, message in alerting.smtp_warnings(g, blocks):
            self.warn(line, message)
        smtp, smtpport = _smtp(get("smtp", cast(syntax.SmtpSpec | None, None)))
        sync, sync_errors, sync_warnings = syncconf.sync_daemons(g)
        for line, message in sync_errors:
            self.error(line, message)
        for line, message in sync_warnings:
            self.warn(line, message)
        bgp, bgp_errors, bgp_warnings = bgpconf.bgp_global(g)
        for line, message in bgp_errors:
            self.error(line, message)
        for line, message in bgp_warnings:
            self.warn(line, message)
        return GlobalSettings(
            checktimeout=get("checktimeout", cast(int | None, None)),
            negotiatetimeout=get("negotiatetimeout", cast(int | None, None)),
            checkinterval=get("checkinterval", 10),
            checkcount=get("checkcount", 1),
            failurecount=get("failurecount", 1),
            fallback=self.global_fallback(g.get("fallback"), Family.INET),
            fallback6=self.global_fallback(g.get("fallback6"), Family.INET6),
            fallbackcommand=get("fallbackcommand", cast(str | None, None)),
            autoreload=get("autoreload", False),
            callback=get("callback", cast(str | None, None)),
            logfile=logfile,
            execute=tuple(self.raw.execute),
            fork=get("fork", False),
            supervised=get("supervised", False),
            quiescent=get("quiescent", False),
            readdquiescent=get("readdquiescent", False),
            emailalert=get("emailalert", cast(tuple[str, ...], ())),
            emailalertfreq=get("emailalertfreq", 0),
            emailalertstatus=get("emailalertstatus", DAEMON_STATES),
            emailalertfrom=get("emailalertfrom", cast(str | None, None)),
            cleanstop=get("cleanstop", True),
            smtp=smtp,
            smtpport=smtpport,
            maintenancedir=maintdir,
            resyncinterval=get("resyncinterval", 5),
            risecount=get("risecount", 1),
            flapcount=get("flapcount", 0),
            flapwindow=get("flapwindow", 300),
            flaphold=get("flaphold", 120),
            depoolthreshold=get("depoolthreshold", cast(float | None, None)),
            arpguard=get("arpguard", False),
            arpguardinterval=get("arpguardinterval", 10),
            checkpath=get("checkpath", CheckPath.REAL),
            checkmarkbase=get("checkmarkbase", DEFAULT_CHECKMARKBASE),
            slowstart=get("slowstart", 0),
            removedrain=get("removedrain", 0),
            deadconns=get("deadconns", DeadConns.KEEP),
            bgp=bgp,
            emailalertwindow=get("emailalertwindow", 5),
            emailalertrate=get("emailalertrate", 60),
            emailalerttemplates=get("emailalerttemplates", cast(str | None, None)),
            smtpuser=get("smtpuser", ""),
            smtppassword=get("smtppassword", ""),
            smtptls=get("smtptls", "starttls"),
            syncdaemon=sync,
            agent=agentconf.agent_global(g),
            tls=tlsconf.tls_global(g),
        )

    def check_writable(self, path: str, line: int, what: str) -> None:
        # ldirectord opens the file for appending while parsing; checking access is enough and
        # does not create files as a side effect of `check-config`.
        if os.path.isdir(path):
            self.error(line, f"unable to open {what} {path}: it is a directory")
        elif os.path.exists(path):
            if not os.access(path, os.W_OK):
                self.error(line, f"unable to open {what} {path}: not writable")
        else:
            parent = os.path.dirname(path) or "."
            if not os.path.isdir(parent):
                self.error(line, f"unable to open {what} {path}: directory {parent} does not exist")
            elif not os.access(parent, os.W_OK):
                self.error(
                    line, f"unable to open {what} {path}: directory {parent} is not writable"
                )

    # -- virtuals ------------------------------------------------------------------------------

    def virtual(self, rv: RawVirtual, g: GlobalSettings) -> Virtual | None:
        s = rv.settings
        line = rv.line
        family = Family.INET6 if rv.inet6 else Family.INET

        def get(name: str, default: T) -> T:
            st = s.get(name)
            return default if st is None else cast(T, st.value)

        spec = rv.spec
        proto_setting = s.get("protocol")
        if spec.fwmark is not None:
            protocol = VirtualProtocol.FWM
            if proto_setting is not None and proto_setting.value != "fwm":
                self.error(
                    proto_setting.line,
                    "protocol must be fwm if the virtual service is a firewall mark (a number)",
                )
        else:
            assert spec.port is not None
            default = "udp" if spec.port in ("53", "domain") else "tcp"
            proto = default if proto_setting is None else str(proto_setting.value)
            if proto == "fwm":
                assert proto_setting is not None
                self.error(
                    proto_setting.line,
                    "protocol must be tcp or udp if the virtual service is an address and port",
                )
                proto = default
            protocol = VirtualProtocol(proto)

        address: str | None = None
        port = 0
        fwmark = spec.fwmark or 0
        if spec.host is not None:
            assert spec.port is not None
            address = self.host(spec.host, family, line, "virtual service")
            resolved_port = self.port(spec.port, protocol.value, line, "virtual service")
            if address is None or resolved_port is None:
                self.reals(rv, None, family, protocol, g)  # still report errors in the reals
                return None
            port = resolved_port

        service = get("service", cast(Service | None, None))
        service_from_port = service is None and protocol is not VirtualProtocol.FWM
        if service is None:
            service = Service.NONE if protocol is VirtualProtocol.FWM else service_for_port(port)
        checktype, num_connects = get("checktype", (CheckType.NEGOTIATE, 0))

        v_ct = get("checktimeout", cast(int | None, None))
        v_nt = get("negotiatetimeout", cast(int | None, None))
        checktimeout = _first(v_ct, v_nt, g.checktimeout, g.negotiatetimeout, DEFAULT_CHECKTIMEOUT)
        negotiatetimeout = _first(
            v_nt, v_ct, g.negotiatetimeout, g.checktimeout, DEFAULT_NEGOTIATETIMEOUT
        )
        checkinterval = g.checkinterval
        if "checkinterval" in s:
            if g.fork:
                checkinterval = cast(int, s["checkinterval"].value)
            else:
                self.warn(
                    s["checkinterval"].line,
                    "checkinterval in a virtual block is ignored unless fork = yes "
                    f"(the global value {g.checkinterval} applies)",
                )
        self.damping_warnings(
            s, checkinterval, get("flapcount", g.flapcount), get("flapwindow", g.flapwindow)
        )

        login = get("login", "")
        passwd = get("passwd", "")
        if service is Service.FTP:
            login = login or "anonymous"
            passwd = passwd or f"ldirectord@{self.hostname}"
        elif service is Service.SIP:
            login = login or f"ldirectord@{self.hostname}"

        ops = get("ops", False)
        if ops and protocol is not VirtualProtocol.UDP:
            self.warn(
                s["ops"].line, "ops (one-packet scheduling) only applies to UDP services; ignored"
            )
            ops = False
        persistent = get("persistent", cast(int | None, None))
        netmask = get("netmask", cast(str | None, None))
        if netmask is not None and persistent is None:
            self.warn(s["netmask"].line, "netmask has no effect without persistent")

        monitorfile = get("monitorfile", cast(str | None, None))
        if monitorfile is not None:
            self.check_writable(monitorfile, s["monitorfile"].line, "monitorfile")

        smtp, smtpport = g.smtp, g.smtpport
        if "smtp" in s:  # the virtual's relay, with its own port (or 25): not the global's port
            smtp, smtpport = _smtp(cast(syntax.SmtpSpec, s["smtp"].value))
        request = get("request", "/")
        receive = get("receive", "")
        reals = self.reals(rv, port, family, protocol, g, request, receive)
        fallback = self.fallback(rv, g, family, protocol, port)

        v = Virtual(
            family=family,
            protocol=protocol,
            address=address,
            port=port,
            fwmark=fwmark,
            file=self.path,
            line=line,
            reals=reals,
            fallback=fallback,
            settings=VirtualSettings(
                scheduler=get("scheduler", "wrr"),
                schedflags=get("schedflags", cast(str | None, None)),
                persistent=persistent,
                netmask=netmask,
                ops=ops,
                checktype=checktype,
                num_connects=num_connects,
                service=service,
                service_from_port=service_from_port,
                checkcommand=get("checkcommand", "/bin/true"),
                checkport=get("checkport", cast(int | None, None)),
                request=request,
                receive=receive,
                virtualhost=get("virtualhost", cast(str | None, None)),
                httpmethod=get("httpmethod", HttpMethod.GET),
                login=login,
                passwd=passwd,
                database=get("database", ""),
                secret=get("secret", ""),
                load=get("load", cast(str | None, None)),
                checktimeout=checktimeout,
                negotiatetimeout=negotiatetimeout,
                checkinterval=checkinterval,
                checkcount=get("checkcount", g.checkcount),
                failurecount=get("failurecount", g.failurecount),
                risecount=get("risecount", g.risecount),
                flapcount=get("flapcount", g.flapcount),
                flapwindow=get("flapwindow", g.flapwindow),
                flaphold=get("flaphold", g.flaphold),
                depoolthreshold=get("depoolthreshold", g.depoolthreshold),
                arpguard=get("arpguard", g.arpguard),
                arpguardinterval=get("arpguardinterval", g.arpguardinterval),
                checkpath=get("checkpath", g.checkpath),
                slowstart=get("slowstart", g.slowstart),
                removedrain=get("removedrain", g.removedrain),
                deadconns=get("deadconns", g.deadconns),
                bgp=self.bgp(s, g, protocol, get("scheduler", "wrr"), line, family is Family.INET6),
                quiescent=get("quiescent", g.quiescent),
                fallbackcommand=get("fallbackcommand", g.fallbackcommand),
                cleanstop=get("cleanstop", g.cleanstop),
                emailalert=get("emailalert", g.emailalert),
                emailalertfreq=get("emailalertfreq", g.emailalertfreq),
                emailalertstatus=get("emailalertstatus", g.emailalertstatus),
                smtp=smtp,
                smtpport=smtpport,
                monitorfile=monitorfile,
                servicename=get("servicename", cast(str | None, None)),
                comment=get("comment", cast(str | None, None)),
                agent=agentconf.agent_of(s, g.agent, checkinterval, checktimeout),
                tls=tlsconf.tls_of(s, g.tls),
            ),
        )
        for at, message in tlsconf.warnings(s, v.tls):
            self.warn(at, message)
        for at, message in arpguardconf.block_warnings(s, v):
            self.warn(at, message)
        if v.agent is None:
            for at, message in agentconf.unused(s):
                self.warn(at, message)
        return v

    def bgp(
        self,
        s: Mapping[str, Setting],
        g: GlobalSettings,
        protocol: VirtualProtocol,
        scheduler: str,
        line: int,
        inet6: bool,
    ) -> BgpVirtual | None:
        """The virtual's part in its VIP's announcement (config/bgpconf.py)."""
        fwmark = protocol is VirtualProtocol.FWM
        v, errors, warnings = bgpconf.bgp_virtual(s, g.bgp, fwmark, scheduler, line, inet6)
        for line, message in errors:
            self.error(line, message)
        for line, message in warnings:
            self.warn(line, message)
        return v

    def damping_warnings(
        self, s: dict[str, Setting], checkinterval: int, flapcount: int, window: int
    ) -> None:
        """Flap damping that cannot act: a window or hold time without a count, or a window too
        short to ever see more than flapcount changes (each needs a check of its own). A
        problem of the global settings alone is told once, at their line."""
        g = self.raw.settings
        if flapcount == 0:
            for name in ("flapwindow", "flaphold"):
                if name in s:
                    self.warn(s[name].line, f"{name} has no effect without flapcount")
            return
        if window > flapcount * checkinterval:
            return
        own = next((s[n] for n in ("flapwindow", "flapcount", "checkinterval") if n in s), None)
        if own is None:
            self.cited_global = True
        where = own.line if own is not None else (g.get("flapwindow") or g["flapcount"]).line
        message = (
            f"flapwindow={window} cannot see more than flapcount={flapcount} state changes with "
            f"a check every {checkinterval} s, so flap damping never holds a real: make it longer "
            f"than {flapcount * checkinterval}"
        )
        if (where, message) not in self._told:
            self._told.add((where, message))
            self.warn(where, message)

    def fallback(
        self,
        rv: RawVirtual,
        g: GlobalSettings,
        family: Family,
        protocol: VirtualProtocol,
        port: int,
    ) -> Fallback | None:
        own = rv.settings.get("fallback")
        if own is not None:
            spec = cast(syntax.FallbackSpec, own.value)
            address = self.host(spec.host, family, own.line, "fallback server")
            fb_port: int | None = port
            if spec.port is not None:
                proto = None if protocol is VirtualProtocol.FWM else protocol.value
                fb_port = self.port(spec.port, proto, own.line, "fallback server")
            if address is None or fb_port is None:
                return None
            return Fallback(address, fb_port, spec.forward, self.path, own.line)
        # A global fallback also serves firewall-mark virtuals (ldirectord emits a broken
        # ipvsadm command for them instead).
        glob = g.fallback6 if family is Family.INET6 else g.fallback
        if glob is None:
            return None
        return Fallback(
            glob.address,
            port if glob.port is None else glob.port,
            glob.forward,
            glob.file,
            glob.line,
        )

    def reals(
        self,
        rv: RawVirtual,
        vport: int | None,
        family: Family,
        protocol: VirtualProtocol,
        g: GlobalSettings,
        request: str = "/",
        receive: str = "",
    ) -> tuple[Real, ...]:
        out: list[Real] = []
        for spec, line in rv.reals:
            first = self.host(spec.host, family, line, "real server")
            last = None
            if spec.last_host is not None:
                if family is Family.INET6:
                    self.error(line, "address ranges (a->b) are not supported for IPv6")
                    continue
                last = self.host(spec.last_host, family, line, "real server (end of range)")
                if last is None:
                    continue
            port = vport
            if spec.port is not None:
                port = self.port(spec.port, None, line, "real server")
            if first is None or port is None:
                continue
            addresses = [first]
            if last is not None:
                lo, hi = int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))
                if lo > hi:
                    self.error(
                        line, f"invalid range {first}->{last}: the first address is above the last"
                    )
                    continue
                if hi - lo + 1 > MAX_RANGE:
                    self.error(
                        line,
                        f"range {first}->{last} holds {hi - lo + 1} addresses "
                        f"(at most {MAX_RANGE})",
                    )
                    continue
                addresses = [str(ipaddress.IPv4Address(n)) for n in range(lo, hi + 1)]
            for address in addresses:
                out.append(
                    Real(
                        address=address,
                        port=port,
                        forward=spec.forward,
                        weight=spec.weight,
                        lower=spec.lower,
                        upper=spec.upper,
                        request=request if spec.request is None else spec.request,
                        receive=receive if spec.receive is None else spec.receive,
                        file=self.path,
                        line=line,
                    )
                )
        return tuple(out)

    # -- cross checks --------------------------------------------------------------------------

    def check_duplicates(self, virtuals: list[Virtual]) -> list[Virtual]:
        """The virtuals with each real once. A duplicate virtual is an error. A real listed again
        with the same settings is a warning and counted once (ldirectord adds it once too); a
        second real on the same kernel destination with other settings is an error (ldirectord
        would apply whichever it handled last)."""
        seen: dict[ServiceKey, Virtual] = {}
        out: list[Virtual] = []
        for v in virtuals:
            self.unique_virtual(v, seen)
            out.append(self.dedup_reals(v))
        return out

    def unique_virtual(self, v: Virtual, seen: dict[ServiceKey, Virtual]) -> None:
        """A second virtual with the key of one in `seen` is an error; else `v` joins them."""
        key = v.key
        if key in seen:
            self.error(
                v.line,
                f"duplicate virtual server {v.name} (first defined at line {seen[key].line})",
            )
        else:
            seen[key] = v

    def dedup_reals(self, v: Virtual) -> Virtual:
        """`v` with each of its reals once (check_duplicates' rule within one virtual)."""
        key = v.key
        dests: dict[DestKey, Real] = {}
        kept: list[Real] = []
        repeated: dict[int, list[tuple[Real, Real]]] = {}  # line -> (real, earlier one)
        for r in v.reals:
            dest = kernel_dest_port(key, r.dest, r.forward)
            other = dests.get(dest)
            if other is None:
                dests[dest] = r
                kept.append(r)
            elif _settings(other) == _settings(r):
                repeated.setdefault(r.line, []).append((r, other))
            else:
                self.error(r.line, _conflict(v, dest, other, r))
        for line, pairs in repeated.items():
            self.warn(line, _repeated(pairs))
        return v if len(kept) == len(v.reals) else dataclasses.replace(v, reals=tuple(kept))

    def unused_flap_settings(self, g: GlobalSettings, virtuals: list[Virtual]) -> None:
        """Global flapwindow/flaphold where no virtual damps flaps: warned about."""
        if g.flapcount == 0 and not any(v.flapcount for v in virtuals):
            for name in ("flapwindow", "flaphold"):
                if name in self.raw.settings:
                    self.warn(
                        self.raw.settings[name].line, f"{name} has no effect without flapcount"
                    )

    def check_paths(self, g: GlobalSettings, virtuals: list[Virtual]) -> None:
        """checkpath across the virtuals (config/checkpathconf.py)."""
        for line, message in checkpathconf.problems(g, virtuals):
            self.error(line, message)

    def arpguard_warnings(self, virtuals: list[Virtual]) -> None:
        for line, message in arpguardconf.global_warnings(self.raw.settings, virtuals):
            self.warn(line, message)

    def build(
        self, digest: str, settings: Settled | None = None
    ) -> tuple[Config | None, list[Diagnostic], list[Diagnostic]]:
        """`settings`: the global settings and their diagnostics as settings() gave them for
        this raw config (incremental.py found an error after building them: not twice)."""
        if settings is None:
            g = self.settings()
        else:
            g = settings.settings
            self.errors.extend(settings.errors)
            self.warnings.extend(settings.warnings)
        virtuals = [v for rv in self.raw.virtuals if (v := self.virtual(rv, g)) is not None]
        virtuals = self.check_duplicates(virtuals)
        self.unused_flap_settings(g, virtuals)
        self.check_paths(g, virtuals)
        self.arpguard_warnings(virtuals)
        if self.errors:
            return None, self.errors, self.warnings
        config = Config(
            self.path, digest, g, tuple(virtuals), tuple(sorted(self.warnings, key=_order))
        )
        return config, [], self.warnings


def _settings(r: Real) -> tuple[object, ...]:
    return (r.address, r.port, r.forward, r.weight, r.lower, r.upper, r.request, r.receive)


def _repeated(pairs: list[tuple[Real, Real]]) -> str:
    """The warning for a line whose reals were all listed before with the same settings."""
    if len(pairs) == 1:
        r, earlier = pairs[0]
        return (
            f"real server {DestKey(r.address, r.port)} is listed again with the same settings "
            f"as at line {earlier.line}; counted once"
        )
    shown = ", ".join(f"{DestKey(r.address, r.port)} at line {e.line}" for r, e in pairs[:3])
    more = ", ..." if len(pairs) > 3 else ""
    return (
        f"{len(pairs)} addresses of this range are listed before with the same settings "
        f"({shown}{more}); each is counted once"
    )


def _shown(r: Real) -> dict[str, str]:
    return {
        "port": f"port {r.port}",
        "forward": str(r.forward),
        "weight": f"weight {r.weight}",
        "lower": f"l:{r.lower}",
        "upper": f"u:{r.upper}",
        "request": f"request {r.request!r}",
        "receive": f"receive {r.receive!r}",
    }


def _conflict(v: Virtual, dest: DestKey, earlier: Real, r: Real) -> str:
    """Two reals on one kernel destination, and how they differ."""
    mine, theirs = _shown(r), _shown(earlier)
    differ = [name for name in mine if mine[name] != theirs[name]]
    here = ", ".join(mine[name] for name in differ)
    there = ", ".join(theirs[name] for name in differ)
    forced = f"; gate and ipip use the virtual's port {dest.port}" if r.port != earlier.port else ""
    return (
        f"real server {dest} is listed twice in {v.name} with different settings "
        f"({here} here; {there} at line {earlier.line}{forced}): the kernel has one destination "
        "per address and port, keep one of the lines"
    )


def _order(d: Diagnostic) -> int:
    return d.line or 0


def _smtp(spec: syntax.SmtpSpec | None) -> tuple[str | None, int]:
    """``smtp``'s host and port; no ``smtp`` means the local sendmail (the port is moot)."""
    if spec is None:
        return None, DEFAULT_SMTP_PORT
    return spec.host, DEFAULT_SMTP_PORT if spec.port is None else spec.port


def _first(*candidates: int | None) -> int:
    for c in candidates:
        if c is not None:
            return c
    raise AssertionError("the last candidate is a default")


def build_config(
    raw: RawConfig,
    digest: str,
    resolver: Resolver,
    hostname: str | None = None,
    settings: Settled | None = None,
) -> tuple[Config | None, list[Diagnostic], list[Diagnostic]]:
    """The effective Config, or None and every error; warnings either way. `settings`: see
    Builder.build."""
    builder = Builder(raw, resolver, socket.gethostname() if hostname is None else hostname)
    return builder.build(digest, settings)
