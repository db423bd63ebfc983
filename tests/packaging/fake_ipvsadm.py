"""A recording stand-in for ipvsadm, enough for lvsmon's ipvsadm backend on a host without IPVS:
`-R` (the op lines and their marker lines, answered the way ipvsadm answers them), `-S -n` and
`-L -n --thresholds`. The table lives in a file ($FAKE_IPVSADM_STATE, in `ipvsadm -S` form) that
a test reads and edits behind lvsmon's back; every call is appended to $FAKE_IPVSADM_LOG with the
caller's pid, so a test can tell the daemon's calls from anybody else's.

Ops are applied by lvsmon.ipvs.apply (the memory backend's engine): the fake is as strict as
the kernel model the project already tests against, not more.
"""

from __future__ import annotations

import os
import sys

from lvsmon.ipvs.apply import apply_op
from lvsmon.ipvs.ipvsadm_format import (
    MARKER_FWMARK,
    op_line,
    parse_save,
)
from lvsmon.ipvs.model import Table
from lvsmon.ipvs.ops import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
)

MARK_ZERO = f"-Z -f {MARKER_FWMARK}"
MARK_DELDEST = f"-d -f {MARKER_FWMARK} -r 0.0.0.1:0"


def load(path: str) -> Table:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_save(f.read())
    except FileNotFoundError:
        return {}


def render(table: Table) -> str:
    """`ipvsadm -S -n`'s form (with thresholds, which parse_save reads back)."""
    lines: list[str] = []
    for key in sorted(table, key=str):
        service = table[key]
        lines.append(op_line(AddService(key, service.conf)))
        lines += sorted(op_line(AddDest(key, d, c)) for d, c in service.dests.items())
    return "".join(line + "\n" for line in lines)


def save(path: str, table: Table) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(table))
    os.replace(tmp, path)


def _service_tokens(tokens: list[str]) -> list[str]:
    if tokens[1] == "-f":
        return tokens[1:3] + (["-6"] if "-6" in tokens else [])
    return tokens[1:3]


def parse_op(line: str) -> Op:
    """One `ipvsadm -R` line (as lvsmon's op_line writes them) back into its op."""
    tokens = line.split()
    command, rest = tokens[0], " ".join(tokens[1:])
    svc = " ".join(_service_tokens(tokens))
    if command in ("-A", "-E"):
        ((key, service),) = parse_save(f"-A {rest}").items()
        return (AddService if command == "-A" else EditService)(key, service.conf)
    ((key, _),) = parse_save(f"-A {svc}").items()
    if command == "-D":
        return DeleteService(key)
    ((_, with_dest),) = parse_save(f"-A {svc}\n-a {rest}").items()
    ((dest, conf),) = with_dest.dests.items()
    if command == "-d":
        return DeleteDest(key, dest)
    return (AddDest if command == "-a" else EditDest)(key, dest, conf)


def restore(path: str, script: str) -> int:
    table = load(path)
    for raw in script.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line == MARK_ZERO:
            print("No such service", file=sys.stderr)
        elif line == MARK_DELDEST:
            print("Service not defined", file=sys.stderr)
        else:
            error = apply_op(table, parse_op(line))
            if error is not None:
                print(error.message, file=sys.stderr)
    save(path, table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    state = os.environ["FAKE_IPVSADM_STATE"]
    log = os.environ.get("FAKE_IPVSADM_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getppid()} {' '.join(args)}\n")
    if args == ["-R"]:
        return restore(state, sys.stdin.read())
    if args[:1] == ["-S"]:
        sys.stdout.write(render(load(state)))
        return 0
    if args[:1] == ["-L"]:
        return 0  # no counters: parse_dump keeps the thresholds -S gave
    print(f"fake ipvsadm: unsupported arguments {args}", file=sys.stderr)
    return 2
