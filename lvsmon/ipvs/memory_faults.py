"""A memory backend that misbehaves on purpose: for soak tests and demos, never for production.

Opt-in through the daemon's environment (`make_backend("memory")` reads it; a MemoryBackend built
directly never misbehaves):

    LVSMON_MEMORY_FAULTS=0.05   each op of an apply() fails with this probability (kind "other",
                                the table unchanged by it, the ops after it applied as usual),
                                and so does each dump() as a whole (BackendError)
    LVSMON_MEMORY_DRIFT=3       every 3 s the table is changed behind the reconciler's back: a
                                destination's weight edited or the destination deleted, a stray
                                destination added, now and then a whole service deleted
    LVSMON_MEMORY_SEED=7        the random choices' seed (default: unseeded)
    LVSMON_MEMORY_DUMP=PATH     the table as it really is, written to PATH (JSON, atomically)
                                every half second, with the counts of faults and drifts: the
                                only view of the "kernel" from outside the daemon's process

The reconciler must converge regardless: a failed op is retried from a fresh dump, drift is
repaired at the next resync (resyncinterval). bench/soak.py drives a daemon with all of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Sequence

from lvsmon.atomicfile import write_atomic
from lvsmon.ipvs.errors import BackendError, ErrorKind, OpError, OpResult
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Table
from lvsmon.ipvs.ops import Op

ENV_FAULTS = "LVSMON_MEMORY_FAULTS"
ENV_DRIFT = "LVSMON_MEMORY_DRIFT"
ENV_SEED = "LVSMON_MEMORY_SEED"
ENV_DUMP = "LVSMON_MEMORY_DUMP"
DUMP_EVERY_S = 0.5
LOG_KEEP = 1000  # the op log's last lines: over an hour's soak a full log is a leak


def wanted_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return any(env.get(k) for k in (ENV_FAULTS, ENV_DRIFT, ENV_DUMP))


class FaultyMemoryBackend(MemoryBackend):
    def __init__(
        self,
        table: Table | None = None,
        *,
        faults: float = 0.0,
        drift_s: float | None = None,
        seed: int | None = None,
        dump_path: str | None = None,
        available: bool = True,
    ) -> None:
        super().__init__(table, available=available)
        if not 0.0 <= faults < 1.0:
            raise ValueError(f"{ENV_FAULTS} must be in [0, 1), not {faults}")
        if drift_s is not None and drift_s <= 0:
            raise ValueError(f"{ENV_DRIFT} must be > 0 seconds, not {drift_s}")
        self.faults = faults
        self.drift_s = drift_s
        self.dump_path = dump_path
        self.rng = random.Random(seed)
        self.faults_injected = 0
        self.drifts_injected = 0
        self._drift_timer: asyncio.TimerHandle | None = None
        self._dump_timer: asyncio.TimerHandle | None = None
        self._armed = False
        self._dumped = False

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> FaultyMemoryBackend:
        drift = env.get(ENV_DRIFT)
        seed = env.get(ENV_SEED)
        return cls(
            faults=float(env.get(ENV_FAULTS) or 0),
            drift_s=float(drift) if drift else None,
            seed=int(seed) if seed else None,
            dump_path=env.get(ENV_DUMP) or None,
        )

    # Timers start with the first call: the constructor runs before the daemon's loop exists.
    def _arm(self) -> None:
        if self._armed:
            return
        self._armed = True
        loop = asyncio.get_running_loop()
        if self.drift_s is not None:
            self._drift_timer = loop.call_later(self.drift_s, self._drift_tick)
        if self.dump_path is not None:
            self._dump_timer = loop.call_later(0, self._dump_tick)

    def _fault(self) -> bool:
        # none before the first dump has succeeded: a daemon whose start-up dump fails refuses
        # to start (no IPVS), and the soak is about a daemon that runs
        if self.faults and self._dumped and self.rng.random() < self.faults:
            self.faults_injected += 1
            return True
        return False

    async def dump(self) -> Table:
        self._arm()
        if self._fault():
            raise BackendError(OpError(ErrorKind.OTHER, f"injected fault ({ENV_FAULTS})"))
        table = await super().dump()
        self._dumped = True
        return table

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        self._arm()
        failing = [self._fault() for _ in ops]
        if not any(failing):
            results = await super().apply(ops)
        else:
            # each op stands alone (as in the kernel): applying the others in order is what a
            # batch with these ops failing would have done
            pairs = list(zip(ops, failing, strict=True))
            done = iter(await super().apply([op for op, bad in pairs if not bad]))
            error = OpError(ErrorKind.OTHER, f"injected fault ({ENV_FAULTS})")
            results = [OpResult(op, error) if bad else next(done) for op, bad in pairs]
            if all(failing):  # the base class counted none
                self.applies += 1
        if len(self.log) > 2 * LOG_KEEP:
            del self.log[:-LOG_KEEP]
        return results

    # ---- drift ------------------------------------------------------------------------------

    def _drift_tick(self) -> None:
        self.drift()
        assert self.drift_s is not None
        self._drift_timer = asyncio.get_running_loop().call_later(self.drift_s, self._drift_tick)

    def drift(self) -> str | None:
        """One change behind the reconciler's back; what it did, None with an empty table."""
        keys = sorted(self.table)
        if not keys:
            return None
        key = self.rng.choice(keys)
        service = self.table[key]
        dests = sorted(service.dests)
        roll = self.rng.random()
        # through edit_dest: a published Service is never changed in place (lvsmon.ipvs.memory),
        # else the reconciler's view would change with it and the drift go unseen
        if roll < 0.05:
            del self.table[key]
            what = f"deleted service {key}"
        elif roll < 0.25 or not dests:
            stray = DestKey(f"127.254.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}", 9)
            self.edit_dest(key, stray, DestConf(Forward.MASQ, self.rng.randrange(1, 100)))
            what = f"added {stray} to {key}"
        elif roll < 0.6:
            dest = self.rng.choice(dests)
            self.edit_dest(key, dest, None)
            what = f"deleted {dest} from {key}"
        else:
            dest = self.rng.choice(dests)
            conf = service.dests[dest]
            weight = (conf.weight + self.rng.randrange(1, 100)) % 101
            self.edit_dest(key, dest, DestConf(conf.forward, weight, conf.upper, conf.lower))
            what = f"weight of {dest} in {key} {conf.weight} -> {weight}"
        self.drifts_injected += 1
        self.log.append(f"# drift: {what}")
        return what

    # ---- the table, from outside ------------------------------------------------------------

    def _dump_tick(self) -> None:
        self.write_dump()
        self._dump_timer = asyncio.get_running_loop().call_later(DUMP_EVERY_S, self._dump_tick)

    def write_dump(self) -> None:
        if self.dump_path is None:
            return
        doc = {
            "at": time.time(),
            "pid": os.getpid(),
            "faults_injected": self.faults_injected,
            "drifts_injected": self.drifts_injected,
            "table": {
                str(key): {str(d): c.weight for d, c in service.dests.items()}
                for key, service in self.table.items()
            },
        }
        # a test aid: a full disk must not take the daemon down
        with contextlib.suppress(OSError):
            write_atomic(self.dump_path, json.dumps(doc))

    async def close(self) -> None:
        for timer in (self._drift_timer, self._dump_timer):
            if timer is not None:
                timer.cancel()
        self._drift_timer = self._dump_timer = None
        self.write_dump()
        await super().close()
