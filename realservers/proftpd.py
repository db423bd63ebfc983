"""ProFTPD 1.3.8 for the ftp check: anonymous read-only and one virtual user, no PAM.

Anonymous (user `anonymous` or `ftp`) sees `anon/`: welcome.txt, big.bin (2 MiB) and the
directory pub/. The user lvsmon / secret (from an AuthUserFile, no system account) sees
`home/`: probe.txt. Passive data ports are the kernel's choice (no PassivePorts range that
two instances could fight over). `-n` keeps it in the foreground; it forks a child per session.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence

from realservers.base import Server, free_ports, read_pid, require, run, server_dir, wait_tcp

USER = "lvsmon"
PASSWORD = "secret"
ANON_TEXT = b"lvsmon anonymous ftp ok\n"
USER_TEXT = b"lvsmon user ftp ok\n"
BIG_SIZE = 2 << 20
GREETING = "lvsmon test FTP ready"

_CONF = """\
ServerName          "lvsmon test ftp"
ServerType          standalone
DefaultServer       on
Port                {port}
DefaultAddress      {addrs}
SocketBindTight     on
UseIPv6             on
User                nobody
Group               nogroup
PidFile             {dir}/proftpd.pid
ScoreboardFile      {dir}/proftpd.scoreboard
DelayEngine         off
WtmpLog             off
UseReverseDNS       off
ServerIdent         on "{greeting}"
RequireValidShell   off
AuthPAM             off
AuthOrder           mod_auth_file.c mod_auth_unix.c
AuthUserFile        {dir}/ftpd.passwd
AuthGroupFile       {dir}/ftpd.group
DefaultRoot         ~
SystemLog           {dir}/proftpd.log
TransferLog         none
MaxInstances        50
<Anonymous {dir}/anon>
  User              ftp
  Group             nogroup
  UserAlias         anonymous ftp
  RequireValidShell off
  <Limit WRITE>
    DenyAll
  </Limit>
</Anonymous>
"""


def _loopback(addr: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)


@contextlib.contextmanager
def running_proftpd(addrs: Sequence[str] = ("127.0.0.1", "::1")) -> Iterator[Server]:
    """proftpd on `Server.ports["ftp"]` at every address in `addrs`."""
    binary = require("proftpd", "proftpd-core")
    with server_dir("proftpd") as d:
        (port,) = free_ports(1)
        anon, home = d / "anon", d / "home"
        (anon / "pub").mkdir(parents=True)
        home.mkdir()
        (anon / "welcome.txt").write_bytes(ANON_TEXT)
        (anon / "big.bin").write_bytes(b"x" * BIG_SIZE)
        (home / "probe.txt").write_bytes(USER_TEXT)
        digest = run(["openssl", "passwd", "-6", PASSWORD]).stdout.decode().strip()
        passwd = d / "ftpd.passwd"
        passwd.write_text(f"{USER}:{digest}:65534:65534::{home}:/bin/false\n")
        passwd.chmod(0o600)  # proftpd refuses a world-readable AuthUserFile
        (d / "ftpd.group").write_text("nogroup:x:65534:\n")
        conf = d / "proftpd.conf"
        conf.write_text(_CONF.format(port=port, addrs=" ".join(addrs), dir=d, greeting=GREETING))
        run([binary, "-t", "-c", str(conf)])
        popen = subprocess.Popen(
            [binary, "-n", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = Server("proftpd", popen.pid, d, popen=popen)
        server.ports = {"ftp": port}
        try:
            for addr in addrs:
                wait_tcp(_loopback(addr), port, proc=popen)
            read_pid(d / "proftpd.pid")
            yield server
        finally:
            server.stop()
