"""change_of: kernel ops as the reconciler publishes them become alerts with ldirectord's mail
subjects; failed ops, service ops and drift repairs are not alerts."""

from __future__ import annotations

from lvsmon.alerts.changes import Change, change_of, reminder_of
from lvsmon.engine.wording import kernel_op_text
from lvsmon.ipvs.model import DestConf, Forward, ServiceConf, ServiceKey
from lvsmon.ipvs.ops import AddDest, AddService, DeleteDest, DeleteService, EditDest, EditService

from .helpers import cfg, dest, event, svc

CONFIG = cfg(
    """
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    \treal=10.0.0.3:80 gate
    \tfallback=127.0.0.1:80 gate
    virtual6=[2001:db8::1]:80
    \treal6=[2001:db8::2]:80 gate
    """
)
S = svc()


def of(op: object, **kw: object) -> Change | None:
    return change_of(event(op, CONFIG, **kw), 12.5)  # type: ignore[arg-type]


def test_quiescent_is_down_with_ldirectord_subject() -> None:
    c = of(EditDest(S, dest("10.0.0.2"), DestConf(Forward.GATE, 0)))
    assert c == Change(
        "down",
        "Quiescent real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 0)",
        S,
        "10.0.0.2:80",
        12.5,
    )


def test_deleted_is_down() -> None:
    c = of(DeleteDest(S, dest("10.0.0.3")))
    assert c is not None
    assert (c.kind, c.subject, c.real) == (
        "down",
        "Deleted real server: 10.0.0.3:80 (10.0.0.1:80)",
        "10.0.0.3:80",
    )


def test_readd_quiescent_mails_as_quiescent() -> None:
    """ldirectord logs "Readd Quiescent" but its mail says "Quiescent" (L4059)."""
    op = AddDest(S, dest("10.0.0.2"), DestConf(Forward.GATE, 0))
    assert kernel_op_text(event(op, CONFIG)).startswith("Readd Quiescent real server: ")
    c = of(op)
    assert c is not None
    assert c.kind == "down"
    assert c.subject == "Quiescent real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 0)"


def test_restored_and_added_are_up() -> None:
    restored = of(EditDest(S, dest("10.0.0.2"), DestConf(Forward.GATE, 1)))
    added = of(AddDest(S, dest("10.0.0.3"), DestConf(Forward.GATE, 2)))
    assert restored is not None and added is not None
    assert restored.kind == added.kind == "up"
    assert restored.subject == "Restored real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 1)"
    assert added.subject == "Added real server: 10.0.0.3:80 (10.0.0.1:80) (Weight set to 2)"
    assert added.real == "10.0.0.3:80"


def test_fallback_changes_touch_no_reminders() -> None:
    fb = dest("127.0.0.1")
    added = of(AddDest(S, fb, DestConf(Forward.GATE, 1)))
    deleted = of(DeleteDest(S, fb))
    assert added is not None and deleted is not None
    assert (added.kind, added.real) == ("fallback", "")
    assert added.subject == "Added fallback server: 127.0.0.1:80 (10.0.0.1:80) (Weight set to 1)"
    assert (deleted.kind, deleted.subject) == (
        "fallback",
        "Deleted fallback server: 127.0.0.1:80 (10.0.0.1:80)",
    )


def test_ipv6_real_is_bracketed() -> None:
    s6 = ServiceKey.inet("tcp", "2001:db8::1", 80)
    c = of(EditDest(s6, dest("2001:db8::2"), DestConf(Forward.GATE, 0)))
    assert c is not None
    assert c.real == "[2001:db8::2]:80"
    assert c.subject == (
        "Quiescent real server: [2001:db8::2]:80 ([2001:db8::1]:80) (Weight set to 0)"
    )


def test_not_alerts() -> None:
    down = EditDest(S, dest("10.0.0.2"), DestConf(Forward.GATE, 0))
    assert of(down, error="No such destination") is None  # the op failed: nothing changed
    assert of(down, drift=True) is None  # a repair of someone else's change
    conf = ServiceConf(scheduler="wrr")
    other = ServiceKey.inet("tcp", "10.0.0.9", 80)
    assert of(AddService(other, conf)) is None
    assert of(EditService(S, conf)) is None
    assert of(DeleteService(other)) is None


def test_reminder_subject() -> None:
    r = reminder_of(S, "10.0.0.2:80", "10.0.0.1:80", 3.0)
    assert r == Change(
        "down", "Inaccessible real server: 10.0.0.2:80 (10.0.0.1:80)", S, "10.0.0.2:80", 3.0
    )
    assert r.reminder
    assert not Change("down", "Deleted real server: x", S, "x", 0).reminder
