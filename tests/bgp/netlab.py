"""Two directors and a router in network namespaces on this host, for the BGP tests (issue 24).

BGP needs no IPVS: each director runs lvsmon on the memory backend, so the host kernel will do.
Every address below exists only inside the namespaces this module creates (and removes):

    {p}-router  AS 65000, BIRD 2, `merge paths on` (ECMP into its kernel table)
       r1 10.77.1.1/24 ---- eth0 10.77.1.2/24  {p}-d1  AS 65001: BIRD + lvsmon
       r2 10.77.2.1/24 ---- eth0 10.77.2.2/24  {p}-d2  AS 65001: BIRD + lvsmon
    {p}-reals  lo 10.77.50.1-3 (TCP listeners on :8080)
       s1 10.77.11.2/24 ---- eth1 10.77.11.1/24 (d1)
       s2 10.77.12.2/24 ---- eth1 10.77.12.1/24 (d2)

"All reals failing from d1 only" is a `prohibit` route for the reals in d1: its connects fail
at once, d2 still reaches them. Every process (BIRD, lvsmon, ExaBGP, the listeners) is a child
of the test, started with `ip netns exec`, never through an init system; their files live in a
mkdtemp under /var/tmp.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from tests.helpers import alive

VIP = "10.77.100.10"
REALS = ("10.77.50.1", "10.77.50.2", "10.77.50.3")
REAL_NET = "10.77.50.0/24"
ROUTER_AS = 65000
DIRECTOR_AS = 65001
ROOT = Path(__file__).resolve().parents[2]

# accepts and closes on port 8080 of each address given (IPv4 or IPv6)
LISTENER = """
import socket, sys, selectors
sel = selectors.DefaultSelector()
for host in sys.argv[1:]:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 8080))
    s.listen(128)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.close()
"""

ROUTER_BIRD = """\
router id 10.77.1.1;
protocol device {{ scan time 10; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}
template bgp director {{
  local as {router_as};
  hold time 9;
  ipv4 {{ import all; export none; }};
}}
protocol bgp d1 from director {{ neighbor 10.77.1.2 as {director_as}; }}
protocol bgp d2 from director {{ neighbor 10.77.2.2 as {director_as}; }}
"""

# The operator's BIRD on a director (docs/operations.md has the same): learn lvsmon's table,
# export it with MED = metric, GRACEFUL_SHUTDOWN for the worst MED.
DIRECTOR_BIRD = """\
router id {me};
protocol device {{ scan time 10; }}
ipv4 table lvsmon;
protocol kernel lvsmon_routes {{
  kernel table {table};
  learn;
  scan time 10;
  ipv4 {{ table lvsmon; import all; export none; }};
}}
filter lvsmon_out {{
  if proto != "lvsmon_routes" then reject;
  bgp_med = krt_metric;
  if krt_metric = 4294967295 then bgp_community.add((65535, 0));
  accept;
}}
protocol bgp uplink {{
  local {me} as {director_as};
  neighbor {peer} as {router_as};
  hold time 9;
  ipv4 {{ table lvsmon; import none; export filter lvsmon_out; }};
}}
"""

EXABGP_NEIGHBOURS = """\
neighbor {peer} {{
  router-id {me};
  local-address {me};
  local-as {director_as};
  peer-as {router_as};
  hold-time 9;
}}
"""

DIRECTOR_CF = """\
checktimeout=1
checkinterval=1
failurecount=2
quiescent=no
bgp={mode}
bgpholddown={holddown}
bgpdrain={drain}
{extra}
virtual={vip}:80
\tprotocol=tcp
\tchecktype=connect
\tscheduler=mh
{reals}
"""


class LabError(AssertionError):
    pass


def run(*cmd: str, check: bool = True, timeout: float = 30) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def wait(cond: Callable[[], bool], within: float, what: str, step: float = 0.02) -> float:
    """Poll `cond`; the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > within:
            raise LabError(f"not within {within} s: {what}")
        time.sleep(step)
    return time.monotonic() - t0


@dataclass
class Director:
    name: str  # d1, d2
    ns: str
    me: str
    peer: str
    real_link: str  # its address toward the reals namespace
    real_gw: str
    files: Path
    mode: str
    lvsmon: subprocess.Popen[bytes] | None = None
    bird: subprocess.Popen[bytes] | None = None

    @property
    def cf(self) -> Path:
        return self.files / f"{self.name}.cf"

    @property
    def pid_file(self) -> Path:
        return self.files / f"{self.name}.lvsmon.pid"

    @property
    def log(self) -> Path:
        return self.files / f"{self.name}.lvsmon.log"

    def exec(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        return run("ip", "netns", "exec", self.ns, *cmd, check=check, timeout=timeout)


@dataclass
class Lab:
    prefix: str
    files: Path
    mode: str  # bird or exabgp
    bfd: bool = False  # BIRD's BFD on every BGP session (100 ms x 3)
    directors: list[Director] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ended: list[subprocess.Popen[bytes]] = field(default_factory=list)  # on purpose
    namespaces: list[str] = field(default_factory=list)

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    @property
    def reals_ns(self) -> str:
        return f"{self.prefix}-reals"

    @property
    def router_sock(self) -> str:
        return str(self.files / "router.ctl")

    # ---- building ---------------------------------------------------------------------------

    def build(self) -> None:
        for ns in (self.router, self.reals_ns, f"{self.prefix}-d1", f"{self.prefix}-d2"):
            run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        for i in (1, 2):
            d = Director(
                f"d{i}",
                f"{self.prefix}-d{i}",
                f"10.77.{i}.2",
                f"10.77.{i}.1",
                f"10.77.1{i}.1",
                f"10.77.1{i}.2",
                self.files,
                self.mode,
            )
            self.directors.append(d)
            run(
                "ip",
                "link",
                "add",
                f"r{i}",
                "netns",
                self.router,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                d.ns,
            )
            run("ip", "-n", self.router, "addr", "add", f"10.77.{i}.1/24", "dev", f"r{i}")
            run("ip", "-n", self.router, "link", "set", f"r{i}", "up")
            run("ip", "-n", d.ns, "addr", "add", f"{d.me}/24", "dev", "eth0")
            run("ip", "-n", d.ns, "link", "set", "eth0", "up")
            run(
                "ip",
                "link",
                "add",
                f"s{i}",
                "netns",
                self.reals_ns,
                "type",
                "veth",
                "peer",
                "name",
                "eth1",
                "netns",
                d.ns,
            )
            run("ip", "-n", self.reals_ns, "addr", "add", f"{d.real_gw}/24", "dev", f"s{i}")
            run("ip", "-n", self.reals_ns, "link", "set", f"s{i}", "up")
            run("ip", "-n", d.ns, "addr", "add", f"{d.real_link}/24", "dev", "eth1")
            run("ip", "-n", d.ns, "link", "set", "eth1", "up")
            run("ip", "-n", d.ns, "route", "add", REAL_NET, "via", d.real_gw)
        for real in REALS:
            run("ip", "-n", self.reals_ns, "addr", "add", f"{real}/32", "dev", "lo")
        listener = self.spawn(self.reals_ns, [sys.executable, "-c", LISTENER, *REALS], "reals")
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != b"ready":
            raise LabError("the reals' listener did not start")
        (self.files / "router.conf").write_text(
            self.with_bfd(ROUTER_BIRD.format(router_as=ROUTER_AS, director_as=DIRECTOR_AS), "r*")
        )
        self.spawn(
            self.router,
            [
                "bird",
                "-f",
                "-c",
                str(self.files / "router.conf"),
                "-s",
                self.router_sock,
                "-P",
                str(self.files / "router.pid"),
            ],
            "router.bird",
        )
        for d in self.directors:
            if self.mode == "bird":
                conf = self.files / f"{d.name}.bird.conf"
                conf.write_text(
                    self.with_bfd(
                        DIRECTOR_BIRD.format(
                            me=d.me,
                            peer=d.peer,
                            table=200,
                            router_as=ROUTER_AS,
                            director_as=DIRECTOR_AS,
                        ),
                        "eth0",
                    )
                )
                d.bird = self.spawn(
                    d.ns,
                    [
                        "bird",
                        "-f",
                        "-c",
                        str(conf),
                        "-s",
                        str(self.files / f"{d.name}.ctl"),
                        "-P",
                        str(self.files / f"{d.name}.bird.pid"),
                    ],
                    f"{d.name}.bird",
                )
            else:
                (self.files / f"{d.name}.exabgp.conf").write_text(
                    EXABGP_NEIGHBOURS.format(
                        me=d.me, peer=d.peer, router_as=ROUTER_AS, director_as=DIRECTOR_AS
                    )
                )
        time.sleep(0.5)
        self.check_alive()

    def with_bfd(self, conf: str, interfaces: str) -> str:
        """`conf` with BFD on its BGP sessions (detection in 3 x 100 ms), when the lab has it."""
        if not self.bfd:
            return conf
        timers = "min rx interval 100 ms; min tx interval 100 ms; multiplier 3;"
        conf = conf.replace("  hold time 9;\n", "  hold time 9;\n  bfd on;\n")
        return conf + f'protocol bfd {{ interface "{interfaces}" {{ {timers} }}; }}\n'

    def check_alive(self) -> None:
        """Every child still runs (a BIRD that rejected its config ends at once)."""
        for proc in self.procs:
            if proc.poll() is not None and proc not in self.ended:
                raise LabError(f"{proc.args!r} ended with {proc.returncode}")

    def spawn(self, ns: str, cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        err = open(self.files / f"{name}.stderr", "ab")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=self.files,
        )
        err.close()
        self.procs.append(proc)
        return proc

    def write_cf(
        self, d: Director, reals: tuple[str, ...], *, holddown: int, drain: int, med: int = 100
    ) -> None:
        extra = f"bgpmed={med}\n"
        if self.mode == "exabgp":
            extra += f"bgpexabgpconf={self.files / f'{d.name}.exabgp.conf'}"
        d.cf.write_text(
            DIRECTOR_CF.format(
                mode=self.mode,
                holddown=holddown,
                drain=drain,
                extra=extra,
                vip=VIP,
                reals="\n".join(f"\treal={r}:8080 masq" for r in reals),
            )
        )

    def start_lvsmon(self, d: Director) -> None:
        env_prefix = ["env", f"PYTHONPATH={ROOT}", "LVSMON_BACKEND=memory"]
        err = open(d.log, "ab")  # noqa: SIM115
        d.lvsmon = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                d.ns,
                *env_prefix,
                sys.executable,
                "-m",
                "lvsmon",
                "--pid-file",
                str(d.pid_file),
                "-d",
                str(d.cf),
                "start",
            ],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            cwd=self.files,
        )
        err.close()
        self.procs.append(d.lvsmon)

    def cli(self, d: Director, *words: str) -> str:
        """`lvsmon --pid-file P CONFIG WORDS...` in the director's namespace (its stdout)."""
        return d.exec(
            "env",
            f"PYTHONPATH={ROOT}",
            "LVSMON_BACKEND=memory",
            sys.executable,
            "-m",
            "lvsmon",
            "--pid-file",
            str(d.pid_file),
            str(d.cf),
            *words,
        )

    def flush(self, d: Director) -> str:
        return d.exec(
            "env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "lvsmon", "bgp-flush", str(d.cf)
        )

    # ---- looking ----------------------------------------------------------------------------

    def nexthops(self) -> set[str]:
        """The router's kernel next hops for the VIP."""
        out = run("ip", "-n", self.router, "route", "show", f"{VIP}/32")
        return set(re.findall(r"via (\S+)", out))

    def bird_routes(self) -> str:
        return run(
            "ip",
            "netns",
            "exec",
            self.router,
            "birdc",
            "-s",
            self.router_sock,
            "show",
            "route",
            "all",
            f"{VIP}/32",
        )

    def sessions_up(self) -> bool:
        out = run(
            "ip", "netns", "exec", self.router, "birdc", "-s", self.router_sock, "show", "protocols"
        )
        return len(re.findall(r"\bBGP\b.*\bEstablished\b", out)) == 2

    def exabgp_pids(self, d: Director) -> list[int]:
        """The ExaBGP processes in the director's namespace."""
        found = []
        for pid in run("ip", "netns", "pids", d.ns).split():
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                # `exabgp CONF`, or its interpreter running it
                if any(a.endswith(b"exabgp") for a in args[:2]) and alive(int(pid)):
                    found.append(int(pid))
        return found

    def block_reals(self, d: Director) -> None:
        run("ip", "-n", d.ns, "route", "replace", "prohibit", REAL_NET)

    def unblock_reals(self, d: Director) -> None:
        run("ip", "-n", d.ns, "route", "replace", REAL_NET, "via", d.real_gw)

    # ---- tearing down -----------------------------------------------------------------------

    def close(self) -> None:
        stop_all(self.procs, self.namespaces)


def stop_all(procs: list[subprocess.Popen[bytes]], namespaces: list[str]) -> None:
    """A lab's processes killed and reaped, then its namespaces deleted (their veths go
    with them)."""
    for proc in reversed(procs):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    for ns in reversed(namespaces):
        run("ip", "netns", "del", ns, check=False)


def lab_files(prefix: str) -> Path:
    """The lab's folder: under /var/tmp, mode 755 (BIRD and ExaBGP may drop privileges)."""
    files = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    files.chmod(0o755)
    return files


class Buildable(Protocol):
    def build(self) -> None: ...
    def close(self) -> None: ...


B = TypeVar("B", bound=Buildable)


@contextlib.contextmanager
def built(the_lab: B, files: Path) -> Iterator[B]:
    """`the_lab` built and given; on a failure its logs printed; always closed, its folder
    removed."""
    try:
        the_lab.build()
        yield the_lab
    except BaseException:
        for f in sorted(files.glob("*.stderr")) + sorted(files.glob("*.log")):
            print(f"---- {f.name}\n{f.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        the_lab.close()
        shutil.rmtree(files, ignore_errors=True)


@contextlib.contextmanager
def lab(mode: str, *, bfd: bool = False) -> Iterator[Lab]:
    files = lab_files("lvsmon-bgp-")
    with built(Lab(f"lvsb{os.getpid()}", files, mode, bfd), files) as the_lab:
        yield the_lab
