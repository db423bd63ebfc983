"""lvsmon's command line with the memory backend made to hang while a flag file exists, for the
watchdog tests (tests/daemon/test_sdnotify.py): the daemon process is the real one, only its
table writes can be held.

    python wedge_launcher.py FLAG MODE LVSMON-ARGS...

MODE "call": apply() awaits without end, like a backend call that never returns (the event loop
runs on: the checks go on, the reconciler's pass does not finish). MODE "loop": apply() blocks
the whole event loop, like a synchronous call stuck in the kernel.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence

import lvsmon.ipvs.memory as memory
from lvsmon.cli.dispatch import main
from lvsmon.ipvs.errors import OpResult
from lvsmon.ipvs.ops import Op

FLAG, MODE = sys.argv[1], sys.argv[2]


class HangingBackend(memory.MemoryBackend):
    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        while ops and os.path.exists(FLAG):  # noqa: ASYNC240 - a cheap stat, in a test
            if MODE == "loop":
                time.sleep(0.1)  # noqa: ASYNC251 - blocking the loop is the point
            else:
                await asyncio.sleep(0.1)
        return await super().apply(ops)


memory.MemoryBackend = HangingBackend  # type: ignore[misc]
sys.exit(main(sys.argv[3:]))
