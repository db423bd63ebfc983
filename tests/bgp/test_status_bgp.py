"""The status's `bgp` (each VIP's announcement): checked when read back, shown by
`lvsmon status`; absent or null from a daemon without bgp."""

from __future__ import annotations

import time

import pytest

from lvsmon.engine.status import MalformedStatus, Status, check_status, render_status

SINCE = 1796593438.0


def status(**bgp: object) -> Status:
    vip = {
        "vip": "2001:db8::10",
        "announced": True,
        "reason": "tcp:[2001:db8::10]:80: 2 of 2 reals healthy",
        "since": SINCE,
        "med": 100,
        "communities": [],
        "speaker": "bird",
    }
    body = {
        "speaker": "bird",
        "drained": False,
        "vips": [
            vip,
            {
                **vip,
                "vip": "192.0.2.10",
                "announced": False,
                "med": None,
                "reason": "x: 0 of 2 reals healthy, 1 needed",
            },
        ],
    }
    body.update(bgp)
    return {"phase": "running", "bgp": body}  # type: ignore[typeddict-item]


def test_lvsmon_status_shows_each_vip() -> None:
    at = time.strftime("%H:%M:%S", time.localtime(SINCE))
    lines = render_status(status()).splitlines()
    i = lines.index("bgp (bird):")
    assert lines[i + 1 : i + 3] == [
        f"  [2001:db8::10] announced (MED 100) since {at}: tcp:[2001:db8::10]:80: 2 of 2 reals"
        " healthy",
        f"  192.0.2.10 withdrawn since {at}: x: 0 of 2 reals healthy, 1 needed",
    ]
    drained = render_status(status(drained=True))
    assert "bgp (bird) (director drained: lvsmon undrain --director):" in drained
    assert "bgp" not in render_status({"phase": "running", "bgp": None})
    assert "bgp" not in render_status({"phase": "running"})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"speaker": 1}, "bgp.speaker"),
        ({"drained": "no"}, "bgp.drained"),
        ({"vips": [{"vip": "x"}]}, "bgp.vips[0]"),
        ({"vips": [{"vip": "x", "reason": "", "announced": True, "since": 1e300}]}, "since"),
    ],
)
def test_a_malformed_bgp_is_refused(bad: dict[str, object], message: str) -> None:
    with pytest.raises(MalformedStatus, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_status(status(**bad))
