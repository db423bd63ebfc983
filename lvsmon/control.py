"""The ldirectord commands: start, stop, restart, try-restart, reload, force-reload, status.

Exit codes are ldirectord's (status: 0 running, 1 stale pid file, 3 stopped; a config error 2;
config file not found 1; reload of a stopped daemon 1). Unlike ldirectord, `start` returns only
when the table is programmed (the daemon reports readiness through a pipe), `stop` only when the
daemon has cleaned up and exited, and `stop`/`status` never parse the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from lvsmon import pidfile
from lvsmon.config import Config, ConfigError, load_config

EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()


@dataclass
class Control:
    config_arg: str
    cfgname: str
    backend: str = "netlink"
    ipvsadm: str | None = None
    pid_file: str | None = None
    debug: bool = False
    foreground: bool = False  # Type=notify: the main process is the daemon, logs as configured
    listen: str | None = None  # also serve the control server on this TCP address
    stop_timeout: float = 120.0

    def __post_init__(self) -> None:
        # the daemon chdirs to /: a relative --pid-file would then name another file
        if self.pid_file:
            self.pid_file = os.path.abspath(self.pid_file)

    @property
    def pid_path(self) -> str:
        return self.pid_file or f"/run/lvsmon.{self.cfgname}.pid"

    @property
    def socket_path(self) -> str:
        """The control server's Unix socket (lvsmon.api), next to the pid file."""
        from lvsmon.api.server import socket_path_for

        return socket_path_for(self.pid_path)

    @property
    def status_path(self) -> str:
        base = self.pid_path.removesuffix(".pid")
        return f"{base}.status.json"

    @property
    def drain_state_path(self) -> str:
        """Drained reals, when the config has no maintenancedir (lvsmon.engine.drain)."""
        from lvsmon.engine.drain import state_path_for

        return state_path_for(self.pid_path)

    def run(self, command: str) -> int:
        handler: Callable[[], int] = {
            "start": self.start,
            "stop": self.stop,
            "restart": self.restart,
            "try-restart": self.try_restart,
            "reload": self.reload,
            "force-reload": self.reload,
            "status": self.status,
        }[command]
        return handler()

    # ---- helpers ----------------------------------------------------------------------------

    def _config_path(self) -> str | None:
        from lvsmon.cli import find_config

        path = find_config(self.config_arg)
        if path is None:
            print(f"lvsmon: Config file {self.config_arg} not found", file=sys.stderr)
            return None
        # absolute before the daemon chdirs to /, so that reload and autoreload read the same
        # file; abspath, not realpath: a config that is a symlink is followed afresh each time
        return os.path.abspath(path)

    def _load(self) -> Config | int:
        path = self._config_path()
        if path is None:
            return 1
        try:
            return load_config(path)
        except ConfigError as exc:
            for d in exc.diagnostics:
                print(d, file=sys.stderr)
            return 2

    # ---- commands ---------------------------------------------------------------------------

    def status(self) -> int:
        st = pidfile.state(self.pid_path)
        if st.running:
            self._print_running(st.pid or 0)
            print_status(self.status_path)
            return 0
        if st.stale:
            # ldirectord's exact line under the name we were invoked as: the stock OCF agent
            # greps "ldirectord stale pid file" to answer "not running" (7) rather than
            # "failed" (1), which Pacemaker could not recover from by a restart
            print(
                f"{program_name()} stale pid file {self.pid_path} for {self.config_arg}",
                file=sys.stderr,
            )
            print(f"lvsmon is stopped for {self.config_arg}")
            return 1
        print(f"lvsmon is stopped for {self.config_arg}")
        return 3

    def stop(self) -> int:
        st = pidfile.state(self.pid_path)
        if not st.running:
            return 0
        if not st.pid:
            return self._pid_unknown()
        try:
            os.kill(st.pid, signal.SIGTERM)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + self.stop_timeout
        # the lock goes when the process is gone, and after its cleanup; a zombie holds none
        while pidfile.holder(self.pid_path) in (st.pid, 0):
            if time.monotonic() > deadline:
                print(
                    f"lvsmon: pid {st.pid} still running after {self.stop_timeout:.0f} s",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.05)
        return 0

    def restart(self) -> int:
        rc = self.stop()
        return rc if rc else self.start()

    def try_restart(self) -> int:
        return self.restart() if pidfile.state(self.pid_path).running else 0

    def reload(self) -> int:
        st = pidfile.state(self.pid_path)
        if not st.running or st.pid is None:
            print(f"lvsmon is stopped for {self.config_arg}")
            return 1
        loaded = self._load()
        if isinstance(loaded, int):
            print(
                "lvsmon: configuration not reloaded; the daemon keeps the running one",
                file=sys.stderr,
            )
            return loaded
        if loaded.digest == EMPTY_DIGEST:
            # the daemon refuses an empty file too (an editor or `>` truncating it is far likelier
            # than an operator emptying the director; a file with only globals does that)
            print(
                f"lvsmon: {loaded.path} is empty; configuration not reloaded, the daemon keeps"
                " the running one",
                file=sys.stderr,
            )
            return 2
        if not st.pid:
            return self._pid_unknown()
        try:
            os.kill(st.pid, signal.SIGHUP)
        except OSError as exc:
            print(f"lvsmon: cannot signal pid {st.pid}: {exc.strerror}", file=sys.stderr)
            return 1
        return 0

    def start(self) -> int:
        if pidfile.state(self.pid_path).running:
            return 0
        loaded = self._load()
        if isinstance(loaded, int):
            return loaded
        config = loaded
        if self.debug or self.foreground or config.settings.supervised:
            try:
                return self._serve(config, lambda err: None)
            except pidfile.AlreadyRunning as exc:
                self._print_running(exc.pid)
                return 0
            except _LockError as exc:
                print(f"lvsmon: {exc}", file=sys.stderr)
                return 1
        return self._daemonize(config)

    def _pid_unknown(self) -> int:
        print(f"lvsmon: the daemon's pid is unknown (see {self.pid_path})", file=sys.stderr)
        return 1

    def _print_running(self, pid: int) -> None:
        print(f"lvsmon for {self.config_arg} is running with pid: {pid}", file=sys.stderr)

    # ---- the daemon process -----------------------------------------------------------------

    def _daemonize(self, config: Config) -> int:
        read_fd, write_fd = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the daemon
            os.close(read_fd)
            os.setsid()
            if os.fork():
                os._exit(0)
            os.chdir("/")
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            writer = os.fdopen(write_fd, "w")

            def ready(error: str | None) -> None:
                writer.write("ok\n" if error is None else f"error {error}\n")
                writer.close()

            code = 1
            try:
                code = self._serve(config, ready)
            except pidfile.AlreadyRunning as exc:
                # a concurrent start won the lock: this one is a start of a running daemon
                writer.write(f"running {exc.pid}\n")
                writer.close()
            except _LockError as exc:
                ready(str(exc))
            finally:
                os._exit(code)
        os.close(write_fd)
        os.waitpid(child, 0)
        with os.fdopen(read_fd) as reader:
            line = reader.readline().strip()
        if line == "ok":
            return 0
        if line.startswith("running "):
            self._print_running(int(line.split()[1]))
            return 0
        reason = (
            line.removeprefix("error ").strip() or "the daemon exited during start-up (see its log)"
        )
        print(f"lvsmon: {reason}", file=sys.stderr)
        return 1

    def _serve(self, config: Config, ready: Callable[[str | None], None]) -> int:
        from lvsmon.daemon import run_daemon
        from lvsmon.ipvs.factory import make_backend
        from lvsmon.logsetup import setup_logging

        # first of all, so that a daemon that loses a race with another start writes nothing:
        # no pid file, no log line, no kernel change
        try:
            lock_fd = pidfile.acquire(self.pid_path)  # AlreadyRunning goes to the caller
        except OSError as exc:
            raise _LockError(
                f"cannot lock {pidfile.lock_path(self.pid_path)}: {exc.strerror or exc}"
            ) from exc
        _raise_fd_limit()
        setup_logging(
            config.settings.logfile,
            self.cfgname,
            debug=self.debug,
            supervised=config.settings.supervised,
        )
        pid = os.getpid()
        pidfile.write_pid(self.pid_path, pid)
        try:

            async def main() -> int:
                opts = (
                    {"ipvsadm": self.ipvsadm} if self.backend == "ipvsadm" and self.ipvsadm else {}
                )
                backend = make_backend(self.backend, **opts)
                return await run_daemon(
                    config,
                    backend,
                    ready,
                    self.status_path,
                    control_socket=self.socket_path,
                    listen=self.listen,
                    drain_state=self.drain_state_path,
                )

            return asyncio.run(main())
        finally:
            # the pid file goes first, then the lock: nobody sees a stale file of a clean stop
            pidfile.remove_pid(self.pid_path, pid)
            os.close(lock_fd)


class _LockError(Exception):
    """The pid file's lock cannot be taken for another reason than a running daemon."""


def program_name() -> str:
    """The name we were invoked as: "ldirectord" when installed under that name (the stock OCF
    agent matches on it), else "lvsmon" (also for `python -m lvsmon`)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name.endswith(".py") or name.startswith("-"):
        return "lvsmon"
    return name


def print_status(path: str) -> None:
    """The daemon's own view, if it has written one: one line per real."""
    from lvsmon.engine.status import read_status, render_status

    status = read_status(path)
    if status is not None:
        print(render_status(status))


def _raise_fd_limit() -> None:
    """Thousands of concurrent checks need thousands of sockets; the soft limit is often 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
