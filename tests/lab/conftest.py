"""One lab per module: network namespaces, real servers, a sorry server and a running lvsmon.

Building it costs tens of seconds under TCG, so the tests share it and run in file order, each
starting from "all reals healthy" (`Lab.heal` plus a wait for the healthy table) where it needs to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.daemonctl import Lvsmon, lab_config
from tests.lab.labrun import MEASURED, LabRun
from tests.lab.netlab import OTHER_VIP, VIP, Lab, add_other_service, run


def _drop_lab_services() -> None:
    # the two managed services, the foreign one and the one the resync test adds by hand
    for service in (f"{VIP}:80", f"{VIP}:8080", f"{OTHER_VIP}:80", f"{VIP}:443"):
        run("ipvsadm", "-D", "-t", service, check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    if not os.environ.get("LVSMON_IN_VM"):
        pytest.fail("the lab builds namespaces and changes IPVS: run it with tests/vm/run -k lab")
    workdir: Path = tmp_path_factory.mktemp("lab")
    net = Lab(workdir)
    daemon = Lvsmon(workdir, os.environ.get("LVSMON_LAB_BACKEND", "netlink"))
    try:
        net.up()
        _drop_lab_services()
        # a virtual service lvsmon does not manage: no test may see it change
        add_other_service()
        run_ = LabRun(net, daemon)
        daemon.write_config(lab_config(daemon.logfile, run_.weights))
        started = time.monotonic()
        daemon.start()
        MEASURED.append(("(context) lvsmon start returned after", time.monotonic() - started))
        yield run_
    finally:
        try:
            if daemon.running():
                daemon.stop()
        finally:
            net.down()
            _drop_lab_services()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEASURED:
        return
    backend = os.environ.get("LVSMON_LAB_BACKEND", "netlink")
    terminalreporter.section(
        f"lab, {backend} backend: measured times (event -> kernel table, polled /proc/net/ip_vs)"
    )
    for what, seconds in MEASURED:
        terminalreporter.write_line(f"{what}: {seconds:.2f} s")
