"""INN 2.7's innd for the nntp check: a private inn.conf (port, bind addresses, run and log dirs).

innd runs in the foreground as user news; the news database and spool stay the package's
(/var/lib/news, /var/spool/news) and are only read, which is why two instances with their own
run dirs can run side by side. innd acts on SIGTERM only when its main loop next wakes (minutes):
it is stopped with `ctlinnd shutdown`, gone about a second later. `ctlinnd throttle` makes it
greet new connections with "400 <reason>", a real "4xx banner" case.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from realservers.base import Server, free_ports, read_pid, require, run, server_dir, wait_tcp

INNCONF = "/etc/news/inn.conf"


@dataclass
class InnServer(Server):
    """innd, stopped and steered through ctlinnd."""

    ctlinnd_path: str = ""

    def ctlinnd(self, *args: str) -> None:
        run(
            [self.ctlinnd_path, "-t", "5", *args],
            user="news",
            group="news",
            extra_groups=[],
            env={**os.environ, "INNCONF": str(self.dir / "inn.conf")},
        )

    def stop(self, timeout: float = 15.0) -> None:
        pids = self.pids()
        if any(os.path.exists(f"/proc/{pid}") for pid in pids):
            with contextlib.suppress(RuntimeError):  # SIGTERM, then SIGKILL, below
                self.ctlinnd("shutdown", "lvsmon test done")
        self._wait_gone(pids, timeout)

    @contextlib.contextmanager
    def throttled(self, reason: str) -> Iterator[None]:
        """innd refuses new connections with "400 <reason>" meanwhile."""
        self.ctlinnd("throttle", reason)
        try:
            yield
        finally:
            self.ctlinnd("go", reason)


def _conf(template: str, *, port: int, run_dir: str, log_dir: str, addrs: Sequence[str]) -> str:
    values = {"port": str(port), "pathrun": run_dir, "pathlog": log_dir}
    for key, value in values.items():
        template, n = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}", template)
        if n != 1:
            raise RuntimeError(f"{INNCONF} has {n} '{key}:' lines, expected 1")
    v4 = next((a for a in addrs if ":" not in a), "none")
    v6 = next((a for a in addrs if ":" in a), "none")
    # quoted: an unquoted ':' is a syntax error in inn.conf
    return template + f'bindaddress: "{v4}"\nbindaddress6: "{v6}"\n'


@contextlib.contextmanager
def running_innd(addrs: Sequence[str] = ("127.0.0.1", "::1")) -> Iterator[InnServer]:
    """innd on one free port at (at most) one IPv4 and one IPv6 address of `addrs`; the port
    in `Server.ports["nntp"]`."""
    innd = require("innd", "inn2")
    ctlinnd = require("ctlinnd", "inn2")
    with server_dir("inn2") as d:
        run_dir, log_dir = d / "run", d / "logs"
        for sub in (run_dir, log_dir):
            sub.mkdir()
            shutil.chown(sub, "news", "news")
        [port] = free_ports(1)  # free_ports: what bench/protocols_servers patches for fixed ports
        with open(INNCONF) as f:
            template = f.read()
        (d / "inn.conf").write_text(
            _conf(template, port=port, run_dir=str(run_dir), log_dir=str(log_dir), addrs=addrs)
        )
        with open(d / "innd.out", "wb") as out:
            popen = subprocess.Popen(
                [innd, "-f"],
                user="news",
                group="news",
                extra_groups=[],
                env={**os.environ, "INNCONF": str(d / "inn.conf")},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = InnServer("innd", popen.pid, d, popen=popen, ctlinnd_path=ctlinnd)
        server.ports = {"nntp": port}
        try:
            for addr in addrs:
                wait_tcp({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr), port, proc=popen)
            read_pid(run_dir / "innd.pid")  # ctlinnd works once innd has written it
        except (RuntimeError, TimeoutError) as exc:
            server.kill()
            output = (d / "innd.out").read_text(errors="replace")
            raise RuntimeError(f"innd did not start: {exc}\n{output}") from None
        try:
            yield server
        finally:
            server.stop()
