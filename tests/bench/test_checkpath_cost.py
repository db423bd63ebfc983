"""bench/checkpath_cost.py's summary (its figures come from `tests/vm/run --exec`,
bench/README.md): a window that fell behind the checks due ran on a starved VM and is left
out of the ratio, and each kept-up pair has its own; outside the VM the bench refuses before
it touches anything."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench" / "checkpath_cost.py"


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("checkpath_cost", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # its dataclasses look their module up by name (string annotations)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def window(path: str, us: float, per_s: float = 200.0) -> dict[str, object]:
    return {"checkpath": path, "us_per_check": us, "checks_per_s": per_s}


def test_a_window_behind_is_left_out() -> None:
    windows = [
        window("real", 2000.0), window("vip", 2625.2, 205.3),
        window("real", 1990.0, 199.8), window("vip", 6488.4, 149.0),
    ]  # fmt: skip
    got = bench().summary(windows, 200.0)
    assert got == {"vip_over_real": 1.316, "pair_ratios": [1.313], "windows_behind": 1}


def test_every_pair_and_the_means() -> None:
    windows = [window("real", 100.0), window("vip", 110.0)] * 2 + [
        window("real", 200.0),
        window("vip", 240.0),
    ]
    got = bench().summary(windows, 200.0)
    assert got == {"vip_over_real": 1.15, "pair_ratios": [1.1, 1.1, 1.2], "windows_behind": 0}


def test_no_ratio_without_a_window_of_each_path() -> None:
    got = bench().summary([window("real", 100.0), window("vip", 110.0, 10.0)], 200.0)
    assert got["vip_over_real"] is None and got["pair_ratios"] == []


def test_refuses_outside_the_vm() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LVSMON_IN_VM"}
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--reals", "2"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "run it in the VM" in proc.stderr
    assert proc.stdout == ""
