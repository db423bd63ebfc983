"""TLS sessions taken and offered without CPython's copy, which also leaks on 3.11.

CPython's `SSLObject.session` duplicates the connection's `SSL_SESSION` by serialising and
parsing it (`_ssl_session_dup`, ~100 µs with the server's certificate) and, on 3.11 and 3.12
before the fix of python/cpython#116810, then replaces that copy by a new reference without
freeing it: every read leaks the copy (6.6 KiB measured here on 3.11.7, Debian 12's Python).
Passing `session=` to `wrap_bio` copies again (~106 µs). A checker that resumes sessions reads
one per full handshake (each real, each ticket lifetime: nginx's is 5 minutes), so at 2,000
HTTPS reals the leak alone was some 150 MiB an hour.

So, where the interpreter's layout is known, the session is taken with `SSL_get1_session` (a
reference, no copy) and offered with `SSL_set_session`, through ctypes on the libssl that
CPython's `_ssl` module is linked with. The `SSL *` is read from the `_ssl._SSLSocket` object
(`PyObject_HEAD`, then `PyObject *Socket`, then `SSL *ssl`: the same from 3.7 to 3.13) and
checked once against the context's `SSL_CTX *` (`PyObject_HEAD`, then `SSL_CTX *ctx`) with
`SSL_get_SSL_CTX` before it is trusted; anything else (another interpreter, a debug build, a
layout that does not check out, no libssl symbols) uses CPython's own API, copy and all
(`NATIVE` says which).
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from typing import Any, Final, Protocol

_POINTER: Final = ctypes.sizeof(ctypes.c_void_p)
# offsets in CPython's objects (non-debug builds: PyObject_HEAD is a refcount and a type)
_SSL_OFFSET: Final = 2 * _POINTER + _POINTER  # PySSLSocket: head, Socket, then ssl
_CTX_OFFSET: Final = 2 * _POINTER  # PySSLContext: head, then ctx


class Session(Protocol):
    """What the session cache reads of a session (ssl.SSLSession has it too)."""

    @property
    def has_ticket(self) -> bool: ...

    @property
    def id(self) -> bytes: ...

    @property
    def ticket_lifetime_hint(self) -> int: ...

    @property
    def time(self) -> int: ...


class _Lib:
    """The libssl functions used, typed."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, c_int, c_ulong, c_long = ctypes.c_void_p, ctypes.c_int, ctypes.c_ulong, ctypes.c_long
        self.get1_session = _fn(lib.SSL_get1_session, [vp], vp)
        self.set_session = _fn(lib.SSL_set_session, [vp, vp], c_int)
        self.session_free = _fn(lib.SSL_SESSION_free, [vp], None)
        self.has_ticket = _fn(lib.SSL_SESSION_has_ticket, [vp], c_int)
        self.lifetime_hint = _fn(lib.SSL_SESSION_get_ticket_lifetime_hint, [vp], c_ulong)
        self.get_time = _fn(lib.SSL_SESSION_get_time, [vp], c_long)
        self.get_id = _fn(lib.SSL_SESSION_get_id, [vp, ctypes.POINTER(ctypes.c_uint)], vp)
        self.get_ssl_ctx = _fn(lib.SSL_get_SSL_CTX, [vp], vp)


def _fn(f: Any, args: list[Any], res: Any) -> Any:
    f.argtypes, f.restype = args, res
    return f


class NativeSession:
    """An `SSL_SESSION *` this process holds a reference to (freed with this object), and the
    `SSL_CTX *` it came from (it is offered only to connections of that context)."""

    __slots__ = ("_ptr", "ctx")

    def __init__(self, ptr: int, ctx: int) -> None:
        self._ptr = ptr
        self.ctx = ctx

    def __del__(self) -> None:
        lib = _lib
        if lib is not None and self._ptr:
            lib.session_free(self._ptr)
            self._ptr = 0

    @property
    def pointer(self) -> int:
        return self._ptr

    @property
    def has_ticket(self) -> bool:
        assert _lib is not None
        return bool(_lib.has_ticket(self._ptr))

    @property
    def id(self) -> bytes:
        assert _lib is not None
        length = ctypes.c_uint(0)
        data = _lib.get_id(self._ptr, ctypes.byref(length))
        return ctypes.string_at(data, length.value) if data and length.value else b""

    @property
    def ticket_lifetime_hint(self) -> int:
        assert _lib is not None
        return int(_lib.lifetime_hint(self._ptr))

    @property
    def time(self) -> int:
        assert _lib is not None
        return int(_lib.get_time(self._ptr))


def _ssl_of(obj: ssl.SSLObject) -> int:
    inner = obj._sslobj  # type: ignore[attr-defined]  # the _ssl._SSLSocket
    return ctypes.c_void_p.from_address(id(inner) + _SSL_OFFSET).value or 0


def _ctx_of(context: ssl.SSLContext) -> int:
    return ctypes.c_void_p.from_address(id(context) + _CTX_OFFSET).value or 0


def _load() -> _Lib | None:
    """libssl's functions, if this interpreter's layout is the one known and checks out."""
    if (
        sys.implementation.name != "cpython"
        or hasattr(sys, "gettotalrefcount")  # a debug build: a longer PyObject_HEAD
        or not (3, 7) <= sys.version_info[:2] <= (3, 13)
    ):
        return None
    try:
        import _ssl

        lib = _Lib(ctypes.CDLL(_ssl.__file__))
    except (OSError, AttributeError, ImportError):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    obj = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    inner = obj._sslobj  # type: ignore[attr-defined]
    # the field before `ssl` is the socket's weakref: NULL for a memory-BIO object
    if ctypes.c_void_p.from_address(id(inner) + _SSL_OFFSET - _POINTER).value:
        return None
    ssl_ptr, ctx_ptr = _ssl_of(obj), _ctx_of(context)
    if not ssl_ptr or not ctx_ptr or lib.get_ssl_ctx(ssl_ptr) != ctx_ptr:
        return None
    return lib


_lib: _Lib | None = _load()
NATIVE: Final = _lib is not None
"""Whether sessions go through libssl directly (else CPython's API: a copy each way, and the
copy leaked per read on 3.11)."""


def wrap(
    context: ssl.SSLContext,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    server_hostname: str | None,
    session: Session | None,
) -> tuple[ssl.SSLObject, Session | None]:
    """A client SSLObject offering `session` (None when it cannot be offered: a session of
    another context); the session it offers."""
    lib = _lib
    if lib is None or session is None:
        offered = session if isinstance(session, ssl.SSLSession) else None
        try:
            obj = context.wrap_bio(
                incoming, outgoing, server_hostname=server_hostname, session=offered
            )
        except ValueError:  # a session of another context
            return context.wrap_bio(incoming, outgoing, server_hostname=server_hostname), None
        return obj, offered
    obj = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    if not isinstance(session, NativeSession) or session.ctx != _ctx_of(context):
        return obj, None
    if lib.set_session(_ssl_of(obj), session.pointer) != 1:
        return obj, None
    return obj, session


def session_of(obj: ssl.SSLObject) -> Session | None:
    """The connection's session, held: a reference where native, else CPython's copy."""
    lib = _lib
    if lib is None:
        return obj.session
    ssl_ptr = _ssl_of(obj)
    ptr = lib.get1_session(ssl_ptr)
    if not ptr:
        return None
    return NativeSession(ptr, lib.get_ssl_ctx(ssl_ptr) or 0)
