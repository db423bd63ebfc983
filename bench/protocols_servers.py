"""The real servers of bench/protocols.py, one per service, and what a virtual needs to check them.

Each entry starts one server of its protocol listening on the wildcard address (harmless: the
benchmark runs in a private network namespace, see bench/protocols.py), so that a connection to
any of the 200 loopback reals 127.78.S.1..200 reaches it, and says which ldirectord.cf settings
check it (request, receive, login...). Where tests/servers/<server>.py has a fixture, it is used as
it is, with `addrs=("0.0.0.0",)`; http (nginx) and simpletcp (socat) are small enough to run here.
A fixture module that does not exist yet makes its service "not available", not an error.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import cast

from tests.servers.base import Server

WILDCARD = ("0.0.0.0",)


@dataclass
class Target:
    """A running server: its port, the virtual's settings that check it, its processes."""

    port: int
    settings: dict[str, str]  # ldirectord.cf lines of the virtual: name → value as written
    root_pid: int
    protocol: str = "tcp"
    notes: list[str] = field(default_factory=list)


Starter = Callable[[], AbstractContextManager[Target]]


@dataclass(frozen=True)
class Bench:
    service: str
    module: str  # lvsmon.checks.<module> must exist for lvsmon's side
    start: Starter
    fixture: str = ""  # tests.servers.<fixture> it needs, if any

    def missing(self) -> str:
        """Why this service cannot run now, or ''."""
        if importlib.util.find_spec(f"lvsmon.checks.{self.module}") is None:
            return f"lvsmon/checks/{self.module}.py does not exist yet"
        if self.fixture and importlib.util.find_spec(f"tests.servers.{self.fixture}") is None:
            return f"tests/servers/{self.fixture}.py does not exist yet"
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")
        time.sleep(0.05)


@contextlib.contextmanager
def popen(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        wait_tcp(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------- servers started here

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir};
    proxy_temp_path {dir};
    fastcgi_temp_path {dir};
    uwsgi_temp_path {dir};
    scgi_temp_path {dir};
    server {{
        listen {port} backlog=4096;
        location / {{ return 200 "still alive\\n"; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx() -> Iterator[Target]:
    """Debian's nginx, one worker (scale.py's server, without its per-request log)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lvsmon-protocols-nginx-") as d:
        os.chmod(d, 0o755)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(NGINX_CONF.format(dir=d, port=port))
        argv = [binary, "-p", d + "/", "-c", conf, "-e", os.path.join(d, "error.log")]
        with popen(argv, port) as proc:
            settings = {"request": '"test.html"', "receive": '"still alive"'}
            yield Target(port, settings, proc.pid, notes=["nginx, 1 worker"])


@contextlib.contextmanager
def socat_echo() -> Iterator[Target]:
    """socat echoing every connection (a forked child per connection, no exec)."""
    if importlib.util.find_spec("tests.servers.socat") is not None:
        with _fixture("socat", "running_socat") as server:
            yield Target(server.ports.get("echo", next(iter(server.ports.values()))),
                         _SIMPLETCP, server.pid, notes=["tests/servers/socat.py"])  # fmt: skip
        return
    binary = shutil.which("socat") or "/usr/bin/socat"
    port = free_port()
    argv = [binary, f"TCP-LISTEN:{port},fork,reuseaddr,backlog=1024", "PIPE"]
    with popen(argv, port) as proc:
        yield Target(port, _SIMPLETCP, proc.pid, notes=["socat TCP-LISTEN,fork PIPE"])


_SIMPLETCP = {"request": '"ping\\n"', "receive": '"ping"'}


# ---------------------------------------------------------------- tests/servers fixtures


@contextlib.contextmanager
def _fixture(module: str, function: str, **kwargs: object) -> Iterator[Server]:
    mod = importlib.import_module(f"tests.servers.{module}")
    with getattr(mod, function)(addrs=WILDCARD, **kwargs) as server:
        yield cast(Server, server)


SERVICES: list[Bench] = [
    Bench("http", "http", nginx),
    Bench("simpletcp", "simpletcp", socat_echo),
]
