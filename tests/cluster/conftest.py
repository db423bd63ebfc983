"""Real Pacemaker clusters (tests/cluster/lab.py): the packages they need, and the table of
measured step times at the end of the run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def cluster_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The cluster's state (configs, seed CIB, logs, agent copies), not under pytest's tmp_path:
    a pytest session started meanwhile on the same machine deletes the oldest basetemps, which
    pulled the agent from under a running cluster. /var/tmp on the host (read-only in the VM,
    where /tmp is private to the guest). Kept when the test failed, for its logs."""
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix="lvsmon-cluster-", dir=base))
    path.chmod(0o755)
    yield path
    failed = request.session.testsfailed
    if failed:
        print(f"cluster state and logs kept in {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not STEPS:
        return
    terminalreporter.section("Pacemaker cluster tests: measured step times")
    for line in table():
        terminalreporter.write_line(line)
