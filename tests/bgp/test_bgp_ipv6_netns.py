"""An IPv6 VIP announced over BGP (dual-stack services; issue 24 was shown with IPv4 only), with
real daemons in network namespaces this test creates and removes:

    {p}-router  AS 65000, BIRD 2   r1 2001:db8:77:1::1/64 ---- eth0 2001:db8:77:1::2/64  {p}-d1
    {p}-d1      AS 65001: lvsmon (memory backend) + BIRD 2 (bgp = bird) or its ExaBGP child;
                reals 2001:db8:77:50::1 and ::2 on its lo, TCP listeners on :8080
    dual stack: also 10.77.1.1/24 ---- 10.77.1.2/24, a second (IPv4) session, an IPv4 VIP
                with the real 10.77.50.1 on d1's lo

- test_ipv6_vip_announced_over_ipv6_session[bird|exabgp]: over an IPv6 session (ExaBGP's
  `next-hop self` is then the director's IPv6 address; BIRD sets its own for eBGP), the /128
  is on the router's kernel table and in `birdc show route` after start, withdrawn when every
  real fails (the listener ends: connects are refused), back after `bgpholddown`; a graceful
  stop shows GRACEFUL_SHUTDOWN and the worst MED on it, then withdraws it after `bgpdrain`;
- test_exabgp_dual_stack_needs_one_session_per_family: the pitfall of an IPv6 VIP over an IPv4
  session (ExaBGP's default families) is a check-config error; the fix it names works;
- test_bird_dual_stack: operations.md's dual-stack BIRD config carries both VIPs.

The times are printed (-s) and recorded as junit properties.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.bgp.netlab import (
    DIRECTOR_AS,
    LISTENER,
    ROOT,
    ROUTER_AS,
    LabError,
    built,
    lab_files,
    run,
    stop_all,
    wait,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("bird") is None,
    reason="needs root, ip and BIRD 2 (tests/debian-packages.txt: bird2)",
)

ROUTER6 = "2001:db8:77:1::1"
D1_6 = "2001:db8:77:1::2"
ROUTER4, D1_4 = "10.77.1.1", "10.77.1.2"
VIP4, REAL4 = "10.77.100.10", "10.77.50.1"
VIP6 = "2001:db8:77:100::10"
REALS6 = ("2001:db8:77:50::1", "2001:db8:77:50::2")
CHECKINTERVAL = 1
FAILURECOUNT = 2
HOLDDOWN = 2
DRAIN = 1


# short start and connect delays: the session is up in a second or two, not 5
ROUTER_BIRD6 = """\
router id 10.77.1.1;
protocol device {{ scan time 10; }}
protocol kernel {{ ipv6 {{ import none; export all; }}; }}
protocol bgp d1 {{
  local {router} as {router_as};
  neighbor {d1} as {director_as};
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  ipv6 {{ import all; export none; }};
}}
"""

# dual stack: a second session, over IPv4, for the IPv4 VIP
ROUTER_BIRD4 = """\
protocol kernel {{ ipv4 {{ import none; export all; }}; }}
protocol bgp d1v4 {{
  local {router} as {router_as};
  neighbor {d1} as {director_as};
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  ipv4 {{ import all; export none; }};
}}
"""

# the operator's BIRD on the director for an IPv6 VIP (docs/operations.md has the same): an ipv6
# table learnt from lvsmon's kernel table, exported on an ipv6 channel. Over an IPv6 eBGP session
# BIRD sets the next hop to its own address on that session by itself.
DIRECTOR_BIRD6 = """\
router id 10.77.1.2;
protocol device {{ scan time 10; }}
ipv6 table lvsmon6;
protocol kernel lvsmon_routes6 {{
  kernel table 200;
  learn;
  scan time 10;
  ipv6 {{ table lvsmon6; import all; export none; }};
}}
filter lvsmon_out {{
  if proto != "lvsmon_routes6" then reject;
  bgp_med = krt_metric;
  if krt_metric = 4294967295 then bgp_community.add((65535, 0));
  accept;
}}
protocol bgp uplink {{
  local {d1} as {director_as};
  neighbor {router} as {router_as};
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  ipv6 {{ table lvsmon6; import none; export filter lvsmon_out; }};
}}
"""

# dual stack with BIRD, as docs/operations.md shows it: the IPv4 part of the worked example plus
# an ipv6 table, a second kernel protocol on the same kernel table (one channel each) and an
# IPv6 session exporting the ipv6 table
DIRECTOR_BIRD_DUAL = """\
router id 10.77.1.2;
protocol device {{ scan time 10; }}
ipv4 table lvsmon;
ipv6 table lvsmon6;
protocol kernel lvsmon_routes {{
  kernel table 200;
  learn;
  scan time 10;
  ipv4 {{ table lvsmon; import all; export none; }};
}}
protocol kernel lvsmon_routes6 {{
  kernel table 200;
  learn;
  scan time 10;
  ipv6 {{ table lvsmon6; import all; export none; }};
}}
filter lvsmon_out {{
  if proto != "lvsmon_routes" && proto != "lvsmon_routes6" then reject;
  bgp_med = krt_metric;
  if krt_metric = 4294967295 then bgp_community.add((65535, 0));
  accept;
}}
protocol bgp uplink {{
  local {d1_4} as {director_as};
  neighbor {router4} as {router_as};
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  ipv4 {{ table lvsmon; import none; export filter lvsmon_out; }};
}}
protocol bgp uplink6 {{
  local {d1_6} as {director_as};
  neighbor {router6} as {router_as};
  hold time 9;
  connect delay time 1;
  connect retry time 2;
  ipv6 {{ table lvsmon6; import none; export filter lvsmon_out; }};
}}
"""

# the neighbours file as an operator writes it: no family block (ExaBGP's default families)
EXABGP_NEIGHBOURS6 = """\
neighbor {router} {{
  router-id 10.77.1.2;
  local-address {d1};
  local-as {director_as};
  peer-as {router_as};
  hold-time 9;
}}
"""

# dual stack with ExaBGP: one session per family, each carrying its own (docs/operations.md)
EXABGP_DUAL = """\
neighbor {router4} {{
  router-id 10.77.1.2;
  local-address {d1_4};
  local-as {director_as};
  peer-as {router_as};
  hold-time 9;
  family {{ ipv4 unicast; }}
}}
neighbor {router6} {{
  router-id 10.77.1.2;
  local-address {d1_6};
  local-as {director_as};
  peer-as {router_as};
  hold-time 9;
  family {{ ipv6 unicast; }}
}}
"""

VIRTUAL4 = """\
virtual={vip}:80
\tprotocol=tcp
\tchecktype=connect
\tscheduler=mh
\treal={real}:8080 masq
"""

DIRECTOR_CF6 = """\
checktimeout=1
checkinterval={checkinterval}
failurecount={failurecount}
quiescent=no
bgp={mode}
bgpholddown={holddown}
bgpdrain={drain}
{extra}
virtual6=[{vip}]:80
\tprotocol=tcp
\tchecktype=connect
\tscheduler=mh
{reals}
"""


@dataclass
class Lab6:
    prefix: str
    files: Path
    mode: str
    dual: bool = False  # an IPv4 session and VIP beside the IPv6 ones
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    ended: list[subprocess.Popen[bytes]] = field(default_factory=list)  # on purpose
    listener: subprocess.Popen[bytes] | None = None
    lvsmon: subprocess.Popen[bytes] | None = None

    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    @property
    def d1(self) -> str:
        return f"{self.prefix}-d1"

    @property
    def cf(self) -> Path:
        return self.files / "d1.cf"

    @property
    def log(self) -> Path:
        return self.files / "d1.lvsmon.log"

    def build(self) -> None:
        for ns in (self.router, self.d1):
            run("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run(
            "ip", "link", "add", "r1", "netns", self.router, "type", "veth", "peer", "name",
            "eth0", "netns", self.d1,
        )  # fmt: skip
        # nodad: usable at once (duplicate address detection would hold them for a second)
        run("ip", "-n", self.router, "addr", "add", f"{ROUTER6}/64", "dev", "r1", "nodad")
        run("ip", "-n", self.router, "link", "set", "r1", "up")
        run("ip", "-n", self.d1, "addr", "add", f"{D1_6}/64", "dev", "eth0", "nodad")
        run("ip", "-n", self.d1, "link", "set", "eth0", "up")
        for real in REALS6:
            run("ip", "-n", self.d1, "addr", "add", f"{real}/128", "dev", "lo", "nodad")
        router_conf = ROUTER_BIRD6.format(
            router=ROUTER6, d1=D1_6, router_as=ROUTER_AS, director_as=DIRECTOR_AS
        )
        if self.dual:
            run("ip", "-n", self.router, "addr", "add", f"{ROUTER4}/24", "dev", "r1")
            run("ip", "-n", self.d1, "addr", "add", f"{D1_4}/24", "dev", "eth0")
            run("ip", "-n", self.d1, "addr", "add", f"{REAL4}/32", "dev", "lo")
            router_conf += ROUTER_BIRD4.format(
                router=ROUTER4, d1=D1_4, router_as=ROUTER_AS, director_as=DIRECTOR_AS
            )
        self.start_reals()
        (self.files / "router.conf").write_text(router_conf)
        self.bird(self.router, "router")
        if self.mode == "bird":
            director = DIRECTOR_BIRD_DUAL if self.dual else DIRECTOR_BIRD6
            (self.files / "d1.conf").write_text(
                director.format(
                    router=ROUTER6,
                    d1=D1_6,
                    router6=ROUTER6,
                    d1_6=D1_6,
                    router4=ROUTER4,
                    d1_4=D1_4,
                    router_as=ROUTER_AS,
                    director_as=DIRECTOR_AS,
                )
            )
            self.bird(self.d1, "d1")
        else:
            (self.files / "d1.exabgp.conf").write_text(
                EXABGP_NEIGHBOURS6.format(
                    router=ROUTER6, d1=D1_6, router_as=ROUTER_AS, director_as=DIRECTOR_AS
                )
            )
        time.sleep(0.3)
        self.check_alive()

    def bird(self, ns: str, name: str) -> None:
        conf, ctl, pid = (self.files / f"{name}.{x}" for x in ("conf", "ctl", "pid"))
        self.spawn(ns, ["bird", "-f", "-c", str(conf), "-s", str(ctl), "-P", str(pid)], name)

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

    def start_reals(self) -> None:
        self.listener = self.spawn(self.d1, [sys.executable, "-c", LISTENER, *self.reals], "reals")
        assert self.listener.stdout is not None
        if self.listener.stdout.readline().strip() != b"ready":
            raise LabError("the reals' listener did not start")

    @property
    def reals(self) -> tuple[str, ...]:
        return (*REALS6, REAL4) if self.dual else REALS6

    def stop_reals(self) -> None:
        """Every real fails: nothing listens any more, connects are refused at once."""
        assert self.listener is not None
        self.listener.send_signal(signal.SIGKILL)
        self.listener.wait(timeout=10)
        self.ended.append(self.listener)

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None and proc not in self.ended:
                raise LabError(f"{proc.args!r} ended with {proc.returncode}")

    def lvsmon_cmd(self, *words: str) -> list[str]:
        return [
            "ip", "netns", "exec", self.d1, "env", f"PYTHONPATH={ROOT}", "LVSMON_BACKEND=memory",
            sys.executable, "-m", "lvsmon", *words,
        ]  # fmt: skip

    def write_cf(self, extra: str = "") -> None:
        if self.mode == "exabgp":
            extra += f"bgpexabgpconf={self.files / 'd1.exabgp.conf'}\n"
        self.cf.write_text(
            DIRECTOR_CF6.format(
                checkinterval=CHECKINTERVAL,
                failurecount=FAILURECOUNT,
                mode=self.mode,
                holddown=HOLDDOWN,
                drain=DRAIN,
                extra=extra,
                vip=VIP6,
                reals="\n".join(f"\treal6=[{r}]:8080 masq" for r in REALS6),
            )
            + (VIRTUAL4.format(vip=VIP4, real=REAL4) if self.dual else "")
        )

    def check_config(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.lvsmon_cmd("check-config", str(self.cf)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start_lvsmon(self) -> None:
        err = open(self.log, "ab")  # noqa: SIM115
        self.lvsmon = subprocess.Popen(
            self.lvsmon_cmd("--pid-file", str(self.files / "d1.pid"), "-d", str(self.cf), "start"),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            cwd=self.files,
        )
        err.close()
        self.procs.append(self.lvsmon)

    def router_hops(self, prefix: str = f"{VIP6}/128") -> str:
        """The router's kernel route for the prefix ('' while it has none)."""
        self.check_alive()
        family = "-6" if ":" in prefix else "-4"
        return run("ip", family, "-n", self.router, "route", "show", prefix).strip()

    def bird_routes(self, prefix: str = f"{VIP6}/128") -> str:
        ctl = str(self.files / "router.ctl")
        return run(
            "ip", "netns", "exec", self.router, "birdc", "-s", ctl, "show", "route", "all", prefix,
        )  # fmt: skip

    def close(self) -> None:
        stop_all(self.procs, self.namespaces)


@contextlib.contextmanager
def lab6(mode: str, *, dual: bool = False) -> Iterator[Lab6]:
    files = lab_files("lvsmon-bgp6-")
    with built(Lab6(f"lvs6{os.getpid()}", files, mode, dual), files) as the_lab:
        yield the_lab


@pytest.mark.parametrize("mode", ["bird", "exabgp"])
def test_ipv6_vip_announced_over_ipv6_session(
    mode: str, record_property: Callable[[str, object], None]
) -> None:
    if mode == "exabgp" and shutil.which("exabgp") is None:
        pytest.skip("needs ExaBGP (tests/debian-packages.txt: exabgp)")

    def note(name: str, seconds: float) -> None:
        print(f"[{mode}, IPv6] {name}: {seconds:.2f} s")
        record_property(f"{mode}_ipv6_{name}", round(seconds, 3))

    with lab6(mode) as the_lab:
        the_lab.write_cf()
        checked = the_lab.check_config()
        assert checked.returncode == 0, checked.stdout + checked.stderr
        the_lab.start_lvsmon()
        t0 = time.monotonic()
        wait(lambda: bool(the_lab.router_hops()), 30, "the IPv6 VIP on the router", 0.05)
        note("announced after start", time.monotonic() - t0)
        shown = the_lab.bird_routes()
        assert f"{VIP6}/128" in shown and "BGP.med: 100" in shown, shown
        # the next hop is the director's address on the session (BIRD may add its link-local)
        assert f"BGP.next_hop: {D1_6}" in shown, shown

        the_lab.stop_reals()
        t0 = time.monotonic()
        took = wait(lambda: not the_lab.router_hops(), 30, "the IPv6 VIP withdrawn", 0.05)
        note("withdrawn after every real failed", took)
        assert took <= FAILURECOUNT * CHECKINTERVAL + 1.5

        the_lab.start_reals()
        t0 = time.monotonic()
        took = wait(lambda: bool(the_lab.router_hops()), 30, "the IPv6 VIP back", 0.05)
        note("announced again after the reals recovered", took)
        assert HOLDDOWN <= took <= HOLDDOWN + 2 * CHECKINTERVAL + 1.5
        assert "BGP: announcing " + VIP6 in the_lab.log.read_text()

        # graceful stop: GRACEFUL_SHUTDOWN and the worst MED on the /128, then withdrawn
        assert the_lab.lvsmon is not None
        the_lab.lvsmon.send_signal(signal.SIGTERM)
        the_lab.ended.append(the_lab.lvsmon)
        t0 = time.monotonic()
        wait(lambda: "(65535,0)" in the_lab.bird_routes(), 10, "GRACEFUL_SHUTDOWN", 0.05)
        assert "BGP.med: 4294967295" in the_lab.bird_routes()
        wait(lambda: not the_lab.router_hops(), DRAIN + 10, "withdrawn after the drain", 0.05)
        took = time.monotonic() - t0
        note("withdrawn after the graceful stop began", took)
        assert took >= DRAIN - 0.5
        assert the_lab.lvsmon.wait(timeout=30) == 0


def test_exabgp_dual_stack_needs_one_session_per_family(
    record_property: Callable[[str, object], None],
) -> None:
    """The pitfall: ExaBGP's `next-hop self` for an IPv6 route over an IPv4 session is an IPv4
    address, which the router drops (so is the reverse). check-config refuses the neighbours
    file that would do it, at the VIP's line, naming the fix; with the fix (each session
    carrying its own family) both VIPs reach the router, each with its family's next hop."""
    if shutil.which("exabgp") is None:
        pytest.skip("needs ExaBGP (tests/debian-packages.txt: exabgp)")
    with lab6("exabgp", dual=True) as the_lab:
        neighbours = the_lab.files / "d1.exabgp.conf"
        dual = EXABGP_DUAL.format(
            router4=ROUTER4, d1_4=D1_4, router6=ROUTER6, d1_6=D1_6,
            router_as=ROUTER_AS, director_as=DIRECTOR_AS,
        )  # fmt: skip
        # the IPv4 session with ExaBGP's default families (every one): the IPv6 VIP (line 10)
        # would go over it
        neighbours.write_text(dual.replace("  family { ipv4 unicast; }\n", ""))
        the_lab.write_cf()
        checked = the_lab.check_config()
        assert checked.returncode == 2, checked.stdout + checked.stderr
        assert checked.stderr.startswith(
            f"{the_lab.cf}:10: an IPv6 VIP with bgp = exabgp: neighbor {ROUTER4} ({neighbours}:1)"
            " is an IPv4 session"
        ), checked.stderr
        assert "give that neighbor family { ipv4 unicast; }" in checked.stderr

        neighbours.write_text(dual)
        checked = the_lab.check_config()
        assert checked.returncode == 0, checked.stdout + checked.stderr
        the_lab.start_lvsmon()
        t0 = time.monotonic()
        wait(
            lambda: bool(the_lab.router_hops()) and bool(the_lab.router_hops(f"{VIP4}/32")),
            30,
            "both VIPs on the router",
            0.05,
        )
        took = time.monotonic() - t0
        print(f"[exabgp, dual stack] both VIPs announced after start: {took:.2f} s")
        record_property("exabgp_dual_stack_announced", round(took, 3))
        assert f"BGP.next_hop: {D1_6}" in the_lab.bird_routes()
        assert f"BGP.next_hop: {D1_4}" in the_lab.bird_routes(f"{VIP4}/32")


def test_bird_dual_stack(record_property: Callable[[str, object], None]) -> None:
    """bgp = bird with an IPv4 and an IPv6 VIP: lvsmon puts both in one kernel table, the
    director's BIRD (operations.md's dual-stack config) learns it with one kernel protocol per
    family and exports each over its own session; both reach the router, each with its
    family's next hop, and MED 100."""
    with lab6("bird", dual=True) as the_lab:
        the_lab.write_cf()
        checked = the_lab.check_config()
        assert checked.returncode == 0, checked.stdout + checked.stderr
        the_lab.start_lvsmon()
        t0 = time.monotonic()
        wait(
            lambda: bool(the_lab.router_hops()) and bool(the_lab.router_hops(f"{VIP4}/32")),
            30,
            "both VIPs on the router",
            0.05,
        )
        took = time.monotonic() - t0
        print(f"[bird, dual stack] both VIPs announced after start: {took:.2f} s")
        record_property("bird_dual_stack_announced", round(took, 3))
        shown6, shown4 = the_lab.bird_routes(), the_lab.bird_routes(f"{VIP4}/32")
        assert f"BGP.next_hop: {D1_6}" in shown6 and "BGP.med: 100" in shown6, shown6
        assert f"BGP.next_hop: {D1_4}" in shown4 and "BGP.med: 100" in shown4, shown4
