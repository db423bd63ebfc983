"""`lvsmon demo`, run as a newcomer runs it: real servers on loopback, the memory backend, and a
quiesce, a restore, the fallback in and out, each seen in what it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_starts_with_the_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    assert first_block.group(1).strip().endswith("lvsmon demo")


def test_demo_shows_quiesce_restore_and_fallback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lvsmon", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # each event, then what lvsmon did about it, in this order
    expected = [
        r"first checks passed",
        r">>> web2 stops answering",
        r"log: Quiescent real server: 127\.0\.0\.1:\d+ \(127\.0\.0\.100:80\) \(Weight set to 0\)",
        r"web2\s+127\.0\.0\.1:\d+\s+DOWN\s+weight 0",
        r">>> web2 is back",
        r"log: Restored real server: 127\.0\.0\.1:\d+ \(127\.0\.0\.100:80\) \(Weight set to 2\)",
        r">>> every web server stops",
        r"log: Added fallback server: 127\.0\.0\.1:\d+",
        r">>> web1 is back",
        r"log: Deleted fallback server",
        r"stopped: cleanstop removed the virtual service",
    ]
    at = 0
    for pattern in expected:
        found = re.compile(pattern).search(out, at)
        assert found is not None, f"{pattern!r} not found after offset {at}:\n{out}"
        at = found.end()
