"""`lvsmon compare-tables A B`: two directors' IPVS tables (`ipvsadm -Sn` output, e.g.
`ssh d1 ipvsadm -Sn > d1.txt`) compared as ECMP needs them (ipvs/compare.py): the same services,
scheduler mh, the same flags, persistence, reals and weights. Exit 0 alike, 1 differences (one
line each on stdout), 2 a file that cannot be read or parsed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lvsmon.ipvs.compare import differences
from lvsmon.ipvs.ipvsadm_format import ParseError, parse_save
from lvsmon.ipvs.model import Table
from lvsmon.text import clean


def _read(path: str) -> Table | str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_save(f.read())
    except (OSError, ParseError) as exc:
        return clean(f"{path}: {exc}")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lvsmon compare-tables",
        description="compare two directors' IPVS tables (ipvsadm -Sn output) as ECMP needs them",
    )
    parser.add_argument("a", metavar="A", help="ipvsadm -Sn output of one director")
    parser.add_argument("b", metavar="B", help="ipvsadm -Sn output of another")
    try:
        ns = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    tables = [_read(ns.a), _read(ns.b)]
    for t in tables:
        if isinstance(t, str):
            print(f"lvsmon compare-tables: {t}", file=sys.stderr)
            return 2
    a, b = tables
    assert not isinstance(a, str) and not isinstance(b, str)
    found = differences(a, b, (clean(ns.a), clean(ns.b)))
    for line in found:
        print(line)
    if not found:
        print(f"{len(a)} services alike: the same reals and weights, scheduled by mh")
    return 1 if found else 0
