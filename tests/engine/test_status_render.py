"""`lvsmon status`'s lines: an IPv6 real is written as [address]:port, as everywhere else."""

from __future__ import annotations

from typing import Any, cast

from lvsmon.engine.status import Status, render_status


def _real(address: str, port: int, state: str = "up", weight: int | None = 1) -> dict[str, Any]:
    return {
        "address": address,
        "port": port,
        "state": state,
        "kernel_weight": weight,
        "reason": "http: status 200" if state == "up" else "connect: connection refused",
    }


def test_reals_ipv4_as_before_and_ipv6_in_brackets() -> None:
    status = cast(
        Status,
        {
            "virtuals": [
                {"name": "tcp:192.0.2.1:80", "reals": [_real("192.0.2.10", 80)]},
                {
                    "name": "tcp:[2001:db8::1]:80",
                    "reals": [_real("2001:db8::5", 80, "down", None)],
                },
            ]
        },
    )
    assert render_status(status).splitlines() == [
        "tcp:192.0.2.1:80",
        "  192.0.2.10:80     up          weight 1   http: status 200",
        "tcp:[2001:db8::1]:80",
        "  [2001:db8::5]:80     down        absent     connect: connection refused",
    ]
