"""Things lvsmon runs or writes for the operator: fallbackcommand, callback, monitorfile;
the first and last are subscribers of the engine's event stream.

Commands run without a shell, in their own process group, and are killed with it after a bound:
a hook that hangs never holds up checks, reloads or stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Sequence

from lvsmon.addr import host_port
from lvsmon.config.model import Config, Virtual
from lvsmon.engine.events import CheckDone, ConfigFileChanged, Event, FallbackChanged
from lvsmon.ipvs.model import ServiceKey
from lvsmon.text import clean

log = logging.getLogger("lvsmon")

HOOK_TIMEOUT_S = 30.0


async def run_command(argv: Sequence[str], timeout: float = HOOK_TIMEOUT_S) -> int | None:
    """Run argv; its exit status, or None when it could not start or was killed at the bound."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        log.error("cannot run %s: %s", argv[0], exc.strerror or exc)
        return None
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        log.error("%s killed after %.0f s", argv[0], timeout)
        return None


def fallback_argv(v: Virtual, command: str, state: str) -> list[str]:
    """`<command> start|stop <vip>:<vport> <protocol>`; for fwmark virtuals the mark stands in for
    the address (ldirectord passed `:0`)."""
    where = f"{v.fwmark}:0" if v.fwmark else host_port(str(v.address), v.port)
    return [*shlex.split(command), state, where, str(v.protocol)]


class Commands:
    """Commands started by subscribers: bounded each, drained (within the stop bound) at stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[int | None]] = set()

    def start(self, argv: Sequence[str]) -> None:
        task = asyncio.get_running_loop().create_task(run_command(argv))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Callback:
    """ldirectord's `callback`: `<callback> <configfile>` when the file changed on disk, with the
    running config's setting: a subscriber of ConfigFileChanged."""

    def __init__(self, config: Callable[[], Config], commands: Commands) -> None:
        self._config = config
        self._commands = commands

    def __call__(self, event: Event) -> None:
        if not isinstance(event, ConfigFileChanged):
            return
        callback = self._config().settings.callback
        if callback and os.access(callback, os.X_OK):
            self._commands.start([callback, event.path])


class FallbackCommands:
    """Runs fallbackcommand when a virtual's "no real is up" state changes: a subscriber of
    FallbackChanged. `config` gives the running config (a reload may change the command)."""

    def __init__(self, config: Callable[[], Config], commands: Commands) -> None:
        self._config = config
        self._commands = commands
        # the running config's virtuals with a fallbackcommand, by key: built once per config
        # (a start-up at 2,284 virtuals publishes one event per virtual; scanning every virtual
        # for each made that quadratic)
        self._indexed: Config | None = None
        self._by_key: dict[ServiceKey, tuple[Virtual, ...]] = {}

    def with_command(self, config: Config) -> dict[ServiceKey, tuple[Virtual, ...]]:
        """The virtuals of `config` that have a fallbackcommand, by key, in config order."""
        if self._indexed is not config:
            by_key: dict[ServiceKey, list[Virtual]] = {}
            for v in config.virtuals:
                if v.fallbackcommand:
                    by_key.setdefault(v.key, []).append(v)
            self._by_key = {key: tuple(vs) for key, vs in by_key.items()}
            self._indexed = config
        return self._by_key

    def __call__(self, event: Event) -> None:
        if not isinstance(event, FallbackChanged):
            return
        for v in self.with_command(self._config()).get(event.service, ()):
            assert v.fallbackcommand is not None
            argv = fallback_argv(v, v.fallbackcommand, "start" if event.active else "stop")
            log.info("Running fallbackcommand: %s", shlex.join(argv))
            self._commands.start(argv)


def _escape(msg: str) -> str:
    return msg.replace("%", "%25").replace("|", "%7C").replace("\r", "%0D").replace("\n", "%0A")


class MonitorFiles:
    """One line per check result in the virtual's monitorfile (ldirectord's format): a
    subscriber of CheckDone."""

    def __init__(self, config: Config) -> None:
        self.use(config)

    def use(self, config: Config) -> None:
        self.path_of = {v.key: v.monitorfile for v in config.virtuals if v.monitorfile}

    def __call__(self, event: Event) -> None:
        if not isinstance(event, CheckDone):
            return
        ref = event.ref
        path = self.path_of.get(ref.service)
        if path is None:
            return
        stamp = time.strftime("%a %b %e %H:%M:%S %Y")
        status = "up" if event.ok else "down"
        line = f"[{stamp}] [{os.getpid()}] {ref.address} {ref.port} {ref.service} [{status}] "
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + _escape(clean(event.reason)) + "\n")
        except OSError as exc:
            log.error("cannot write monitorfile %s: %s", path, exc.strerror)
