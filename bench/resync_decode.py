"""The Python CPU of one resync's reads in NetlinkBackend, on the host, without a kernel (issue 23
point 6: the VIP path's resync share).

    .venv/bin/python bench/resync_decode.py [--probes 1000] [--rounds 60] [--profile]

A stand-in socket answers the backend's dump requests the way the kernel does (6.1,
ip_vs_genl_dump_services / _dests): one netlink message per service (nlmsg flags NLM_F_MULTI,
our seq and port id; the generic header IPVS_CMD_NEW_SERVICE; the service attributes in the
kernel's order, the address as 16 bytes, then IPVS_SVC_ATTR_STATS and _STATS64 with ten
counters each), packed into datagrams of at most 32 KiB (netlink_dump's skb for a 1 MiB
receive buffer), NLMSG_DONE in a datagram of its own; a destination dump as one datagram with
the record and one with DONE. The table: one virtual service (tcp, 1,000 gate reals) and
--probes firewall-mark probe services of one destination each, as checkpath=vip programs them.
The counters differ between consecutive dumps (two sets, alternating), as they do under traffic.

Two shapes of resync are timed, each --rounds times after two warm-up rounds, through
`NetlinkBackend._dump_with` (the socket's own work, a `bytes.join` per datagram, is inside):

* `light`: what the reconciler asks at 11 of every 12 resyncs with checkpath=vip
  (`dump_known` with the probe services as known): the service records only, plus the
  virtual's destinations;
* `full`: every 12th (`dump`): every service's destinations as well, one dump each.

`records_us` is the service records alone (every service known, no destination read): the
part a checkpath=vip daemon pays on top of a checkpath=real one at each resync. `per_resync_us`
weighs light and full 11:1. Prints a table, then one JSON line. --profile prints a cProfile
of the light rounds (cumulative, the first 25 rows) before it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import json
import pstats
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lvsmon.ipvs import netlink_codec as codec
from lvsmon.ipvs.model import (
    DestConf,
    DestKey,
    Forward,
    ServiceConf,
    ServiceKey,
    Table,
)
from lvsmon.ipvs.netlink import NetlinkBackend

NLMSG = struct.Struct("=IHHII")
NLM_F_MULTI = 2
NLMSG_DONE = 3
FAMILY_ID = 0x1D
PORT_ID = 4242
DATAGRAM_MAX = 32 * 1024 - 320  # SKB_WITH_OVERHEAD(32768), roughly
MARK_BASE = 0x4C560000
VIP = "10.32.255.101"


def nla(kind: int, payload: bytes) -> bytes:
    return codec._nla(kind, payload)


def stats(kind: int, seed: int, wide: bool) -> bytes:
    fmt = "=Q" if wide else "=I"
    return nla(
        kind, b"".join(nla(i, struct.pack(fmt, (seed * i) & 0xFFFFFFFF)) for i in range(1, 11))
    )


def service_attrs(key: ServiceKey, conf: ServiceConf, seed: int) -> bytes:
    """IPVS_CMD_ATTR_SERVICE as ip_vs_genl_fill_service writes it."""
    attrs = nla(codec.SVC_AF, struct.pack("=H", socket.AF_INET))
    if key.is_fwmark:
        attrs += nla(codec.SVC_FWMARK, struct.pack("=I", key.fwmark))
    else:
        assert key.address is not None
        attrs += nla(codec.SVC_PROTOCOL, struct.pack("=H", socket.IPPROTO_TCP))
        attrs += nla(codec.SVC_ADDR, ipaddress.ip_address(key.address).packed.ljust(16, b"\0"))
        attrs += nla(codec.SVC_PORT, struct.pack("!H", key.port))
    attrs += nla(codec.SVC_SCHED_NAME, conf.scheduler.encode() + b"\0")
    attrs += nla(codec.SVC_FLAGS, struct.pack("=II", 0, 0xFFFFFFFF))
    attrs += nla(codec.SVC_TIMEOUT, struct.pack("=I", 0))
    attrs += nla(codec.SVC_NETMASK, struct.pack("=I", 0xFFFFFFFF))
    attrs += stats(codec.SVC_STATS, seed, False) + stats(codec.SVC_STATS64, seed, True)
    return codec.GENL_HDR.pack(codec.CMD_NEW_SERVICE, 1, 0) + nla(codec.CMD_ATTR_SERVICE, attrs)


def dest_attrs(dest: DestKey, seed: int) -> bytes:
    attrs = (
        nla(codec.DEST_ADDR, ipaddress.ip_address(dest.address).packed.ljust(16, b"\0"))
        + nla(codec.DEST_PORT, struct.pack("!H", dest.port))
        + nla(codec.DEST_FWD_METHOD, struct.pack("=I", 3))
        + nla(codec.DEST_WEIGHT, struct.pack("=I", 1))
        + nla(codec.DEST_U_THRESH, struct.pack("=I", 0))
        + nla(codec.DEST_L_THRESH, struct.pack("=I", 0))
        + nla(codec.DEST_ACTIVE_CONNS, struct.pack("=I", seed & 7))
        + nla(codec.DEST_INACT_CONNS, struct.pack("=I", seed & 3))
        + nla(9, struct.pack("=I", 0))  # persistent conns
        + stats(10, seed, False)
        + nla(codec.DEST_ADDR_FAMILY, struct.pack("=H", socket.AF_INET))
        + stats(12, seed, True)
    )
    return codec.GENL_HDR.pack(codec.CMD_NEW_DEST, 1, 0) + nla(codec.CMD_ATTR_DEST, attrs)


class Reply:
    """One dump's datagrams as templates split at the seq fields: the seq goes in by one
    bytes.join per datagram."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.datagrams: list[list[bytes]] = []
        current: list[bytes] = []
        size = 0
        for payload in payloads:
            length = NLMSG.size + len(payload)
            if size + length > DATAGRAM_MAX and current:
                self.datagrams.append(self._split(current))
                current, size = [], 0
            current.append(NLMSG.pack(length, FAMILY_ID, NLM_F_MULTI, 0, PORT_ID) + payload)
            size += length
        if current:
            self.datagrams.append(self._split(current))
        done = NLMSG.pack(NLMSG.size + 4, NLMSG_DONE, NLM_F_MULTI, 0, PORT_ID) + b"\0" * 4
        self.datagrams.append(self._split([done]))

    @staticmethod
    def _split(messages: list[bytes]) -> list[bytes]:
        pieces, carry = [], b""
        for message in messages:
            pieces.append(carry + message[:8])
            carry = message[12:]
        pieces.append(carry)
        return pieces

    def render(self, seq: int) -> list[bytes]:
        field = struct.pack("=I", seq)
        return [field.join(pieces) for pieces in self.datagrams]


class Kernel:
    """Answers NetlinkBackend's raw socket: send() takes a request, recv_into() hands out its
    reply datagram by datagram."""

    def __init__(self, probes: int) -> None:
        self.virtual = ServiceKey.inet("tcp", VIP, 80)
        self.keys = [self.virtual] + [ServiceKey.fwm(MARK_BASE + i) for i in range(probes)]
        reals = [DestKey(str(ipaddress.ip_address("10.32.1.1") + i), 80) for i in range(1000)]
        self.dests: dict[bytes, list[Reply]] = {}
        conf = ServiceConf(scheduler="wlc")
        probe_conf = ServiceConf(scheduler="rr")
        self.services = [
            Reply(
                [
                    service_attrs(key, conf if key is self.virtual else probe_conf, seed + i)
                    for i, key in enumerate(self.keys)
                ]
            )
            for seed in (1, 2)
        ]
        for index, key in enumerate(self.keys):
            mine = reals if key is self.virtual else [DestKey(reals[(index - 1) % 1000].address, 0)]
            body = codec.dump_dests(key).body
            self.dests[body] = [Reply([dest_attrs(d, seed) for d in mine]) for seed in (1, 2)]
        self.turn = 0
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> int:
        _, _, _, seq, _ = NLMSG.unpack_from(data)
        body = data[NLMSG.size :]
        if body == codec.dump_services().body:
            self.turn += 1
            reply = self.services[self.turn & 1]
        else:
            reply = self.dests[body][self.turn & 1]
        self.pending = reply.render(seq)
        self.pending.reverse()
        return len(data)

    def recv_into(self, view: memoryview) -> int:
        datagram = self.pending.pop()
        view[: len(datagram)] = datagram
        return len(datagram)

    def close(self) -> None:
        pass


class Sock:
    prid = FAMILY_ID


def backend_for(kernel: Kernel) -> NetlinkBackend:
    backend = NetlinkBackend()
    backend._raw = kernel  # type: ignore[assignment]
    return backend


def run(coro: Any) -> Any:
    """Drives a coroutine that never suspends (the dump reads the stand-in synchronously)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the dump suspended")


def timed(rounds: int, once: Any) -> float:
    """Mean CPU us of one call (process time: the host is shared)."""
    once()
    once()
    start = time.process_time()
    for _ in range(rounds):
        once()
    return (time.process_time() - start) / rounds * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    kernel = Kernel(args.probes)
    backend = backend_for(kernel)
    sock = Sock()
    table: Table = run(backend._dump_with(sock))
    assert len(table) == 1 + args.probes, len(table)
    assert len(table[kernel.virtual].dests) == 1000
    assert all(s.dests == {d: DestConf(Forward.GATE, 1) for d in s.dests} for s in table.values())
    known = {k: table[k] for k in kernel.keys[1:]}

    def light() -> None:
        fresh = run(backend._dump_with(sock, known))
        assert len(fresh) == len(table)

    def records() -> None:
        fresh = run(backend._dump_with(sock, table))
        assert len(fresh) == len(table)

    def full() -> None:
        fresh = run(backend._dump_with(sock))
        assert len(fresh) == len(table)

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.rounds):
            records()
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)

    records_us = timed(args.rounds, records)
    light_us = timed(args.rounds, light)
    full_us = timed(max(args.rounds // 6, 3), full)
    per_resync = (11 * light_us + full_us) / 12
    print(f"{'resync':<10}{'us':>12}")
    print(f"{'records':<10}{records_us:>12.1f}")
    print(f"{'light':<10}{light_us:>12.1f}")
    print(f"{'full':<10}{full_us:>12.1f}")
    print(f"{'11:1':<10}{per_resync:>12.1f}")
    result = {
        "services": len(kernel.keys),
        "datagrams": len(kernel.services[0].datagrams),
        "records_us": round(records_us, 1),
        "light_us": round(light_us, 1),
        "full_us": round(full_us, 1),
        "per_resync_us": round(per_resync, 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(result))
    asyncio.run(backend.close())
    return 0


if __name__ == "__main__":
    sys.exit(main())
