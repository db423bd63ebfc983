"""`lvsmon plan` with removedrain (issue 25 point 3): the reload's weight 0 now, and the deletes
it leaves for later with their timing; a removed virtual's delete after its last real; a real
added back while leaving gets its weight in the plan as in the reload."""

from __future__ import annotations

from lvsmon.cli.plan import render
from lvsmon.engine.desired import desired_table
from lvsmon.engine.health import ADOPTED_UP
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.leaving import started
from lvsmon.engine.planning import plan_json, running_from_kernel
from lvsmon.ipvs.model import ServiceKey, Table

from .conftest import cfg

VKEY = ServiceKey.inet("tcp", "192.0.2.1", 80)


def config(reals: str, drain: int = 30, second: bool = False) -> str:
    lines = "".join(f"\treal={r}:80 masq 5\n" for r in reals.split())
    text = f"removedrain={drain}\nvirtual=192.0.2.1:80\n" + lines + "\tchecktype=connect\n"
    if second:
        text += "virtual=192.0.2.2:80\n" + lines + "\tchecktype=connect\n"
    return text


def kernel(text: str) -> Table:
    c = cfg(text)
    health = {RealRef(v.key, r.address, r.port): ADOPTED_UP for v in c.virtuals for r in v.reals}
    return desired_table(c, health, (), {})


def nothing(*_: object) -> tuple[()]:
    return ()


def test_the_plan_shows_weight_0_now_and_the_delete_later() -> None:
    old = config("192.0.2.11 192.0.2.12")
    running = running_from_kernel(cfg(old), kernel(old))
    answer = plan_json(running, cfg(config("192.0.2.11")), nothing)
    [op] = answer["ops"]
    assert op["kind"] == "EditDest" and op["real"] == "192.0.2.12:80" and op["when"] == "now"
    assert op["ipvsadm"] == "-e -t 192.0.2.1:80 -r 192.0.2.12:80 -m -w 0 -x 0 -y 0"
    assert op["text"].endswith(
        "; leaving: weight 0 now, deleted when it has 0 active connections or at +30 s"
    )
    [later] = answer["later"]
    assert later["kind"] == "DeleteDest" and later["real"] == "192.0.2.12:80"
    assert later["when"] == "when it has 0 active connections, at +30 s at the latest"
    text = render(answer["ops"], answer["later"])
    lines = text.splitlines()
    assert lines[0].startswith("-e -t 192.0.2.1:80 -r 192.0.2.12:80 -m -w 0 -x 0 -y 0   # ")
    assert lines[1].startswith("-d -t 192.0.2.1:80 -r 192.0.2.12:80")
    assert "# later, when it has 0 active connections, at +30 s at the latest: " in lines[1]
    assert lines[2] == "1 change"


def test_without_removedrain_the_plan_deletes_at_once() -> None:
    old = config("192.0.2.11 192.0.2.12", drain=0)
    running = running_from_kernel(cfg(old), kernel(old))
    answer = plan_json(running, cfg(config("192.0.2.11", drain=0)), nothing)
    assert [op["kind"] for op in answer["ops"]] == ["DeleteDest"]
    assert "later" not in answer


def test_a_removed_virtual_is_deleted_after_its_last_real() -> None:
    old = config("192.0.2.11", second=True)
    running = running_from_kernel(cfg(old), kernel(old))
    answer = plan_json(running, cfg(config("192.0.2.11")), nothing)
    assert [(op["kind"], op["virtual"]) for op in answer["ops"]] == [
        ("EditDest", "tcp:192.0.2.2:80")
    ]
    assert [(op["kind"], op["when"]) for op in answer["later"]] == [
        ("DeleteDest", "when it has 0 active connections, at +30 s at the latest"),
        ("DeleteService", "when its last leaving real has left"),
    ]


def test_a_real_added_back_while_leaving_keeps_its_weight() -> None:
    two, one = config("192.0.2.11 192.0.2.12"), config("192.0.2.11")
    actual = kernel(two)
    first = running_from_kernel(cfg(two), actual)
    # the daemon runs `one` now, with .12 leaving at weight 0
    from lvsmon.engine.desired import layout_of

    leaving, _ = started(
        {}, cfg(two), layout_of(cfg(two)), cfg(one), layout_of(cfg(one)), actual, 0
    )
    actual[VKEY].dests = {d: (c if d.address != "192.0.2.12" else leaving[VKEY].dests[d].conf)
                          for d, c in actual[VKEY].dests.items()}  # fmt: skip
    running = running_from_kernel(cfg(one), actual)
    running = type(running)(running.config, running.plan, running.health, running.managed,
                            actual, leaving)  # fmt: skip
    answer = plan_json(running, cfg(two), nothing)
    assert [(op["kind"], op["real"], op["ipvsadm"]) for op in answer["ops"]] == [
        ("EditDest", "192.0.2.12:80", "-e -t 192.0.2.1:80 -r 192.0.2.12:80 -m -w 5 -x 0 -y 0")
    ]
    assert "later" not in answer
    assert first.config is not running.config
