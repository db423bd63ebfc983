"""Every check's first packet, seen on the loopback wire: when each real was checked, by anyone.

bench/protocols.py needs one measure of "when was this real checked" that holds for lvsmon and
ldirectord alike and for every protocol's server, most of which log nothing per connection. The
kernel sees it for all of them: a check opens a TCP connection (a SYN without ACK) or sends a
datagram to the server's port. This is a packet socket on `lo` with a classic BPF filter that
passes only those, stamped by the kernel (SO_TIMESTAMPNS), read by one thread. Only inside the
private network namespace bench/protocols.py creates (it needs root, and sees only that
namespace's loopback).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import threading
from typing import Final

ETH_P_IP: Final = 0x0800
SO_ATTACH_FILTER: Final = 26
SO_TIMESTAMPNS: Final = 35
SOL_PACKET: Final = 263
PACKET_IGNORE_OUTGOING: Final = 23  # each loopback packet is seen leaving and arriving: once
SNAP: Final = 64  # bytes kept per packet: the IP header and the ports are all we read

# classic BPF opcodes
_LDB_ABS, _LDH_ABS, _LDXB_MSH = 0x30, 0x28, 0xB1
_LDH_IND, _LDB_IND = 0x48, 0x50
_AND_K, _JEQ_K, _JSET_K, _RET_K = 0x54, 0x15, 0x45, 0x06


def filter_program(port: int) -> list[tuple[int, int, int, int]]:
    """IPv4 to `port`: a TCP SYN without ACK (a connection opened), or any UDP datagram. The
    packet socket is SOCK_DGRAM, so offsets count from the IP header."""
    accept, reject = 14, 15
    prog = [
        (_LDB_ABS, 0, 0, 9),  # 0: A = protocol
        (_JEQ_K, 0, 0, 6),  # 1: TCP? (jf patched below)
        (_LDH_ABS, 0, 0, 6),  # 2: fragment offset
        (_JSET_K, 0, 0, 0x1FFF),  # 3: a later fragment: no ports in it (jt patched)
        (_LDXB_MSH, 0, 0, 0),  # 4: X = IP header length
        (_LDH_IND, 0, 0, 2),  # 5: A = destination port
        (_JEQ_K, 0, 0, port),  # 6: (jf patched)
        (_LDB_IND, 0, 0, 13),  # 7: A = TCP flags
        (_AND_K, 0, 0, 0x12),  # 8: SYN and ACK bits
        (_JEQ_K, 0, 0, 0x02),  # 9: SYN alone (jt, jf patched)
        (_JEQ_K, 0, 0, 17),  # 10: UDP? (A is still the protocol)
        (_LDXB_MSH, 0, 0, 0),  # 11
        (_LDH_IND, 0, 0, 2),  # 12
        (_JEQ_K, 0, 0, port),  # 13
        (_RET_K, 0, 0, SNAP),  # 14: accept
        (_RET_K, 0, 0, 0),  # 15: reject
    ]

    def jump(at: int, jt: int | None = None, jf: int | None = None) -> None:
        code, t, f, k = prog[at]
        prog[at] = (code, t if jt is None else jt - at - 1, f if jf is None else jf - at - 1, k)

    jump(1, jf=10)
    jump(3, jt=reject)
    jump(6, jf=reject)
    jump(9, jt=accept, jf=reject)
    jump(10, jf=reject)
    jump(13, jt=accept, jf=reject)
    return prog


class Wire:
    """Records (kernel time, destination address) of every check opening to `port` whose
    destination starts with `prefix`, until closed."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.seen: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        try:
            self._attach(filter_program(port))
            with contextlib.suppress(OSError):  # older kernels: each packet counted twice
                self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            self.sock.bind(("lo", ETH_P_IP))
            self.sock.settimeout(0.2)
        except BaseException:
            self.sock.close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"wire:{port}", daemon=True)
        self._thread.start()

    def _attach(self, prog: list[tuple[int, int, int, int]]) -> None:
        code = b"".join(struct.pack("HBBI", *insn) for insn in prog)
        self._code = ctypes.create_string_buffer(code)  # must outlive the setsockopt
        fprog = struct.pack("HL", len(prog), ctypes.addressof(self._code))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def _run(self) -> None:
        cmsg_space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(SNAP, cmsg_space)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 20:
                continue
            stamp = None
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    stamp = sec + nsec / 1e9
            if stamp is None:
                continue
            address = socket.inet_ntoa(data[16:20])
            if address.startswith(self.prefix):
                with self._lock:
                    self.seen.append((stamp, address))

    def between(self, start: float, end: float) -> dict[str, list[float]]:
        """Times each address was checked in [start, end] (time.time() clock)."""
        out: dict[str, list[float]] = {}
        with self._lock:
            seen = list(self.seen)
        for t, address in seen:
            if start <= t <= end:
                out.setdefault(address, []).append(t)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
