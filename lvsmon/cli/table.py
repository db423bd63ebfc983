"""Two commands for the OCF resource agent (packaging/ocf/lvsmon), beside ldirectord's:

  lvsmon [--backend B] CONFIG verify-table   the deep monitor: 0 alive and in line, 1 not, 3 stopped
  lvsmon [--backend B] CONFIG purge          with no daemon running: delete the config's services

`verify-table` proves more than the lock `status` tests: the daemon's status file (rewritten
every second) is fresh, so its event loop runs, and the kernel holds, for every virtual service
it manages, exactly the rules it last programmed (the status file carries a digest per service:
engine/status.py TableDigests). A difference counts only if it outlives the daemon's next resync
(resyncinterval, plus slack; at most --verify-wait seconds): the status file may be a second
older than a change just made, and a hand edit (`ipvsadm -e`) is drift the daemon repairs by
itself. What fails is a daemon that no longer keeps its table: its resync stuck, its backend
wedged. With the memory backend the table lives inside the daemon: only the status file's
freshness can be checked.

`purge` is for the agent's stop: `lvsmon stop` leaves the services of a `cleanstop=no` virtual
and everything a crashed (kill -9) daemon had programmed. It deletes the services the config
names and those the dead daemon's status file lists, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING

from lvsmon.config.model import DEFAULT_CHECKMARKBASE, Config
from lvsmon.daemon import pidfile
from lvsmon.engine.probepath import in_block, probe_keys_in
from lvsmon.engine.status import ABSENT, MalformedStatus, Status, load_status, table_digests
from lvsmon.ipvs.backend import IpvsBackend
from lvsmon.ipvs.diff import service_order
from lvsmon.ipvs.errors import BackendError, ErrorKind
from lvsmon.ipvs.factory import BACKENDS, make_backend
from lvsmon.ipvs.model import ServiceKey, Table
from lvsmon.ipvs.ops import DeleteService, Op
from lvsmon.text import LIMIT, clean

if TYPE_CHECKING:
    from lvsmon.cli.control import Control

# the daemon rewrites the status file on change and touches it every second (its mtime is the
# heartbeat): this much silence is a hung daemon
STALE_S = 15.0
SLACK_S = 3.0  # beyond the resync interval: the status write, the dump, the repair
DEFAULT_WAIT_S = 20.0
LIVE_PHASES = ("running", "reloading")


def run_table_command(command: str, control: Control, wait_s: float = DEFAULT_WAIT_S) -> int:
    if command == "verify-table":
        return verify_table(control, wait_s)
    return purge(control)


def _backend(name: str, control: Control) -> IpvsBackend:
    return make_backend(name, ipvsadm=control.ipvsadm)


async def _dump(name: str, control: Control) -> Table:
    backend = _backend(name, control)
    try:
        return await backend.dump()
    finally:
        await backend.close()


# ---- verify-table -----------------------------------------------------------------------------


def verify_table(control: Control, wait_s: float = DEFAULT_WAIT_S) -> int:
    st = pidfile.state(control.pid_path)
    if not st.running:
        print(f"lvsmon is stopped for {control.config_arg}", file=sys.stderr)
        return 1 if st.stale else 3
    started = time.monotonic()
    while True:
        try:
            problems, summary = _compare(control, st.pid or 0)
        except _Hung as exc:  # waiting for a resync of a stuck daemon helps nothing
            print(f"lvsmon: {exc}", file=sys.stderr)
            return 1
        if not problems:
            print(summary)
            return 0
        resync_s = _resync_s(control.status_path)
        waited = time.monotonic() - started
        if waited >= min(resync_s + SLACK_S, wait_s) or not pidfile.state(control.pid_path).running:
            for line in problems:
                print(clean(f"lvsmon: {line}", 2 * LIMIT), file=sys.stderr)
            print(f"lvsmon: still so after {waited:.1f} s", file=sys.stderr)
            return 1
        time.sleep(0.5)


def _resync_s(path: str) -> float:
    """The daemon's resync interval as its status file says (5 s when it says nothing)."""
    try:
        status = load_status(path) or {}
    except MalformedStatus:
        status = {}  # _compare said so
    return float(status.get("resync_s") or 5.0)


class _Hung(Exception):
    """The daemon's status file is stale: its event loop does not run."""


def _compare(control: Control, pid: int) -> tuple[list[str], str]:
    """(problems, summary): no problems means the daemon is alive and its table in the kernel."""
    path = control.status_path
    try:
        status = load_status(path)
    except MalformedStatus as exc:
        return [f"status file {path} is malformed: {exc}"], ""
    if status is None:
        return [f"no readable status file {path} (the daemon writes it while it runs)"], ""
    with contextlib.suppress(OSError):
        age = time.time() - os.stat(path).st_mtime
        if age > STALE_S:
            raise _Hung(f"status file {path} not rewritten for {age:.0f} s: the daemon is hung")
    if pid and status.get("pid") not in (None, pid):
        return [f"status file {path} is pid {status.get('pid')}'s, the daemon is pid {pid}"], ""
    phase = status.get("phase", "")
    if phase not in LIVE_PHASES:
        return [f"the daemon is {phase or 'in an unknown phase'}"], ""
    backend = status.get("backend") or control.backend
    if backend not in BACKENDS:
        return [f"status file {path} is malformed: backend: not one of {', '.join(BACKENDS)}"], ""
    if backend == "memory":
        return [], "status file fresh; memory backend: no kernel table to compare"
    return _compare_table(status, backend, control)


def _compare_table(status: Status, backend: str, control: Control) -> tuple[list[str], str]:
    programmed = status.get("table")
    if programmed is None:
        return ["the daemon does not know the kernel table (its last read failed)"], ""
    try:
        kernel = asyncio.run(_dump(backend, control))
    except BackendError as exc:
        return [f"cannot read the IPVS table ({backend}): {exc}"], ""
    by_name = {str(key): key for key in kernel}
    keys = [by_name[name] for name in programmed if name in by_name]
    now = table_digests(kernel, keys)
    problems: list[str] = []
    for name, digest in sorted(programmed.items()):
        found = now.get(name, ABSENT)
        if found == digest:
            continue
        if found == ABSENT:
            problems.append(f"{name}: programmed, missing from the kernel")
        elif digest == ABSENT:
            problems.append(f"{name}: deleted by lvsmon, present in the kernel")
        else:
            problems.append(f"{name}: the kernel's rules differ from what lvsmon programmed")
    present = [name for name, d in programmed.items() if d != ABSENT]
    base = _markbase(control)
    probes = sum(1 for name in present if _is_probe_name(name, base))
    shown = f"{len(present) - probes} virtual services"
    if probes:
        shown += f" and {probes} probe services (checks through the VIP)"
    return problems, f"kernel table matches: {shown} as lvsmon programmed them"


def _config(control: Control) -> Config | None:
    """The config, quietly; None when it cannot be found or loaded (the caller says so)."""
    from lvsmon.cli.paths import find_config
    from lvsmon.config import ConfigError, load_config

    path = find_config(control.config_arg)
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError:
        return None


def _markbase(control: Control) -> int:
    config = _config(control)
    return DEFAULT_CHECKMARKBASE if config is None else config.settings.checkmarkbase


def _is_probe_name(name: str, base: int) -> bool:
    """A service name of the status file (str(ServiceKey)) that is a probe service's."""
    mark = name.removeprefix("fwm:").removesuffix("/inet6")
    return name.startswith("fwm:") and mark.isdigit() and in_block(int(mark), base)


# ---- purge ------------------------------------------------------------------------------------


def purge(control: Control) -> int:
    st = pidfile.state(control.pid_path)
    if st.running:
        print(f"lvsmon: running with pid {st.pid}: stop it before purging", file=sys.stderr)
        return 1
    if control.backend == "memory":
        return 0  # its table went with the daemon
    wanted = _purge_names(control)
    try:
        return asyncio.run(_purge(control, wanted, _config(control)))
    except BackendError as exc:
        if exc.error.kind is ErrorKind.NO_IPVS:
            return 0  # no IPVS, no services
        print(f"lvsmon: cannot read the IPVS table: {exc}", file=sys.stderr)
        return 1


def _purge_names(control: Control) -> set[str]:
    """The services to delete, by name: the config's and the dead daemon's (its status file)."""
    from lvsmon.cli.paths import find_config
    from lvsmon.config import ConfigError, load_config

    names: set[str] = set()
    try:
        status = load_status(control.status_path)
    except MalformedStatus as exc:
        from lvsmon.cli.control import malformed

        print(malformed(control.status_path, exc), file=sys.stderr)
        status = None
    if status is not None:
        names.update((status.get("table") or {}).keys())
    path = find_config(control.config_arg)
    if path is not None:
        try:
            names.update(str(v.key) for v in load_config(path).virtuals)
        except ConfigError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else exc
            print(f"lvsmon: {path} is invalid ({first}); purging what the status file lists")
    return names


async def _purge(control: Control, names: set[str], config: Config | None = None) -> int:
    """Delete the services `names` names, and the probe services of `config`'s reals (checks
    through the VIP) whoever programmed them."""
    backend = _backend(control.backend, control)
    try:
        kernel = await backend.dump()
        probes = probe_keys_in(kernel, config) if config is not None else set()
        keys: list[ServiceKey] = sorted(
            (k for k in kernel if str(k) in names or k in probes), key=service_order
        )
        ops: list[Op] = [DeleteService(k) for k in keys]
        results = await backend.apply(ops) if ops else []
    finally:
        await backend.close()
    failed = [r for r in results if r.error is not None]
    for r in results:
        if r.error is None:
            print(f"Deleted virtual server: {r.op.service}")
        else:
            print(f"lvsmon: cannot delete {r.op.service}: {r.error.message}", file=sys.stderr)
    return 1 if failed else 0
