"""FreeRADIUS 3.2 for the radius check: a stand-alone config (nothing read from /etc/freeradius).

Users: lvsmon / secret (PAP, Access-Accept with Reply-Message "hello lvsmon") and `disabled`
(always Access-Reject with Reply-Message "account disabled"). `-f` keeps it in the foreground
and writes no pid file: the spawned pid is the server. Its log goes to a file, not a pipe: it
logs every authentication, and a pipe nobody reads would fill and block it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from realservers.base import Server, free_ports, require, server_dir

SECRET = "testing123"
USER = "lvsmon"
PASSWORD = "secret"
REPLY_MESSAGE = "hello lvsmon"
DISABLED_USER = "disabled"
DISABLED_MESSAGE = "account disabled"

_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {dir}
raddbdir = {dir}
run_dir = {dir}/run
libdir = /usr/lib/freeradius
dictdir = /usr/share/freeradius
pidfile = {dir}/run/radiusd.pid
max_request_time = 5
cleanup_delay = 1
max_requests = 1024
hostname_lookups = no
log {{
  destination = stdout
  auth = yes
}}
security {{
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = yes
}}
thread pool {{
  start_servers = 1
  max_servers = 4
  min_spare_servers = 1
  max_spare_servers = 2
}}
{clients}
modules {{
  pap {{
  }}
  files {{
    filename = {dir}/users
  }}
}}
server default {{
{listens}
  authorize {{
    files
    pap
  }}
  authenticate {{
    Auth-Type PAP {{
      pap
    }}
  }}
}}
"""

_USERS = f"""\
{USER}\tCleartext-Password := "{PASSWORD}"
\tReply-Message := "{REPLY_MESSAGE}"

{DISABLED_USER}\tAuth-Type := Reject
\tReply-Message := "{DISABLED_MESSAGE}"
"""

READY = b"Ready to process requests"


def _v6(addr: str) -> bool:
    return ipaddress.ip_network(addr, strict=False).version == 6


@contextlib.contextmanager
def running_freeradius(
    addrs: Sequence[str] = ("127.0.0.1", "::1"),
    clients: Sequence[str] = ("127.0.0.0/8", "::1"),
    secret: str = SECRET,
) -> Iterator[Server]:
    """freeradius answering auth requests on UDP `Server.ports["radius"]` at every address in
    `addrs`, for the client networks `clients` sharing `secret`."""
    binary = require("freeradius", "freeradius")
    with server_dir("freeradius") as d:
        (port,) = free_ports(1)
        (d / "run").mkdir()
        client_blocks = "\n".join(
            f"client c{i} {{\n  {'ipv6addr' if _v6(net) else 'ipaddr'} = {net}\n"
            f"  secret = {secret}\n}}"
            for i, net in enumerate(clients)
        )
        listens = "\n".join(
            f"  listen {{\n    type = auth\n    {'ipv6addr' if _v6(a) else 'ipaddr'} = {a}\n"
            f"    port = {port}\n  }}"
            for a in addrs
        )
        (d / "radiusd.conf").write_text(_CONF.format(dir=d, clients=client_blocks, listens=listens))
        (d / "users").write_text(_USERS)
        log = d / "radiusd.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [binary, "-f", "-l", "stdout", "-d", str(d)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = Server("freeradius", popen.pid, d, popen=popen)
        server.ports = {"radius": port}
        try:
            _wait_ready(log, popen)
            yield server
        finally:
            server.stop()


def _wait_ready(log: Path, popen: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while READY not in log.read_bytes():
        if popen.poll() is not None:
            raise RuntimeError(
                f"freeradius exited with {popen.returncode}:\n"
                + log.read_bytes().decode(errors="replace")
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"freeradius not ready within {timeout:g}s")
        time.sleep(0.05)
