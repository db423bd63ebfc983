"""`lvsmon plan CONFIG [NEWFILE]`: what a reload to NEWFILE (default: CONFIG as it is now on disk)
would do to the kernel, one ipvsadm line per op, in the order the reload applies them.

The running daemon answers (POST /plan on its control socket): its health, maintenance and table
decide. Without one, the plan is that of a daemon running CONFIG that has just adopted the kernel
table (dumped with --backend; the memory backend's table is empty then, so every service is an
add). Exit codes as diff(1)'s, for deploy pipelines: 0 no change, 1 changes, 2 trouble.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from lvsmon.cli.options import add_backend_options
from lvsmon.engine.forced import Preview

NO_CHANGE, CHANGES, TROUBLE = 0, 1, 2


class PlanTrouble(Exception):
    """Why no plan could be made, one message per line (`file:line: message` for a config)."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lvsmon plan",
        description="Show what a reload to NEWFILE (default: CONFIG as it is now on disk) would "
        "do to the IPVS table, as the running daemon sees it, or without a daemon as the kernel "
        "table shows it. Exit 0 no change, 1 changes, 2 trouble.",
    )
    add_backend_options(
        p,
        backend_help="without a daemon: how to read IPVS (default: $LVSMON_BACKEND or netlink; "
        "memory starts empty)",
        pid_file_help="the daemon's pid file (default: /run/lvsmon.<config name>.pid); its "
        "control socket is next to it",
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument(
        "config",
        nargs="?",
        help="the configuration the daemon runs, looked up as for start (default: ldirectord.cf)",
    )
    p.add_argument("newfile", nargs="?", help="the configuration to plan a reload to")
    return p


def main(argv: Sequence[str]) -> int:
    try:
        ns = parser().parse_intermixed_args(argv)
    except SystemExit as exc:  # argparse: usage errors are 2, --help 0
        return exc.code if isinstance(exc.code, int) else TROUBLE
    try:
        answer = make_plan(ns.config, ns.newfile, ns.pid_file, ns.backend, ns.ipvsadm)
    except PlanTrouble as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return TROUBLE
    print(json.dumps(answer, indent=2) if ns.json else render(answer["ops"], answer.get("later")))
    return CHANGES if answer["ops"] else NO_CHANGE


def render(ops: Sequence[dict[str, Any]], later: Sequence[dict[str, Any]] | None = None) -> str:
    """One line per op, as ipvsadm would be told it, with the words the reload will log; then
    the ones removedrain leaves for later, with when (a daemon from before them sends none)."""
    later = later or []
    width = max((len(op["ipvsadm"]) for op in [*ops, *later]), default=0)
    lines = [f"{op['ipvsadm']:<{width}}   # {op['text']}" for op in ops]
    lines += [f"{op['ipvsadm']:<{width}}   # later, {op['when']}: {op['text']}" for op in later]
    n = len(ops)
    lines.append("no change" if n == 0 else f"{n} change{'' if n == 1 else 's'}")
    return "\n".join(lines)


def make_plan(
    config_arg: str | None,
    newfile: str | None,
    pid_file: str | None,
    backend: str,
    ipvsadm: str | None,
) -> dict[str, Any]:
    from lvsmon.api.client import ControlUnavailable, request
    from lvsmon.cli.paths import DEFAULT_CONFIG, DaemonFiles, config_name, find_config
    from lvsmon.daemon import pidfile

    # as the daemon's commands do: no CONFIG is ldirectord.cf under the name "ldirectord"
    cfgname = config_name(config_arg)
    config_arg = config_arg or DEFAULT_CONFIG
    found = find_config(config_arg)
    if found is None:
        raise PlanTrouble([f"lvsmon: Config file {config_arg} not found"])
    running_path = os.path.abspath(found)
    # absolute: the daemon runs in /
    target = os.path.abspath(newfile) if newfile is not None else running_path
    files = DaemonFiles.of(cfgname, pid_file)
    sock = files.socket_path
    try:
        status, body = request(sock, "POST", "/plan", {"file": target})
    except ControlUnavailable:
        answer = plan_from_kernel(running_path, target, files.drain_state_path, backend, ipvsadm)
        running = pidfile.state(files.pid_path)
        who = f"the daemon (pid {running.pid}) does not answer" if running.running else None
        # on stderr, not in the plan: a wrong --pid-file must not pass unnoticed
        print(
            f"lvsmon: {who or 'no daemon answers'} on {sock}: planned from the kernel table "
            f"({backend} backend)",
            file=sys.stderr,
        )
        answer["source"] = f"kernel ({backend} backend)"
        return answer
    if status == 200 and isinstance(body, dict):
        body["source"] = f"daemon ({sock})"
        return body
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        raise PlanTrouble([str(line) for line in body["errors"]])
    raise PlanTrouble([f"lvsmon: the daemon answered {status}: {str(body).strip()}"])


def plan_from_kernel(
    running_path: str, target: str, drain_state: str, backend_name: str, ipvsadm: str | None
) -> dict[str, Any]:
    """Without a daemon: as if one ran the config at `running_path` on the kernel's table."""
    from lvsmon.config import ConfigError, load_config
    from lvsmon.config.load import load_new_config
    from lvsmon.engine.jobs import build_plan
    from lvsmon.engine.planning import plan_json, running_from_kernel
    from lvsmon.ipvs.errors import BackendError
    from lvsmon.ipvs.factory import make_backend

    try:
        new = load_new_config(target)
        running_config = new if target == running_path else load_config(running_path)
    except ConfigError as exc:
        raise PlanTrouble([str(d) for d in exc.diagnostics]) from exc

    async def dump() -> Any:
        backend = make_backend(backend_name, ipvsadm=ipvsadm)
        try:
            return await backend.dump()
        finally:
            await backend.close()

    try:
        actual = asyncio.run(dump())
    except BackendError as exc:
        raise PlanTrouble([f"lvsmon: cannot read the IPVS table: {exc}"]) from exc
    except Exception as exc:  # e.g. no netlink socket for a non-root user: trouble, not a trace
        raise PlanTrouble([f"lvsmon: cannot read the IPVS table: {exc!r}"]) from exc

    # as a daemon started now would read them: one rule with the daemon's (engine/forced.py)
    forced = Preview(drain_state)
    running = running_from_kernel(
        running_config, actual, forced.drained(running_config, build_plan(running_config))
    )
    return plan_json(running, new, forced.maintained, forced.drained)
