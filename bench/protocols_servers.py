"""The real servers of bench/protocols.py, one per service, and what a virtual needs to check them.

Each entry starts one server of its protocol listening on the wildcard address (harmless: the
benchmark runs in a private network namespace, see bench/protocols.py), so that a connection to
any of the 200 loopback reals 127.78.S.1..200 reaches it, and says which ldirectord.cf settings
check it (request, receive, login...). Where realservers/<server>.py has a fixture, it is used as
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
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from procs import free_port

# realservers/ (the check tests' real servers, run as they are) sits at the repository's root;
# bench/ itself is sys.path[0] for a script.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

from realservers.base import Server, self_signed  # noqa: E402

WILDCARD = ("0.0.0.0",)


@dataclass
class Target:
    """A running server: its port, the virtual's settings that check it, its processes."""

    port: int
    settings: dict[str, str]  # ldirectord.cf lines of the virtual: name → value as written
    root_pid: int
    protocol: str = "tcp"
    notes: list[str] = field(default_factory=list)


Starter = Callable[[Sequence[str]], AbstractContextManager[Target]]


@dataclass(frozen=True)
class Bench:
    service: str
    module: str  # lvsmon.checks.<module> must exist for lvsmon's side
    start: Starter
    fixture: str = ""  # realservers.<fixture> it needs, if any
    per_address: bool = False  # the server listens on each real's address, not the wildcard
    tls: bool = False  # ldirectord gets bench/protocols_noverify.pm (see there)

    def missing(self) -> str:
        """Why this service cannot run now, or ''."""
        if importlib.util.find_spec(f"lvsmon.checks.{self.module}") is None:
            return f"lvsmon/checks/{self.module}.py does not exist yet"
        if self.fixture and importlib.util.find_spec(f"realservers.{self.fixture}") is None:
            return f"realservers/{self.fixture}.py does not exist yet"
        return ""


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
        listen {port} {ssl} backlog=4096;
        {certificate}
        location / {{ return 200 "still alive\\n"; }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(addrs: Sequence[str], tls: bool = False) -> Iterator[Target]:
    """Debian's nginx, one worker (scale.py's server, without its per-request log)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lvsmon-protocols-nginx-") as d:
        os.chmod(d, 0o755)
        ssl, certificate = "", ""
        if tls:
            cert, key = self_signed(Path(d), "www.lvsmon.test")
            ssl = "ssl"
            certificate = f"ssl_certificate {cert}; ssl_certificate_key {key};"
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(NGINX_CONF.format(dir=d, port=port, ssl=ssl, certificate=certificate))
        argv = [binary, "-p", d + "/", "-c", conf, "-e", os.path.join(d, "error.log")]
        with popen(argv, port) as proc:
            settings = quoted(request="test.html", receive="still alive")
            note = "nginx, 1 worker" + (", TLS (RSA 2048)" if tls else "")
            yield Target(port, settings, proc.pid, notes=[note])


def nginx_tls(addrs: Sequence[str]) -> AbstractContextManager[Target]:
    return nginx(addrs, tls=True)


# ---------------------------------------------------------------- realservers fixtures


def quoted(**settings: str) -> dict[str, str]:
    return {k: f'"{v}"' for k, v in settings.items()}


Settings = Callable[[ModuleType], dict[str, str]]


def fixture(
    module: str, port_name: str, settings: Settings | None = None, protocol: str = "tcp",
    standard_ports: Sequence[int] = (), **kwargs: object,
) -> Starter:  # fmt: skip
    """A starter from realservers/<module>.py's `running_*` context manager. `standard_ports`:
    what the fixture's `free_ports` call returns instead (the namespace is ours: any port is
    free), for a service ldirectord can only check on its standard port."""

    @contextlib.contextmanager
    def start(addrs: Sequence[str]) -> Iterator[Target]:
        mod = importlib.import_module(f"realservers.{module}")
        running = next(getattr(mod, n) for n in dir(mod) if n.startswith("running_"))
        with contextlib.ExitStack() as stack:
            if standard_ports:
                chosen = list(standard_ports)
                stack.enter_context(patch_attr(mod, "free_ports", lambda n: chosen[:n]))
            server = stack.enter_context(running(addrs=addrs, **kwargs))
            assert isinstance(server, Server)
            values = settings(mod) if settings else {}
            note = f"realservers/{module}.py"
            yield Target(server.ports[port_name], values, server.pid, protocol, notes=[note])

    return start


@contextlib.contextmanager
def patch_attr(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _dovecot(mod: ModuleType) -> dict[str, str]:
    return quoted(login="lvsmon", passwd=mod.USERS["lvsmon"])


def _ftp(mod: ModuleType) -> dict[str, str]:
    # the user's file, read over a passive data connection (not counted: another port)
    return quoted(login=mod.USER, passwd=mod.PASSWORD, request="probe.txt", receive="user ftp ok")


def _sql(mod: ModuleType) -> dict[str, str]:
    return quoted(login=mod.USER, passwd=mod.PASSWORD, database=mod.DATABASE, request=mod.QUERY)


def _ldap(mod: ModuleType) -> dict[str, str]:
    return quoted(login=mod.USER_DN, passwd=mod.PASSWORD, request=mod.SUFFIX)


def _dns(mod: ModuleType) -> dict[str, str]:
    name = f"www.{mod.ZONE}"
    return quoted(request=name, receive=mod.HOST_RECORDS[name][0])


def _radius(mod: ModuleType) -> dict[str, str]:
    return quoted(login=mod.USER, passwd=mod.PASSWORD, secret=mod.SECRET)


def _sip(mod: ModuleType) -> dict[str, str]:
    # any OPTIONS but a few test URIs gets "200 OK" from the fixture's route; ldirectord wants
    # exactly that status line ("200 Alive" is down for it, up for lvsmon)
    return quoted(login="lvsmon@lvsmon.test")


def _echo(mod: ModuleType) -> dict[str, str]:
    return quoted(request="ping\\n", receive="ping")


# Net::IMAP::Simple ignores its port option for an IPv4 literal and connects to 143 (993 with
# SSL): ldirectord's imap and imaps checks only ever reach the standard port. Dovecot listens on
# the standard ports here, for all four of its services alike.
DOVECOT_PORTS = (110, 995, 143, 993)  # in realservers/dovecot.PORT_NAMES' order


def dovecot(port_name: str) -> Starter:
    return fixture("dovecot", port_name, _dovecot, standard_ports=DOVECOT_PORTS)


SERVICES: list[Bench] = [
    Bench("http", "http", nginx),
    Bench("https", "http", nginx_tls, tls=True),
    Bench("smtp", "smtp", fixture("postfix", "smtp"), "postfix"),
    Bench("submission", "smtp", fixture("postfix", "submission"), "postfix"),
    Bench("pop", "pop", dovecot("pop3"), "dovecot"),
    Bench("pops", "pop", dovecot("pop3s"), "dovecot", tls=True),
    Bench("imap", "imap", dovecot("imap"), "dovecot"),
    Bench("imaps", "imap", dovecot("imaps"), "dovecot", tls=True),
    Bench("nntp", "nntp", fixture("inn2", "nntp"), "inn2"),
    Bench("ldap", "ldap", fixture("slapd", "ldap", _ldap), "slapd"),
    Bench("ldaps", "ldap", fixture("slapd", "ldaps", _ldap), "slapd", tls=True),
    Bench("dns", "dns", fixture("dnsmasq", "dns", _dns, "udp"), "dnsmasq", per_address=True),
    Bench("radius", "radius", fixture("freeradius", "radius", _radius, "udp"), "freeradius"),
    Bench("mysql", "mysql", fixture("mariadb", "mysql", _sql, client_hosts=("127.%",)), "mariadb"),
    Bench(
        "pgsql",
        "pgsql",
        fixture("postgresql", "pgsql", _sql, client_net="127.0.0.0/8"),
        "postgresql",
    ),
    Bench("sip", "sip", fixture("kamailio", "sip", _sip, "udp"), "kamailio", per_address=True),
    Bench("simpletcp", "simpletcp", fixture("socat", "echo", _echo, udp=False), "socat"),
    Bench("ftp", "ftp", fixture("proftpd", "ftp", _ftp), "proftpd"),
]
