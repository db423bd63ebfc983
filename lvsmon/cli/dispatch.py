"""The lvsmon command line.

  lvsmon [-d] [--foreground] [--backend B] [configfile]
         start|stop|restart|try-restart|reload|force-reload|status
  lvsmon check-config [--json] FILE        (also: lvsmon -t FILE)
  lvsmon plan [--json] [CONFIG [NEWFILE]]
  lvsmon demo

The first form is ldirectord's own command line and exit codes, so init scripts, systemd units and
the resource agent work unchanged. Unlike ldirectord, `start` returns once the table is programmed,
`stop` once the daemon has cleaned up and exited, and `stop`/`status` work with a broken config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from lvsmon import __version__
from lvsmon.cli.options import add_backend_options
from lvsmon.cli.paths import DEFAULT_CONFIG, config_name

COMMANDS = ("start", "stop", "restart", "try-restart", "reload", "force-reload", "status")
TABLE_COMMANDS = ("verify-table", "purge")  # lvsmon extensions, for the resource agent
USAGE_EXIT = 255  # ldirectord's pod2usage(-1)

HELP_EPILOG = """\
commands (ldirectord compatible):
  start         start the daemon; returns when the IPVS table is programmed
  stop          stop the daemon; returns when it has cleaned up and exited
  restart       stop, then start
  try-restart   restart only if running
  reload        re-read the configuration (a bad one is reported and not applied)
  force-reload  same as reload
  status        exit 0 running, 3 stopped, 1 stale pid file

lvsmon extensions (the OCF resource agent's, packaging/ocf/lvsmon):
  verify-table  deep check: exit 0 if the daemon is alive (status file fresh) and the kernel
                holds exactly what it last programmed, 1 if not (what differs on stderr; a
                difference counts once it outlives the daemon's next resync, --verify-wait at
                most), 3 stopped; with the memory backend only the freshness is checked
  purge         with the daemon stopped: delete the config's virtual services (and those the
                dead daemon's status file lists) from the kernel; exit 0, 1 on failure

lvsmon extensions (steering a running pool):
  drain REAL [--virtual V]
                weight 0 for REAL (IP:PORT, IP or a name) in every virtual or in V (IP:PORT,
                tcp:IP:PORT, fwm:N) until undrain, whatever its checks say: its connections go
                on, new ones go elsewhere; kept across reloads and restarts (maintenancedir's
                REAL.drain files, else a state file beside the pid file); without a daemon it
                applies when one starts. Exit 0, 2 not a real server of the config. Without
                REAL: list the drained reals
  undrain REAL [--virtual V]
                give REAL its weight back
  drain --director, undrain --director
                with bgp: announce this director's VIPs with GRACEFUL_SHUTDOWN for bgpdrain s,
                then withdraw them until undrain (the daemon keeps running; not kept across a
                restart)

other forms:
  lvsmon check-config [--json] FILE   validate a configuration (also: lvsmon -t FILE)
  lvsmon plan [--json] [CONFIG [NEWFILE]]
                                      the kernel ops a reload to NEWFILE (default: CONFIG as
                                      it is now) would apply, from the running daemon (its
                                      control socket; --pid-file) or else the kernel table
                                      (--backend); exit 0 no change, 1 changes, 2 trouble
  lvsmon demo                         a live demonstration on loopback, no root needed
  lvsmon test-alert [--to ADDR] FILE  send one test alert mail through the configured path
  lvsmon bgp-flush [--table N] [FILE] withdraw what a dead lvsmon announced (bgp = bird: delete
                                      every route of its bgptable); for ExecStopPost and the
                                      OCF agent
  lvsmon compare-tables A B           two directors' `ipvsadm -Sn` outputs compared as ECMP
                                      needs them (mh, the same reals and weights); exit 0
                                      alike, 1 differences

The configuration is looked up as /etc/ha.d/NAME, /etc/ha.d/conf/NAME, then NAME as given
(default NAME: ldirectord.cf). Backend: --backend or $LVSMON_BACKEND (netlink, ipvsadm, memory).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"lvsmon: {message}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)


def _check_config(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lvsmon check-config",
        description="Parse an ldirectord.cf and report every error as FILE:LINE: message "
        "(exit 2), or exit 0 when it is valid.",
    )
    parser.add_argument("--json", action="store_true", help="print the effective configuration")
    parser.add_argument("file", help="the ldirectord.cf to check")
    args = parser.parse_args(argv)
    from lvsmon.config.checkconf import check_config

    rc = check_config(args.file, as_json=args.json, out=sys.stdout, err=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            # the reader left (`| head -1`) and check_config kept its verdict; what is still
            # buffered would fail again, with a traceback, in the flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
    return rc


def _demo(argv: Sequence[str]) -> int:
    from lvsmon.cli.demo import main as demo_main

    return demo_main(argv)


def _drain_form(words: list[str]) -> tuple[str | None, str, str | None] | None:
    """(configfile, drain or undrain, REAL) of `[configfile] drain [REAL]`, else None."""
    for at in (0, 1):
        if len(words) > at and words[at] in ("drain", "undrain") and len(words) <= at + 2:
            real = words[at + 1] if len(words) > at + 1 else None
            return (words[0] if at else None, words[at], real)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-v", "--version"):
        print(f"lvsmon {__version__} (ldirectord compatible)")
        return 0
    if args and args[0] in ("check-config", "-t"):
        return _check_config(args[1:])
    if args and args[0] == "demo":
        return _demo(args[1:])
    if "plan" in args and args[-1] not in COMMANDS + TABLE_COMMANDS:
        # `lvsmon plan ...`, also after the options the other commands take
        # (`lvsmon --pid-file P plan CONFIG`); `lvsmon plan start` is a config named plan
        from lvsmon.cli.plan import main as plan_main

        at = args.index("plan")
        return plan_main(args[:at] + args[at + 1 :])
    if args and args[0] == "compare-tables":
        from lvsmon.cli.comparetables import main as compare_main

        return compare_main(args[1:])
    if args and args[0] == "bgp-flush":
        from lvsmon.cli.bgpflush import main as bgp_flush_main

        return bgp_flush_main(args[1:])
    if args and args[0] == "test-alert":
        from lvsmon.cli.testalert import main as test_alert_main

        return test_alert_main(args[1:])

    parser = _Parser(
        prog="lvsmon",
        description="lvsmon: health checker for Linux Virtual Server, ldirectord compatible.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "-d", "--debug", action="store_true", help="stay in the foreground, log to stderr"
    )
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="start: stay in the foreground, log as configured (systemd Type=notify)",
    )
    add_backend_options(
        parser,
        backend_help="how to reach IPVS (default: $LVSMON_BACKEND or netlink)",
        pid_file_help="default: /run/lvsmon.<config name>.pid",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=120.0,
        help="seconds stop waits for the daemon (default 120)",
    )
    parser.add_argument(
        "--verify-wait",
        type=float,
        default=20.0,
        help="seconds verify-table gives the daemon's resync to repair a difference (default 20)",
    )
    parser.add_argument(
        "--listen",
        default=os.environ.get("LVSMON_LISTEN"),
        metavar="HOST:PORT",
        help="start: also serve the status page, /status, /events and /metrics on this TCP "
        "address (read only; default: $LVSMON_LISTEN, else the control socket only)",
    )
    parser.add_argument(
        "--listen-max-connections",
        default=os.environ.get("LVSMON_LISTEN_MAX_CONNECTIONS"),
        metavar="N",
        help="start: connections the --listen address holds at once, more are answered 503 "
        "(default: $LVSMON_LISTEN_MAX_CONNECTIONS, else 64)",
    )
    parser.add_argument(
        "--listen-host",
        action="append",
        metavar="NAME",
        help="start: a name clients may give as Host on the --listen address besides the "
        "address itself and localhost (repeatable; default: $LVSMON_LISTEN_HOSTS, "
        "comma-separated)",
    )
    parser.add_argument(
        "--virtual", metavar="V", help="drain, undrain: only in this virtual service"
    )
    parser.add_argument(
        "--director",
        action="store_true",
        help="drain, undrain: this director's BGP announcements (bgp), not a real",
    )
    parser.add_argument("words", nargs="+", metavar="[configfile] command")
    try:
        # intermixed: `drain --virtual V REAL` as well as `drain REAL --virtual V`
        ns = parser.parse_intermixed_args(args)
        words: list[str] = ns.words
        standard = len(words) <= 2 and words[-1] in COMMANDS + TABLE_COMMANDS
        drain_form = None if standard else _drain_form(words)
        if not standard and drain_form is None:
            parser.error(f"expected [configfile] {{{'|'.join(COMMANDS)}}}, got {' '.join(words)!r}")
        if ns.virtual is not None and drain_form is None:
            parser.error("--virtual goes with drain and undrain")
        if ns.director and (drain_form is None or drain_form[2] is not None or ns.virtual):
            parser.error("--director goes with drain and undrain, without a real or --virtual")
    except SystemExit as exc:  # usage errors and --help: ldirectord's exit codes, no traceback
        return exc.code if isinstance(exc.code, int) else USAGE_EXIT
    config_arg = words[0] if len(words) == 2 else None
    if drain_form is not None:
        config_arg = drain_form[0]
    if ns.listen or ns.listen_max_connections or ns.listen_host:
        from lvsmon.api.control import parse_hosts, parse_listen, parse_max_connections

        try:
            if ns.listen:
                parse_listen(ns.listen)
            # the daemon (this process, or its fork) reads them from its environment
            if ns.listen_max_connections:
                cap = parse_max_connections(ns.listen_max_connections)
                os.environ["LVSMON_LISTEN_MAX_CONNECTIONS"] = str(cap)
            if ns.listen_host:
                hosts = parse_hosts(",".join(ns.listen_host))
                os.environ["LVSMON_LISTEN_HOSTS"] = ",".join(sorted(hosts))
        except ValueError as exc:
            print(f"lvsmon: {exc}", file=sys.stderr)
            return 2
    from lvsmon.cli.control import Control

    control = Control(
        config_arg=config_arg or DEFAULT_CONFIG,
        cfgname=config_name(config_arg),
        backend=ns.backend,
        ipvsadm=ns.ipvsadm,
        pid_file=ns.pid_file,
        debug=ns.debug,
        foreground=ns.foreground,
        stop_timeout=ns.stop_timeout,
        listen=ns.listen,
    )
    if drain_form is not None and ns.director:
        from lvsmon.cli.bgpdrain import run_director_drain

        return run_director_drain(drain_form[1], control)
    if drain_form is not None:
        from lvsmon.cli.drain import run_drain_command

        return run_drain_command(drain_form[1], drain_form[2], ns.virtual, control)
    if words[-1] in TABLE_COMMANDS:
        from lvsmon.cli.table import run_table_command

        return run_table_command(words[-1], control, ns.verify_wait)
    return control.run(words[-1])
