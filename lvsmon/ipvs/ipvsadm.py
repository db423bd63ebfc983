"""The backend that drives the `ipvsadm` command: one `ipvsadm -R` per apply, two reads per dump.

Each op line in the batch is followed by a marker line (a command on a fwmark service that
never exists), so that ipvsadm's stderr, which does not say which line failed, can still be
split into one outcome per op (see ipvsadm_format.restore_results). A failed op does not stop
the ones after it, exactly as with netlink and the memory backend; only a line ipvsadm cannot
parse stops the batch, and the ops after it are reported as not applied.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence

from lvsmon.ipvs.errors import BackendError, ErrorKind, OpError, OpResult
from lvsmon.ipvs.ipvsadm_format import (
    ParseError,
    op_error,
    parse_dump,
    restore_results,
    restore_script,
)
from lvsmon.ipvs.model import Table
from lvsmon.ipvs.ops import Op
from lvsmon.ipvs.rules import InvalidConf, check_op
from lvsmon.ipvs.sync import (
    SyncDaemon,
    SyncState,
    ipvsadm_start_args,
    ipvsadm_stop_args,
    parse_ipvsadm_daemons,
    sync_error,
)

_SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_ipvsadm() -> str | None:
    """ipvsadm from PATH, else from the sbin directories a non-root PATH often lacks."""
    found = shutil.which("ipvsadm")
    if found is None:
        found = shutil.which("ipvsadm", path=os.pathsep.join(_SBIN_DIRS))
    return found


def invalid_reason(op: Op) -> str | None:
    """Why ipvsadm would refuse the op's syntax (which would end the whole batch), if it would."""
    try:
        check_op(op)
    except InvalidConf as exc:
        return str(exc)
    return None


class IpvsadmBackend:
    name = "ipvsadm"

    def __init__(self, ipvsadm: str | None = None, *, timeout: float = 30.0) -> None:
        """`ipvsadm`: the program to run (default: found on PATH or in sbin). `timeout`: the
        most one ipvsadm run may take, in seconds."""
        self.ipvsadm = ipvsadm or find_ipvsadm()
        self.timeout = timeout

    async def _run(self, args: Sequence[str], stdin: str = "") -> tuple[int, str, str]:
        if self.ipvsadm is None:
            raise BackendError(OpError(ErrorKind.NO_IPVS, "ipvsadm not found (install ipvsadm)"))
        # C locale: error messages are classified by their English words.
        env = {**os.environ, "LC_ALL": "C"}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.ipvsadm,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise BackendError(
                OpError(ErrorKind.OTHER, f"cannot run {self.ipvsadm}: {exc}")
            ) from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin.encode())
        except TimeoutError:
            proc.kill()
            await proc.wait()
            message = f"{self.ipvsadm} {' '.join(args)} did not finish in {self.timeout} s"
            raise BackendError(OpError(ErrorKind.OTHER, message)) from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def _read(self, *args: str) -> str:
        rc, out, err = await self._run(args)
        if rc != 0:
            raise BackendError(op_error(err.strip() or f"ipvsadm {' '.join(args)}: exit {rc}"))
        return out

    async def dump(self) -> Table:
        save = await self._read("-S", "-n")
        thresholds = await self._read("-L", "-n", "--thresholds")
        try:
            return parse_dump(save, thresholds)
        except ParseError as exc:
            raise BackendError(
                OpError(ErrorKind.OTHER, f"unexpected ipvsadm output: {exc}")
            ) from exc

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]:
        results: list[OpResult | None] = []
        batch: list[Op] = []
        for op in ops:
            reason = invalid_reason(op)
            if reason is None:
                batch.append(op)
                results.append(None)
            else:
                results.append(OpResult(op, OpError(ErrorKind.INVALID, reason)))
        if batch:
            try:
                rc, _, err = await self._run(["-R"], restore_script(batch))
                done = iter(restore_results(batch, rc, err))
            except BackendError as exc:
                done = iter([OpResult(op, exc.error) for op in batch])
            results = [r if r is not None else next(done) for r in results]
        return [r for r in results if r is not None]

    async def sync_daemons(self) -> tuple[SyncDaemon, ...]:
        listing = await self._read("-L", "--daemon")
        try:
            return parse_ipvsadm_daemons(listing)
        except ValueError as exc:
            raise BackendError(
                OpError(ErrorKind.OTHER, f"unexpected ipvsadm --daemon output: {exc}")
            ) from exc

    async def start_sync_daemon(self, daemon: SyncDaemon) -> OpError | None:
        return await self._sync_command(ipvsadm_start_args(daemon), daemon.state, starting=True)

    async def stop_sync_daemon(self, state: SyncState) -> OpError | None:
        return await self._sync_command(ipvsadm_stop_args(state), state, starting=False)

    async def _sync_command(
        self, args: list[str], state: SyncState, *, starting: bool
    ) -> OpError | None:
        try:
            rc, _, err = await self._run(args)
        except BackendError as exc:
            return exc.error
        if rc == 0:
            return None
        return sync_error(state, starting, err.strip() or f"ipvsadm {' '.join(args)}: exit {rc}")

    async def close(self) -> None:
        return None
