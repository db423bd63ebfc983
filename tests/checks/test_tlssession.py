"""TLS sessions taken with SSL_get1_session and offered with SSL_set_session (lvsmon/checks/
tlssession.py): no copy each way, and none of CPython 3.11's leak on `SSLObject.session`
(python/cpython#116810: 6.6 KiB a read; a resuming checker reads one per real and ticket)."""

from __future__ import annotations

import contextlib
import ssl
import time

import pytest
import trustme

from lvsmon.checks import tlssession
from lvsmon.checks.tls import TlsLayer
from lvsmon.checks.tlssession import NativeSession, session_of, wrap


@pytest.fixture(scope="module")
def server_context() -> ssl.SSLContext:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def connect(
    client: ssl.SSLContext, server: ssl.SSLContext, session: tlssession.Session | None = None
) -> tuple[ssl.SSLObject, tlssession.Session | None]:
    """A handshake in memory, then a byte of data (TLS 1.3's tickets come with it)."""
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    obj, offered = wrap(client, ci, co, "localhost", session)
    peer = server.wrap_bio(si, so, server_side=True)
    for _ in range(10):
        for side in (obj, peer):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        si.write(co.read())
        ci.write(so.read())
    peer.write(b"x")
    ci.write(so.read())
    assert obj.read(1) == b"x"
    return obj, offered


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def test_this_interpreter_takes_sessions_natively() -> None:
    assert tlssession.NATIVE  # CPython 3.11 on Debian 12, the machines lvsmon runs on


def test_a_native_session_resumes(server_context: ssl.SSLContext) -> None:
    client = client_context()
    first, _ = connect(client, server_context)
    session = session_of(first)
    assert isinstance(session, NativeSession)
    assert session.has_ticket and session.ticket_lifetime_hint > 0
    assert abs(session.time - time.time()) < 60
    again, offered = connect(client, server_context, session)
    assert offered is session and again.session_reused
    assert not first.session_reused


def test_a_session_of_another_context_is_not_offered(server_context: ssl.SSLContext) -> None:
    first, _ = connect(client_context(), server_context)
    session = session_of(first)
    other, offered = connect(client_context(), server_context, session)
    assert offered is None and not other.session_reused


def test_taking_sessions_leaks_nothing(server_context: ssl.SSLContext) -> None:
    """CPython 3.11's getter grew RSS by 32 MiB per 5,000 reads here."""
    obj, _ = connect(client_context(), server_context)
    before = rss_mib()
    for _ in range(5000):
        session = session_of(obj)
    del session
    assert rss_mib() - before < 3


def test_the_tls_layer_offers_and_takes_them(server_context: ssl.SSLContext) -> None:
    layer = TlsLayer("localhost", context=client_context())
    assert layer.offered is None
    taken = layer.session  # before any handshake: an empty session or none, never a crash
    assert taken is None or isinstance(taken, NativeSession)
