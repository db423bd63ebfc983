"""`lvsmon bgp-flush [--table N] [CONFIG]`: withdraw what a dead lvsmon left announced.

What a supervisor runs after lvsmon ended, however it ended (systemd's ExecStopPost runs after
a crash, a kill -9 and a watchdog kill too; the OCF agent's stop and start): with `bgp = bird`,
every route of lvsmon's kernel table (bgptable, or --table) is deleted, so BIRD withdraws the
VIPs at once instead of announcing a director that no longer checks anything. With
`bgp = exabgp` there is nothing to flush: the ExaBGP child dies with lvsmon and its sessions
with it. A config without bgp: nothing to do, exit 0.

Run while the daemon lives, it withdraws its routes until the daemon's next resync (5 s) puts
them back. Exit 0 done, 1 the kernel refused, 2 usage or config error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lvsmon.cli.paths import DEFAULT_CONFIG, load_or_report


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lvsmon bgp-flush",
        description="delete every route of lvsmon's BGP table (bgp = bird): what a supervisor "
        "runs after lvsmon stopped or died",
    )
    parser.add_argument("--table", type=int, help="this table, without reading a config")
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    try:
        ns = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    table: int | None = ns.table
    if table is None:
        config = load_or_report(ns.config)
        if isinstance(config, int):
            return 2 if config == 2 else 1
        bgp = config.settings.bgp
        if bgp.mode != "bird":
            print(f"lvsmon bgp-flush: bgp = {bgp.mode} in {config.path}: nothing to flush")
            return 0
        table = bgp.table
    elif not 1 <= table <= 2**32 - 1 or table in (253, 254, 255):
        print(f"lvsmon bgp-flush: table {table} is not one lvsmon may own", file=sys.stderr)
        return 2
    from lvsmon.routes.kernel import RouteError, flush

    try:
        gone = flush(table)
    except RouteError as exc:
        print(f"lvsmon bgp-flush: table {table}: {exc}", file=sys.stderr)
        return 1
    print(
        f"lvsmon bgp-flush: table {table}: {len(gone)} route(s) removed"
        + (": " + ", ".join(gone) if gone else "")
    )
    return 0
