"""checktype=external and external-perl: run the operator's program, exit status 0 means up.

Arguments are ldirectord's: virtual address (or the fwmark), virtual port, real address, real
port, IPv6 addresses in brackets. No shell, so `checkcommand` is one program path, as in
ldirectord (bug #15). The program runs in its own session, hence its own process group; when the
deadline (or any cancellation) ends the check, the whole group is SIGKILLed, grandchildren
included, and reaped before we return. Once the program itself exits, what is left of its group
is killed as well, so no check leaves processes behind. stdout and stderr are captured together
and the first line goes into the reason.

external-perl runs `perl <checkcommand> args` as a fresh process per check. ldirectord compiled the
file once into its own interpreter and kept it for the life of the daemon (bug #16, edits needed a
restart); here an edited script takes effect at the next check, a crash cannot take the daemon
down, and `exit(n)`/`die` map to the same exit statuses (die exits 255: down).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Final

from lvsmon.addr import bracketed
from lvsmon.checks.base import CheckFailed, CheckResult, CheckSpec
from lvsmon.checks.step import Step

PERL: Final = "perl"
_OUTPUT_LIMIT: Final = 64 * 1024
# After the program exits and its group is killed, output still buffered in the pipe is drained;
# only a descendant that left the group (setsid) could hold the pipe open longer than this.
_DRAIN_GRACE_S: Final = 0.5


def _bracket(address: str) -> str:
    return address if address.startswith("[") else bracketed(address)


def external_args(spec: CheckSpec) -> list[str]:
    """vip-or-fwmark, vport, rip, rport: what ldirectord passed to a check command."""
    return [_bracket(spec.vip), str(spec.vport), _bracket(spec.host), str(spec.rport)]


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _first_line(output: bytes) -> str:
    for line in output.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


async def run_command(argv: list[str], step: Step, what: str) -> CheckResult:
    step.name = what
    loop = asyncio.get_running_loop()
    # our own pipe rather than asyncio's: Process.wait() would also wait for a straggler that
    # keeps the pipe open, and an abandoned pipe transport warns when collected
    read_fd, write_fd = os.pipe()
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
    except OSError as exc:
        os.close(read_fd)
        raise CheckFailed(f"{what}: cannot execute {argv[0]}: {exc.strerror or exc}") from None
    output = bytearray()
    eof: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        try:
            chunk = os.read(read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            output.extend(chunk[: _OUTPUT_LIMIT - len(output)])
        else:
            loop.remove_reader(read_fd)
            if not eof.done():
                eof.set_result(None)

    os.set_blocking(read_fd, False)
    loop.add_reader(read_fd, on_readable)
    try:
        code = await proc.wait()
        _kill_group(proc.pid)
        # what the group wrote before dying is still in the pipe; a descendant that left the
        # group (setsid) could hold it open, so the drain is bounded
        await asyncio.wait({eof}, timeout=_DRAIN_GRACE_S)
    finally:
        if proc.returncode is None:
            _kill_group(proc.pid)
            # reaping after SIGKILL is prompt; shielded so a second cancellation can't skip it
            await asyncio.shield(proc.wait())
        loop.remove_reader(read_fd)
        os.close(read_fd)
    line = _first_line(bytes(output))
    suffix = f": {line}" if line else ""
    if code == 0:
        return CheckResult(True, f"{what}: exit 0{suffix}")
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return CheckResult(False, f"{what}: killed by {name}{suffix}")
    return CheckResult(False, f"{what}: exit {code}{suffix}")


async def check_external(spec: CheckSpec, step: Step) -> CheckResult:
    return await run_command([spec.checkcommand, *external_args(spec)], step, "external")


async def check_external_perl(spec: CheckSpec, step: Step) -> CheckResult:
    return await run_command([PERL, spec.checkcommand, *external_args(spec)], step, "external-perl")
