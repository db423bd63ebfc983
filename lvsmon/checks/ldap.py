"""negotiate checks for service=ldap and ldaps: bind, then read one entry.

As ldirectord's check_ldap: a simple bind with `login` (a DN) and `passwd` when both are set,
else an anonymous bind; then a base-scope search of `request` without its leading "/" with
filter (objectClass=*). Up iff exactly one entry comes back and, when `receive` is set, its DN
matches it. ldaps is TLS from the first byte, without certificate verification by default;
`sslverify` (checks/tlsverify.py) turns it on (`chain`: as Debian 12's ldirectord, whose
IO::Socket::SSL under Net::LDAP verified the chain).

ldap3 is blocking, so the exchange runs in a thread of a pool of its own (`_pool`): the loop's
default executor has only min(32, cpus + 4) workers, and a few frozen LDAP servers would hold
them all, starving every other LDAP check and whatever else uses that executor. A thread cannot
be cancelled, so when `run_check`'s deadline strikes, the socket is shut down under the blocked
call (`_Job.abort`), which returns at once; ldap3's own connect and receive timeouts (the
check's timeout) bound the thread even if that fails.

A peer's bytes are bounded (issue 21, class 1): ldap3 appends what it receives until the length
a message's BER header announces has arrived (2 GB if the peer says so), with no limit of its
own. Once connected (and, for ldaps, past the handshake, which OpenSSL bounds), the socket ldap3
reads is wrapped in a `RecvCounter`: past PEER_BYTES its recv raises, ldap3 reports a receive
error, and the check is down with "ldap: response too large (over 256 KiB)".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import math
import re
import socket
import ssl
import threading
import warnings
from typing import Any, Final

from lvsmon.checks.base import (
    RECEIVE_TIMEOUT,
    CheckFailed,
    CheckResult,
    CheckSpec,
    compile_receive,
)
from lvsmon.checks.budget import Budget, RecvCounter
from lvsmon.checks.dialogue import shown
from lvsmon.checks.step import Step
from lvsmon.checks.stream import tls_context
from lvsmon.checks.tls import TlsSetting
from lvsmon.checks.tlsverify import not_after, verify_reason

with warnings.catch_warnings():
    # ldap3 2.9.1 uses pyasn1 attributes that pyasn1 >= 0.6.1 deprecates, at import
    warnings.simplefilter("ignore", DeprecationWarning)
    import ldap3
    from ldap3.core.exceptions import LDAPException

MAX_THREADS: Final = 64
"""Threads for LDAP checks at most. Each waits on one server; with the abort on the deadline a
thread is held for at most one check's timeout, so 64 lets that many LDAP servers hang at once
before a further LDAP check waits for a thread (it still ends at its own deadline)."""

FILTER: Final = "(objectClass=*)"

_pool_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_busy = 0  # threads inside an LDAP exchange now; tests read it through busy_threads()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _pool_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                MAX_THREADS, thread_name_prefix="lvsmon-ldap"
            )
        return _executor


def busy_threads() -> int:
    """How many LDAP exchanges are running in threads right now."""
    return _busy


class _Tls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type hints
    """ldap3's TLS settings, telling the check when the handshake starts (ldap3 connects and
    wraps the socket in one call), with lvsmon's shared client contexts (checks/tlsverify.py):
    ldap3 builds a default context per connection, loading the system's CA store each time
    (50 ms of CPU here; bench/protocols.py's ldaps ran at 42 ms of CPU per check). A failed
    verification is kept as its reason: ldap3 turns the error into text without its details."""

    def __init__(self, step: Step, spec: CheckSpec) -> None:
        super().__init__(validate=ssl.CERT_NONE)
        self.step = step
        self.setting = TlsSetting(spec, spec.host, spec.port, "")
        self.failure = ""

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        self.step.name = "tls"
        setting = self.setting
        wrapped = (setting.context() or tls_context()).wrap_socket(
            connection.socket,
            server_side=False,
            do_handshake_on_connect=False,
            server_hostname=setting.wanted or setting.sni or None,
        )
        connection.socket = wrapped
        if do_handshake:
            try:
                wrapped.do_handshake()
            except ssl.SSLCertVerificationError as exc:
                self.failure = verify_reason(exc, wrapped, setting.wanted)
                raise


_ERRNO = re.compile(r"\[Errno (\d+)\] ([^'\"]+)")
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")


def describe_ldap_error(exc: BaseException) -> str:
    """What went wrong, from an ldap3 exception. ldap3 re-raises socket errors as new exceptions
    without errno or reason, keeping them only in the message text."""
    text = str(exc)
    if m := _SSL_REASON.search(text):
        return m.group(1).lower().replace("_", " ")
    if m := _ERRNO.search(text):
        message = m.group(2).strip()
        return message[:1].lower() + message[1:]
    if isinstance(exc, TimeoutError) or "timed out" in text:
        return "timed out"
    return shown(text.encode()) or type(exc).__name__


class _Job:
    """One check's exchange, run in a pool thread; `abort` may be called from the loop."""

    def __init__(self, spec: CheckSpec, step: Step) -> None:
        self.spec = spec
        self.step = step
        self.tls = spec.service == "ldaps"
        self.conn: Any = None
        self.aborted = False
        self.budget = Budget(spec.service)
        self.not_after: float | None = None  # the server certificate's (sslexpirywarn)

    def run(self) -> CheckResult:
        global _busy
        with _pool_lock:
            _busy += 1
        try:
            if self.aborted:  # the check ended while this job waited for a thread
                raise CheckFailed(f"{self.spec.service}: aborted before it started")
            return self._exchange()
        finally:
            conn, self.conn = self.conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.unbind()  # sends an unbind request if still connected, closes the socket
                sock = _raw(getattr(conn, "socket", None))
                if isinstance(sock, socket.socket):
                    sock.close()  # ldap3 leaves it open when connect or the handshake fails
            with _pool_lock:
                _busy -= 1

    def abort(self) -> None:
        """Unblock the thread: a recv or handshake on a socket shut down returns at once."""
        self.aborted = True
        conn = self.conn
        sock = _raw(getattr(conn, "socket", None)) if conn is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                # the plain socket's shutdown even on an SSLSocket: its own would drop the
                # SSL object under the thread that is using it
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _exchange(self) -> CheckResult:
        spec = self.spec
        name = spec.service
        timeout = spec.timeout
        tls = _Tls(self.step, spec) if self.tls else None
        server = ldap3.Server(
            spec.host,
            port=spec.port,
            use_ssl=self.tls,
            tls=tls,
            connect_timeout=timeout,
            get_info=ldap3.NONE,
        )
        simple = bool(spec.login and spec.passwd)
        self.conn = conn = ldap3.Connection(
            server,
            user=spec.login if simple else None,
            password=spec.passwd if simple else None,
            authentication=ldap3.SIMPLE if simple else ldap3.ANONYMOUS,
            # ldap3 also sets SO_RCVTIMEO from it, packed as whole seconds
            receive_timeout=max(1, math.ceil(timeout)),
            auto_referrals=False,  # never follow the server to another host
            read_only=True,
            raise_exceptions=False,
        )
        try:
            self.step.name = "connect"
            conn.open()
            if self.aborted:
                raise CheckFailed(f"{name}: aborted")
            if spec.sslexpiry and isinstance(conn.socket, ssl.SSLSocket):
                der = conn.socket.getpeercert(binary_form=True)
                self.not_after = not_after(der) if der else None
            if isinstance(conn.socket, socket.socket):  # nothing was received yet
                conn.socket = RecvCounter(conn.socket, self.budget)
            self.step.name = f"{name} bind"
            if not conn.bind():
                raise CheckFailed(f"{name}: bind rejected: {_result(conn)}")
            base = spec.request.removeprefix("/")
            self.step.name = f"{name} search"
            conn.search(base, FILTER, search_scope=ldap3.BASE, attributes=[])
        except LDAPException as exc:
            if tls is not None and tls.failure:
                raise CheckFailed(f"tls: {tls.failure}") from None
            self.budget.check()
            raise CheckFailed(f"{self.step.name}: {describe_ldap_error(exc)}") from None
        result = judge(spec, base, conn.result, conn.response)
        if self.not_after is not None:
            return dataclasses.replace(result, cert_not_after=self.not_after)
        return result


def _raw(sock: object) -> object:
    """The socket itself, behind a RecvCounter or not."""
    return sock.raw if isinstance(sock, RecvCounter) else sock


def _result(conn: Any) -> str:
    result = conn.result or {}
    text = str(result.get("description") or f"result code {result.get('result')}")
    message = str(result.get("message") or "")
    return shown(f"{text} ({message})".encode() if message else text.encode())


def judge(
    spec: CheckSpec, base: str, result: dict[str, Any] | None, response: list[dict[str, Any]] | None
) -> CheckResult:
    """The verdict on a search's result and entries (pure: unit-tested without a server)."""
    name = spec.service
    what = shown(base.encode()) or "the root DSE"
    code = (result or {}).get("result")
    dns = [
        bytes(entry.get("raw_dn") or b"")
        for entry in response or []
        if entry.get("type") == "searchResEntry"
    ]
    if code not in (0, None) and not dns:
        description = (result or {}).get("description") or f"result code {code}"
        message = (result or {}).get("message") or ""
        detail = f"{description} ({message})" if message else str(description)
        return CheckResult(False, f"{name}: search of {what}: {shown(detail.encode())}")
    if len(dns) != 1:
        count = f"{len(dns)} entries, not 1" if dns else "no entry"
        return CheckResult(False, f"{name}: search of {what}: {count}")
    dn = dns[0]
    shown_dn = shown(dn) or "the root DSE"
    regex = compile_receive(spec.receive)
    if regex is not None:
        try:
            found = regex.search(dn, timeout=RECEIVE_TIMEOUT)
        except TimeoutError:
            return CheckResult(
                False, f"{name}: receive regex took longer than {RECEIVE_TIMEOUT:g} s"
            )
        if found is None:
            return CheckResult(
                False, f"{name}: 1 entry but its DN {shown_dn} does not match receive"
            )
    return CheckResult(True, f"{name}: found {shown_dn}")


async def check(spec: CheckSpec, step: Step) -> CheckResult:
    job = _Job(spec, step)
    future = asyncio.get_running_loop().run_in_executor(_pool(), job.run)
    try:
        return await future
    finally:
        if not future.done() or future.cancelled():
            job.abort()
