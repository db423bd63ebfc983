from __future__ import annotations

import subprocess
import sys

from lvsmon import __version__
from lvsmon.cli.dispatch import main


def test_version(capsys: object) -> None:
    assert main(["--version"]) == 0


def test_python_dash_m_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lvsmon", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_unknown_command_is_usage_error() -> None:
    assert main(["frobnicate"]) == 255
