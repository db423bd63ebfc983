"""Two directors announce one VIP to a BIRD 2 router by ECMP (issue 24), in network namespaces
on this host (tests/bgp/netlab.py): each director runs lvsmon (memory backend) with its BIRD
(bgp = bird) or its ExaBGP child (bgp = exabgp). Measured on the router's kernel table and
`birdc show route all`, and printed (run with -s to see them):

- both next hops after start;
- every real failing from d1 only: d1's next hop gone within failurecount x checkinterval + 1 s,
  d2's never;
- recovery: d1 back no sooner than bgpholddown, no later than the hold-down plus two checks;
- a reload that moves the VIP's reals changes nothing on the router;
- graceful stop: d1's route with (65535,0) and the worst MED on the router, then withdrawn
  after bgpdrain;
- kill -9 of d1's lvsmon: with bird, the route stays until the supervisor's `lvsmon bgp-flush`
  (timed); with exabgp, the child dies with lvsmon and the session with it (timed).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable

import pytest

from lvsmon.api.client import request
from tests.bgp.netlab import REALS, VIP, Lab, lab, run, wait

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("bird") is None,
    reason="needs root, ip and BIRD 2 (tests/debian-packages.txt: bird2)",
)

CHECKINTERVAL = 1
FAILURECOUNT = 2
HOLDDOWN = 3
DRAIN = 3
D1, D2 = "10.77.1.2", "10.77.2.2"


def both(the_lab: Lab) -> bool:
    the_lab.check_alive()
    return the_lab.nexthops() == {D1, D2}


def d1_route_in_bird(the_lab: Lab) -> bool:
    return "via 10.77.1.2" in the_lab.bird_routes()


@pytest.mark.parametrize("mode", ["bird", "exabgp"])
def test_active_active_directors(mode: str, record_property: Callable[[str, object], None]) -> None:
    if mode == "exabgp" and shutil.which("exabgp") is None:
        pytest.skip("needs ExaBGP (tests/debian-packages.txt: exabgp)")
    times: dict[str, float] = {}

    def note(name: str, seconds: float) -> None:
        times[name] = round(seconds, 2)
        print(f"[{mode}] {name}: {seconds:.2f} s")
        record_property(f"{mode}_{name}", round(seconds, 3))

    with lab(mode) as the_lab:
        d1, d2 = the_lab.directors
        for d in (d1, d2):
            the_lab.write_cf(d, REALS[:2], holddown=HOLDDOWN, drain=DRAIN)
            the_lab.start_lvsmon(d)
        note("both next hops after start", wait(lambda: both(the_lab), 60, "both next hops"))
        # GET /bgp on d1's control socket
        sock = str(d1.pid_file).removesuffix(".pid") + ".sock"
        status, body = request(sock, "GET", "/bgp")
        assert status == 200 and body["speaker"] == mode and not body["drained"], body
        (vip,) = body["vips"]
        assert (vip["vip"], vip["announced"], vip["med"]) == (VIP, True, 100), vip
        assert vip["reason"] == f"tcp:{VIP}:80: 2 of 2 reals healthy"
        # the same in /metrics and `lvsmon status`
        status, text = request(sock, "GET", "/metrics")
        assert status == 200 and f'lvsmon_bgp_announced{{vip="{VIP}"}} 1' in text
        assert "lvsmon_bgp_director_drained 0" in text
        out = the_lab.cli(d1, "status")
        assert f"bgp ({mode}):" in out and f"  {VIP} announced (MED 100) since " in out, out

        # every real fails from d1 only
        the_lab.block_reals(d1)
        t0 = time.monotonic()
        seen_d2 = True

        def d1_gone() -> bool:
            nonlocal seen_d2
            hops = the_lab.nexthops()
            seen_d2 = seen_d2 and D2 in hops
            return hops == {D2}

        took = wait(d1_gone, 30, "d1's next hop gone")
        note("d1 withdrawn after its reals failed", took)
        assert took <= FAILURECOUNT * CHECKINTERVAL + 1, times
        assert seen_d2

        # recovery honours the hold-down
        the_lab.unblock_reals(d1)
        t0 = time.monotonic()
        took = wait(lambda: both(the_lab), 30, "d1's next hop back")
        note("d1 announced again after its reals recovered", took)
        assert HOLDDOWN <= took <= HOLDDOWN + 2 * CHECKINTERVAL + 1, times

        # a reload that moves the VIP's reals changes nothing on the router
        the_lab.write_cf(d1, (REALS[0], REALS[2]), holddown=HOLDDOWN, drain=DRAIN)
        assert d1.lvsmon is not None
        d1.lvsmon.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3 * CHECKINTERVAL or "10.77.50.3:8080" not in (
            d1.log.read_text()
        ):
            assert both(the_lab), "the router's next hops changed during a reload"
            assert time.monotonic() - t0 < 15, "the reload added no real"
            time.sleep(0.05)
        assert "Added real server: 10.77.50.3:8080" in d1.log.read_text()

        # lvsmon drain --director: the graceful stop's drain, the daemon still running
        t0 = time.monotonic()
        out = the_lab.cli(d1, "drain", "--director")
        took = time.monotonic() - t0
        note("lvsmon drain --director returned (d1 withdrawn)", took)
        assert out.splitlines()[0] == f"director drained ({mode})", out
        assert f"{VIP}: withdrawn: director drained" in out, out
        assert took >= DRAIN and the_lab.nexthops() == {D2}
        t0 = time.monotonic()
        the_lab.cli(d1, "undrain", "--director")
        wait(lambda: both(the_lab), 10, "undrained")
        note("d1 back after undrain --director (from the command)", time.monotonic() - t0)

        # a per-VIP MED (PyBal's primary/backup): d2 at MED 200 by a reload is the backup, the
        # router sends everything to d1; back at 100, ECMP again
        assert d2.lvsmon is not None
        the_lab.write_cf(d2, REALS[:2], holddown=HOLDDOWN, drain=DRAIN, med=200)
        d2.lvsmon.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        wait(lambda: the_lab.nexthops() == {D1}, 15, "d2 the backup")
        note("d2 made the backup by a reload (MED 200)", time.monotonic() - t0)
        assert "BGP.med: 200" in the_lab.bird_routes()
        the_lab.write_cf(d2, REALS[:2], holddown=HOLDDOWN, drain=DRAIN)
        d2.lvsmon.send_signal(signal.SIGHUP)
        wait(lambda: both(the_lab), 15, "ECMP again")

        # graceful stop: GRACEFUL_SHUTDOWN and the worst MED, then withdrawn after bgpdrain
        d1.lvsmon.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        wait(lambda: "(65535,0)" in the_lab.bird_routes(), 10, "GRACEFUL_SHUTDOWN on the router")
        note("GRACEFUL_SHUTDOWN visible on the router", time.monotonic() - t0)
        shown = the_lab.bird_routes()
        assert "BGP.med: 4294967295" in shown, shown
        assert the_lab.nexthops() == {D2}  # the worst MED loses: traffic moves to d2 now
        wait(lambda: not d1_route_in_bird(the_lab), DRAIN + 10, "d1's route withdrawn")
        took = time.monotonic() - t0
        note("withdrawn after the graceful stop began", took)
        assert took >= DRAIN - 0.5, times
        d1.lvsmon.wait(timeout=30)
        assert d1.lvsmon.returncode == 0
        the_lab.ended.append(d1.lvsmon)

        # kill -9, then what the supervisor runs
        the_lab.start_lvsmon(d1)
        wait(lambda: both(the_lab), 60, "d1 back after a restart")
        assert d1.lvsmon is not None
        d1.lvsmon.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        d1.lvsmon.wait(timeout=10)
        the_lab.ended.append(d1.lvsmon)
        if mode == "bird":
            time.sleep(1.0)
            # the gap this mode leaves: BIRD goes on announcing what the dead lvsmon left
            assert both(the_lab), "the route went without the flush?"
            t0 = time.monotonic()
            out = the_lab.flush(d1)
            assert f"{VIP}/32" in out, out
            wait(lambda: the_lab.nexthops() == {D2}, 10, "flushed route withdrawn")
            took = time.monotonic() - t0
            note("withdrawn after kill -9, from the start of lvsmon bgp-flush", took)
            assert took <= 2.0, times
        else:
            wait(lambda: the_lab.nexthops() == {D2}, 10, "session closed with ExaBGP")
            took = time.monotonic() - t0
            note("withdrawn after kill -9 (ExaBGP died with lvsmon)", took)
            assert took <= 2.0, times
            wait(lambda: not the_lab.exabgp_pids(d1), 5, "ExaBGP ended with its parent")
            assert "nothing to flush" in the_lab.flush(d1)
        assert d2.lvsmon is not None and d2.lvsmon.poll() is None
        print(f"[{mode}] measured: {times}")


@pytest.mark.parametrize("bfd", [True, False])
def test_link_loss_is_seen_by_bfd_within_a_second(
    bfd: bool, record_property: Callable[[str, object], None]
) -> None:
    """The gap no health check closes: d1's link to the router stops carrying packets (the
    carrier stays up). With BIRD's BFD (100 ms x 3, configured on both ends) the router takes
    d1's session and route down within a second; without it (the control), only when the BGP
    hold timer (9 s here, 90 s by default) runs out."""
    with lab("bird", bfd=bfd) as the_lab:
        d1, d2 = the_lab.directors
        for d in (d1, d2):
            the_lab.write_cf(d, REALS[:2], holddown=HOLDDOWN, drain=DRAIN)
            the_lab.start_lvsmon(d)
        wait(lambda: both(the_lab), 60, "both next hops")
        time.sleep(1)  # the BFD sessions are up by now (they come up with BGP)
        # d1's address leaves its uplink: what the router sends it is dropped there, d1 sends
        # nothing (the carrier stays up, the router's ARP entry too: no interface event)
        run("ip", "-n", d1.ns, "addr", "flush", "dev", "eth0")
        took = wait(lambda: the_lab.nexthops() == {D2}, 20, "d1's route gone")
        name = "with BFD" if bfd else "hold timer only"
        print(f"[bird, {name}] d1 withdrawn {took:.2f} s after its link stopped carrying packets")
        record_property(f"bird_link_loss_{'bfd' if bfd else 'hold'}", round(took, 3))
        if bfd:
            assert took < 1.0
        else:
            assert took > 3.0  # the hold timer: BFD is what makes the difference
