"""bench/probe_lookup.py builds namespaces, a bridge and an IPVS table: outside the VM it must
refuse before it touches anything (its figures come from `tests/vm/run --exec`, bench/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_refuses_outside_the_vm() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LVSMON_IN_VM"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "probe_lookup.py"), "--extra", "10"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "run it in the VM" in proc.stderr
    assert proc.stdout == ""
