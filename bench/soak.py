"""Soak: lvsmon for an hour (--minutes) under everything at once, and it must stay exact.

Host only, loopback only:   .venv/bin/python bench/soak.py [--minutes 60] [--reals 1000] [--seed N]

* Daemon: `lvsmon --backend memory` with the memory backend's fault injection switched on through
  its environment (lvsmon/ipvs/memory_faults.py): a share of ops and dumps fail
  (LVSMON_MEMORY_FAULTS), the table drifts behind the reconciler's back every few seconds
  (LVSMON_MEMORY_DRIFT), and the table as it really is gets written to a file
  (LVSMON_MEMORY_DUMP): our view of "the kernel". resyncinterval=2, checkinterval=2.
* Real servers: bench/soak_servers.py, one asyncio process listening on every real of a pool
  (127.88.x.y, one port for HTTP, one for HTTPS with a self-signed certificate), each real's
  behaviour switched at random over time: ok, refused, hung, slow (near the timeout), 5xx, wrong
  content, TLS stall (HTTPS reals); now and then a whole virtual fails at once (the fallback).
* Every --edit-s (10) seconds the config is rewritten atomically: reals and virtuals added and
  removed, weights, check types, receive strings, timeouts and failure counts changed. The daemon
  picks it up by autoreload, by `lvsmon reload` (one edit in four) and by SIGHUP bursts (several
  signals within 100 ms) at random times.
* Invariant, sampled every second: for every virtual of the daemon's status file and every real
  in it, the table holds exactly what lvsmon's rules want from the state the status shows (up:
  the configured weight; down: weight 0 or absent with quiescent, absent without; the fallback
  exactly while no real is up; no other destination; no other service). A difference is a
  violation when it lasts longer than resyncinterval + --settle-extra-s (8) s: a drift waits for
  the next resync, a failed op for its retry's backoff; every one is logged with its detail.
  Before each edit, the status must show the previous edit's config (else a reload was missed).
  Health: a real whose behaviour and checks held for --stable-s (15) s must show the state they
  imply (up when ok, down when refused; hung, 5xx, wrong content, TLS stall down under negotiate
  checks, up under connect checks); a difference seen twice is a health error.
* Baseline and end: the servers all turn ok, the first config is written back, and once the
  daemon has settled its file descriptors, threads, child processes and RSS are read; the
  baseline after a warm-up (--warmup-s; default 10 % of the run, at least 30 s, and at least
  the time 20,000 checks take: the daemon's lateness window full) of chaos. Then
  `lvsmon stop`; the log must hold no Traceback.

Exit status 0 only if every acceptance figure holds: violations 0, health errors 0, tracebacks 0,
reloads missed 0, fds, threads and children back to baseline, RSS growth under 10 %, faults and
drifts injected and repaired. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from procs import (
    Cleanup,
    alive,
    children,
    fd_count,
    free_port,
    kill_pid,
    log,
    lvsmon_command,
    memory_mib,
    read_pid,
    start_run,
    threads,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, "soak_servers.py")
FALLBACK = "127.0.0.1:80"  # never contacted: it only sits in the table
CHECK_INTERVAL = 2
RESYNC = 2
FAILURES = ("refused", "hung", "slow", "5xx", "wrong")
LATENESS_WINDOW = 20000  # lvsmon/engine/status.py Stats.lateness
FD_SLACK = 3  # a check or two in flight when the fds are counted
RSS_LIMIT_PCT = 10.0


def real_address(i: int) -> str:
    return f"127.88.{i // 250}.{i % 250 + 1}"


# ---------------------------------------------------------------- the configuration


@dataclass
class Virtual:
    slot: int
    tls: bool
    reals: dict[str, int] = field(default_factory=dict)  # "address:port" -> weight
    checktype: str = "negotiate"
    request: str = "/health"
    receive: str = "still alive"
    timeout: int = 2
    failurecount: int = 1

    @property
    def address(self) -> str:
        return f"127.100.{self.slot // 250}.{self.slot % 250 + 1}"

    @property
    def key(self) -> str:
        return f"tcp:{self.address}:80"

    @property
    def quiescent(self) -> bool:  # fixed per slot: the invariant needs it and status omits it
        return self.slot % 2 == 0

    def lines(self) -> list[str]:
        out = [f"virtual={self.address}:80"]
        out += [f"\treal={k} masq {w}" for k, w in self.reals.items()]
        out += [
            f"\tfallback={FALLBACK}",
            f"\tservice={'https' if self.tls else 'http'}",
            f'\trequest="{self.request}"',
            f'\treceive="{self.receive}"',
            "\tscheduler=wlc",
            "\tprotocol=tcp",
            f"\tchecktype={self.checktype}",
            f"\tquiescent={'yes' if self.quiescent else 'no'}",
            f"\tnegotiatetimeout={self.timeout}",
            f"\tchecktimeout={self.timeout}",
            f"\tfailurecount={self.failurecount}",
            "",
        ]
        return out


class Layout:
    """The config the bench wants the daemon to run, and the pool's spare reals."""

    def __init__(
        self, pool: list[tuple[str, int, bool]], reals: int, virtuals: int, rng: random.Random
    ) -> None:
        self.rng = rng
        self.tls = {f"{a}:{p}": t for a, p, t in pool}
        self.virtuals: dict[int, Virtual] = {}
        per = reals // max(1, virtuals)
        spare = {
            True: [k for k, t in self.tls.items() if t],
            False: [k for k, t in self.tls.items() if not t],
        }
        for slot in range(virtuals):
            v = Virtual(slot, tls=slot % 10 == 9)
            for _ in range(per):
                if spare[v.tls]:
                    v.reals[spare[v.tls].pop(0)] = 1 + slot % 3
            self.virtuals[slot] = v
        self.spare = spare
        self.first_virtuals = virtuals

    def copy(self) -> dict[int, Virtual]:
        return {
            s: Virtual(**{**v.__dict__, "reals": dict(v.reals)}) for s, v in self.virtuals.items()
        }

    def restore(self, saved: dict[int, Virtual]) -> None:
        used = {k for v in saved.values() for k in v.reals}
        self.virtuals = {
            s: Virtual(**{**v.__dict__, "reals": dict(v.reals)}) for s, v in saved.items()
        }
        self.spare = {
            t: [k for k, kt in self.tls.items() if kt is t and k not in used] for t in (True, False)
        }

    def text(self, logfile: str) -> str:
        lines = [
            f"checkinterval={CHECK_INTERVAL}",
            "checktimeout=2",
            "negotiatetimeout=2",
            f"resyncinterval={RESYNC}",
            "autoreload=yes",
            f'logfile="{logfile}"',
            "",
        ]
        for slot in sorted(self.virtuals):
            lines += self.virtuals[slot].lines()
        return "\n".join(lines)

    def wanted(self) -> dict[str, dict[str, int]]:
        return {v.key: dict(v.reals) for v in self.virtuals.values()}

    def signatures(self) -> dict[str, tuple[object, ...]]:
        """Per real, what its checks depend on: a change restarts its health."""
        return {
            k: (v.key, v.checktype, v.request, v.receive, v.timeout, v.failurecount)
            for v in self.virtuals.values()
            for k in v.reals
        }

    def virtual_of(self) -> dict[str, Virtual]:
        return {k: v for v in self.virtuals.values() for k in v.reals}

    # ---- one edit: a few random changes

    def edit(self) -> list[str]:
        done: list[str] = []
        actions: list[tuple[float, Callable[[], str | None]]] = [
            (3, self._add_real), (3, self._remove_real), (3, self._weight), (3, self._checks),
            (1, self._add_virtual), (1, self._remove_virtual),
        ]  # fmt: skip
        for _ in range(self.rng.randint(1, 3)):
            action = self.rng.choices([a for _, a in actions], [w for w, _ in actions])[0]
            what = action()
            if what:
                done.append(what)
        return done

    def _pick(self, tls: bool | None = None, min_reals: int = 0) -> Virtual | None:
        pool = [
            v for v in self.virtuals.values()
            if (tls is None or v.tls is tls) and len(v.reals) >= min_reals
        ]  # fmt: skip
        return self.rng.choice(pool) if pool else None

    def _add_real(self) -> str | None:
        v = self._pick()
        if v is None or not self.spare[v.tls]:
            return None
        key = self.spare[v.tls].pop(self.rng.randrange(len(self.spare[v.tls])))
        v.reals[key] = self.rng.choice((0, 1, 2, 5)) if self.rng.random() < 0.1 else 1
        return f"add {key} to {v.key}"

    def _remove_real(self) -> str | None:
        v = self._pick(min_reals=3)
        if v is None:
            return None
        key = self.rng.choice(sorted(v.reals))
        del v.reals[key]
        self.spare[v.tls].append(key)
        return f"remove {key} from {v.key}"

    def _weight(self) -> str | None:
        v = self._pick(min_reals=1)
        if v is None:
            return None
        for key in self.rng.sample(sorted(v.reals), min(len(v.reals), self.rng.randint(1, 5))):
            v.reals[key] = self.rng.randint(1, 10)
        return f"weights in {v.key}"

    def _checks(self) -> str | None:
        v = self._pick()
        if v is None:
            return None
        v.checktype = self.rng.choice(("negotiate", "negotiate", "connect"))
        v.request = self.rng.choice(("/health", "/", "/status.html"))
        v.receive = self.rng.choice(("still alive", "alive", "still"))
        v.timeout = self.rng.choice((2, 3))
        v.failurecount = self.rng.choice((1, 1, 2))
        return f"checks of {v.key}: {v.checktype} {v.timeout}s fc={v.failurecount}"

    def _add_virtual(self) -> str | None:
        if len(self.virtuals) >= self.first_virtuals + 3:
            return None
        slot = min(s for s in range(self.first_virtuals * 2) if s not in self.virtuals)
        v = Virtual(slot, tls=slot % 10 == 9)
        for _ in range(min(len(self.spare[v.tls]), self.rng.randint(5, 30))):
            v.reals[self.spare[v.tls].pop(self.rng.randrange(len(self.spare[v.tls])))] = 1
        self.virtuals[slot] = v
        return f"add virtual {v.key} ({len(v.reals)} reals)"

    def _remove_virtual(self) -> str | None:
        if len(self.virtuals) <= max(1, self.first_virtuals - 3):
            return None
        v = self.rng.choice(list(self.virtuals.values()))
        del self.virtuals[v.slot]
        self.spare[v.tls] += list(v.reals)
        return f"remove virtual {v.key} ({len(v.reals)} reals)"


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the real servers


class Servers:
    """bench/soak_servers.py, behaviours switched through its stdin."""

    def __init__(self, workdir: str, pool: list[tuple[str, int, bool]], cleanup: Cleanup):
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("soak.lvsmon.test", "127.0.0.1")
        cert_path, key_path = (os.path.join(workdir, n) for n in ("cert.pem", "key.pem"))
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
        pool_path = os.path.join(workdir, "pool.json")
        with open(pool_path, "w", encoding="utf-8") as f:
            json.dump(pool, f)
        self.proc = subprocess.Popen(
            [sys.executable, SERVERS, pool_path, cert_path, key_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        cleanup.add("real servers", self.stop)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[str] = self.proc.stdin
        self._out: IO[str] = self.proc.stdout
        line = self._out.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"soak_servers.py did not start: {line!r}")
        self.mode = {f"{a}:{p}": "ok" for a, p, _ in pool}
        self.since = dict.fromkeys(self.mode, time.monotonic())  # the mode's start
        self.switches = 0
        self.served: dict[str, int] = {}

    def set(self, changes: dict[str, tuple[str, float]]) -> None:
        lines = []
        for key, (mode, arg) in changes.items():
            lines.append(f"SET {key} {mode} {arg:.3f}\n")
            if self.mode[key] != mode:
                self.switches += 1
                self.since[key] = time.monotonic()
            self.mode[key] = mode
        self._in.write("".join(lines))
        self._in.flush()

    def sync(self) -> None:
        self._in.write("SYNC\n")
        self._in.flush()
        while True:
            line = self._out.readline()
            if not line or line.startswith("synced"):
                return

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self._in.close()  # EOF: it closes its listeners and prints its counts
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
        out = self._out.read() if not self._out.closed else ""
        self._out.close()
        for line in out.splitlines():
            if line.startswith("{"):
                self.served = json.loads(line).get("served", {})


class Chaos:
    """Per real: a behaviour and the time it ends; a few whole-virtual outages."""

    def __init__(self, servers: Servers, layout: Layout, rng: random.Random) -> None:
        self.servers, self.layout, self.rng = servers, layout, rng
        now = time.monotonic()
        self.until = {k: now + rng.uniform(0, 30) for k in servers.mode}
        self.outages = 0
        self.failure_share = 0.2

    def tick(self) -> None:
        now = time.monotonic()
        changes: dict[str, tuple[str, float]] = {}
        owner = self.layout.virtual_of()
        for key, until in self.until.items():
            if until > now:
                continue
            v = owner.get(key)
            if self.rng.random() < self.failure_share:
                mode = self.rng.choice(FAILURES + (("tlsstall",) if self.layout.tls[key] else ()))
                self.until[key] = now + self.rng.uniform(3, 40)
            else:
                mode = "ok"
                self.until[key] = now + self.rng.uniform(5, 60)
            timeout = v.timeout if v else 2
            changes[key] = (mode, timeout * self.rng.uniform(0.6, 1.3) if mode == "slow" else 0.0)
        if self.rng.random() < 1 / 30 and self.layout.virtuals:
            # a whole virtual fails at once: its fallback goes in, then out again
            v = self.rng.choice(list(self.layout.virtuals.values()))
            mode = self.rng.choice(("refused", "5xx", "hung"))
            for key in v.reals:
                changes[key] = (mode, 0.0)
                self.until[key] = now + self.rng.uniform(8, 15)
            self.outages += 1
        if changes:
            self.servers.set(changes)

    def calm(self) -> None:
        """Every real ok, for long enough to measure."""
        far = time.monotonic() + 1e9
        self.servers.set({k: ("ok", 0.0) for k in self.until})
        self.until = dict.fromkeys(self.until, far)
        self.servers.sync()

    def resume(self) -> None:
        now = time.monotonic()
        self.until = {k: now + self.rng.uniform(0, 10) for k in self.until}


# ---------------------------------------------------------------- the invariant


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


Mismatch = dict[tuple[str, str], str]  # (virtual key, dest or "") -> what is wrong


def mismatches(
    status: dict[str, Any], table: dict[str, dict[str, int]], quiescent: Callable[[str], bool]
) -> Mismatch:
    """Where the table is not what lvsmon's rules want from the state the status shows."""
    out: Mismatch = {}
    virtuals = status.get("virtuals")
    assert isinstance(virtuals, list)
    seen: set[str] = set()
    for v in virtuals:
        vkey = v["key"]
        seen.add(vkey)
        dests = table.get(vkey)
        if dests is None:
            out[(vkey, "")] = "service absent"
            continue
        want: dict[str, tuple[int | None, ...]] = {}
        any_up = False
        for r in v["reals"]:
            dest = f"{r['address']}:{r['port']}"
            # kept_by_threshold: down by its checks, kept serving by a depool threshold
            serving = r["state"] == "up" or r.get("kept_by_threshold")
            if serving and not r.get("drained"):
                want[dest] = (r["weight"],)
                any_up = True
            elif serving:
                want[dest] = (0,)
            elif quiescent(vkey):
                want[dest] = (0, None)
            else:
                want[dest] = (None,)
        want[FALLBACK] = (None,) if any_up else (1,)
        for dest in want.keys() | dests.keys():
            have = dests.get(dest)
            ok = want.get(dest, (None,))
            if have not in ok:
                state = next(
                    (r["state"] for r in v["reals"] if f"{r['address']}:{r['port']}" == dest), "-"
                )
                out[(vkey, dest)] = (
                    f"state {state}: weight {have}, wanted {' or '.join(map(str, ok))}"
                )
    for vkey in table.keys() - seen:
        out[(vkey, "")] = f"service present ({len(table[vkey])} dests), not in the config"
    return out


class Invariant:
    """Differences tracked over samples: one that outlasts `settle_s` is a violation."""

    def __init__(self, status_path: str, table_path: str, settle_s: float) -> None:
        self.status_path, self.table_path = status_path, table_path
        self.settle_s = settle_s
        self.open: dict[tuple[str, str], tuple[float, str]] = {}  # first seen, detail
        self.violations: list[str] = []
        self.reported: set[tuple[str, str]] = set()
        self.samples = 0
        self.unreadable = 0
        self.episodes = 0  # differences seen at all (drift, a failed op): the checker sees them
        self.longest_s = 0.0
        self.last_status: dict[str, Any] | None = None

    def quiescent(self, vkey: str) -> bool:
        address = vkey.split(":")[1]
        a, b = address.split(".")[2:]
        return (int(a) * 250 + int(b) - 1) % 2 == 0

    def sample(self, now: float | None = None) -> Mismatch | None:
        status, dump = read_json(self.status_path), read_json(self.table_path)
        now = time.monotonic() if now is None else now
        if status is None or dump is None or not isinstance(status.get("virtuals"), list):
            self.unreadable += 1
            return None
        self.last_status = status
        self.samples += 1
        table = dump["table"]
        assert isinstance(table, dict)
        found = mismatches(status, table, self.quiescent)
        for key in list(self.open):
            if key not in found:
                first, _ = self.open.pop(key)
                self.longest_s = max(self.longest_s, now - first)
                self.reported.discard(key)
        for key, detail in found.items():
            if key not in self.open:
                self.episodes += 1
            first, _ = self.open.get(key, (now, detail))
            self.open[key] = (first, detail)
            age = now - first
            self.longest_s = max(self.longest_s, age)
            if age > self.settle_s and key not in self.reported:
                self.reported.add(key)
                text = f"{key[0]} {key[1] or '(service)'}: {detail}, for {age:.1f} s"
                self.violations.append(text)
                log(f"VIOLATION {text}")
        return found

    def config(self) -> dict[str, dict[str, int]] | None:
        status = self.last_status
        if status is None:
            return None
        return {
            v["key"]: {f"{r['address']}:{r['port']}": r["weight"] for r in v["reals"]}
            for v in status["virtuals"]
        }

    def all_up(self) -> bool:
        status = self.last_status
        return status is not None and all(
            r["state"] == "up" for v in status["virtuals"] for r in v["reals"]
        )


def expected_state(mode: str, checktype: str) -> str | None:
    """What a real's checks must conclude once its behaviour and its checks have held a while."""
    if mode == "slow":
        return None  # answered near the timeout: either
    if mode == "ok":
        return "up"
    if mode == "refused" or checktype != "connect":
        return "down"
    return "up"  # a connect check only connects: hung, 5xx, wrong content and TLS stall pass


class Health:
    """The states the status shows against the servers' behaviours: a real whose behaviour and
    checks have not changed for `stable_s` must be up exactly when it answers right. Seen in
    two samples (the status file may be a second old), a difference is an error."""

    def __init__(self, stable_s: float) -> None:
        self.stable_s = stable_s
        self.touched: dict[str, float] = {}  # real -> when its checks last changed
        self.sigs: dict[str, tuple[object, ...]] = {}
        self.seen: dict[tuple[str, str, float], int] = {}
        self.errors: list[str] = []
        self.judged = 0  # (real, sample) pairs compared
        self.judged_failing = 0  # of which the real's server misbehaved

    def config_written(self, layout: Layout, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        sigs = layout.signatures()
        for key, sig in sigs.items():
            if self.sigs.get(key) != sig:
                self.touched[key] = now
        self.sigs = sigs

    def sample(
        self, status: dict[str, Any], layout: Layout, servers: Servers, now: float | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        owner = layout.virtual_of()
        for v in status["virtuals"]:
            for r in v["reals"]:
                key = f"{r['address']}:{r['port']}"
                virtual = owner.get(key)
                if virtual is None or virtual.key != v["key"]:
                    continue
                since = max(self.touched.get(key, 0.0), servers.since[key])
                if now - since < self.stable_s:
                    continue
                mode = servers.mode[key]
                want = expected_state(mode, virtual.checktype)
                if want is None:
                    continue
                self.judged += 1
                self.judged_failing += mode != "ok"
                if r["state"] == want:
                    continue
                episode = (key, mode, servers.since[key])
                self.seen[episode] = self.seen.get(episode, 0) + 1
                if self.seen[episode] == 2:
                    text = (
                        f"{v['key']} {key}: {r['state']} ({r.get('reason', '')!r}), but it has"
                        f" been {mode} for {now - servers.since[key]:.0f} s under"
                        f" {virtual.checktype} checks"
                    )
                    self.errors.append(text)
                    log(f"HEALTH {text}")


# ---------------------------------------------------------------- the daemon's resources


@dataclass
class Resources:
    fds: int
    threads: int
    children: int
    rss_mib: float


def resources(pid: int, samples: int = 5) -> Resources:
    """The least of a few reads a second apart: checks in flight come and go."""
    got: list[Resources] = []
    for i in range(samples):
        got.append(Resources(fd_count(pid), threads(pid), children(pid), memory_mib(pid)["VmRSS"]))
        if i + 1 < samples:
            time.sleep(1)
    return Resources(
        min(r.fds for r in got), min(r.threads for r in got), min(r.children for r in got),
        sorted(r.rss_mib for r in got)[len(got) // 2],
    )  # fmt: skip


# ---------------------------------------------------------------- the run


@dataclass
class Figures:
    minutes: float
    reals: int
    virtuals: int
    seed: int
    violations: int = 0
    tracebacks: int = 0
    reload_misses: int = 0
    health_errors: int = 0
    health_judged: int = 0
    health_judged_failing: int = 0
    fd_start: int = -1
    fd_end: int = -1
    threads_start: int = -1
    threads_end: int = -1
    children_start: int = -1
    children_end: int = -1
    rss_start_mib: float = float("nan")
    rss_end_mib: float = float("nan")
    rss_growth_pct: float = float("nan")
    rss_max_mib: float = 0.0  # the most of the per-minute reads during the chaos
    config_edits: int = 0
    reloads_cli: int = 0
    hups: int = 0
    hup_bursts: int = 0
    mode_switches: int = 0
    outages: int = 0
    faults_injected: int = 0
    drifts_injected: int = 0
    drift_repairs: int = 0
    ops_failed: int = 0
    samples: int = 0
    unreadable_samples: int = 0
    differences_seen: int = 0
    longest_difference_s: float = 0.0
    settle_s: float = 0.0
    settled_baseline_s: float = float("nan")
    settled_end_s: float = float("nan")
    stop_s: float = float("nan")
    load_avg: float = float("nan")
    failed: list[str] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        workdir: str,
        layout: Layout,
        seed: int,
        faults: float,
        drift_s: float,
        cleanup: Cleanup,
    ):
        self.cfg = os.path.join(workdir, "soak.cf")
        self.logfile = os.path.join(workdir, "lvsmon.log")
        self.pidfile = os.path.join(workdir, "l.pid")
        self.status_path = os.path.join(workdir, "l.status.json")
        self.table_path = os.path.join(workdir, "table.json")
        self.layout = layout
        self.cmd = [*lvsmon_command(), "--backend", "memory", "--pid-file", self.pidfile, self.cfg]
        self.env = {
            **os.environ,
            "LVSMON_RESOLVER": "files",
            "LVSMON_MEMORY_FAULTS": str(faults),
            "LVSMON_MEMORY_DRIFT": str(drift_s),
            "LVSMON_MEMORY_SEED": str(seed),
            "LVSMON_MEMORY_DUMP": self.table_path,
        }
        self.pid: int | None = None
        self.written: list[Callable[[], None]] = []  # called after each config write
        self.write()
        cleanup.add("daemon", self._leftover)

    def write(self) -> None:
        write_atomic(self.cfg, self.layout.text(self.logfile))
        for hook in self.written:
            hook()

    def start(self) -> int:
        proc = subprocess.run([*self.cmd, "start"], env=self.env, timeout=120, check=False)
        self.pid = read_pid(self.pidfile)
        if proc.returncode != 0 or self.pid is None:
            raise RuntimeError(f"lvsmon start failed ({proc.returncode}); see {self.logfile}")
        return self.pid

    def reload(self) -> None:
        subprocess.run([*self.cmd, "reload"], env=self.env, timeout=30, check=False,
                       stdout=subprocess.DEVNULL)  # fmt: skip

    def hup_burst(self, rng: random.Random) -> int:
        n = rng.randint(2, 5)
        assert self.pid is not None
        for _ in range(n):
            os.kill(self.pid, signal.SIGHUP)
            time.sleep(rng.uniform(0, 0.1 / n))
        return n

    def stop(self) -> float:
        t0 = time.monotonic()
        subprocess.run([*self.cmd, "stop"], env=self.env, timeout=150, check=False,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        while self.pid is not None and alive(self.pid) and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        return time.monotonic() - t0

    def _leftover(self) -> None:
        if self.pid is not None and alive(self.pid):
            subprocess.run([*self.cmd, "stop"], env=self.env, timeout=150, check=False)
            kill_pid(self.pid, "lvsmon")

    def tracebacks(self) -> int:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return sum(1 for line in f if "Traceback" in line)
        except FileNotFoundError:
            return 0


def settle(inv: Invariant, layout: Layout, timeout: float) -> float | None:
    """Seconds until the status shows the layout's config, every real up, and no difference."""
    t0 = time.monotonic()
    wanted = layout.wanted()
    while time.monotonic() - t0 < timeout:
        found = inv.sample()
        if found is not None and not found and inv.all_up() and inv.config() == wanted:
            return time.monotonic() - t0
        time.sleep(0.5)
    return None


def unsettled(inv: Invariant, layout: Layout) -> list[str]:
    """What keeps the daemon from settling: for the log."""
    status = inv.last_status
    if status is None:
        return ["no status"]
    out = [f"difference: {k[0]} {k[1]}: {d}" for k, (_, d) in list(inv.open.items())[:20]]
    down = [
        f"not up: {v['key']} {r['address']}:{r['port']} {r['state']} ({r.get('reason', '')!r},"
        f" failcount {r.get('failcount')})"
        for v in status["virtuals"]
        for r in v["reals"]
        if r["state"] != "up"
    ]
    out += down[:20]
    if inv.config() != layout.wanted():
        out.append("the status does not show the config written")
    return out


def calm(
    daemon: Daemon,
    chaos: Chaos,
    inv: Invariant,
    layout: Layout,
    first: dict[int, Virtual],
    what: str,
) -> tuple[float | None, Resources]:
    """Back to the first config with every real ok; the daemon's resources once settled."""
    chaos.calm()
    layout.restore(first)
    daemon.write()
    took = settle(inv, layout, 90)
    if took is None:
        log(f"{what}: did not settle within 90 s")
        for line in unsettled(inv, layout):
            log(f"  {line}")
    time.sleep(3)  # connections of the last failures closed, a status write or two
    assert daemon.pid is not None
    res = resources(daemon.pid)
    log(f"{what}: settled in {took if took is None else round(took, 1)} s; fds {res.fds},"
        f" threads {res.threads}, children {res.children}, RSS {res.rss_mib:.1f} MiB")  # fmt: skip
    return took, res


def run(args: argparse.Namespace, workdir: str, cleanup: Cleanup) -> Figures:
    rng = random.Random(args.seed)
    fig = Figures(args.minutes, args.reals, args.virtuals, args.seed)
    http_port, tls_port = free_port(), free_port()
    size = args.reals * 3 // 2
    pool = [
        (real_address(i), tls_port if i % 10 == 9 else http_port, i % 10 == 9) for i in range(size)
    ]
    layout = Layout(pool, args.reals, args.virtuals, rng)
    first = layout.copy()
    n_reals = sum(len(v.reals) for v in layout.virtuals.values())
    log(f"{n_reals} reals in {len(layout.virtuals)} virtuals, pool {size}; work folder {workdir}")
    servers = Servers(workdir, pool, cleanup)
    daemon = Daemon(workdir, layout, args.seed, args.faults, args.drift_s, cleanup)
    chaos = Chaos(servers, layout, rng)
    fig.settle_s = RESYNC + args.settle_extra_s
    inv = Invariant(daemon.status_path, daemon.table_path, fig.settle_s)
    health = Health(args.stable_s)
    health.config_written(layout)
    daemon.written.append(lambda: health.config_written(layout))
    pid = daemon.start()
    log(f"lvsmon started, pid {pid}")
    if settle(inv, layout, 120) is None:
        raise RuntimeError("the daemon did not bring every real up within 120 s")

    total_s = args.minutes * 60
    # the daemon's bounded windows (the last 20,000 checks' lateness) full before the baseline:
    # filling them is growth by design, not a leak
    fill_s = LATENESS_WINDOW / (n_reals / CHECK_INTERVAL) + 10
    warmup_s = args.warmup_s if args.warmup_s is not None else max(30.0, total_s / 10, fill_s)
    t0 = time.monotonic()
    end = t0 + total_s
    baseline_at = t0 + warmup_s
    baseline: Resources | None = None
    next_edit = t0 + args.edit_s
    next_report = t0 + 60
    wanted = layout.wanted()
    tick = t0
    while time.monotonic() < end:
        if not alive(pid):
            raise RuntimeError(f"the daemon (pid {pid}) died; see {daemon.logfile}")
        now = time.monotonic()
        if baseline is None and now >= baseline_at:
            took, baseline = calm(daemon, chaos, inv, layout, first, "baseline")
            fig.settled_baseline_s = float("nan") if took is None else round(took, 1)
            if took is None:
                fig.failed.append("settled_baseline")
            chaos.resume()
            wanted = layout.wanted()
            next_edit = time.monotonic() + args.edit_s
        chaos.tick()
        if inv.sample() is not None and inv.last_status is not None:
            health.sample(inv.last_status, layout, servers)
        if now >= next_edit:
            have = inv.config()
            if have != wanted:
                fig.reload_misses += 1
                log(
                    f"MISSED RELOAD: the status differs from the config written {args.edit_s} s ago"
                )
            for what in layout.edit():
                log(f"edit: {what}")
            daemon.write()
            wanted = layout.wanted()
            fig.config_edits += 1
            if rng.random() < 0.25:
                daemon.reload()
                fig.reloads_cli += 1
            next_edit = max(next_edit + args.edit_s, now + args.edit_s / 2)
        if rng.random() < 1 / args.hup_every_s:
            fig.hups += daemon.hup_burst(rng)
            fig.hup_bursts += 1
        if now >= next_report:
            rss = memory_mib(pid)["VmRSS"]
            fig.rss_max_mib = max(fig.rss_max_mib, round(rss, 1))
            log(f"minute {round((now - t0) / 60)}: RSS {rss:.1f} MiB, fds {fd_count(pid)},"
                f" threads {threads(pid)}, violations {len(inv.violations)},"
                f" health errors {len(health.errors)}")  # fmt: skip
            next_report = now + 60
        tick += 1.0
        time.sleep(max(0.0, tick - time.monotonic()))

    took, final = calm(daemon, chaos, inv, layout, first, "end")
    fig.settled_end_s = float("nan") if took is None else round(took, 1)
    if took is None:
        fig.failed.append("settled_end")
    if baseline is None:
        baseline = final
        fig.failed.append("no baseline (run shorter than the warm-up)")
    dump = read_json(daemon.table_path) or {}
    fig.faults_injected = int(dump.get("faults_injected", 0))
    fig.drifts_injected = int(dump.get("drifts_injected", 0))
    stats = (inv.last_status or {}).get("stats") or {}
    assert isinstance(stats, dict)
    fig.drift_repairs = int(stats.get("drift_repairs", 0))
    fig.ops_failed = int(stats.get("ops_failed", 0))
    fig.load_avg = os.getloadavg()[0]
    fig.fd_start, fig.fd_end = baseline.fds, final.fds
    fig.threads_start, fig.threads_end = baseline.threads, final.threads
    fig.children_start, fig.children_end = baseline.children, final.children
    fig.rss_start_mib, fig.rss_end_mib = round(baseline.rss_mib, 1), round(final.rss_mib, 1)
    fig.rss_growth_pct = round((final.rss_mib / baseline.rss_mib - 1) * 100, 2)
    fig.stop_s = round(daemon.stop(), 2)
    if alive(pid):
        fig.failed.append("daemon still running after stop")
    fig.tracebacks = daemon.tracebacks()
    servers.stop()
    fig.mode_switches, fig.outages = servers.switches, chaos.outages
    fig.violations = len(inv.violations)
    fig.health_errors, fig.health_judged = len(health.errors), health.judged
    fig.health_judged_failing = health.judged_failing
    fig.samples, fig.unreadable_samples = inv.samples, inv.unreadable
    fig.longest_difference_s = round(inv.longest_s, 1)
    fig.differences_seen = inv.episodes
    return fig


def accept(fig: Figures) -> None:
    checks = {
        "violations": fig.violations == 0,
        "tracebacks": fig.tracebacks == 0,
        "reload_misses": fig.reload_misses == 0,
        "health_errors": fig.health_errors == 0,
        "health_judged": fig.health_judged_failing > 0,
        "fd_end": fig.fd_end <= fig.fd_start + FD_SLACK,
        "children_end": fig.children_end <= fig.children_start,
        # the default executor's threads (name lookups) come once and stay; more is a leak
        "threads_end": fig.threads_end <= fig.threads_start + min(32, (os.cpu_count() or 1) + 4),
        "rss_growth_pct": fig.rss_growth_pct < RSS_LIMIT_PCT,
        "faults_injected": fig.faults_injected > 0,
        "drifts_injected": fig.drifts_injected > 0,
        "drift_repairs": fig.drift_repairs > 0,
        "config_edits": fig.config_edits > 0,
        "samples": fig.samples >= fig.minutes * 60 * 0.8,
    }
    fig.failed += [name for name, ok in checks.items() if not ok]


def print_table(fig: Figures) -> None:
    rows = [
        ("run (min) / reals / virtuals / seed",
         f"{fig.minutes:g} / {fig.reals} / {fig.virtuals} / {fig.seed}"),
        ("invariant samples (unreadable)", f"{fig.samples} ({fig.unreadable_samples})"),
        ("violations (difference > settle s)", f"{fig.violations} (> {fig.settle_s:g} s)"),
        ("differences seen / longest (s)",
         f"{fig.differences_seen} / {fig.longest_difference_s:g}"),
        ("reloads missed", str(fig.reload_misses)),
        ("health errors / judged (real, sample) pairs (failing)",
         f"{fig.health_errors} / {fig.health_judged} ({fig.health_judged_failing})"),
        ("config edits / lvsmon reload / HUPs (bursts)",
         f"{fig.config_edits} / {fig.reloads_cli} / {fig.hups} ({fig.hup_bursts})"),
        ("real behaviour switches / virtual outages", f"{fig.mode_switches} / {fig.outages}"),
        ("backend faults / drifts injected", f"{fig.faults_injected} / {fig.drifts_injected}"),
        ("drift repairs / ops failed (daemon)", f"{fig.drift_repairs} / {fig.ops_failed}"),
        ("fds baseline -> end", f"{fig.fd_start} -> {fig.fd_end}"),
        ("threads baseline -> end", f"{fig.threads_start} -> {fig.threads_end}"),
        ("children baseline -> end", f"{fig.children_start} -> {fig.children_end}"),
        ("RSS baseline -> end (MiB)",
         f"{fig.rss_start_mib} -> {fig.rss_end_mib} ({fig.rss_growth_pct:+.2f} %)"),
        ("settled at baseline / end (s)", f"{fig.settled_baseline_s} / {fig.settled_end_s}"),
        ("tracebacks in the log", str(fig.tracebacks)),
        ("stop (s)", f"{fig.stop_s}"),
        ("load average at the end", f"{fig.load_avg:.2f}"),
        ("failed", ", ".join(fig.failed) or "none"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="chaos time (default 60)")
    ap.add_argument("--reals", type=int, default=1000, help="reals at the start (default 1000)")
    ap.add_argument("--virtuals", type=int, default=20, help="virtuals at the start (default 20)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the time)")
    ap.add_argument("--faults", type=float, default=0.05, help="share of backend calls failing")
    ap.add_argument("--drift-s", type=float, default=5.0, help="drift injected every (s)")
    ap.add_argument("--edit-s", type=float, default=10.0, help="config edit every (s)")
    ap.add_argument("--hup-every-s", type=float, default=20.0, help="a HUP burst every ~ (s)")
    ap.add_argument(
        "--warmup-s", type=float,
        help="chaos before the baseline (default 10 %%, at least 30 s and 20,000 checks)",
    )  # fmt: skip
    ap.add_argument(
        "--settle-extra-s", type=float, default=8.0,
        help="a difference is a violation after resyncinterval + this (default 8)",
    )  # fmt: skip
    ap.add_argument(
        "--stable-s", type=float, default=15.0,
        help="a real whose behaviour and checks held this long must show the matching state",
    )  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int(time.time()) % 100000

    cleanup, workdir = start_run("lvsmon-soak-", args.keep)
    try:
        fig = run(args, workdir, cleanup)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except RuntimeError as exc:
        log(f"soak failed: {exc}")
        if not args.keep:
            log(f"(rerun with --keep to study {workdir})")
        print(json.dumps({"minutes": args.minutes, "seed": args.seed, "failed": [str(exc)]}))
        return 1
    finally:
        cleanup.run()
    accept(fig)
    print_table(fig)
    # NaN (a figure never measured) as null: strict JSON readers refuse NaN
    print(json.dumps({k: None if v != v else v for k, v in fig.__dict__.items()}))
    return 1 if fig.failed else 0


if __name__ == "__main__":
    sys.exit(main())
