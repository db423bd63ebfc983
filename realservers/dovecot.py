"""A throwaway Dovecot 2.3 serving POP3, POP3S, IMAP and IMAPS, for the pop and imap checks.

Users come from a passwd-file (so a wrong user name fails, unlike a static passdb): `lvsmon` /
`secret`, plus users whose passwords need IMAP quoting or a literal. Failed logins are not
delayed: `auth_failure_delay = 0`, and anvil's auth-penalty listener is off (else every later
login from 127.0.0.1 waits 2 to 15 s after one bad password). The login processes are long-lived
(`service_count = 0`), so they hold their auth connection: with auth frozen a greeting still
comes and the login hangs (a fresh login process would wait for auth before greeting).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from realservers.base import (
    Server,
    children_of,
    free_ports,
    require,
    self_signed,
    server_dir,
    wait_tcp,
)

PACKAGES = "dovecot-core dovecot-pop3d dovecot-imapd"
NOBODY = 65534
USERS = {
    "lvsmon": "secret",
    "quoted": 'say "hi" \\o/',  # needs escapes in an IMAP quoted string
    "umlaut": "pässwörd",  # 8-bit: an IMAP literal
}
PORT_NAMES = ("pop3", "pop3s", "imap", "imaps")

CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
protocols = imap pop3
listen = {listen}
default_internal_user = dovecot
default_login_user = dovenull
ssl = yes
ssl_cert = <{dir}/tls/cert.pem
ssl_key = <{dir}/tls/key.pem
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {dir}/users
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
service imap-login {{
  service_count = 0
  process_min_avail = 1
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  service_count = 0
  process_min_avail = 1
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def _reachable(addr: str) -> str:
    """Where to poll a listener bound to `addr` (a wildcard is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}.get(addr, addr)


@contextlib.contextmanager
def running_dovecot(addrs: Sequence[str] = ("127.0.0.1", "::1")) -> Iterator[Server]:
    """Dovecot listening on `addrs`; `Server.ports` maps pop3, pop3s, imap, imaps to its ports."""
    binary = require("dovecot", PACKAGES)
    for helper in ("pop3", "imap", "pop3-login", "imap-login"):
        if not os.path.exists(f"/usr/lib/dovecot/{helper}"):
            pytest.fail(f"/usr/lib/dovecot/{helper} not found: install {PACKAGES}", pytrace=False)
    with server_dir("dovecot") as d:
        ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        for sub in ("run", "state"):
            (d / sub).mkdir()
        home = d / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        self_signed(d, "mail.lvsmon.test")
        (d / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}:{NOBODY}:{NOBODY}::{home}\n" for u, p in USERS.items()),
            encoding="utf-8",
        )
        config = d / "dovecot.conf"
        config.write_text(CONFIG.format(dir=d, listen=", ".join(addrs), **ports))
        # -F: stay in the foreground, so the pid is ours and an early exit is seen at once
        with open(d / "stderr", "wb") as stderr:
            popen = subprocess.Popen(
                [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        server = Server("dovecot", popen.pid, d, popen=popen, ports=ports)
        try:
            for addr in addrs:
                for port in ports.values():
                    wait_tcp(_reachable(addr), port, proc=popen)
        except BaseException as exc:
            server.kill()
            raise RuntimeError(f"dovecot did not start: {_logs(d)}") from exc
        try:
            yield server
        finally:
            server.stop()


def _logs(d: Path) -> str:
    return "\n".join(
        (d / name).read_text(errors="replace")
        for name in ("stderr", "dovecot.log")
        if (d / name).exists()
    )


def auth_pids(server: Server) -> list[int]:
    """The pids of Dovecot's auth processes (started on the first login)."""
    found = []
    for pid in children_of(server.pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"dovecot/auth\0"):
                found.append(pid)
    return found


@contextlib.contextmanager
def auth_frozen(server: Server) -> Iterator[None]:
    """SIGSTOP only the auth processes: greetings still come, every login hangs."""
    pids = auth_pids(server)
    if not pids:
        raise RuntimeError("no dovecot/auth process yet: log in once first")
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
