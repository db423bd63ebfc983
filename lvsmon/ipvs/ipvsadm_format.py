"""ipvsadm's text, both ways, without running it: ops → `ipvsadm -R` lines, `ipvsadm -Sn` and
`ipvsadm -Ln --thresholds` → a Table, and error messages → ErrorKind.

Facts from ipvsadm 1.31 on Linux 6.1 (see tests/ipvs/samples/):
* `-R` runs every line; a line the kernel refuses prints one message on stderr and the batch
  goes on (exit status = the last line's). A line ipvsadm cannot parse, or a failure to open
  IPVS at all, ends the run at once with exit status 2.
* `-Sn` has no thresholds; `-Ln --thresholds` has thresholds and connection counters but no
  forwarding method or weight. A dump therefore reads both.
* `-e` resets what it is not told (weight 1, thresholds 0), `-E` likewise (no flags, no
  persistence): every line carries the complete settings.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from lvsmon.addr import host_port
from lvsmon.ipvs.errors import ErrorKind, OpError, OpResult
from lvsmon.ipvs.model import (
    NO_STATS,
    DestConf,
    DestKey,
    DestStats,
    Family,
    Forward,
    Proto,
    Service,
    ServiceConf,
    ServiceKey,
    Table,
    canonical_address,
)
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteService,
    EditDest,
    EditService,
    Op,
)
from lvsmon.ipvs.rules import canonical_service_conf

_PROTO_OPTION = {Proto.TCP: "-t", Proto.UDP: "-u", Proto.SCTP: "--sctp-service"}
_OPTION_PROTO = {
    "-t": Proto.TCP,
    "--tcp-service": Proto.TCP,
    "-u": Proto.UDP,
    "--udp-service": Proto.UDP,
    "--sctp-service": Proto.SCTP,
}
_FORWARD_OPTION = {Forward.GATE: "-g", Forward.MASQ: "-m", Forward.IPIP: "-i"}
_OPTION_FORWARD = {
    "-g": Forward.GATE,
    "--gatewaying": Forward.GATE,
    "-m": Forward.MASQ,
    "--masquerading": Forward.MASQ,
    "-i": Forward.IPIP,
    "--ipip": Forward.IPIP,
}
_LIST_PROTO = {"TCP": Proto.TCP, "UDP": Proto.UDP, "SCTP": Proto.SCTP}

DEFAULT_PERSISTENT = 360  # what `-p` without a value means


class ParseError(ValueError):
    """ipvsadm printed something this module does not understand."""


# ---------------------------------------------------------------- rendering


def service_args(key: ServiceKey) -> list[str]:
    if key.is_fwmark:
        return ["-f", str(key.fwmark)] + (["-6"] if key.family is Family.INET6 else [])
    assert key.protocol is not None and key.address is not None
    return [_PROTO_OPTION[key.protocol], host_port(key.address, key.port)]


def service_conf_args(key: ServiceKey, conf: ServiceConf) -> list[str]:
    """Complete service settings (`-E` resets what it is not given). `conf` must be valid."""
    conf = canonical_service_conf(key, conf)
    args = ["-s", conf.scheduler]
    if conf.persistent is not None:
        args += ["-p", str(conf.persistent)]
        if conf.netmask is not None:
            args += ["-M", conf.netmask]
    if conf.sched_flags:
        args += ["-b", ",".join(sorted(conf.sched_flags))]
    if conf.ops:
        args.append("-o")
    return args


def dest_args(dest: DestKey) -> list[str]:
    return ["-r", host_port(dest.address, dest.port)]


def dest_conf_args(conf: DestConf) -> list[str]:
    return [
        _FORWARD_OPTION[conf.forward],
        "-w",
        str(conf.weight),
        "-x",
        str(conf.upper),
        "-y",
        str(conf.lower),
    ]


def op_args(op: Op) -> list[str]:
    """The arguments of one ipvsadm command doing `op` (usable on a command line or in -R)."""
    svc = service_args(op.service)
    if isinstance(op, AddService):
        return ["-A", *svc, *service_conf_args(op.service, op.conf)]
    if isinstance(op, EditService):
        return ["-E", *svc, *service_conf_args(op.service, op.conf)]
    if isinstance(op, DeleteService):
        return ["-D", *svc]
    if isinstance(op, AddDest):
        return ["-a", *svc, *dest_args(op.dest), *dest_conf_args(op.conf)]
    if isinstance(op, EditDest):
        return ["-e", *svc, *dest_args(op.dest), *dest_conf_args(op.conf)]
    return ["-d", *svc, *dest_args(op.dest)]


def op_line(op: Op) -> str:
    return " ".join(op_args(op))


# A fwmark service nobody creates: commands on it fail with a fixed message and change
# nothing, so one after each op tells, in ipvsadm's stderr, where each op's output ends.
MARKER_FWMARK = 4294967295
_MARK_ZERO = (f"-Z -f {MARKER_FWMARK}", "No such service")
_MARK_DELDEST = (f"-d -f {MARKER_FWMARK} -r 0.0.0.1:0", "Service not defined")


def _marker(op: Op) -> tuple[str, str]:
    # The marker's message must be one the op itself can never print.
    return _MARK_DELDEST if isinstance(op, EditService | DeleteService) else _MARK_ZERO


def restore_script(ops: Sequence[Op]) -> str:
    """The `ipvsadm -R` input for ops: each op line followed by its marker line."""
    lines: list[str] = []
    for op in ops:
        lines += [op_line(op), _marker(op)[0]]
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------- errors

_MESSAGE_KINDS: list[tuple[str, ErrorKind]] = [
    ("already exists", ErrorKind.EXISTS),
    ("no such service", ErrorKind.NOT_FOUND),
    ("no such destination", ErrorKind.NOT_FOUND),
    ("service not defined", ErrorKind.NOT_FOUND),
    ("permission denied", ErrorKind.PERMISSION),
    ("operation not permitted", ErrorKind.PERMISSION),
    ("protocol not available", ErrorKind.NO_IPVS),
    ("memory allocation problem", ErrorKind.NO_IPVS),
    ("module ip_vs not found", ErrorKind.NO_IPVS),
    ("can't initialize ipvs", ErrorKind.NO_IPVS),
    ("scheduler or persistence engine not found", ErrorKind.INVALID),
    ("invalid", ErrorKind.INVALID),
    ("out of range", ErrorKind.INVALID),
    ("not supported", ErrorKind.INVALID),
    ("illegal", ErrorKind.INVALID),
    ("only for udp", ErrorKind.INVALID),
    ("zero port", ErrorKind.INVALID),
]


def error_kind(message: str) -> ErrorKind:
    """Classify ipvsadm's words. Permission is looked for first: without CAP_NET_ADMIN
    ipvsadm says "Can't initialize ipvs: Permission denied (you must be root)"."""
    text = message.lower()
    if "permission denied" in text or "you must be root" in text:
        return ErrorKind.PERMISSION
    for needle, kind in _MESSAGE_KINDS:
        if needle in text:
            return kind
    return ErrorKind.OTHER


def op_error(message: str) -> OpError:
    return OpError(error_kind(message), message)


def _is_startup_failure(message: str) -> bool:
    return "can't initialize ipvs" in message.lower()


def restore_results(ops: Sequence[Op], returncode: int, stderr: str) -> list[OpResult]:
    """Per-op results of running restore_script(ops) through `ipvsadm -R`."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines and returncode == 0:
        return [OpResult(op) for op in ops]
    results: list[OpResult] = []
    pos = 0
    for index, op in enumerate(ops):
        marker = _marker(op)[1]
        if pos < len(lines) and lines[pos] == marker:
            results.append(OpResult(op))
            pos += 1
        elif pos + 1 < len(lines) and lines[pos + 1] == marker:
            results.append(OpResult(op, op_error(lines[pos])))
            pos += 2
        else:
            # ipvsadm stopped here: what is left of stderr is why.
            message = "\n".join(lines[pos:]) or f"ipvsadm exited with status {returncode}"
            error = op_error(message)
            if index == 0 and _is_startup_failure(message):
                return [OpResult(each, error) for each in ops]
            results.append(OpResult(op, error))
            not_applied = OpError(ErrorKind.OTHER, "not applied: ipvsadm stopped at an earlier op")
            results += [OpResult(rest, not_applied) for rest in ops[index + 1 :]]
            return results
    return results


# ---------------------------------------------------------------- parsing


def _parse_host_port(text: str) -> tuple[str, int]:
    try:
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if not rest.startswith(":"):
                raise ValueError
            port = rest[1:]
        else:
            host, _, port = text.rpartition(":")
        if not 0 <= int(port) <= 65535:
            raise ValueError
        return canonical_address(host), int(port)
    except ValueError:
        raise ParseError(f"not an address:port: {text!r}") from None


def _number(token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ParseError(f"{what} is not a number: {token!r}") from None


@dataclass
class _SaveLine:
    command: str
    service: ServiceKey
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


# Options -S prints with a value; tunnel details beyond ipip (gue/gre) are not modelled.
_VALUE_OPTIONS = {
    "-s",
    "-p",
    "-M",
    "-b",
    "-r",
    "-w",
    "-x",
    "-y",
    "--pe",
    "--tun-type",
    "--tun-port",
}


def _save_line(line: str) -> _SaveLine:
    tokens = line.split()
    if len(tokens) < 3 or tokens[0] not in ("-A", "-a"):
        raise ParseError(f"unexpected ipvsadm -S line: {line!r}")
    command, opt, value, *rest = tokens
    if opt == "-f":
        inet6 = "-6" in rest
        rest = [t for t in rest if t != "-6"]
        key = ServiceKey.fwm(_number(value, "fwmark"), Family.INET6 if inet6 else Family.INET)
    elif opt in _OPTION_PROTO:
        address, port = _parse_host_port(value)
        try:
            key = ServiceKey.inet(_OPTION_PROTO[opt], address, port)
        except ValueError as exc:
            raise ParseError(f"bad service in {line!r}: {exc}") from None
    else:
        raise ParseError(f"unexpected service option in {line!r}")
    parsed = _SaveLine(command, key)
    it: Iterator[str] = iter(rest)
    for token in it:
        if token in _VALUE_OPTIONS:
            # `-p` is printed with its value always; ipvsadm never prints a bare -p.
            parsed.options[token] = next(it, "")
        else:
            parsed.flags.add(token)
    return parsed


def parse_save(text: str) -> Table:
    """A table (no thresholds, no counters) from `ipvsadm -Sn` output."""
    table: Table = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parsed = _save_line(line)
        opts = parsed.options
        if parsed.command == "-A":
            persistent = None
            if "-p" in opts:
                persistent = (
                    _number(opts["-p"], "persistence") if opts["-p"] else DEFAULT_PERSISTENT
                )
            flags = frozenset(f for f in opts.get("-b", "").split(",") if f)
            conf = ServiceConf(
                scheduler=opts.get("-s", "wlc"),
                sched_flags=flags,
                persistent=persistent,
                netmask=opts.get("-M"),
                ops="-o" in parsed.flags or "--ops" in parsed.flags,
            )
            table[parsed.service] = Service(canonical_service_conf(parsed.service, conf))
        else:
            svc = table.get(parsed.service)
            if svc is None:
                raise ParseError(f"destination before its service: {line!r}")
            if "-r" not in opts:
                raise ParseError(f"destination without -r: {line!r}")
            forwards = [_OPTION_FORWARD[f] for f in parsed.flags if f in _OPTION_FORWARD]
            dest = DestKey(*_parse_host_port(opts["-r"]))
            # -S never prints thresholds; lines written by hand or by op_line may have them.
            svc.dests[dest] = DestConf(
                forward=forwards[0] if forwards else Forward.GATE,
                weight=_number(opts.get("-w", "1"), "weight"),
                upper=_number(opts.get("-x", "0"), "upper threshold"),
                lower=_number(opts.get("-y", "0"), "lower threshold"),
            )
            svc.stats[dest] = DestStats()
    return table


def _list_service_key(tokens: list[str]) -> ServiceKey:
    if tokens[0] == "FWM":
        family = Family.INET6 if len(tokens) > 2 and tokens[2] == "IPv6" else Family.INET
        return ServiceKey.fwm(_number(tokens[1], "fwmark"), family)
    proto = _LIST_PROTO[tokens[0]]
    address, port = _parse_host_port(tokens[1])
    return ServiceKey.inet(proto, address, port)


@dataclass(frozen=True, slots=True)
class DestCounters:
    upper: int
    lower: int
    stats: DestStats


def parse_thresholds(text: str) -> dict[ServiceKey, dict[DestKey, DestCounters]]:
    """Thresholds and connection counters from `ipvsadm -Ln --thresholds`."""
    out: dict[ServiceKey, dict[DestKey, DestCounters]] = {}
    current: dict[DestKey, DestCounters] | None = None
    for raw in text.splitlines():
        tokens = raw.split()
        if not tokens:
            continue
        if tokens[0] in _LIST_PROTO or tokens[0] == "FWM":
            current = out.setdefault(_list_service_key(tokens), {})
        elif tokens[0] == "->" and len(tokens) >= 6:
            if current is None:
                raise ParseError(f"destination before its service: {raw!r}")
            dest = DestKey(*_parse_host_port(tokens[1]))
            upper, lower, active, inactive = (_number(t, "counter") for t in tokens[2:6])
            current[dest] = DestCounters(upper, lower, DestStats(active, inactive))
        elif tokens[0] in ("IP", "Prot", "->"):
            continue  # headers
        else:
            raise ParseError(f"unexpected ipvsadm -L line: {raw!r}")
    return out


def parse_dump(save_text: str, thresholds_text: str) -> Table:
    """Merge `-Sn` and `-Ln --thresholds`. They are two reads; a destination that appears in
    only one of them changed in between, and the next dump will see it right."""
    table = parse_save(save_text)
    counters = parse_thresholds(thresholds_text)
    for key, svc in table.items():
        for dest, conf in list(svc.dests.items()):
            found = counters.get(key, {}).get(dest)
            if found is not None:
                svc.dests[dest] = DestConf(conf.forward, conf.weight, found.upper, found.lower)
                svc.stats[dest] = found.stats
    return table


def _render_address(key: ServiceKey) -> str:
    if key.is_fwmark:
        return f"FWM  {key.fwmark}" + (" IPv6" if key.family is Family.INET6 else "")
    assert key.protocol is not None and key.address is not None
    return f"{key.protocol.value.upper():<4} {host_port(key.address, key.port)}"


def service_summary(conf: ServiceConf) -> str:
    """The scheduler part of an `ipvsadm -Ln` service line."""
    text = conf.scheduler
    if conf.sched_flags:
        text += f" ({','.join(sorted(conf.sched_flags))})"
    if conf.persistent is not None:
        text += f" persistent {conf.persistent}"
        if conf.netmask is not None:
            text += f" mask {conf.netmask}"
    if conf.ops:
        text += " ops"
    return text


_LIST_FORWARD = {Forward.GATE: "Route", Forward.MASQ: "Masq", Forward.IPIP: "Tunnel"}


def _list_order(key: ServiceKey) -> tuple[int, int, int, int, int]:
    if key.is_fwmark:
        return (1, 0, key.fwmark, 0, 0)
    assert key.protocol is not None and key.address is not None
    family = 1 if key.family is Family.INET6 else 0
    proto = list(Proto).index(key.protocol)
    return (0, family, proto, int(ipaddress.ip_address(key.address)), key.port)


def render_list(table: Table) -> str:
    """The table the way `ipvsadm -Ln` shows it, with thresholds appended per destination."""
    lines = [
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
    ]
    for key in sorted(table, key=_list_order):
        svc = table[key]
        lines.append(f"{_render_address(key)} {service_summary(svc.conf)}")
        for dest in sorted(svc.dests, key=lambda d: (int(ipaddress.ip_address(d.address)), d.port)):
            conf = svc.dests[dest]
            stats = svc.stats.get(dest, NO_STATS)
            line = (
                f"  -> {host_port(dest.address, dest.port):<28} {_LIST_FORWARD[conf.forward]:<7} "
                f"{conf.weight:<6} {stats.active_conns:<10} {stats.inactive_conns:<10}"
            )
            if conf.upper or conf.lower:
                line += f" (thresholds {conf.upper}/{conf.lower})"
            lines.append(line.rstrip())
    return "\n".join(lines) + "\n"
