"""The lvsmon command line.

Two forms share one entry point:
  lvsmon check-config [--json] FILE    (also: lvsmon -t FILE)
  lvsmon [-d] [configfile] start|stop|restart|try-restart|reload|force-reload|status
The second is ldirectord's own command line, so init scripts and resource agents work unchanged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lvsmon import __version__


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

    return check_config(args.file, as_json=args.json, out=sys.stdout, err=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-v", "--version"):
        print(f"lvsmon {__version__}")
        return 0
    if args and args[0] in ("check-config", "-t"):
        return _check_config(args[1:])
    print(
        "usage: lvsmon check-config [--json] FILE\n"
        "       lvsmon [-d] [configfile] start|stop|restart|try-restart|reload|force-reload|status",
        file=sys.stderr,
    )
    return 255
