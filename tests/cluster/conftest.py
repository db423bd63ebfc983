"""Real Pacemaker clusters (tests/cluster/lab.py): the packages they need, and the table of
measured step times at the end of the run."""

from __future__ import annotations

import pytest

from tests.cluster.lab import missing_packages
from tests.cluster.timeline import STEPS, table


@pytest.fixture(scope="session")
def pacemaker_installed() -> None:
    missing = missing_packages()
    if missing:
        pytest.skip(
            f"Pacemaker lab needs the Debian packages {', '.join(missing)} "
            "(tests/debian-packages.txt; scripts/install-test-deps installs them)"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not STEPS:
        return
    terminalreporter.section("Pacemaker cluster tests: measured step times")
    for line in table():
        terminalreporter.write_line(line)
