"""MariaDB for the mysql check: a throwaway datadir, database lvsmon, table health with one row.

The user lvsmon (password "secret") may SELECT in lvsmon, from each host in `client_hosts`
(127.0.0.1 and ::1 by default; "%" lets a benchmark in a network namespace connect from
anywhere). mariadbd runs in the foreground as user mysql; an --init-file creates the database
at start, so the port answering means the user can log in. It stops on SIGTERM in about a second.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from realservers.base import Server, free_port, require, run, server_dir, wait_tcp

DATABASE = "lvsmon"
USER = "lvsmon"
PASSWORD = "secret"
QUERY = "SELECT * FROM health"
"""A request that returns one row."""


def _init_sql(client_hosts: Sequence[str]) -> str:
    lines = [
        f"CREATE DATABASE IF NOT EXISTS {DATABASE};",
        f"CREATE TABLE IF NOT EXISTS {DATABASE}.health (id INT PRIMARY KEY, state VARCHAR(16));",
        f"INSERT IGNORE INTO {DATABASE}.health VALUES (1, 'ok');",
    ]
    for host in client_hosts:
        lines.append(f"CREATE USER IF NOT EXISTS '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}';")
        lines.append(f"GRANT SELECT ON {DATABASE}.* TO '{USER}'@'{host}';")
    return "\n".join(lines) + "\n"


def _loopback(addr: str) -> str:
    """Where to poll a listener bound to `addr` (a wildcard is polled on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-2000:]
    return ""


@contextlib.contextmanager
def running_mariadb(
    addrs: Sequence[str] = ("127.0.0.1", "::1"),
    client_hosts: Sequence[str] = ("127.0.0.1", "::1"),
) -> Iterator[Server]:
    """mariadbd listening on every address in `addrs`; its port in `ports["mysql"]`."""
    install_db = require("mariadb-install-db", "mariadb-server")
    mariadbd = require("mariadbd", "mariadb-server")
    with server_dir("mariadb") as d:
        # mariadbd (as mysql) must create its socket, pid and log: they cannot live in d itself
        data, rundir = d / "data", d / "run"
        for sub in (data, rundir):
            sub.mkdir()
            shutil.chown(sub, "mysql", "mysql")
        init = d / "init.sql"
        init.write_text(_init_sql(client_hosts))
        init.chmod(0o644)
        run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
        )
        port = free_port()
        log = rundir / "error.log"
        proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={data}",
                "--user=mysql",
                f"--bind-address={','.join(addrs)}",
                f"--port={port}",
                f"--socket={rundir / 'mysqld.sock'}",
                f"--pid-file={rundir / 'mariadbd.pid'}",
                f"--log-error={log}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--innodb-log-file-size=8M",
                "--performance-schema=OFF",
                # checks cut short by a deadline count as connect errors of 127.0.0.1: never
                # let a test run block the host
                "--max-connect-errors=1000000",
                f"--init-file={init}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = Server("mariadb", proc.pid, d, popen=proc, ports={"mysql": port})
        try:
            try:
                for addr in addrs:
                    wait_tcp(_loopback(addr), port, timeout=60, proc=proc)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n{_log_tail(log)}") from None
            yield server
        finally:
            server.stop()
