"""bgp = exabgp and a VIP's family (routes/exabgpfamilies.py): `next-hop self` over a session of
the other family is an address routers drop, so check-config says so at the virtual's line
(FILE:LINE, exit 2), naming the neighbour and the fix; what works passes. And bgp = bird's
IPv6 limit: the kernel has no IPv6 route of metric 0, so no bgpmed = 0."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvsmon.config.checkconf import check_config
from lvsmon.routes.exabgpfamilies import Neighbour, neighbours, problem
from tests.config.directives import errors as _errors
from tests.config.directives import parse as _parse

V4 = "virtual=192.0.2.1:80\n\treal=192.0.2.2:80 gate\n\tscheduler=mh\n"
V6 = "virtual6=[2001:db8::10]:80\n\treal6=[2001:db8::2]:80 gate\n\tscheduler=mh\n"

SESSION4 = """\
neighbor 192.0.2.254 {  # the router
  router-id 192.0.2.1;
  local-address 192.0.2.1;
  local-as 65001;
  peer-as 65000;
}
"""
SESSION6 = """\
neighbor 2001:db8::fe {
  router-id 192.0.2.1;
  local-address 2001:db8::1;
  local-as 65001;
  peer-as 65000;
}
"""


def only(text: str, family: str) -> str:
    return text.replace(
        "  peer-as 65000;\n", f"  peer-as 65000;\n  family {{\n    {family};\n  }}\n"
    )


def test_neighbours_and_their_families() -> None:
    text = (
        "process x { run /bin/cat; }\n"
        + only(SESSION4, "ipv4 unicast")
        + SESSION6
        + "neighbor 2001:db8::fd { inherit t; }\n"
        + "template { neighbor t { family { ipv6 unicast; } } }\n"
        + "neighbor 2001:db8::fc { family { all; } }\n"
    )
    both = frozenset({"ipv4 unicast", "ipv6 unicast"})
    assert neighbours(text) == [
        Neighbour("192.0.2.254", 2, False, frozenset({"ipv4 unicast"})),
        Neighbour("2001:db8::fe", 11, True, both),  # no family block: ExaBGP's every family
        Neighbour("2001:db8::fd", 17, True, None),  # its template decides: not judged
        Neighbour("2001:db8::fc", 19, True, both),
    ]


@pytest.mark.parametrize(
    ("text", "inet6", "wrong"),
    [
        (SESSION6, True, None),  # next-hop self is the director's IPv6 address
        (SESSION4, False, None),
        (only(SESSION4, "ipv4 unicast") + only(SESSION6, "ipv6 unicast"), True, None),
        (only(SESSION4, "ipv4 unicast") + only(SESSION6, "ipv6 unicast"), False, None),
        (SESSION4, True, "neighbor 192.0.2.254 (n.conf:1) is an IPv4 session"),
        (SESSION4 + SESSION6, True, "neighbor 192.0.2.254 (n.conf:1) is an IPv4 session"),
        (SESSION6, False, "neighbor 2001:db8::fe (n.conf:1) is an IPv6 session"),
        (only(SESSION4, "ipv4 unicast"), True, "no neighbor in n.conf carries ipv6 unicast"),
        (only(SESSION6, "ipv6 unicast"), False, "no neighbor in n.conf carries ipv4 unicast"),
        ("neighbor router.example { }\n", True, None),  # not judged (ExaBGP refuses it)
    ],
)
def test_problem(text: str, inet6: bool, wrong: str | None) -> None:
    said = problem(text, "n.conf", inet6)
    if wrong is None:
        assert said is None
    else:
        assert said is not None and wrong in said, said


def test_an_ipv6_vip_over_an_ipv4_session_is_an_error_at_its_virtual(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text(SESSION4)
    head = f"bgp=exabgp\nbgpexabgpconf={conf}\n"
    (error,) = _errors(head + V4 + V6)
    assert error == (
        f"a.cf:6: an IPv6 VIP with bgp = exabgp: neighbor 192.0.2.254 ({conf}:1) is an IPv4"
        " session, where ExaBGP's next-hop self is an IPv4 address, which routers drop for an"
        " IPv6 route; give that neighbor family { ipv4 unicast; } and add an IPv6 session for"
        " the IPv6 VIPs (a neighbor with an IPv6 address and local-address,"
        " family { ipv6 unicast; })"
    )
    # the fix it names, and a virtual that opts out, pass
    conf.write_text(only(SESSION4, "ipv4 unicast") + only(SESSION6, "ipv6 unicast"))
    assert _parse(head + V4 + V6).virtuals[1].bgp is not None
    conf.write_text(SESSION4)
    assert _parse(head + V4 + V6 + "\tbgp=no\n").virtuals[1].bgp is None
    # bird: the operator's BIRD config decides (operations.md), nothing to check here
    assert _parse("bgp=bird\n" + V6).virtuals[0].bgp is not None


def test_check_config_exits_2(tmp_path: Path) -> None:
    conf = tmp_path / "n.conf"
    conf.write_text(SESSION6)
    path = tmp_path / "bgp.cf"
    path.write_text(f"bgp=exabgp\nbgpexabgpconf={conf}\n" + V4)
    out, err = io.StringIO(), io.StringIO()
    assert check_config(str(path), as_json=False, out=out, err=err) == 2
    first = err.getvalue().splitlines()[0]
    assert first.startswith(f"{path}:3: an IPv4 VIP with bgp = exabgp: neighbor 2001:db8::fe")


def test_bird_refuses_med_0_for_an_ipv6_vip() -> None:
    # the kernel keeps an IPv6 route's metric 0 as 1024: MED 1024 on the wire, EEXIST at each
    # resync (test_ipv6_metric_0_is_1024_in_the_kernel shows the kernel's side)
    message = (
        "bgpmed = 0 with an IPv6 VIP and bgp = bird: the kernel keeps an IPv6 route's metric 0"
        " as 1024, so BIRD would announce MED 1024; use bgpmed = 1 or more (the best MED among"
        " the directors wins either way)"
    )
    assert _errors("bgp=bird\nbgpmed=0\n" + V4 + V6) == [f"a.cf:6: {message}"]
    assert _errors("bgp=bird\n" + V6 + "\tbgpmed=0\n") == [f"a.cf:5: {message}"]
    assert _parse("bgp=bird\nbgpmed=0\n" + V4).virtuals[0].bgp is not None  # IPv4 keeps 0
    assert _parse("bgp=bird\nbgpmed=0\n" + V6 + "\tbgpmed=1\n").virtuals[0].bgp is not None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)
def test_ipv6_metric_0_is_1024_in_the_kernel() -> None:
    script = (
        "from lvsmon.routes.kernel import put, routes\n"
        "put(200, 201, '2001:db8::10', 0); put(200, 201, '192.0.2.10', 0)\n"
        "print(sorted(routes(200).items()))\n"
    )
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == "[('192.0.2.10', 0), ('2001:db8::10', 1024)]"
