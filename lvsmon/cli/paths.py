"""Where the command line finds things: the config (ldirectord's lookup), and the daemon's files,
all named after its pid file (default /run/lvsmon.<config name>.pid):

  /run/lvsmon.<name>.pid          pid file (its lock: <name>.pid.lock, lvsmon.daemon.pidfile)
  /run/lvsmon.<name>.sock         control socket (lvsmon.api)
  /run/lvsmon.<name>.status.json  status file, rewritten on change, touched every second
  /run/lvsmon.<name>.drain.json   drained reals, when the config has no maintenancedir
  /run/lvsmon.<name>.director-drained   `drain --director` (bgp), until `undrain --director`

<name> is ldirectord's CFGNAME: "ldirectord" for the default config, else the config's basename.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lvsmon.config import Config

CONFIG_DIRS = ("/etc/ha.d", "/etc/ha.d/conf")
DEFAULT_CONFIG = "ldirectord.cf"
RUN_DIR = "/run"


def find_config(name: str) -> str | None:
    """ldirectord's lookup order; a path with a slash is also tried as given."""
    if "/" not in name:
        for d in CONFIG_DIRS:
            candidate = os.path.join(d, name)
            if os.path.isfile(candidate):
                return candidate
    return name if os.path.isfile(name) else None


def config_name(config_arg: str | None) -> str:
    """ldirectord's CFGNAME: "ldirectord" for the default file, else the file's basename."""
    return "ldirectord" if config_arg is None else os.path.basename(config_arg)


def load_or_report(config_arg: str) -> Config | int:
    """The config the commands run with, found and loaded; else what went wrong on stderr and
    the exit code: 1 not found, 2 invalid (each diagnostic as FILE:LINE: message). The path is
    absolute, so that a daemon that chdirs to / reads the same file on reload."""
    from lvsmon.config import ConfigError, load_config

    path = find_config(config_arg)
    if path is None:
        print(f"lvsmon: Config file {config_arg} not found", file=sys.stderr)
        return 1
    try:
        # abspath, not realpath: a config that is a symlink is followed afresh each time
        return load_config(os.path.abspath(path))
    except ConfigError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        return 2


@dataclass(frozen=True)
class DaemonFiles:
    """The daemon's run-time files, all beside its pid file."""

    pid_path: str

    @classmethod
    def of(cls, cfgname: str, pid_file: str | None = None) -> DaemonFiles:
        # absolute: the daemon chdirs to /, where a relative --pid-file would name another file
        return cls(os.path.abspath(pid_file) if pid_file else f"{RUN_DIR}/lvsmon.{cfgname}.pid")

    @property
    def _base(self) -> str:
        return self.pid_path.removesuffix(".pid")

    @property
    def socket_path(self) -> str:
        return f"{self._base}.sock"

    @property
    def status_path(self) -> str:
        return f"{self._base}.status.json"

    @property
    def drain_state_path(self) -> str:
        return f"{self._base}.drain.json"
