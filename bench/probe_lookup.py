"""What 10,000 probe services cost the kernel's IPVS lookup (issue 23 point 6), in the VM.

    flock /work/notes/vm.lock tests/vm/run --exec ".venv/bin/python bench/probe_lookup.py"

Checks through the VIP (docs/operations.md, "Checking through the VIP") give every real a
firewall-mark "probe service" (lvsmon/engine/probepath.py). IPVS looks a new connection's service
up in the firewall-mark table first, but only for a packet with a non-zero mark; that table has
256 buckets (hash: mark xor the netns pointer, low 8 bits), so 10,000 probe services with
consecutive marks make chains of 39-40. Measured here:

* the production path: a client namespace connects to an ordinary DR service VIP:80 (unmarked,
  so the firewall-mark table should never be read);
* the probe path: the director connects to VIP:80 with SO_MARK = one probe service's mark, bound
  to its own address with IP_BIND_ADDRESS_NO_PORT (lvsmon/checks/viapath.py `Route.steer`). That
  service was programmed first, so the extra services sit before it in its bucket's chain
  (hlist_add_head): the lookup walks the whole chain, the worst case;
* the idle director (IPVS keeps a rate estimator per service and per destination; before 6.2 one
  timer walks them all every 2 s), with the estimators on and, at 10,000, off
  (net.ipv4.vs.run_estimation=0). Read from /proc/stat, which samples at the tick: work the
  tick's own timer softirq does on an idle CPU is never sampled, so the estimators' timer may
  not show here at all (one tick in a 20 s window is 0.5 ms/s, the resolution);
* the kernel memory of the extra services (/proc/meminfo Slab + Percpu) and how long `ipvsadm
  -R` takes to program and to delete them. Only the first programming shows the memory: the
  second reuses the slab objects the deletion freed.

One DR segment (bridge pl-br): the director 10.36.0.1/16 holding the VIP, a namespace pl-rs with
the reals' addresses and the VIP on `lo` (arp_ignore=1, arp_announce=2) and a server accepting and
closing on *:80, a client namespace pl-cl (10.36.0.2). Four rounds in one VM, interleaved so that
the host's load falls on both states alike: 0, 10,000, 0, 10,000 extra firewall-mark services in
the probe block (`-A -f MARK -s rr` with one destination `-r RIP:0 -g -w 1`, as lvsmon programs
them). Each window is a fixed count of connections by a plain-socket loop in a process of its
own: socket, SO_LINGER 0 (the close sends RST: no TIME_WAIT anywhere), connect, close; every
window starts when the director's IPVS connection table is empty again (entries closed by RST
expire in 10 s), so each meets the same table. The IPVS counters must show every connection in
the service it was meant for (0.1 % fewer allowed) and none in the other. Prints one JSON line;
nothing outside the VM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from checkpath_cost import SERVER, sh  # the same accept-and-close server, the same runner
from procs import Cleanup, log, quantile, start_run

from lvsmon.checks.viapath import IP_BIND_ADDRESS_NO_PORT, SO_MARK

BASE = 0x4C560000  # lvsmon's default checkmarkbase
NS_RS, NS_CL, BRIDGE = "pl-rs", "pl-cl", "pl-br"
DIRECTOR, CLIENT, VIP = "10.36.0.1", "10.36.0.2", "10.36.255.100"
USER_HZ = os.sysconf("SC_CLK_TCK")
LINGER_RST = struct.pack("ii", 1, 0)
STATS_LAG_S = 3.0


def rip(i: int) -> str:
    return f"10.36.{1 + i // 250}.{1 + i % 250}"


def extra_rip(i: int) -> str:
    """The destination of extra probe service i: never contacted, DR needs no route to add it."""
    return f"10.37.{i // 250}.{1 + i % 250}"


def cpu_ticks() -> tuple[int, int]:
    """(system + irq + softirq, every non-idle state) ticks of the whole VM so far."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return system + irq + softirq, user + nice + system + irq + softirq


# ---------------------------------------------------------------- the client loop (own process)


def worker(path: str, count: int) -> dict[str, object]:
    """`count` connections to VIP:80, one after the other; the time of each and the CPU."""
    times: list[float] = []
    errors: dict[str, int] = {}
    sys0, all0 = cpu_ticks()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter_ns()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            # one SYN retransmission at most: a lost packet shows as a ~1 s outlier, never a hang
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1)
            if path == "probe":
                s.setsockopt(socket.SOL_SOCKET, SO_MARK, BASE)
                s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((DIRECTOR, 0))
            s.connect((VIP, 80))
        except OSError as exc:
            key = type(exc).__name__
            errors[key] = errors.get(key, 0) + 1
        finally:
            s.close()
        times.append((time.perf_counter_ns() - t0) / 1000)
    wall = time.perf_counter() - start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    sys1, all1 = cpu_ticks()
    tick_us = 1e6 / USER_HZ
    return {
        "path": path,
        "count": count,
        "errors": errors,
        "conn_per_s": round(count / wall, 1),
        "conn_us_p50": round(quantile(times, 0.5), 1),
        "conn_us_p99": round(quantile(times, 0.99), 1),
        "conn_us_mean": round(sum(times) / count, 1),
        "proc_user_us_per_conn": round((ru1.ru_utime - ru0.ru_utime) / count * 1e6, 1),
        "proc_sys_us_per_conn": round((ru1.ru_stime - ru0.ru_stime) / count * 1e6, 1),
        "vm_sys_us_per_conn": round((sys1 - sys0) * tick_us / count, 1),
        "vm_cpu_us_per_conn": round((all1 - all0) * tick_us / count, 1),
    }


# ---------------------------------------------------------------- the director's side


def restore(lines: list[str]) -> float:
    """`ipvsadm -R` of these lines; its wall time in seconds."""
    text = "\n".join(lines) + "\n"
    t0 = time.monotonic()
    sh("ipvsadm", "-R", stdin=text)
    return time.monotonic() - t0


def fwmark_services() -> int:
    return len(re.findall(r"^-A -f ", sh("ipvsadm", "-Sn"), re.M))


def conns_of(*service: str) -> int:
    """The IPVS 'Conns' counter of one service (`-t VIP:80` or `-f MARK`)."""
    for line in sh("ipvsadm", "-Ln", "--stats", "--exact", *service).splitlines():
        if line.startswith(("TCP ", "FWM ")):
            return int(line.split()[2])
    raise SystemExit(f"ipvsadm shows no service {' '.join(service)}")


def ipvs_connections() -> int:
    with open("/proc/net/ip_vs_conn", encoding="ascii") as f:
        return sum(1 for _ in f) - 1


def drain(within: float = 60.0) -> float:
    """Wait until the IPVS connection table is (nearly) empty; the seconds it took."""
    t0 = time.monotonic()
    while ipvs_connections() > 20:
        if time.monotonic() - t0 > within:
            raise SystemExit(f"IPVS connection entries still {ipvs_connections()} after {within} s")
        time.sleep(1.0)
    return time.monotonic() - t0


def meminfo_kib() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        if name in ("Slab", "SUnreclaim", "Percpu", "MemAvailable", "MemFree"):
            out[name] = int(value.split()[0])
    return out


def slab_kib() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        out[f[0]] = int(f[1]) * int(f[3]) / 1024  # active objects x object size
    return out


def idle_window(seconds: float) -> float:
    """The VM's system + irq + softirq time while nothing runs but the kernel, ms per s."""
    sys0, _ = cpu_ticks()
    t0 = time.monotonic()
    time.sleep(seconds)
    sys1, _ = cpu_ticks()
    return round((sys1 - sys0) * 1000 / USER_HZ / (time.monotonic() - t0), 2)


def run_worker(path: str, count: int) -> dict[str, object]:
    me = [sys.executable, str(Path(__file__).resolve()), "--worker", path, "--count", str(count)]
    cmd = ["ip", "netns", "exec", NS_CL, *me] if path == "prod" else me
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode:
        raise SystemExit(f"{path} worker: {done.stderr.strip()[-500:]}")
    got: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


def window(path: str, count: int) -> dict[str, object]:
    """One window on one path, checked against the IPVS counters of both services."""
    prod = ("-t", f"{VIP}:80")
    probe = ("-f", str(BASE))
    # the counters userspace reads are summed from the per-CPU ones by the rate estimator's
    # timer, every 2 s (6.1): read them once it has run past the last window's connections
    time.sleep(STATS_LAG_S)
    p0, q0 = conns_of(*prod), conns_of(*probe)
    got = run_worker(path, count)
    errors = got["errors"]
    assert isinstance(errors, dict)
    ok = count - sum(errors.values())
    want = (ok, 0) if path == "prod" else (0, ok)
    end = time.monotonic() + 4 * STATS_LAG_S
    while True:
        dp, dq = conns_of(*prod) - p0, conns_of(*probe) - q0
        if (dp, dq) == want or time.monotonic() > end:
            break
        time.sleep(0.5)
    got["ipvs_conns_prod"], got["ipvs_conns_probe"] = dp, dq
    own, other = (dp, dq) if path == "prod" else (dq, dp)
    # a connection IPVS does not count anew happens (1 in 6,000 once: a client port whose entry
    # is still there, presumably); one counted in the other service never may
    if ok != count or other != 0 or not 0 <= ok - own <= count // 1000:
        raise SystemExit(f"{path}: {ok}/{count} connected, IPVS counted {dp} prod, {dq} probe")
    return got


def wait_listening(address: str, within: float) -> None:
    """Until the server accepts on the real's own address (Python starts slowly under TCG)."""
    end = time.monotonic() + within
    while True:
        try:
            socket.create_connection((address, 80), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise SystemExit(f"no server on {address}:80 within {within} s") from None
            time.sleep(0.5)


def setup(reals: int, cleanup: Cleanup) -> None:
    teardown()
    cleanup.add("namespaces, bridge and IPVS table", teardown)
    sh("ip", "netns", "add", NS_RS)
    sh("ip", "netns", "add", NS_CL)
    batch = [
        f"link add {BRIDGE} type bridge", f"addr add {DIRECTOR}/16 dev {BRIDGE}",
        f"addr add {VIP}/32 dev {BRIDGE}", f"link set {BRIDGE} up",
        f"link add {NS_RS} type veth peer name eth0 netns {NS_RS}",
        f"link set {NS_RS} master {BRIDGE} up",
        f"link add {NS_CL} type veth peer name eth0 netns {NS_CL}",
        f"link set {NS_CL} master {BRIDGE} up",
    ]  # fmt: skip
    sh("ip", "-batch", "-", stdin="\n".join(batch) + "\n")
    inner = ["link set lo up", f"addr add {VIP}/32 dev lo", "link set eth0 up"]
    inner += [f"addr add {rip(i)}/16 dev eth0" for i in range(reals)]
    sh("ip", "-n", NS_RS, "-batch", "-", stdin="\n".join(inner) + "\n")
    client = ["link set lo up", "link set eth0 up", f"addr add {CLIENT}/16 dev eth0"]
    sh("ip", "-n", NS_CL, "-batch", "-", stdin="\n".join(client) + "\n")
    for name, value in (("arp_ignore", 1), ("arp_announce", 2)):
        sh("ip", "netns", "exec", NS_RS, "sysctl", "-qw", f"net.ipv4.conf.all.{name}={value}")
    for key, value in (
        (f"net.ipv4.conf.{BRIDGE}.accept_local", 1),  # the probe's answer comes from the VIP
        ("net.ipv4.conf.all.rp_filter", 0),
        (f"net.ipv4.conf.{BRIDGE}.rp_filter", 0),
    ):
        sh("sysctl", "-qw", f"{key}={value}")
    lines = [f"-A -t {VIP}:80 -s rr"]
    lines += [f"-a -t {VIP}:80 -r {rip(i)}:80 -g -w 1" for i in range(reals)]
    lines += [f"-A -f {BASE} -s rr", f"-a -f {BASE} -r {rip(0)}:0 -g -w 1"]
    restore(lines)


def teardown() -> None:
    sh("ipvsadm", "-C", check=False)
    for ns in (NS_RS, NS_CL):
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


def mean(windows: list[dict[str, object]], state: str, key: str) -> float:
    got = [float(str(w[key])) for w in windows if w["state"] == state]
    return round(sum(got) / len(got), 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--extra", type=int, default=10000, help="extra probe services")
    ap.add_argument("--count", type=int, default=3000, help="connections per window")
    ap.add_argument("--reals", type=int, default=4, help="reals of the production service")
    ap.add_argument("--idle", type=float, default=20.0, help="idle window, s")
    ap.add_argument("--worker", choices=("prod", "probe"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.count)))
        return 0
    if not os.environ.get("LVSMON_IN_VM"):
        raise SystemExit("builds namespaces and programs IPVS: run it in the VM (tests/vm/run)")
    cleanup, _work = start_run("pl-", keep=False)
    server: subprocess.Popen[bytes] | None = None

    def stop_server() -> None:
        if server is not None:
            server.kill()
            server.wait()

    try:
        setup(args.reals, cleanup)
        server = subprocess.Popen(["ip", "netns", "exec", NS_RS, sys.executable, "-c", SERVER])
        cleanup.add("server", stop_server)
        wait_listening(rip(0), 60.0)
        log(f"kernel {os.uname().release}; warm-up")
        for path in ("prod", "probe"):  # ARP, route and code caches; proves both paths work
            window(path, 300)
        marks = [BASE + 1 + i for i in range(args.extra)]
        add = [
            f"-A -f {m} -s rr\n-a -f {m} -r {extra_rip(i)}:0 -g -w 1" for i, m in enumerate(marks)
        ]
        delete = [f"-D -f {m}" for m in marks]
        windows: list[dict[str, object]] = []
        rounds: list[dict[str, object]] = []
        for state in ("0", "10k", "0", "10k"):
            drain()
            event: dict[str, object] = {"state": state}
            if state == "10k":
                m0, s0 = meminfo_kib(), slab_kib()
                event["program_s"] = round(restore(add), 2)
                time.sleep(2.0)
                m1, s1 = meminfo_kib(), slab_kib()
                event["kernel_kib"] = (m1["Slab"] - m0["Slab"]) + (m1["Percpu"] - m0["Percpu"])
                event["meminfo_kib"] = {k: m1[k] - m0[k] for k in m1}
                grown = sorted(((s1.get(k, 0) - v0, k) for k, v0 in s0.items()), reverse=True)
                event["slab_kib"] = {k: round(d) for d, k in grown[:5]}
            elif fwmark_services() > 1:
                event["remove_s"] = round(restore(delete), 2)
            event["fwmark_services"] = fwmark_services()
            want = 1 + (args.extra if state == "10k" else 0)
            if event["fwmark_services"] != want:
                raise SystemExit(f"{event['fwmark_services']} firewall-mark services, not {want}")
            event["idle_sys_ms_per_s"] = idle_window(args.idle)
            if state == "10k":  # the same without the rate estimators (ipvsadm --rate shows 0)
                sh("sysctl", "-qw", "net.ipv4.vs.run_estimation=0")
                try:
                    event["idle_sys_ms_per_s_noest"] = idle_window(args.idle)
                finally:
                    sh("sysctl", "-qw", "net.ipv4.vs.run_estimation=1")
            rounds.append(event)
            log(json.dumps(event))
            for path in ("prod", "probe"):
                drain()
                got = window(path, args.count)
                got["state"] = state
                windows.append(got)
                log(json.dumps(got))
        prod = [w for w in windows if w["path"] == "prod"]
        probe = [w for w in windows if w["path"] == "probe"]
        result: dict[str, object] = {
            "kernel": os.uname().release, "count": args.count, "extra": args.extra,
            # consecutive marks: one in 256 shares the probe's bucket, all before it in the chain
            "probe_chain_len_10k": 1 + sum(1 for m in marks if m & 0xFF == BASE & 0xFF),
        }  # fmt: skip
        for name, group in (("prod", prod), ("probe", probe)):
            for key, unit in (
                ("conn_us_p50", "conn_us_p50"), ("conn_us_p99", "conn_us_p99"),
                ("conn_per_s", "conn_per_s"), ("proc_sys_us_per_conn", "sys_us_per_conn"),
                ("proc_user_us_per_conn", "user_us_per_conn"),
                ("vm_sys_us_per_conn", "vm_sys_us_per_conn"),
            ):  # fmt: skip
                for state, tag in (("0", "0"), ("10k", "10k")):
                    result[f"{name}_{unit}_{tag}"] = mean(group, state, key)
            p50_0, p50_k = result[f"{name}_conn_us_p50_0"], result[f"{name}_conn_us_p50_10k"]
            sys_0 = result[f"{name}_sys_us_per_conn_0"]
            sys_k = result[f"{name}_sys_us_per_conn_10k"]
            result[f"{name}_ratio"] = round(float(str(p50_k)) / float(str(p50_0)), 3)
            result[f"{name}_sys_ratio"] = round(float(str(sys_k)) / float(str(sys_0)), 3)
        for state, tag in (("0", "0"), ("10k", "10k")):
            result[f"idle_sys_ms_per_s_{tag}"] = mean(rounds, state, "idle_sys_ms_per_s")
        loaded = [r for r in rounds if r["state"] == "10k"]
        result["idle_sys_ms_per_s_10k_noest"] = mean(loaded, "10k", "idle_sys_ms_per_s_noest")
        result["program_10k_s"] = [r["program_s"] for r in loaded]
        result["remove_10k_s"] = [r["remove_s"] for r in rounds if "remove_s" in r]
        result["kernel_kib_10k"] = [r["kernel_kib"] for r in loaded]
        result["rounds"] = rounds
        result["windows"] = windows
        print(json.dumps(result))
        return 0
    finally:
        cleanup.run()


if __name__ == "__main__":
    sys.exit(main())
