"""bench/versus_keepalived.py at its smallest (about 40 s): keepalived 2.2.7 (Debian, through the
fake IPVS of bench/fake_ipvs_nl.c) and lvsmon (memory backend), one after the other, on 100 http
reals and 300 TCP reals of the same nginx, 3 s windows. keepalived, nginx and nginx's stream
module are in tests/debian-packages.txt: when they are missing this fails, it does not skip.
The full run's figures are in bench/README.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
WORKS = {"http-small": "n100_http", "tcp": "n300_tcp"}  # --quick sizes
DAEMONS = ("keepalived", "lvsmon")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (keepalived, nginx)")
def test_versus_keepalived_tiny() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "versus_keepalived.py"), "--quick",
         "--only", ",".join(WORKS), "--window", "3", "--startup-timeout", "60",
         "--time-wait-max", "5"],
        capture_output=True, text=True, timeout=240, check=False,
        env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
    )  # fmt: skip
    print(proc.stdout)  # the table and the figures, for `pytest -s` and CI logs
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    fig = json.loads(lines[-1])
    assert fig["keepalived"].startswith("Keepalived v"), fig["keepalived"]
    for key, reals in ((k, int(k[1:].split("_")[0])) for k in WORKS.values()):
        for daemon in DAEMONS:
            # both daemons checked every real, about once a second (loose: CI shares its cores)
            assert fig[f"{key}_checks_per_s_{daemon}"] > 0.5 * reals, (key, daemon)
            assert fig[f"{key}_startup_s_{daemon}"] is not None, (key, daemon)
            assert fig[f"{key}_cpu_us_per_check_{daemon}"] is not None, (key, daemon)
            # the kernel's share and the process's, and the TIME_WAIT sockets it started with
            user, system = (fig[f"{key}_{x}_us_per_check_{daemon}"] for x in ("user", "sys"))
            assert user is not None and system is not None, (key, daemon)
            assert user + system == pytest.approx(fig[f"{key}_cpu_us_per_check_{daemon}"], abs=1)
            assert fig[f"{key}_time_wait_at_start_{daemon}"] >= 0, (key, daemon)
            assert fig[f"{key}_p99_period_s_{daemon}"] < 3, (key, daemon)
            assert fig[f"{key}_rss_mib_{daemon}"] > 1, (key, daemon)
            assert fig[f"{key}_false_downs_{daemon}"] == 0, (key, daemon)
        # keepalived runs a parent and its checker child; both are counted
        assert fig[f"{key}_processes_keepalived"] >= 2
        for figure in ("cpu_us_per_check", "p99_period_s", "rss_mib", "startup_s"):
            assert f"{key}_{figure}_ratio" in fig
    assert isinstance(fig["load_start"], float) and isinstance(fig["load_end"], float)


def test_hogs_busy_loop_until_stopped() -> None:
    """--hog N: N processes that burn a core each while started, gone after stop (and cleanup)."""
    sys.path.insert(0, str(BENCH))
    from procs import Cleanup, cpu_seconds
    from versus_keepalived import Hogs

    cleanup = Cleanup()
    hogs = Hogs(2, cleanup)
    hogs.start()
    try:
        pids = [proc.pid for proc in hogs.procs]
        assert len(pids) == 2
        deadline = time.monotonic() + 10
        while min(cpu_seconds(pid)[0] for pid in pids) < 0.2:  # both busy, not asleep
            assert time.monotonic() < deadline, [cpu_seconds(pid) for pid in pids]
            time.sleep(0.05)
    finally:
        cleanup.run()
    assert hogs.procs == []
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
