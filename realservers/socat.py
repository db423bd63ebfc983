"""socat as an echo server, the real peer of the simpletcp check tests (Debian package socat).

`EXEC:cat` per connection: cat echoes what it reads and exits at EOF, so a client that does not
half-close its side after the request never gets the end of the answer (ldirectord's simpletcp
does half-close, and so must lvsmon's). Over UDP each datagram is echoed back to its sender.
One socat per address and transport, all children of one shell so they stop and freeze as one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator, Sequence

from realservers.base import Server, children_of, free_ports, require, server_dir, wait_tcp

UDP_IDLE_S = 5
"""How long a UDP echo child waits for another datagram from its peer before it exits."""


def _listen(addr: str, port: int, udp: bool) -> str:
    v6 = ":" in addr
    kind = ("UDP6" if v6 else "UDP4") if udp else ("TCP6" if v6 else "TCP4")
    bind = f"[{addr}]" if v6 else addr
    return f"{kind}-LISTEN:{port},bind={bind},reuseaddr,fork"


@contextlib.contextmanager
def running_socat_echo(
    addrs: Sequence[str] = ("127.0.0.1", "::1"), port: int | None = None, udp: bool = True
) -> Iterator[Server]:
    """Echo servers on `addrs`, TCP (and UDP unless udp=False) on one port (`ports["echo"]`)."""
    binary = require("socat", "socat")
    port = port or free_ports(1)[0]
    commands = [
        shlex.join([binary, "-T", str(UDP_IDLE_S), _listen(addr, port, is_udp), "EXEC:cat"])
        for addr in addrs
        for is_udp in ((False, True) if udp else (False,))
    ]
    # the shell passes TERM on to every socat, so Server.stop stops them all
    script = "".join(f'{cmd} & pids="$pids $!"\n' for cmd in commands)
    script += "trap 'kill $pids' TERM\nwait\nwait\n"
    with server_dir("socat") as directory:
        with open(directory / "socat.log", "wb") as log:
            popen = subprocess.Popen(["sh", "-c", script], stdout=log, stderr=subprocess.STDOUT)
        server = Server("socat", popen.pid, directory, popen=popen, ports={"echo": port})
        try:
            for addr in addrs:
                wait_tcp(addr, port, proc=popen)
            yield server
        finally:
            # a listener's forked children (a UDP peer's lives UDP_IDLE_S) outlive its TERM
            for pid in children_of(popen.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            server.stop()
