"""`lvsmon [CONFIG] drain REAL [--virtual V]`, `undrain REAL [--virtual V]`, `drain` (the list).

With a daemon running, the command goes to its control socket: the daemon checks it against the
config it runs, keeps it and applies it before it answers. Without one, the command is checked
against the config file and written to the drain state directly (maintenancedir's `.drain` files,
or the state file next to the pid file); the daemon applies it when it starts.

Exit codes: 0 done (also when the real already was, or was not, drained), 2 the config names no
such real (or virtual), or the config is invalid; 1 anything else (no config file, the daemon does
not answer, the state cannot be written).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from lvsmon.daemon import pidfile
from lvsmon.text import clean

if TYPE_CHECKING:
    from lvsmon.cli.control import Control

DRAIN_COMMANDS = ("drain", "undrain")


def run_drain_command(command: str, real: str | None, virtual: str | None, control: Control) -> int:
    if real is None and command == "undrain":
        print("lvsmon: undrain needs the real server: undrain REAL [--virtual V]", file=sys.stderr)
        return 2
    st = pidfile.state(control.pid_path)
    if st.running:
        return _through_daemon(command, real, virtual, control, st.pid)
    return _offline(command, real, virtual, control)


def _err(text: str) -> None:
    print(f"lvsmon: {text}", file=sys.stderr)


# ---- a running daemon -------------------------------------------------------------------------


def _through_daemon(
    command: str, real: str | None, virtual: str | None, control: Control, pid: int | None
) -> int:
    from lvsmon.api.client import ControlUnavailable, request

    try:
        if real is None:
            status, body = request(control.socket_path, "GET", "/drains")
        else:
            payload = {"real": real, "virtual": virtual}
            status, body = request(control.socket_path, "POST", f"/{command}", payload)
    except ControlUnavailable as exc:
        _err(f"the daemon (pid {pid or '?'}) does not answer on its control socket: {exc}")
        return 1
    if status != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else str(body).strip()
        _err(str(error or f"the daemon answered HTTP {status}"))
        return 2 if status == 400 else 1
    if real is None:
        _print_listing(body)
    else:
        _print_results(command, body.get("results"))
    return 0


# ---- no daemon: the state itself --------------------------------------------------------------


def _offline(command: str, real: str | None, virtual: str | None, control: Control) -> int:
    from lvsmon.cli.paths import load_or_report
    from lvsmon.engine.drain import DrainError, drain, listing, select, undrain
    from lvsmon.engine.forced import Preview
    from lvsmon.engine.jobs import build_plan

    config = load_or_report(control.config_arg)
    if isinstance(config, int):
        return config
    # as a daemon started now would read the drains (engine/forced.py: one rule)
    forced = Preview(control.drain_state_path)
    store = forced.store(config)
    index = forced.drain_index(config, build_plan(config))
    try:
        if real is None:
            _print_listing(listing(store, index))
            return 0
        targets = select(config, real, virtual)
        if command == "drain":
            outcome = drain(store, index, targets, everywhere=virtual is None)
        else:
            outcome = undrain(store, index, targets)
    except DrainError as exc:
        _err(str(exc))
        return 2
    except OSError as exc:
        _err(f"cannot write the drain state {store.where}: {exc}")
        return 1
    _print_results(command, [o.json() for o in outcome])
    print(f"lvsmon is not running: kept in {store.where}, applied when it starts")
    return 0


# ---- output -----------------------------------------------------------------------------------


def _list(value: object) -> list[Any]:
    """A list from the daemon's answer, or none: lines are printed from what has the shape."""
    return value if isinstance(value, list) else []


def _field(entry: object, key: str) -> Any:
    return entry.get(key) if isinstance(entry, dict) else None


def _print_results(command: str, results: object) -> None:
    for r in _list(results):
        pair = clean(f"{_field(r, 'real')} in {_field(r, 'virtual')}")
        if _field(r, "changed"):
            print(f"{command}ed {pair}")
        elif command == "drain":
            print(f"{pair} was already drained")
        else:
            print(f"{pair} was not drained")


def _print_listing(body: dict[str, Any]) -> None:
    drained = _list(body.get("drained"))
    # the daemon's answer quotes file names: each line clean (lvsmon/text.py)
    for d in drained:
        print(clean(f"drained {_field(d, 'real')} in {_field(d, 'virtual')}"))
    if not drained:
        print(clean(f"no real server is drained (state: {body.get('where')})"))
    for name in _list(body.get("ignored")):
        print(clean(f"ignored: {name} names no real server of the config"))
