"""lvsmon at the largest published pool's shape: start-up, reload, stop and idle cost (issue 22).

Host only, loopback only, as root:

    .venv/bin/python bench/many_virtuals.py [--virtuals 2284] [--reals 37298]
        [--check connect|http|on] [--interval 4] [--window 15] [--profile DIR] [--src TREE]
        [--startup-only] [--stop-command] [--keep]

and on the kernel's IPVS, in the throwaway VM only (no reals are checked there):

    tests/vm/run --exec ".venv/bin/python bench/many_virtuals.py --check on --backend netlink"

keepalived issue #2318 reported 2,284 virtual services with 37,298 reals (16-17 per virtual);
this builds that shape for lvsmon `--backend memory` (no kernel): virtuals 127.100.x.y:80, reals
127.77.x.y:PORT (127.78.x.y beyond 51,200), all answered by one Debian nginx listening on the
wildcard address (bench/scale.py's RealServers: `apt-get install -y nginx`); with
`--check on` no real is checked and nginx is not started. checktimeout=3, quiescent=no, a
fallback per virtual (127.0.0.1:80, never connected to: the memory backend), autoreload off.

One daemon, one after the other:

* startup_s: `lvsmon start` (detached; it returns once the first round of checks is
  programmed) until the status file shows every real up in the kernel (start_returned_s: the
  command alone); startup_cpu_s, the daemon's CPU until then;
* idle_cpu_pct, rss_mib: the daemon's CPU share and RSS over `--window` s of steady state
  (with checks, that is the checks' cost; with `--check on` the idle cost);
* reload_1pct_s, reload_1pct_ops: the config rewritten with 1 % of the reals (every 100th) at
  weight 2, SIGHUP, until the log says the config is loaded and every one of those weights was
  set (reload_1pct_ops_applied_s: until the last of those weights alone); ops = the status
  file's ops_applied difference, reload_1pct_downs = reals the log said were down or deleted
  meanwhile (a reload must not flap anything);
* reload_noop_s, reload_noop_ops: SIGHUP with the file unchanged, until the log's load line;
* reload_moved_s, reload_moved_ops, reload_moved_downs: one real added at the top of the first
  virtual (every block below it moves down a line: their line numbers change, nothing else),
  SIGHUP, until the load line; its ops 2.5 s later (1: the new real, once its first check
  passed);
  reload_*_cpu_s: the daemon's CPU from the SIGHUP to the end of each (the checks' included:
  the figure to read on a busy host, where the wall times stretch);
* stop_s: SIGTERM until the process is gone (stop_command_s: `lvsmon stop`'s wall time, its
  own Python start-up included, on a second daemon only with --stop-command).

`--profile DIR`: the daemon runs in the foreground under cProfile and writes DIR/lvsmon.prof at
its stop (startup then counts from the process's start; cProfile slows it by about 2x).
`--src TREE`: run that source tree's lvsmon (e.g. a `git archive` of an older commit; every
process runs from the work folder, so that `python -m` does not find the current tree first).
`--startup-only`: stop once every real is up. `--keep`: keep the work folder (config, log,
status file). The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from procs import (
    Cleanup,
    alive,
    cpu_seconds,
    free_port,
    kill_pid,
    log,
    lvsmon_command,
    memory_mib,
    read_pid,
    start_run,
    wait_gone,
)
from scale import LogTail, RealServers


def real_address(i: int) -> str:
    """The i-th real (0-based): 127.77.0.1 … 127.77.255.200, then 127.78.0.1 …"""
    block, i = divmod(i, 51_200)
    return f"127.{77 + block}.{i // 200}.{i % 200 + 1}"


def virtual_address(v: int) -> str:
    return f"127.100.{v // 250}.{v % 250 + 1}"


def write_config(
    path: str, virtuals: int, reals: int, port: int, check: str, interval: int, logfile: str,
    heavier: frozenset[int] = frozenset(), added: int = 0,
) -> list[str]:  # fmt: skip
    """The config; returns every real as "address:port". Reals are spread as evenly as they go
    (R // V each, one more for the first R % V); those in `heavier` get weight 2. `added`: so
    many more reals at the top of the first virtual (every block below moves down)."""
    lines = [
        "checktimeout=3",
        f"checkinterval={interval}",
        "quiescent=no",
        f'logfile="{logfile}"',
        "",
    ]
    if check == "http":
        per = ["\tservice=http", '\trequest="/"', '\treceive="still alive"']
        per.append("\tchecktype=negotiate")
    else:
        per = [f"\tchecktype={check}"]
    names: list[str] = []
    i = 0
    base, extra = divmod(reals, virtuals)
    for v in range(virtuals):
        lines.append(f"virtual={virtual_address(v)}:80")
        if v == 0:
            lines += [f"\treal={real_address(reals + k)}:{port} masq 1" for k in range(added)]
        for _ in range(base + (1 if v < extra else 0)):
            where = f"{real_address(i)}:{port}"
            names.append(where)
            lines.append(f"\treal={where} masq {2 if i in heavier else 1}")
            i += 1
        lines += ["\tfallback=127.0.0.1:80", "\tscheduler=wlc", "\tprotocol=tcp", *per, ""]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
    return names


def read_status(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def all_up(status: dict[str, Any], n: int) -> bool:
    up = 0
    for v in status.get("virtuals", []):
        for r in v["reals"]:
            if r["state"] == "up" and (r["kernel_weight"] or 0) > 0:
                up += 1
    return up == n


def ops_applied(status_path: str) -> int:
    status = read_status(status_path)
    stats = status.get("stats", {}) if status else {}
    return int(stats.get("ops_applied", -1)) if isinstance(stats, dict) else -1


def ops_after(path: str, since: float) -> int:
    """ops_applied of the first status file written after `since` (within 10 s)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        with contextlib.suppress(OSError):
            if os.stat(path).st_mtime > since:
                return ops_applied(path)
        time.sleep(0.05)
    return -1


def wait_status(path: str, n: int, since: float, timeout: float) -> float | None:
    """When the status file (rewritten every second) first showed every real up: the file's
    modification time."""
    deadline = time.time() + timeout
    seen = 0.0
    while time.time() < deadline:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            mtime = 0.0
        if mtime > since and mtime != seen:
            seen = mtime
            status = read_status(path)
            if status is not None and all_up(status, n):
                return mtime
        time.sleep(0.05)
    return None


LOADED = re.compile(r"Configuration .* loaded: \d+ virtual services")
DOWNS = re.compile(r" is down|Deleted real server|Quiescent real server")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--virtuals", type=int, default=2284)
    ap.add_argument("--reals", type=int, default=37298)
    ap.add_argument("--check", choices=("connect", "http", "on"), default="connect")
    ap.add_argument("--interval", type=int, default=4)
    ap.add_argument("--window", type=float, default=15.0, help="steady window (s)")
    ap.add_argument("--profile", help="run the daemon under cProfile, the profile in this folder")
    ap.add_argument("--src", help="a source tree to run instead of the installed lvsmon")
    ap.add_argument("--stop-command", action="store_true", help="also time `lvsmon stop`")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--startup-only", action="store_true", help="stop once every real is up")
    ap.add_argument(
        "--backend",
        choices=("memory", "netlink"),
        default="memory",
        help="netlink: the kernel's IPVS (only in the throwaway VM: tests/vm/run --exec)",
    )
    args = ap.parse_args()
    cleanup, workdir = start_run("lvsmon-many-virtuals-", args.keep)
    try:
        return run(args, cleanup, workdir)
    finally:
        cleanup.run()


def run(args: argparse.Namespace, cleanup: Cleanup, workdir: str) -> int:
    port = free_port()
    if args.check != "on":
        RealServers(workdir, port, cleanup)
    cfg, logfile = os.path.join(workdir, "bench.cf"), os.path.join(workdir, "lvsmon.log")
    pidfile = os.path.join(workdir, "l.pid")
    status_path = os.path.join(workdir, "l.status.json")
    names = write_config(cfg, args.virtuals, args.reals, port, args.check, args.interval, logfile)
    n = len(names)
    env = {**os.environ, "LVSMON_RESOLVER": "files"}
    if args.src:  # run from the work folder: `python -m` puts the current folder first
        env["PYTHONPATH"] = os.path.abspath(args.src)
    opts = ["--backend", args.backend, "--pid-file", pidfile]
    if args.backend != "memory":
        if os.environ.get("LVSMON_IN_VM") != "1":
            raise SystemExit("--backend netlink rewrites the IPVS table: run it in the VM")
        subprocess.run(["ipvsadm", "-C"], check=True)
        cleanup.add("ipvs table", clear_ipvs)
    base = [*lvsmon_command(args.src), *opts]
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None

    def stop_leftover() -> None:
        if pid is not None and alive(pid):
            kill_pid(pid, "lvsmon", grace=30)

    cleanup.add("daemon", stop_leftover)
    tail = LogTail(logfile)
    cleanup.add("log tail", tail.close)
    out: dict[str, object] = {
        "virtuals": args.virtuals, "reals": n, "check": args.check, "interval_s": args.interval,
        "backend": args.backend,
    }  # fmt: skip
    log(f"start: {args.virtuals} virtuals x {n} reals, {args.check} checks")
    t0 = time.time()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        prof = os.path.join(os.path.abspath(args.profile), "lvsmon.prof")
        argv = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "lvsmon", *opts]
        proc = subprocess.Popen([*argv, "--foreground", cfg, "start"], env=env, cwd=workdir)
        while pid is None and time.time() - t0 < 120:
            time.sleep(0.05)
            pid = read_pid(pidfile)
        out["profile"] = prof
    else:
        done = subprocess.run(
            [*base, cfg, "start"], env=env, timeout=900, check=False, cwd=workdir
        )  # fmt: skip
        out["start_returned_s"] = round(time.time() - t0, 2)
        pid = read_pid(pidfile)
        if done.returncode != 0:
            raise RuntimeError(f"lvsmon start failed ({done.returncode}); see {logfile}")
    if pid is None:
        raise RuntimeError(f"no pid file; see {logfile}")
    up = wait_status(status_path, n, t0, 900)
    if up is None:
        raise RuntimeError(f"not every real up within 900 s; see {logfile}")
    out["startup_s"] = round(up - t0, 2)
    out["startup_cpu_s"] = round(cpu_seconds(pid)[0], 2)
    log(f"every real up after {out['startup_s']} s")

    if args.startup_only:
        stop(out, pid, proc)
        print(json.dumps(out), flush=True)
        return 0
    time.sleep(2)
    w0, c0 = time.time(), cpu_seconds(pid)[0]
    time.sleep(args.window)
    w1, c1 = time.time(), cpu_seconds(pid)[0]
    out["idle_cpu_pct"] = round(100 * (c1 - c0) / (w1 - w0), 2)
    mem = memory_mib(pid)
    out["rss_mib"], out["peak_rss_mib"] = round(mem["VmRSS"], 1), round(mem["VmHWM"], 1)
    log(f"steady: {out['idle_cpu_pct']} % of a core, {out['rss_mib']} MiB")

    # a reload changing 1 % of the reals: every 100th at weight 2 (an EditDest each)
    heavier = frozenset(range(0, n, 100))
    write_config(
        cfg, args.virtuals, args.reals, port, args.check, args.interval, logfile, heavier
    )  # fmt: skip
    wanted = {names[i] for i in heavier}
    ops0 = ops_after(status_path, time.time())
    mark = len(tail.lines)
    t0, c0 = time.time(), cpu_seconds(pid)[0]
    os.kill(pid, signal.SIGHUP)
    left = set(wanted)
    downs = 0

    def weights_set(line: str) -> bool:
        nonlocal downs
        at = line.find("Restored real server: ")
        if at >= 0 and "(Weight set to 2)" in line:
            left.discard(line[at + 22 :].split(" ", 1)[0])
        if DOWNS.search(line):
            downs += 1
        return not left

    t_ops = tail.wait_for(weights_set, mark, 120)
    t_done = tail.wait_for(lambda line: LOADED.search(line) is not None, mark, 120)
    if t_ops is None or t_done is None:
        raise RuntimeError(f"1 % reload not seen within 120 s ({len(left)} weights left)")
    t_done = max(t_ops, t_done)
    out["reload_1pct_ops_applied_s"] = round(t_ops - t0, 3)
    out["reload_1pct_s"] = round(t_done - t0, 3)
    out["reload_1pct_cpu_s"] = round(cpu_seconds(pid)[0] - c0, 2)
    time.sleep(2.5)  # the status file shows new figures within a second; late downs would show
    late = sum(1 for t, line in tail.lines[mark:] if t > t_done and DOWNS.search(line))
    out["reload_1pct_ops"] = ops_after(status_path, time.time()) - ops0
    out["reload_1pct_changed"] = len(wanted)
    out["reload_1pct_downs"] = downs + late
    log(f"1 % reload: {out['reload_1pct_s']} s, {out['reload_1pct_ops']} ops")

    # a reload that changes nothing
    timed_reload(out, "noop", "no-op reload", pid, tail, status_path)
    log(f"no-op reload: {out['reload_noop_s']} s, {out['reload_noop_ops']} ops")

    # a real added at the top of the first virtual: every other block moves down a line
    write_config(
        cfg, args.virtuals, args.reals, port, args.check, args.interval, logfile, heavier, 1
    )  # fmt: skip
    mark = timed_reload(out, "moved", "reload adding a real", pid, tail, status_path)
    out["reload_moved_downs"] = sum(1 for _, line in tail.lines[mark:] if DOWNS.search(line))
    log(f"reload adding a real: {out['reload_moved_s']} s, {out['reload_moved_ops']} ops")

    stop(out, pid, proc)
    if args.stop_command and not args.profile:
        subprocess.run([*base, cfg, "start"], env=env, timeout=900, check=True, cwd=workdir)
        pid = read_pid(pidfile)
        t0 = time.time()
        subprocess.run([*base, cfg, "stop"], env=env, timeout=120, check=False, cwd=workdir)
        gone = wait_gone(pid, 120) if pid is not None else None
        out["stop_command_s"] = round(gone - t0, 3) if gone is not None else None
    print(json.dumps(out), flush=True)
    return 0


def timed_reload(
    out: dict[str, object], name: str, what: str, pid: int, tail: LogTail, status_path: str
) -> int:
    """SIGHUP until the log's load line: reload_<name>_s, _cpu_s, and _ops (the status file's
    ops_applied difference 2.5 s later: a new real is added once its first check passed).
    Returns the log mark before the SIGHUP."""
    ops0 = ops_after(status_path, time.time())
    mark = len(tail.lines)
    t0, c0 = time.time(), cpu_seconds(pid)[0]
    os.kill(pid, signal.SIGHUP)
    t_done = tail.wait_for(lambda line: LOADED.search(line) is not None, mark, 120)
    if t_done is None:
        raise RuntimeError(f"{what} not seen within 120 s")
    out[f"reload_{name}_s"] = round(t_done - t0, 3)
    out[f"reload_{name}_cpu_s"] = round(cpu_seconds(pid)[0] - c0, 2)
    time.sleep(2.5)
    out[f"reload_{name}_ops"] = ops_after(status_path, time.time()) - ops0
    return mark


def clear_ipvs() -> None:
    subprocess.run(["ipvsadm", "-C"], check=False)


def stop(out: dict[str, object], pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM; stop_s until the process is gone."""
    t0 = time.time()
    os.kill(pid, signal.SIGTERM)
    gone = wait_gone(pid, 120)
    out["stop_s"] = round(gone - t0, 3) if gone is not None else None
    if proc is not None:
        proc.wait(120)  # cProfile writes its file as the process exits


if __name__ == "__main__":
    sys.exit(main())
