"""How long 10,000 destination changes take: netlink vs one `ipvsadm -R` vs one ipvsadm per change.

Needs root and a kernel with IPVS; it rewrites the whole IPVS table, so run it only in the
throwaway VM:  tests/vm/run --exec ".venv/bin/python bench/reconcile.py"

Workload: SERVICES tcp services; each starts with 60 destinations, and the change set per
service adds 40, edits the weight of 40 and deletes 20 (100 changes per service). The ops come
from lvsmon's own diff(). Every method starts from the same table and must end at the same one,
checked with `ipvsadm -Sn` (the real tool reading the kernel) after each method.
The per-process method runs `/bin/sh -c "/sbin/ipvsadm ..."` per change, as ldirectord's
system() calls do. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from lvsmon.ipvs.diff import diff
from lvsmon.ipvs.errors import OpResult
from lvsmon.ipvs.ipvsadm import find_ipvsadm
from lvsmon.ipvs.ipvsadm_format import op_line, parse_save
from lvsmon.ipvs.model import DestConf, DestKey, Forward, Service, ServiceConf, ServiceKey, Table
from lvsmon.ipvs.netlink import NetlinkBackend
from lvsmon.ipvs.ops import AddDest, AddService, DeleteDest, DeleteService, EditDest, Op

START_DESTS = 60  # per service; the change set then deletes 20, edits 40 and adds 40


def service_key(index: int) -> ServiceKey:
    return ServiceKey.inet("tcp", f"10.100.{index // 250}.{index % 250 + 1}", 80)


def dest_key(service: int, index: int) -> DestKey:
    return DestKey.of(f"10.{200 + service // 250}.{service % 250}.{index + 1}", 80)


def tables(services: int) -> tuple[Table, Table]:
    """The starting table and the wanted one."""
    start: Table = {}
    want: Table = {}
    for s in range(services):
        conf = ServiceConf(scheduler="wlc")
        start[service_key(s)] = Service(
            conf, {dest_key(s, d): DestConf(Forward.GATE, 1) for d in range(START_DESTS)}
        )
        dests = {dest_key(s, d): DestConf(Forward.GATE, 5) for d in range(20, 60)}
        dests.update({dest_key(s, d): DestConf(Forward.GATE, 2) for d in range(60, 100)})
        want[service_key(s)] = Service(conf, dests)
    return start, want


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_ok(method: str, results: Sequence[OpResult]) -> None:
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{method}: {len(failed)} ops failed, first: {failed[0].error}")


async def load(backend: NetlinkBackend, start: Table) -> None:
    """Empties the kernel table, then writes the starting table (not timed)."""
    current = parse_save(ipvsadm("-Sn"))
    ops: list[Op] = [DeleteService(key) for key in current]
    for key, service in start.items():
        ops.append(AddService(key, service.conf))
        ops += [AddDest(key, dest, conf) for dest, conf in service.dests.items()]
    check_ok("load", await backend.apply(ops))


def ipvsadm(*args: str) -> str:
    return subprocess.run([IPVSADM, *args], check=True, capture_output=True, text=True).stdout


def verify(method: str, want: Table) -> None:
    have = parse_save(ipvsadm("-Sn"))
    if set(have) != set(want):
        raise SystemExit(f"{method}: wrong services after the run")
    for key, service in want.items():
        got = {d: (c.forward, c.weight) for d, c in have[key].dests.items()}
        wanted = {d: (c.forward, c.weight) for d, c in service.dests.items()}
        if got != wanted:
            missing = len(wanted.keys() - got.keys())
            extra = len(got.keys() - wanted.keys())
            raise SystemExit(f"{method}: {key} differs ({missing} missing, {extra} extra)")
    progress(f"  {method}: table verified with ipvsadm -Sn")


async def run_netlink(backend: NetlinkBackend, ops: list[Op]) -> float:
    began = time.perf_counter()
    results = await backend.apply(ops)
    elapsed = time.perf_counter() - began
    check_ok("netlink", results)
    return elapsed


def run_batch(ops: list[Op]) -> float:
    script = "".join(op_line(op) + "\n" for op in ops)
    began = time.perf_counter()
    done = subprocess.run([IPVSADM, "-R"], input=script, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    if done.returncode != 0 or done.stderr:
        raise SystemExit(f"ipvsadm -R failed ({done.returncode}): {done.stderr[:500]}")
    return elapsed


def run_per_process(ops: list[Op]) -> float:
    """One shell and one ipvsadm per change, the way ldirectord's system() runs them."""
    began = time.perf_counter()
    step = max(1, len(ops) // 20)
    for n, op in enumerate(ops, 1):
        command = f"{shlex.quote(IPVSADM)} {op_line(op)}"
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"per-process: {command!r} failed: {done.stderr.strip()}")
        if n % step == 0:
            spent = time.perf_counter() - began
            left = spent / n * (len(ops) - n)
            progress(f"  per-process: {n}/{len(ops)} in {spent:.0f} s, ~{left:.0f} s left")
    return time.perf_counter() - began


def count(ops: list[Op], kind: type) -> int:
    return sum(isinstance(op, kind) for op in ops)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100, help="services (100 changes each)")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        print("needs root and IPVS: run it in the VM (see bench/README.md)", file=sys.stderr)
        return 2
    return asyncio.run(bench(args))


async def bench(args: argparse.Namespace) -> int:
    start, want = tables(args.services)
    ops = diff(want, start, managed=set(want))
    adds, edits, deletes = count(ops, AddDest), count(ops, EditDest), count(ops, DeleteDest)
    progress(
        f"{len(ops)} changes on {args.services} services: "
        f"{adds} adds, {edits} weight edits, {deletes} deletes"
    )

    backend = NetlinkBackend()
    try:
        await load(backend, start)
        progress("netlink: one apply() ...")
        netlink_s = await run_netlink(backend, ops)
        progress(f"  netlink: {netlink_s:.2f} s")
        verify("netlink", want)

        await load(backend, start)
        progress("ipvsadm -R: one batch ...")
        batch_s = run_batch(ops)
        progress(f"  batch: {batch_s:.2f} s")
        verify("batch", want)

        await load(backend, start)
        progress(f"one ipvsadm per change: {len(ops)} processes ...")
        per_process_s = run_per_process(ops)
        verify("per-process", want)

        await load(backend, {})
    finally:
        await backend.close()

    rows = [
        ("netlink, one apply()", netlink_s),
        ("ipvsadm -R, one batch", batch_s),
        ("one ipvsadm per change", per_process_s),
    ]
    print(
        f"\n{len(ops)} destination changes on {args.services} services "
        f"({adds} adds, {edits} weight edits, {deletes} deletes), kernel {platform.release()}"
        + (", under QEMU TCG emulation" if os.environ.get("LVSMON_IN_VM") else "")
    )
    print(f"{'method':<26}{'seconds':>10}{'ms/change':>11}{'x netlink':>11}")
    for name, seconds in rows:
        print(
            f"{name:<26}{seconds:>10.2f}{seconds / len(ops) * 1000:>11.3f}"
            f"{seconds / netlink_s:>11.1f}"
        )
    result = {
        "changes": len(ops),
        "services": args.services,
        "netlink_s": round(netlink_s, 4),
        "batch_s": round(batch_s, 4),
        "per_process_s": round(per_process_s, 4),
        "per_process_over_netlink_x": round(per_process_s / netlink_s, 1),
        "batch_over_netlink_x": round(batch_s / netlink_s, 2),
        "per_process_over_batch_x": round(per_process_s / batch_s, 1),
        "netlink_changes_per_s": round(len(ops) / netlink_s),
        "kernel": platform.release(),
        "emulated": bool(os.environ.get("LVSMON_IN_VM")),
    }
    print(json.dumps(result))
    return 0


IPVSADM = find_ipvsadm() or "/sbin/ipvsadm"

if __name__ == "__main__":
    sys.exit(main())
