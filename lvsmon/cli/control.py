"""The ldirectord commands: start, stop, restart, try-restart, reload, force-reload, status.

Exit codes are ldirectord's (status: 0 running, 1 stale pid file, 3 stopped; a config error 2;
config file not found 1; reload of a stopped daemon 1). Unlike ldirectord, `start` returns only
when the table is programmed (the daemon reports readiness through a pipe), `stop` only when the
daemon has cleaned up and exited, and `stop`/`status` never parse the config.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsmon.cli.paths import DaemonFiles, load_or_report
from lvsmon.config import Config, probehost
from lvsmon.daemon import pidfile
from lvsmon.daemon.runner import Launch, LockError, daemonize, serve
from lvsmon.text import LIMIT, clean

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
    files: DaemonFiles = field(init=False)

    def __post_init__(self) -> None:
        self.files = DaemonFiles.of(self.cfgname, self.pid_file)

    @property
    def pid_path(self) -> str:
        return self.files.pid_path

    @property
    def socket_path(self) -> str:
        return self.files.socket_path

    @property
    def status_path(self) -> str:
        return self.files.status_path

    @property
    def drain_state_path(self) -> str:
        return self.files.drain_state_path

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

    def _load(self) -> Config | int:
        return load_or_report(self.config_arg)

    def _launch(self) -> Launch:
        return Launch(
            cfgname=self.cfgname,
            pid_path=self.pid_path,
            status_path=self.status_path,
            socket_path=self.socket_path,
            drain_state=self.drain_state_path,
            backend=self.backend,
            ipvsadm=self.ipvsadm,
            debug=self.debug,
            listen=self.listen,
        )

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
        if self.backend != "memory" and (unready := probehost.diagnostics(config)):
            # checks through the VIP whose answers the kernel would drop: every one down
            print("\n".join(unready), file=sys.stderr)
            return 2
        if self.debug or self.foreground or config.settings.supervised:
            try:
                return serve(config, self._launch(), lambda err: None)
            except pidfile.AlreadyRunning as exc:
                self._print_running(exc.pid)
                return 0
            except LockError as exc:
                print(f"lvsmon: {exc}", file=sys.stderr)
                return 1
        started = daemonize(config, self._launch())
        if started.running is not None:
            self._print_running(started.running)
        if not started.ok:
            print(f"lvsmon: {started.error}", file=sys.stderr)
            return 1
        return 0

    def _pid_unknown(self) -> int:
        print(f"lvsmon: the daemon's pid is unknown (see {self.pid_path})", file=sys.stderr)
        return 1

    def _print_running(self, pid: int) -> None:
        print(f"lvsmon for {self.config_arg} is running with pid: {pid}", file=sys.stderr)


def program_name() -> str:
    """The name we were invoked as: "ldirectord" when installed under that name (the stock OCF
    agent matches on it), else "lvsmon" (also for `python -m lvsmon`)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not name or name.endswith(".py") or name.startswith("-"):
        return "lvsmon"
    return name


def print_status(path: str) -> None:
    """The daemon's own view, if it has written one: one line per real. Anything else at the
    status file's name (a FIFO, a hand edit of the wrong shape) is one line on stderr."""
    from lvsmon.engine.status import MalformedStatus, load_status, render_status

    try:
        status = load_status(path)
        if status is not None:
            print(render_status(status))
    except MalformedStatus as exc:
        print(malformed(path, exc), file=sys.stderr)


def malformed(path: str, exc: Exception) -> str:
    """The one line for a status file that is not one (lvsmon.engine.status.MalformedStatus)."""
    return clean(f"lvsmon: status file {path} is malformed: {exc}", 2 * LIMIT)
