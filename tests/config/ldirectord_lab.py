"""Run the real ldirectord (Debian's /usr/sbin/ldirectord) on a configuration file and record the
ipvsadm commands its start-up issues, next to `lvsmon check-config --json` on the same file in the
same environment.

Both run inside a private mount and network namespace (`unshare -mn`, as root): no network
interface is up, so nothing a file names can be contacted. In that namespace only, a tmpfs lies
on /var/log (with the ldirectord/ and ultramonkey/ log directories some files name), /run (pid
files) and /var/spool, a hosts file that resolves `mail` and `g1` is bind-mounted on /etc/hosts,
and recording fakes on ipvsadm and sendmail (one file asks for e-mail alerts). The machine itself
is never changed.

ldirectord runs in debug mode (`-d`: foreground, log on stderr, no pid file, no syslog). Its
start-up creates every virtual (`-A`), adds the fallbacks and then, with checks not yet run, adds
each real with its configured weight and takes it down again (the "flap" of
../shared/reference/ldirectord-observed.md); a SIGTERM sent once it has called ipvsadm is
acted on at the first check of the initial pass, which stops it (cleanstop) before any check.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LDIRECTORD = Path("/usr/sbin/ldirectord")
IPVSADM = Path("/sbin/ipvsadm")  # ldirectord's first choice (it tries /usr/sbin/ipvsadm next)
SENDMAIL = Path("/usr/sbin/sendmail")  # Mail::Mailer's first choice

HOSTS = "127.0.0.1 localhost\n::1 localhost\n192.0.2.25 mail\n192.0.2.71 g1\n"

# A listing is an empty table (its three header lines, which ldirectord skips); every call is
# recorded, listings included, so that the first line says ldirectord's handlers are in place.
FAKE_IPVSADM = """#!/bin/sh
printf '%s\\n' "$*" >> "$LAB_DIR/ipvsadm.log"
case "$1" in
-L|-l|--list|-S|--save)
    echo "IP Virtual Server version 1.2.1 (size=4096)"
    echo "Prot LocalAddress:Port Scheduler Flags"
    echo "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
esac
exit 0
"""

FAKE_SENDMAIL = """#!/bin/sh
printf '%s\\n' "$*" >> "$LAB_DIR/sendmail.log"
cat > /dev/null
exit 0
"""

SETUP = """set -eu
mount -t tmpfs -o mode=0755 lab /var/log
mkdir /var/log/ldirectord /var/log/ultramonkey
mount -t tmpfs -o mode=0755 lab /run
mount -t tmpfs -o mode=0755 lab /var/spool
mount --bind "$LAB_DIR/hosts" /etc/hosts
mount --bind "$LAB_DIR/fake-ipvsadm" {ipvsadm}
mount --bind "$LAB_DIR/fake-sendmail" {sendmail}
cd "$LAB_DIR"
set +e
{python} -m lvsmon check-config --json "$LAB_CF" > lvsmon.json 2> lvsmon.err
echo $? > lvsmon.rc
exec {ldirectord} -d "$LAB_CF" start
"""

TIMEOUT = 120.0  # a normal run takes 1-20 s; this only bounds a hung one


@dataclass(frozen=True)
class LabRun:
    """What ldirectord and lvsmon made of one file."""

    ldirectord_rc: int | None  # None: it had to be killed
    ldirectord_stderr: str
    ipvsadm: tuple[str, ...]  # every call, in order, arguments joined by blanks
    lvsmon_rc: int
    lvsmon_json: str
    lvsmon_stderr: str
    seconds: float

    def commands(self) -> list[list[str]]:
        """The calls that change the table (listings left out), split into arguments."""
        calls = [shlex.split(c) for c in self.ipvsadm]
        return [c for c in calls if c and c[0] not in LISTINGS]

    def additions(self) -> list[Addition]:
        """Every `-a` in order, with what ldirectord logged it as (real or fallback server)."""
        logged = _logged_commands(self.ldirectord_stderr)
        commands = self.commands()
        assert [c for c, _ in logged] == commands, "the record and ldirectord's log disagree"
        out = []
        for argv, tag in logged:
            if argv[0] == "-a":
                assert tag is not None, f"no log line names the server of {argv}"
                out.append(Addition(argv, tag))
        return out


@dataclass(frozen=True)
class Addition:
    argv: list[str]
    tag: str  # "real" or "fallback"


LISTINGS = ("-L", "-l", "--list", "-S", "--save")
_RUNNING = re.compile(r"^Running system\((\S+) (.*)\)$")
_ADDED = re.compile(r"^Added (real|fallback) server: (\S+) \(")


def _logged_commands(stderr: str) -> list[tuple[list[str], str | None]]:
    """The ipvsadm calls ldirectord logged (debug mode: "Running system(...)"), each `-a` with
    the kind of server named by the "Added ... server" line that follows it."""
    out: list[tuple[list[str], str | None]] = []
    pending: int | None = None
    for line in stderr.splitlines():
        if m := _RUNNING.match(line):
            argv = shlex.split(m.group(2))
            if argv and argv[0] not in LISTINGS:
                out.append((argv, None))
                pending = len(out) - 1 if argv[0] == "-a" else None
        elif pending is not None and (m := _ADDED.match(line)):
            argv = out[pending][0]
            if m.group(2) == argv[argv.index("-r") + 1]:
                out[pending] = (argv, m.group(1))
                pending = None
    return out


def _script() -> str:
    return SETUP.format(
        ipvsadm=shlex.quote(str(IPVSADM.resolve())),
        sendmail=shlex.quote(str(SENDMAIL.resolve())),
        python=shlex.quote(sys.executable),
        ldirectord=shlex.quote(str(LDIRECTORD)),
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def run(cf: Path, work: Path) -> LabRun:
    """Run both on `cf` (read in place) with `work` (an empty directory) for the fakes and the
    records. ldirectord is stopped by SIGTERM once it has started, killed after TIMEOUT."""
    work.mkdir(parents=True, exist_ok=True)
    _write(work / "hosts", HOSTS)
    # not named ipvsadm: in debug mode ldirectord would run ./ipvsadm instead of the bind mount
    _write(work / "fake-ipvsadm", FAKE_IPVSADM, 0o755)
    _write(work / "fake-sendmail", FAKE_SENDMAIL, 0o755)
    record = work / "ipvsadm.log"
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LAB_DIR": str(work),
        "LAB_CF": str(cf.resolve()),
        "PERLIO": "perlio",  # else ldirectord re-executes itself to set it
        "PYTHONPATH": str(Path(__file__).parents[2]),
        "LC_ALL": "C.UTF-8",
    }
    started = time.monotonic()
    with open(work / "ldirectord.err", "wb") as err:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--", "/bin/sh", "-c", _script()],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env=env,
            cwd=work,
            start_new_session=True,
        )
        rc = _wait(proc, record, started)
    return LabRun(
        ldirectord_rc=rc,
        ldirectord_stderr=(work / "ldirectord.err").read_text("utf-8", "replace"),
        ipvsadm=tuple(record.read_text("utf-8").splitlines()) if record.exists() else (),
        lvsmon_rc=int((work / "lvsmon.rc").read_text().strip() or -1),
        lvsmon_json=(work / "lvsmon.json").read_text("utf-8"),
        lvsmon_stderr=(work / "lvsmon.err").read_text("utf-8"),
        seconds=time.monotonic() - started,
    )


def _wait(proc: subprocess.Popen[bytes], record: Path, started: float) -> int | None:
    termed = False
    try:
        while time.monotonic() - started < TIMEOUT:
            rc = proc.poll()
            if rc is not None:
                return rc
            if not termed and record.exists() and record.stat().st_size > 0:
                # after exec the process is ldirectord itself
                os.kill(proc.pid, signal.SIGTERM)
                termed = True
            time.sleep(0.02)
        return None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
