"""The `backend` fixture of the contract suite: one fresh, empty IPVS table per test.

"memory" runs on the host; "ipvsadm" and "netlink" change the kernel's table, so they carry the
`kernel` mark and run only inside the throwaway VM (tests/vm/run), where the table is flushed
with `ipvsadm -C` before and after each test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator

import pytest

from lvsmon.ipvs.backend import IpvsBackend
from lvsmon.ipvs.factory import make_backend


def flush_kernel_table() -> None:
    if not os.environ.get("LVSMON_IN_VM") and not os.environ.get("LVSMON_KERNEL_TESTS_OK"):
        # Never wipe a real machine's IPVS table by accident.
        pytest.fail("kernel tests flush the IPVS table: run them with tests/vm/run")
    subprocess.run(["ipvsadm", "-C"], check=True, capture_output=True)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("ipvsadm", marks=pytest.mark.kernel),
        pytest.param("netlink", marks=pytest.mark.kernel),
    ]
)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[IpvsBackend]:
    name: str = request.param
    kernel = name != "memory"
    if kernel:
        flush_kernel_table()
    made = make_backend(name)
    try:
        yield made
    finally:
        await made.close()
        if kernel:
            flush_kernel_table()
