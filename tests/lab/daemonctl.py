"""The real lvsmon daemon as an operator runs it: its command line, its config file, its log."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lvsmon.config.errors import ConfigError
from lvsmon.config.load import parse_config
from lvsmon.engine.reconciler import DEFAULT_RESYNC_S
from tests.lab.netlab import VIP, LabError, real_ip

CHECKINTERVAL = 2
CHECKTIMEOUT = 2
# the bound the lab holds lvsmon to: from a server failing to the kernel table changing
DETECTION_BOUND = CHECKINTERVAL + CHECKTIMEOUT + 1.0


def resync_directive_accepted() -> bool:
    """Whether the config accepts the global `resyncinterval=` (what `lvsmon check-config` runs,
    in process: no fork under TCG)."""
    probe = (
        f"resyncinterval={int(DEFAULT_RESYNC_S)}\n"
        f"virtual={VIP}:80\n\treal={real_ip(1)}:80 masq 1\n\tchecktype=connect\n"
    )
    try:
        parse_config(probe, "resync-probe")
    except ConfigError:
        return False
    return True


# The daemon's full-resync period: the lab writes `resyncinterval=` once the config has it, else
# the code default applies. A change made behind lvsmon's back (`ipvsadm -C`, a hand edit) must be
# repaired within one period plus a slack for TCG on a shared host.
RESYNC_DIRECTIVE = resync_directive_accepted()
RESYNC_S = DEFAULT_RESYNC_S
RESYNC_BOUND = RESYNC_S + 5.0

# Log lines that mean lvsmon changed the kernel (ldirectord's wording).
KERNEL_CHANGE = re.compile(
    r"\] (Added|Deleted|Readd Quiescent|Quiescent|Restored|Changed|Purged) "
    r"(real|fallback|virtual) server"
)


def lab_config(logfile: Path, reals: dict[int, int], extra_real_80: bool = False) -> str:
    """Two virtual services on the VIP over the same reals: :80 quiescent=yes with a sorry
    server as fallback, :8080 quiescent=no. `reals` maps real number to its weight on :80."""

    def real_lines(weights: dict[int, int]) -> str:
        return "".join(f"\treal={real_ip(n)}:80 masq {w}\n" for n, w in weights.items())

    resync = f"resyncinterval={int(RESYNC_S)}\n" if RESYNC_DIRECTIVE else ""
    common = (
        "\tservice=http\n"
        '\trequest="test.html"\n'
        '\treceive="still alive"\n'
        "\tscheduler=wlc\n"
        "\tprotocol=tcp\n"
        "\tchecktype=negotiate\n"
    )
    return (
        f"checktimeout={CHECKTIMEOUT}\n"
        f"checkinterval={CHECKINTERVAL}\n"
        f"{resync}"
        "autoreload=yes\n"
        "quiescent=yes\n"
        f'logfile="{logfile}"\n'
        "\n"
        f"virtual={VIP}:80\n"
        f"{real_lines(reals)}"
        "\tfallback=127.0.0.1:80\n"
        f"{common}"
        "\n"
        f"virtual={VIP}:8080\n"
        f"{real_lines(dict.fromkeys((1, 2, 3), 1))}"
        "\tquiescent=no\n"
        f"{common}"
    )


@dataclass
class Lvsmon:
    workdir: Path
    backend: str

    @property
    def config(self) -> Path:
        return self.workdir / "lab.cf"

    @property
    def logfile(self) -> Path:
        return self.workdir / "lvsmon.log"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "lvsmon.pid"

    @property
    def statusfile(self) -> Path:
        return self.workdir / "lvsmon.status.json"

    def write_config(self, text: str) -> None:
        """Replace the file whole, as an editor or config management does."""
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config)

    def command(self, word: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LVSMON_RESOLVER": "files"}
        cmd = [
            sys.executable, "-m", "lvsmon", "--backend", self.backend,
            "--pid-file", str(self.pidfile), str(self.config), word,
        ]  # fmt: skip
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"lvsmon {word}: no return within {timeout} s") from exc

    def start(self) -> None:
        done = self.command("start")
        if done.returncode != 0:
            raise LabError(
                f"lvsmon start: exit {done.returncode}: {done.stderr.strip()}\n{self.log_tail()}"
            )

    def stop(self) -> None:
        done = self.command("stop")
        if done.returncode != 0:
            raise LabError(f"lvsmon stop: exit {done.returncode}: {done.stderr.strip()}")

    def pid(self) -> int | None:
        try:
            text = self.pidfile.read_text(encoding="ascii").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            return False
        # a killed daemon may stay a zombie for a while: the VM's init reaps it when it likes
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def kill9(self) -> None:
        """Kill the daemon without letting it clean up, and wait until it is gone."""
        pid = self.pid()
        if pid is None:
            raise LabError("kill -9: no pid file")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self.running():
            if time.monotonic() > deadline:
                raise LabError(f"pid {pid} survived SIGKILL")
            time.sleep(0.02)

    def log_size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> list[str]:
        try:
            with self.logfile.open(encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                return f.read().splitlines()
        except OSError:
            return []

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_since(0)[-lines:])

    def status(self) -> dict[str, object]:
        try:
            data = json.loads(self.statusfile.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def checks_done(self) -> int:
        stats = self.status().get("stats")
        if not isinstance(stats, dict):
            return 0
        done = stats.get("checks_done", 0)
        return done if isinstance(done, int) else 0
