"""The process around the daemon: the pid file's lock, the fd limit, logging, the event loop, and
the double fork that detaches it (as Twisted's application runner owns them apart from the
application). The command line decides whether to run in the foreground or detached; this module
knows nothing of its commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lvsmon.daemon import pidfile

if TYPE_CHECKING:
    from lvsmon.config import Config
    from lvsmon.daemon.daemon import Ready


@dataclass(frozen=True)
class Launch:
    """Everything the daemon process needs besides its config."""

    cfgname: str
    pid_path: str
    status_path: str
    socket_path: str
    drain_state: str
    backend: str = "netlink"
    ipvsadm: str | None = None
    debug: bool = False
    listen: str | None = None


class LockError(Exception):
    """The pid file's lock cannot be taken for another reason than a running daemon."""


class FileError(LockError):
    """A run-time file the daemon needs (its log file, its pid file) cannot be opened or
    written: the start fails with this one line, before anything touched the kernel."""


def check_logfile(logfile: str, *, debug: bool, supervised: bool) -> None:
    """A log file lvsmon will write (logfile=/path, neither -d nor supervised) can be opened for
    appending now: else FileError, rather than a daemon whose every line is lost."""
    if debug or supervised or not logfile.startswith("/"):
        return
    try:
        fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise FileError(f"cannot open the log file {logfile}: {exc.strerror or exc}") from exc
    os.close(fd)


@dataclass(frozen=True)
class Started:
    """What a detached start came to: `running` is the pid of a daemon that was there first."""

    ok: bool
    running: int | None = None
    error: str | None = None


def serve(config: Config, launch: Launch, ready: Ready) -> int:
    """Run the daemon in this process until it stops; its exit code. Raises
    pidfile.AlreadyRunning (another daemon holds the lock) or LockError."""
    from lvsmon.daemon.daemon import run_daemon
    from lvsmon.daemon.logsetup import setup_logging
    from lvsmon.ipvs.factory import make_backend

    # first of all, so that a daemon that loses a race with another start writes nothing:
    # no pid file, no log line, no kernel change
    try:
        lock_fd = pidfile.acquire(launch.pid_path)  # AlreadyRunning goes to the caller
    except OSError as exc:
        raise LockError(
            f"cannot lock {pidfile.lock_path(launch.pid_path)}: {exc.strerror or exc}"
        ) from exc
    pid = os.getpid()
    try:
        # what can fail to open is opened before the daemon touches the kernel (the control
        # server's addresses are bound by its first part)
        settings = config.settings
        check_logfile(settings.logfile, debug=launch.debug, supervised=settings.supervised)
        raise_fd_limit()
        tune_gc()
        cap_malloc_arenas()
        setup_logging(
            settings.logfile, launch.cfgname, debug=launch.debug, supervised=settings.supervised
        )
        try:
            pidfile.write_pid(launch.pid_path, pid)
        except OSError as exc:
            raise FileError(
                f"cannot write the pid file {launch.pid_path}: {exc.strerror or exc}"
            ) from exc
    except BaseException:
        os.close(lock_fd)
        raise
    try:

        async def main() -> int:
            return await run_daemon(
                config,
                make_backend(launch.backend, ipvsadm=launch.ipvsadm),
                ready,
                launch.status_path,
                control_socket=launch.socket_path,
                listen=launch.listen,
                drain_state=launch.drain_state,
            )

        return asyncio.run(main())
    finally:
        # the pid file goes first, then the lock: nobody sees a stale file of a clean stop
        pidfile.remove_pid(launch.pid_path, pid)
        os.close(lock_fd)


def daemonize(config: Config, launch: Launch) -> Started:
    """Run the daemon detached (double fork, setsid, chdir /, stdio on /dev/null); return once
    it has programmed the table, failed, or found another daemon running."""
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the daemon
        os.close(read_fd)
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        writer = os.fdopen(write_fd, "w")

        def ready(error: str | None) -> None:
            writer.write("ok\n" if error is None else f"error {error}\n")
            writer.close()

        code = 1
        try:
            code = serve(config, launch, ready)
        except pidfile.AlreadyRunning as exc:
            # a concurrent start won the lock: this one is a start of a running daemon
            writer.write(f"running {exc.pid}\n")
            writer.close()
        except LockError as exc:
            ready(str(exc))
        finally:
            os._exit(code)
    os.close(write_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_fd) as reader:
        line = reader.readline().strip()
    if line == "ok":
        return Started(ok=True)
    if line.startswith("running "):
        return Started(ok=True, running=int(line.split()[1]))
    reason = (
        line.removeprefix("error ").strip() or "the daemon exited during start-up (see its log)"
    )
    return Started(ok=False, error=reason)


# the cyclic collector's first threshold: a collection when container objects outnumber the ones
# freed by this many since the last (CPython's default, 700, is reached within milliseconds)
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Every check allocates a few container objects (its probe, its dialogue, its result) that
    reference counting frees within milliseconds; none is in a cycle. At CPython's default
    threshold, the checks in flight at any moment still set off a young collection every few
    milliseconds, and every tenth of those walks the older generation too: at 10,000 HTTP checks
    a second that was 4.2 µs a check (gc.callbacks), a fifth of the daemon's Python time. A
    higher first threshold keeps collections for what is left over (a start-up, a reload: they
    collect and freeze their own garbage, lvsmon/daemon/daemon.py settle_memory)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


# glibc's mallopt parameters: how many malloc arenas the process may have; the size from which
# a block gets a mapping of its own (set, it no longer moves)
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value


def cap_malloc_arenas() -> None:
    """One malloc arena for the whole process, and a fixed mmap threshold (glibc).

    glibc gives each new thread an arena of its own, and memory freed in one stays there for
    its next allocations: the threads that parse a reloaded config (to_thread) each kept the
    peak of the parses they had run. The threads here hold the GIL while they allocate, so one
    arena costs no contention (MALLOC_ARENA_MAX in the environment is the same setting).

    glibc also raises its mmap threshold to the size of each large block freed (up to 32 MiB),
    after which blocks that large come from the heap: the status text joined each second, a
    zlib state (256 KiB) per packed status text, a config file read. Freed in the middle of the
    heap, between blocks that live on, they fragment it and its resident pages grow (the soak:
    some 0.25 MiB a minute, 4.6 MiB of it given back by one malloc_trim). A fixed threshold
    keeps every block of 128 KiB and more in a mapping of its own, returned when freed. Not
    glibc: nothing to do."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_ARENA_MAX, 1)
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def raise_fd_limit() -> None:
    """Thousands of concurrent checks need thousands of sockets; the soft limit is often 1024.
    Before the event loop starts: the checks' budget of descriptors (lvsmon/checks/fds.py) and
    the control server's share (lvsmon/api/guard.py) are taken from the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
