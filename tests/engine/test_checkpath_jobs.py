"""The check jobs of checkpath (issue 23): a gate/ipip real checked through the VIP has a spec that
says so (the VIP, its forwarding); masq, ping and checkpath=real specs are the RIP checks they
were, and a reload that changes checkpath changes the job (its health is adopted again)."""

from __future__ import annotations

from lvsmon.engine.jobs import build_plan
from lvsmon.engine.planning import changed_services

from .conftest import cfg

BASE = (
    "virtual=10.30.0.100:80\n"
    "\treal=10.30.0.11:80 gate\n"
    "\treal=10.30.0.12:80 ipip\n"
    "\treal=10.30.0.13:80 masq\n"
    "\tservice=http\n"
)


def specs(text: str) -> list[tuple[str, str, str, str]]:
    plan = build_plan(cfg(text))
    out = []
    for job in plan.jobs:
        for spec in (job.spec, job.connect):
            if spec is not None:
                out.append((spec.host, spec.checkpath, spec.pathvip, spec.pathforward))
    return sorted(out)


def test_vip_specs() -> None:
    assert specs(BASE + "\tcheckpath=vip\n") == [
        ("10.30.0.11", "vip", "10.30.0.100", "gate"),
        ("10.30.0.12", "vip", "10.30.0.100", "ipip"),
        ("10.30.0.13", "real", "", ""),
    ]


def test_both_and_combined() -> None:
    found = specs(BASE + "\tcheckpath=both\n\tchecktype=2\n")
    assert ("10.30.0.11", "both", "10.30.0.100", "gate") in found
    assert found.count(("10.30.0.11", "both", "10.30.0.100", "gate")) == 2  # negotiate, connect


def test_real_and_ping_keep_the_rip() -> None:
    assert {s[1] for s in specs(BASE)} == {"real"}
    assert {s[1] for s in specs(BASE + "\tchecktype=ping\n\tcheckpath=vip\n")} == {"real"}


def test_a_reload_changing_checkpath_changes_the_virtual() -> None:
    old = build_plan(cfg(BASE))
    new = build_plan(cfg(BASE + "\tcheckpath=vip\n"), old)
    assert changed_services(old, new) == {cfg(BASE).virtuals[0].key}
    assert old.jobs.keys() != new.jobs.keys()
