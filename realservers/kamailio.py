"""Kamailio as the real SIP server of the sip check tests (Debian package kamailio).

A throwaway config that needs only the sl module: OPTIONS is answered 200 OK over UDP and TCP,
except for a few request-URI users that make the other answers a check must handle:

* `nobody@...` gets "404 Not here" (a server that is up but says no);
* `trying@...` gets "100 Trying" first, then "200 OK" (the final answer decides);
* `alive@...` gets "200 Alive" (any reason phrase will do).

Anything but OPTIONS is 404 too. It runs in the foreground (-DD), logging to stderr.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from realservers.base import Server, free_ports, require, run, server_dir, wait_tcp

_ROUTE = """\
request_route {
    if (uri =~ "^sip:nobody@") { sl_send_reply("404", "Not here"); exit; }
    if (uri =~ "^sip:trying@") { sl_send_reply("100", "Trying"); sl_send_reply("200", "OK"); exit; }
    if (uri =~ "^sip:alive@") { sl_send_reply("200", "Alive"); exit; }
    if (method == "OPTIONS") { sl_send_reply("200", "OK"); exit; }
    sl_send_reply("404", "Not here");
    exit;
}
"""


def module_dir() -> str:
    """Where the installed kamailio keeps its modules (the directory of sl.so)."""
    files = run(["dpkg", "-L", "kamailio"]).stdout.decode().split()
    sl = next((f for f in files if f.endswith("/modules/sl.so")), None)
    if sl is None:
        raise RuntimeError("kamailio's sl.so not found in dpkg -L kamailio")
    return str(Path(sl).parent) + "/"


def config(addrs: Sequence[str], port: int) -> str:
    listen = "".join(
        f"listen={proto}:{f'[{addr}]' if ':' in addr else addr}:{port}\n"
        for addr in addrs
        for proto in ("udp", "tcp")
    )
    return (
        "#!KAMAILIO\n"
        "debug=2\nlog_stderror=yes\nchildren=1\ntcp_children=1\nauto_aliases=no\n"
        f'{listen}mpath="{module_dir()}"\nloadmodule "sl.so"\n{_ROUTE}'
    )


@contextlib.contextmanager
def running_kamailio(
    addrs: Sequence[str] = ("127.0.0.1", "::1"), port: int | None = None
) -> Iterator[Server]:
    """Kamailio on `addrs`, UDP and TCP on one port (`ports["sip"]`)."""
    binary = require("kamailio", "kamailio")
    port = port or free_ports(1)[0]
    with server_dir("kamailio") as directory:
        cfg = directory / "kamailio.cfg"
        cfg.write_text(config(addrs, port))
        run([binary, "-c", "-f", str(cfg)])
        cmd = [binary, "-f", str(cfg), "-DD", "-E", "-P", str(directory / "kamailio.pid")]
        cmd += ["-Y", str(directory), "-w", str(directory)]
        with open(directory / "kamailio.log", "wb") as log:
            popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        server = Server("kamailio", popen.pid, directory, popen=popen, ports={"sip": port})
        try:
            for addr in addrs:
                wait_tcp(addr, port, proc=popen)
            yield server
        finally:
            server.stop()
