"""bench/procs.py lvsmon_command(src): a benchmark's `--rev` runs that worktree's lvsmon, even
from a checkout (its working directory) that holds another one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from procs import lvsmon_command  # noqa: E402


def package(root: Path, says: str) -> None:
    (root / "lvsmon").mkdir(parents=True)
    (root / "lvsmon" / "__init__.py").write_text("")
    (root / "lvsmon" / "__main__.py").write_text(f"print({says!r})\n")


def test_the_source_tree_wins_over_the_working_directory(tmp_path: Path) -> None:
    checkout, worktree = tmp_path / "checkout", tmp_path / "worktree"
    package(checkout, "checkout")
    package(worktree, "worktree")
    done = subprocess.run(
        lvsmon_command(str(worktree)),
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(worktree)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "worktree"
