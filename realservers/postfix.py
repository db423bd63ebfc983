"""Postfix for the smtp/submission checks (and usable as an alert sink): one private instance.

Everything lives in the server dir: config (`etc/`), queue, data, maillog, a self-signed
certificate, and one Maildir (`mail/alerts/new/`) that receives every mail to *@lvsmon.test.
Each listener of `LISTENERS` is an smtpd on its own free port at every address asked for: plain
smtp (STARTTLS offered), submission (STARTTLS required, as deployed), and two that refuse the
client, at the greeting or at EHLO/HELO, for the real-server "down" cases. Postfix's master
daemonizes and writes its pid; SIGTERM stops it and its children in about a second. Start-up
takes well under a second once main.cf is backdated (see `running_postfix`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from realservers.base import (
    Server,
    free_ports,
    read_pid,
    require,
    run,
    self_signed,
    server_dir,
    wait_tcp,
)

HOSTNAME = "mx.lvsmon.test"

LISTENERS: Mapping[str, Sequence[str]] = {
    "smtp": (),
    "submission": (
        "syslog_name=postfix/submission",
        "smtpd_tls_security_level=encrypt",
        "smtpd_sasl_auth_enable=no",
    ),
    # smtpd_delay_reject=no makes smtpd judge the client at once: the 554 replaces the 220
    "reject_greeting": ("smtpd_delay_reject=no", "smtpd_client_restrictions=reject"),
    "reject_helo": ("smtpd_delay_reject=no", "smtpd_helo_restrictions=reject"),
}
"""Listener name (the key of `Server.ports`) -> smtpd `-o` overrides."""

_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
inet_interfaces = all
inet_protocols = all
myhostname = {hostname}
mydomain = lvsmon.test
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8, [::1]/128
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject
biff = no
smtputf8_enable = no
virtual_mailbox_domains = lvsmon.test
virtual_mailbox_base = {dir}/mail
virtual_mailbox_maps = static:alerts/
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
alias_maps =
alias_database =
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtp_tls_security_level = none
"""

# every service unchrooted: a chroot would need a copy of /etc and the libraries in the queue
_MASTER_CF_TAIL = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _loopback(addr: str) -> str:
    """Where to poll a listener bound to `addr` (a wildcard is polled on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)


def master_cf(addrs: Sequence[str], ports: Mapping[str, int]) -> str:
    lines = []
    for name, port in ports.items():
        for addr in addrs:
            lines.append(f"{_endpoint(addr, port)} inet n - n - - smtpd")
            lines.extend(f"  -o {option}" for option in LISTENERS[name])
    return "\n".join(lines) + "\n" + _MASTER_CF_TAIL


def maildir(server: Server) -> Path:
    """Where mail to *@lvsmon.test lands (Maildir `new/`)."""
    return server.dir / "mail" / "alerts" / "new"


@contextlib.contextmanager
def running_postfix(addrs: Sequence[str] = ("127.0.0.1", "::1")) -> Iterator[Server]:
    """Postfix with every listener of `LISTENERS` at every address of `addrs`; their ports in
    `Server.ports` by listener name."""
    postfix = require("postfix", "postfix")
    with server_dir("postfix") as d:
        for sub in ("etc", "queue", "data", "mail"):
            (d / sub).mkdir()
        shutil.chown(d / "data", "postfix")
        shutil.chown(d / "mail", 65534, 65534)
        cert, key = self_signed(d, HOSTNAME)
        ports = dict(zip(LISTENERS, free_ports(len(LISTENERS)), strict=True))
        (d / "etc" / "main.cf").write_text(
            _MAIN_CF.format(dir=d, hostname=HOSTNAME, cert=cert, key=key)
        )
        (d / "etc" / "master.cf").write_text(master_cf(addrs, ports))
        # every postfix command re-reads a main.cf younger than 2 s until it is that old
        # (it might be half written): backdating it saves those 2 s of start-up
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(d / "etc" / name, (past, past))
        try:
            # `start` creates the queue's subdirectories, then returns once master has forked
            run([postfix, "-c", str(d / "etc"), "start"])
        except RuntimeError as exc:  # postfix tells why only to a tty, or in maillog
            raise RuntimeError(f"{exc}\nmaillog:\n{_tail(d / 'maillog')}") from None
        server = Server("postfix", read_pid(d / "queue" / "pid" / "master.pid"), d)
        server.ports = ports
        try:
            for addr in addrs:
                for port in ports.values():
                    wait_tcp(_loopback(addr), port)
            yield server
        finally:
            server.stop()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"
