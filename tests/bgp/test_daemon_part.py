"""The daemon runs the announcer as a part right after the engine (stopped before it, so the
graceful stop ends before IPVS is purged), and only with bgp on."""

from __future__ import annotations

from lvsmon.config import parse_config
from lvsmon.daemon.daemon import Daemon
from lvsmon.ipvs.memory import MemoryBackend

VIRTUAL = "virtual=127.0.0.100:80\n\treal=127.0.0.1:8081 masq\n\tchecktype=connect\n"


def test_a_part_after_the_engine_with_bgp_only() -> None:
    on = Daemon(parse_config("bgp=bird\n" + VIRTUAL, "t.cf"), MemoryBackend())
    names = [p.name for p in on._parts().parts]
    assert names[names.index("the engine") + 1] == "BGP announcements"
    assert on.bgp is not None and on.bgp.speaker.name == "bird"
    off = Daemon(parse_config(VIRTUAL, "t.cf"), MemoryBackend())
    assert off.bgp is None and "BGP announcements" not in [p.name for p in off._parts().parts]


def test_the_director_drain_is_kept_beside_the_pid_file() -> None:
    d = Daemon(
        parse_config("bgp=bird\n" + VIRTUAL, "t.cf"),
        MemoryBackend(),
        status_path="/run/lvsmon.t.cf.status.json",
    )
    assert d.bgp is not None and d.bgp.drained_path == "/run/lvsmon.t.cf.director-drained"
