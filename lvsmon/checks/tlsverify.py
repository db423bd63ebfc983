"""Verified TLS in the checks (issue 25, point 4): the client contexts, why a verification
failed, and when a real's certificate expires.

    sslverify     = no | chain | name     (global and per virtual; default no)
    sslcafile     = /path/ca.pem          (default: the system store)
    sslname       = www.example.com       (default: virtualhost, then the real's address)
    sslexpirywarn = days                  (default 0: off)

* Contexts (`context_for`): one per distinct (sslverify, sslcafile), made once and shared by
  every check that asks for it, never one per check: a context with a CA store holds it
  parsed (the system's is ~140 certificates), and a TLS session is bound to the context that
  made it, so sharing is what lets the session cache (checks/tls.py) resume. `no` is the one
  context lvsmon always had (no chain, no name). A session of one setting is never offered
  under another: the cache's key names the setting (`context_key`), and libssl refuses a
  session of another context anyway. A CA file is looked at again (stat) at most every
  CAFILE_RECHECK_S: a changed one is loaded into a new context; one that no longer loads
  keeps the last good context (check-config and a reload report the file).
* Reasons (`verify_reason`): OpenSSL's verify code as one short line that says what failed:
  "certificate expired on 2021-01-01", "certificate name mismatch: got www.other.test
  (wanted www.lvsmon.test)", "self-signed certificate", "unknown CA". The dates and names come
  from the certificate the server sent: after a failed verification CPython 3.11 gives no
  certificate (`getpeercert` needs a finished handshake), so the chain is read through libssl
  (`SSL_get_peer_cert_chain`, set before it is verified), where checks/tlssession.py found the
  interpreter's layout; elsewhere the reason has no date or names.
* Expiry (`not_after`): the notAfter of a DER certificate, from a small DER walk (no parser
  dependency for one field; `cryptography` is not one of lvsmon's dependencies). Read after a
  sound handshake when the virtual asks for it (sslexpirywarn), whatever sslverify says.
"""

from __future__ import annotations

import calendar
import ctypes
import ipaddress
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from lvsmon.checks import tlssession
from lvsmon.text import clean

VERIFY_MODES: Final = ("no", "chain", "name")

CAFILE_RECHECK_S: Final = 60.0
"""How often a context's CA file is stat()ed for a change (on a check's path: not per check)."""

REASON_LIMIT: Final = 200  # characters of a verification reason: one line of a status page

ContextKey = tuple[str, str]
"""(sslverify, sslcafile): what makes contexts differ."""

NO_VERIFY: Final[ContextKey] = ("no", "")


class _Entry:
    __slots__ = ("checked", "context", "signature")

    def __init__(self, context: ssl.SSLContext, signature: tuple[int, int], checked: float):
        self.context = context
        self.signature = signature
        self.checked = checked


def _signature(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


def make_context(verify: str, cafile: str) -> ssl.SSLContext:
    """A new client context for `verify` (ssl.SSLError or OSError for a CA file that does not
    load)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify == "no":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.check_hostname = verify == "name"
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    else:
        ctx.set_default_verify_paths()
    return ctx


class Contexts:
    """The process's client contexts, one per (sslverify, sslcafile)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[ContextKey, _Entry] = {}

    def get(self, verify: str = "no", cafile: str = "") -> ssl.SSLContext:
        key = (verify, cafile if verify != "no" else "")
        entry = self._entries.get(key)
        if entry is not None:
            if not key[1]:
                return entry.context
            now = self._clock()
            if now - entry.checked < CAFILE_RECHECK_S:
                return entry.context
            entry.checked = now
            signature = _signature(key[1])
            if signature == entry.signature:
                return entry.context
            try:
                entry.context = make_context(*key)
            except (OSError, ssl.SSLError, ValueError):
                return entry.context  # the last good one (a reload reports the file)
            entry.signature = signature
            return entry.context
        signature = _signature(key[1]) if key[1] else (0, 0)
        try:
            context = make_context(*key)
        except (OSError, ssl.SSLError, ValueError):
            # check-config refused such a file; one gone since: no CA at all, so every
            # verifying check fails ("unknown CA") rather than being passed unverified
            context = _empty_store(key[0])
        self._entries[key] = _Entry(context, signature, self._clock())
        return context


def _empty_store(verify: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = verify == "name"
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


CONTEXTS: Final = Contexts()


def context_for(verify: str = "no", cafile: str = "") -> ssl.SSLContext:
    """The shared client context of this setting."""
    return CONTEXTS.get(verify, cafile)


def context_key(verify: str, cafile: str) -> ContextKey:
    return (verify, cafile) if verify != "no" else NO_VERIFY


def cafile_problem(path: str) -> str | None:
    """Why `path` cannot serve as sslcafile (None: it loads): check-config's words."""
    if not path.startswith("/"):
        return f"sslcafile must be an absolute path, not {clean(path, 100)!r}"
    try:
        with open(path, "rb") as f:
            data = f.read(8 * 1024 * 1024 + 1)
    except OSError as exc:
        return f"sslcafile {path}: {exc.strerror or exc}"
    if len(data) > 8 * 1024 * 1024:
        return f"sslcafile {path}: larger than 8 MiB"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return f"sslcafile {path}: no PEM certificate in it"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        return f"sslcafile {path}: not a usable PEM CA file ({clean(str(reason), 100)})"
    return None


# ---- the names to verify and send ------------------------------------------------------------


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def wanted_name(sslname: str, virtualhost: str, host: str) -> str:
    """The name `sslverify = name` verifies: sslname, else virtualhost (its host part), else
    the real's address."""
    if sslname:
        return sslname
    name = virtualhost
    if name and not name.startswith("["):
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name or host


# ---- reasons -----------------------------------------------------------------------------------

_EXPIRED: Final = 10
_NOT_YET_VALID: Final = 9
_SELF_SIGNED: Final = 18
_SELF_SIGNED_IN_CHAIN: Final = 19
_UNKNOWN_CA: Final = frozenset({2, 20, 21})  # no issuer certificate, locally or at all
_NAME_MISMATCH: Final = frozenset({62, 63, 64})  # host name, e-mail, IP address


def verify_reason(exc: ssl.SSLCertVerificationError, obj: object = None, wanted: str = "") -> str:
    """What failed, one line (no "tls: " in front); `obj`: the SSLObject or SSLSocket whose
    handshake failed (its chain gives dates and names), `wanted`: the name verified."""
    code = getattr(exc, "verify_code", 0)
    chain = peer_chain(obj) if obj is not None else []
    if code == _EXPIRED:
        reason = "certificate expired"
        now = time.time()
        for depth, der in enumerate(chain):
            end = not_after(der)
            if end is not None and end < now:
                who = "certificate" if depth == 0 else "issuer certificate"
                reason = f"{who} expired on {_day(end)}"
                break
    elif code == _NOT_YET_VALID:
        reason = "certificate not yet valid"
        if chain and (start := not_before(chain[0])) is not None:
            reason = f"certificate not valid before {_day(start)}"
    elif code == _SELF_SIGNED:
        reason = "self-signed certificate"
    elif code == _SELF_SIGNED_IN_CHAIN:
        reason = "self-signed certificate in the chain (unknown CA)"
    elif code in _UNKNOWN_CA:
        reason = "unknown CA"
    elif code in _NAME_MISMATCH:
        names = cert_names(chain[0]) if chain else []
        reason = "certificate name mismatch"
        if names:
            reason += ": got " + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        if wanted:
            reason += f" (wanted {wanted})"
    else:
        message = str(getattr(exc, "verify_message", "") or exc.reason or exc)
        reason = f"certificate not trusted: {message.lower()}"
    return clean(reason, REASON_LIMIT)


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


# ---- the peer's chain through libssl -----------------------------------------------------------


class _ChainLib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        vp = ctypes.c_void_p
        self.chain = _fn(lib.SSL_get_peer_cert_chain, [vp], vp)
        self.num = _fn(lib.OPENSSL_sk_num, [vp], ctypes.c_int)
        self.value = _fn(lib.OPENSSL_sk_value, [vp, ctypes.c_int], vp)
        self.i2d = _fn(lib.i2d_X509, [vp, ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int)


def _fn(f: Any, args: list[Any], res: Any) -> Any:
    f.argtypes, f.restype = args, res
    return f


def _load_chain_lib() -> _ChainLib | None:
    if not tlssession.NATIVE:
        return None
    try:
        import _ssl

        return _ChainLib(ctypes.CDLL(_ssl.__file__))
    except (OSError, AttributeError, ImportError):
        return None


_chain_lib: _ChainLib | None = _load_chain_lib()
MAX_CHAIN: Final = 10


def peer_chain(obj: object) -> list[bytes]:
    """The certificates the peer sent, leaf first, as DER (also after a failed verification);
    [] where libssl cannot be reached."""
    lib = _chain_lib
    if lib is None or getattr(obj, "_sslobj", None) is None:
        return []
    ssl_ptr = tlssession._ssl_of(obj)  # type: ignore[arg-type]
    if not ssl_ptr:
        return []
    stack = lib.chain(ssl_ptr)
    if not stack:
        return []
    out: list[bytes] = []
    for i in range(min(lib.num(stack), MAX_CHAIN)):
        x509 = lib.value(stack, i)
        if not x509:
            break
        size = lib.i2d(x509, None)
        if size <= 0 or size > 64 * 1024:
            break
        buf = ctypes.create_string_buffer(size)
        cursor = ctypes.c_void_p(ctypes.addressof(buf))
        if lib.i2d(x509, ctypes.byref(cursor)) != size:
            break
        out.append(buf.raw)
    return out


# ---- a small DER walk: validity and names ------------------------------------------------------


def _tlv(data: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the element at `i`."""
    tag = data[i]
    length = data[i + 1]
    i += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[i : i + count], "big")
        i += count
    end = i + length
    if end > len(data):
        raise ValueError("DER element past the end")
    return tag, i, end


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _tlv(data, start)
        out.append((tag, s, e))
        start = e
    return out


def _tbs_fields(der: bytes) -> list[tuple[int, int, int]]:
    _, s, _e = _tlv(der, 0)  # Certificate
    _, ts, te = _tlv(der, s)  # tbsCertificate
    fields = _children(der, ts, te)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    return fields  # serial, signature, issuer, validity, subject, spki, [1], [2], [3]


def _time(der: bytes, tag: int, s: int, e: int) -> float:
    text = der[s:e].decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime: YYMMDDHHMM[SS]
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime
        raise ValueError("not a time")
    parts = (text[0:4], text[4:6], text[6:8], text[8:10], text[10:12], text[12:14] or "0")
    y, mo, d, h, mi, sec = (int(p) for p in parts)
    return float(calendar.timegm((y, mo, d, h, mi, sec, 0, 0, 0)))


def _validity(der: bytes) -> tuple[float, float]:
    fields = _tbs_fields(der)
    _, vs, ve = fields[3]
    (t1, s1, e1), (t2, s2, e2) = _children(der, vs, ve)[:2]
    return _time(der, t1, s1, e1), _time(der, t2, s2, e2)


def not_after(der: bytes) -> float | None:
    """The certificate's notAfter (seconds since the epoch), None if the DER does not parse.
    Remembered per certificate: a real sends the same one check after check, and the walk
    costs some 25 µs where the lookup costs 1 (a hash of its ~1 KiB)."""
    found = _ends.get(der, _UNSEEN)
    if found is not _UNSEEN:
        return found  # type: ignore[return-value]
    try:
        end: float | None = _validity(der)[1]
    except (ValueError, IndexError, UnicodeDecodeError):
        end = None
    if len(_ends) >= MAX_ENDS:
        _ends.clear()  # ever new certificates: start again
    _ends[der] = end
    return end


MAX_ENDS: Final = 4096  # certificates remembered (~1-2 KiB each)
_UNSEEN: Final = object()
_ends: dict[bytes, float | None] = {}


def not_before(der: bytes) -> float | None:
    try:
        return _validity(der)[0]
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


_CN: Final = b"\x55\x04\x03"
_SAN: Final = b"\x55\x1d\x11"
_STRINGS: Final = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


def cert_names(der: bytes) -> list[str]:
    """The names a certificate is for: its subjectAltName DNS names and addresses, else its
    subject's common name ([] if the DER does not parse)."""
    try:
        return _names(der)
    except (ValueError, IndexError, UnicodeDecodeError):
        return []


def _names(der: bytes) -> list[str]:
    fields = _tbs_fields(der)
    names: list[str] = []
    for tag, s, _e in fields[6:]:
        if tag != 0xA3:
            continue
        _, es, ee = _tlv(der, s)  # Extensions
        for _, xs, xe in _children(der, es, ee):
            parts = _children(der, xs, xe)
            if der[parts[0][1] : parts[0][2]] != _SAN:
                continue
            _, os_, oe = parts[-1]  # the OCTET STRING holding GeneralNames
            _, gs, ge = _tlv(der, os_)
            for gtag, ns, ne in _children(der, gs, ge):
                if gtag == 0x82:
                    names.append(der[ns:ne].decode("ascii"))
                elif gtag == 0x87 and ne - ns in (4, 16):
                    names.append(str(ipaddress.ip_address(der[ns:ne])))
    if names:
        return [clean(n, 100) for n in names]
    _, ss, se = fields[4]  # subject
    for _, rs, re_ in _children(der, ss, se):  # RDN sets
        for _, as_, ae in _children(der, rs, re_):
            (_, os_, oe), (vtag, vs, ve) = _children(der, as_, ae)[:2]
            if der[os_:oe] == _CN and vtag in _STRINGS:
                names.append(clean(der[vs:ve].decode(_STRINGS[vtag]), 100))
    return names
