"""dnsmasq as the real DNS server of the dns check tests (Debian package dnsmasq-base).

One foreground process, no config file: the zone `lvsmon.test` comes from the command line
(`--host-record` gives A, AAAA and the matching PTR records); `--local` makes every other name in
it, and in the reverse zone of 192.0.2.0/24, NXDOMAIN; with no upstream at all, any name outside
them is REFUSED. It serves UDP and TCP (a forked child per TCP connection) on the same port.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence

from realservers.base import Server, free_ports, require, server_dir, wait_tcp

ZONE = "lvsmon.test"
REVERSE_ZONE = (
    "2.0.192.in-addr.arpa"  # 192.0.2.0/24: a PTR for an address without a record is NXDOMAIN
)
HOST_RECORDS: dict[str, tuple[str, ...]] = {
    f"www.{ZONE}": ("192.0.2.10", "2001:db8::10"),
    f"v4.{ZONE}": ("192.0.2.20",),
    f"v6.{ZONE}": ("2001:db8::30",),
}
CNAMES: dict[str, str] = {f"alias.{ZONE}": f"www.{ZONE}"}
TXT_ONLY = f"txt.{ZONE}"  # a name that exists with no address record: NOERROR, empty answer
BIG = f"big.{ZONE}"
"""A name with more A records than a 512-byte UDP answer holds: dnsmasq sets TC."""
BIG_ADDRESSES = tuple(f"198.51.100.{i}" for i in range(1, 61))


@contextlib.contextmanager
def running_dnsmasq(
    addrs: Sequence[str] = ("127.0.0.1", "::1"), port: int | None = None
) -> Iterator[Server]:
    """dnsmasq answering for lvsmon.test on `addrs`, UDP and TCP on one port (`ports["dns"]`)."""
    binary = require("dnsmasq", "dnsmasq-base")
    port = port or free_ports(1)[0]
    with server_dir("dnsmasq") as directory:
        cmd = [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            f"--port={port}",
            f"--pid-file={directory}/dnsmasq.pid",
            "--log-facility=-",
            "--log-queries",
            f"--local=/{ZONE}/",
            f"--local=/{REVERSE_ZONE}/",
            *(f"--listen-address={addr}" for addr in addrs),
            *(f"--host-record={name},{','.join(ips)}" for name, ips in HOST_RECORDS.items()),
            *(f"--cname={alias},{target}" for alias, target in CNAMES.items()),
            *(f"--host-record={BIG},{ip}" for ip in BIG_ADDRESSES),
            f"--txt-record={TXT_ONLY},hello",
        ]
        with open(directory / "dnsmasq.log", "wb") as log:
            popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        server = Server("dnsmasq", popen.pid, directory, popen=popen, ports={"dns": port})
        try:
            for addr in addrs:
                wait_tcp(addr, port, proc=popen)
            yield server
        finally:
            server.stop()
