"""PostgreSQL 15 for the pgsql check: a throwaway cluster, role lvsmon, database lvsmon with table
health holding one row.

The role lvsmon (password "secret", scram-sha-256) owns database lvsmon; every TCP client must
log in with a password (initdb --auth-host; the generated pg_hba.conf covers 127.0.0.1/32 and
::1/128: `client_net` adds a line for a benchmark that connects from elsewhere). With `tls` the
server also speaks TLS (a self-signed certificate), like Debian's default cluster; the client's
sslmode then decides. postgres runs in the foreground as user postgres and stops on SIGINT (fast
shutdown) in well under a second. Its port opens slightly before it accepts logins: the start
waits for pg_isready.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from realservers.base import Server, free_port, require, self_signed, server_dir

DATABASE = "lvsmon"
USER = "lvsmon"
PASSWORD = "secret"
QUERY = "SELECT * FROM health"
"""A request that returns one row."""

_SETUP = f"""\
CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}';
CREATE DATABASE {DATABASE} OWNER {USER};
"""
_SETUP_DB = f"""\
CREATE TABLE health (id int PRIMARY KEY, state text);
INSERT INTO health VALUES (1, 'ok');
GRANT SELECT ON health TO {USER};
"""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    if not found:
        require("postgres", "postgresql")  # fails the test naming the package
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parts[4])


def _loopback(addr: str) -> str:
    """Where to poll a listener bound to `addr` (a wildcard is polled on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)


def _as_postgres(cmd: Sequence[str], cwd: Path, stdin: str = "") -> None:
    """Run a set-up command as user postgres (initdb and postgres refuse to run as root)."""
    proc = subprocess.run(
        list(cmd),
        input=stdin.encode(),
        capture_output=True,
        cwd=cwd,
        user="postgres",
        group="postgres",
        extra_groups=[],
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n"
            f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}"
        )


def _wait_ready(
    bindir: Path, addr: str, port: int, proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Until the server accepts logins on addr:port (pg_isready), or fail with its log."""
    deadline = time.monotonic() + 60
    while True:
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", addr, "-p", str(port), "-t", "2"],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"postgres not ready on {addr}:{port}:\n{tail}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_postgresql(
    addrs: Sequence[str] = ("127.0.0.1", "::1"),
    tls: bool = True,
    client_net: str = "",
) -> Iterator[Server]:
    """postgres listening on every address in `addrs`; its port in `ports["pgsql"]`."""
    bindir = _bindir()
    with server_dir("postgresql") as d:
        data, rundir = d / "data", d / "run"
        for sub in (data, rundir):
            sub.mkdir()
            shutil.chown(sub, "postgres", "postgres")
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--no-sync",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            d,
        )
        if client_net:
            with (data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {client_net} scram-sha-256\n")
        # single-user mode: role, database and table without opening any port
        _as_postgres([str(bindir / "postgres"), "--single", "-D", str(data), "postgres"], d, _SETUP)
        _as_postgres(
            [str(bindir / "postgres"), "--single", "-D", str(data), DATABASE], d, _SETUP_DB
        )
        options = ["-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "logging_collector=off"]
        if tls:
            cert, key = self_signed(d, "localhost")
            # postgres refuses a key that others can read: its own copy, owned and 0600
            own_key = data / "server.key"
            shutil.copyfile(key, own_key)
            shutil.chown(own_key, "postgres", "postgres")
            own_key.chmod(0o600)
            options += [
                "-c",
                "ssl=on",
                "-c",
                f"ssl_cert_file={cert}",
                "-c",
                f"ssl_key_file={own_key}",
            ]
        port = free_port()
        log = d / "postgres.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-c",
                    f"listen_addresses={','.join(addrs)}",
                    "-p",
                    str(port),
                    "-c",
                    f"unix_socket_directories={rundir}",
                    *options,
                ],
                cwd=d,
                user="postgres",
                group="postgres",
                extra_groups=[],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        # SIGINT: fast shutdown (SIGTERM would wait for every client to leave)
        server = Server("postgresql", proc.pid, d, signal.SIGINT, popen=proc, ports={"pgsql": port})
        try:
            for addr in addrs:
                _wait_ready(bindir, _loopback(addr), port, proc, log)
            yield server
        finally:
            server.stop()
