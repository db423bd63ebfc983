"""AlertPolicy with a fake clock: ldirectord's alert rules, plus coalescing and the rate limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.alerts.changes import Change
from lvsmon.alerts.policy import AlertPolicy, Mail
from lvsmon.config import Config
from lvsmon.config.model import Virtual

from .helpers import add, cfg, delete, quiesce, restore, svc

BASE = """
    emailalert=ops@example.com
    emailalertfreq=60
    quiescent=yes
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    \treal=10.0.0.3:80 gate
    \treal=10.0.0.4:8080 gate
    \tfallback=127.0.0.1:80 gate
    virtual=10.0.0.5:80
    \treal=10.0.0.6:80 gate
    \temailalert=web@example.com, oncall@example.com
    \temailalertfreq=30
    \tservicename=web
    \tcomment=the shop
    virtual=10.0.0.7:80
    \treal=10.0.0.8:80 gate
    \temailalertstatus=running
    \temailalertfreq=0
"""
CONFIG = cfg(BASE)
OPS = ("ops@example.com",)
WEB = ("web@example.com", "oncall@example.com")
Q2 = "Quiescent real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 0)"
R2 = "Restored real server: 10.0.0.2:80 (10.0.0.1:80) (Weight set to 1)"
I2 = "Inaccessible real server: 10.0.0.2:80 (10.0.0.1:80)"


def policy(config: Config = CONFIG, window_s: float = 5, rate: int = 0) -> AlertPolicy:
    p = AlertPolicy(config, window_s=window_s, rate_per_hour=rate, hostname="director1")
    p.phase("running")
    return p


def run(p: AlertPolicy, until: float, start: float = 0.0) -> list[tuple[float, Mail]]:
    """Every mail until `until`, stepping the fake clock to each `next_due` as the sender does."""
    out: list[tuple[float, Mail]] = []
    now = start
    while True:
        out += [(now, m) for m in p.due(now)]
        nxt = p.next_due()
        if nxt is None or nxt > until:
            return out
        assert nxt >= now - 1e-9, "next_due went back in time"
        now = max(now, nxt)


def subjects(mails: list[tuple[float, Mail]]) -> list[tuple[float, str]]:
    return [(t, m.subject) for t, m in mails]


def test_one_real_down_one_mail_with_ldirectords_subject() -> None:
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.2"), 100.0)
    assert p.due(104.9) == []
    assert p.next_due() == 105.0
    assert p.due(105.0) == [Mail(OPS, Q2, (quiesce(CONFIG, "10.0.0.2"),), 0, "running")]
    assert p.due(105.0) == []


def test_servicename_prefixes_the_subject_and_virtual_recipients_win() -> None:
    p = policy()
    p.feed(delete(CONFIG, "10.0.0.6", "10.0.0.5"), 0.0)
    (mail,) = p.due(5.0)
    assert mail.to == WEB
    assert mail.subject == "[web] Deleted real server: 10.0.0.6:80 (10.0.0.5:80)"


def test_recipients_are_separate_mails() -> None:
    """Changes of virtuals with different recipients in one window: one mail per recipient list."""
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    p.feed(quiesce(CONFIG, "10.0.0.6", "10.0.0.5"), 1.0)
    mails = p.due(6.0)
    assert [(m.to, len(m.changes)) for m in mails] == [(OPS, 1), (WEB, 1)]
    assert mails[0].subject == Q2


def test_restored_one_mail_and_reminders_stop() -> None:
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    got = run(p, 125.0)
    assert subjects(got) == [(5.0, Q2), (65.0, I2), (125.0, I2)]
    p.feed(restore(CONFIG, "10.0.0.2"), 130.0)
    assert subjects(run(p, 10_000.0, start=130.0)) == [(135.0, R2)]
    assert p.next_due() is None
    assert p.reminders == frozenset()


def test_reminders_at_the_virtuals_frequency_and_none_when_zero() -> None:
    p = policy(window_s=0)
    p.feed(delete(CONFIG, "10.0.0.6", "10.0.0.5"), 0.0)  # emailalertfreq=30
    p.feed(quiesce(CONFIG, "10.0.0.8", "10.0.0.7"), 0.0)  # emailalertfreq=0
    got = run(p, 95.0)
    assert [(t, m.to, m.subject) for t, m in got] == [
        (0.0, WEB, "[web] Deleted real server: 10.0.0.6:80 (10.0.0.5:80)"),
        (0.0, OPS, "Quiescent real server: 10.0.0.8:80 (10.0.0.7:80) (Weight set to 0)"),
        (30.0, WEB, "[web] Inaccessible real server: 10.0.0.6:80 (10.0.0.5:80)"),
        (60.0, WEB, "[web] Inaccessible real server: 10.0.0.6:80 (10.0.0.5:80)"),
        (90.0, WEB, "[web] Inaccessible real server: 10.0.0.6:80 (10.0.0.5:80)"),
    ]


def test_reminders_coalesce() -> None:
    p = policy()
    for i, rip in enumerate(("10.0.0.2", "10.0.0.3")):
        p.feed(quiesce(CONFIG, rip), i * 0.5)
    got = run(p, 70.0)
    assert subjects(got) == [
        (5.0, "[lvsmon] 2 real servers down on director1"),
        (65.0, "[lvsmon] 2 real servers still down on director1"),
    ]
    assert [c.subject for c in got[1][1].changes] == [
        I2,
        "Inaccessible real server: 10.0.0.3:80 (10.0.0.1:80)",
    ]


def test_status_filter() -> None:
    """10.0.0.7 mails only while running (emailalertstatus=running)."""
    p = policy(window_s=0)
    p.phase("starting")
    p.feed(quiesce(CONFIG, "10.0.0.8", "10.0.0.7"), 0.0)
    assert p.due(0.0) == []
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)  # the global status list: all
    assert [m.status for m in p.due(0.0)] == ["starting"]
    p.phase("running")
    p.feed(restore(CONFIG, "10.0.0.8", "10.0.0.7"), 1.0)
    assert [m.subject for m in p.due(1.0)] == [
        "Restored real server: 10.0.0.8:80 (10.0.0.7:80) (Weight set to 1)"
    ]
    p.phase("stopping")
    p.feed(quiesce(CONFIG, "10.0.0.8", "10.0.0.7"), 2.0)
    assert p.due(2.0) == []


def test_status_filter_none_still_runs_the_reminder_clock() -> None:
    """As ldirectord: the reminder is re-armed even when the filter keeps the mail back."""
    config = cfg(BASE.replace("emailalertfreq=60", "emailalertfreq=60\n    emailalertstatus=none"))
    p = policy(config, window_s=0)
    p.feed(quiesce(config, "10.0.0.2"), 0.0)
    assert run(p, 1000.0) == []
    assert p.reminders == {(svc(), "10.0.0.2:80")}


def test_no_recipients_no_mail() -> None:
    config = cfg("virtual=10.0.0.1:80\n\treal=10.0.0.2:80 gate\n")
    p = policy(config, window_s=0)
    p.feed(quiesce(config, "10.0.0.2"), 0.0)
    assert run(p, 10_000.0) == []
    assert p.next_due() is None


def test_fifty_reals_down_within_one_second_one_mail() -> None:
    reals = "".join(f"\treal=10.0.1.{i}:80 gate\n" for i in range(1, 51))
    config = cfg(f"emailalert=ops@example.com\nvirtual=10.0.0.1:80\n{reals}")
    p = policy(config)
    for i in range(1, 51):
        p.feed(delete(config, f"10.0.1.{i}"), (i - 1) / 50)  # within 0.98 s
    assert p.due(4.9) == []
    (mail,) = p.due(5.0)
    assert mail.subject == "[lvsmon] 50 real servers down on director1"
    assert len(mail.changes) == 50
    assert {c.real for c in mail.changes} == {f"10.0.1.{i}:80" for i in range(1, 51)}
    assert p.next_due() is None


def test_mixed_summary_subject() -> None:
    reals = "".join(f"\treal=10.0.1.{i}:80 gate\n" for i in range(1, 51))
    text = f"emailalert=ops@example.com\nvirtual=10.0.0.1:80\n{reals}\tfallback=127.0.0.1:80\n"
    config = cfg(text)
    p = policy(config)
    for i in range(1, 49):
        p.feed(delete(config, f"10.0.1.{i}"), 0.0)
    for i in (49, 50):
        p.feed(add(config, f"10.0.1.{i}"), 1.0)
    p.feed(add(config, "127.0.0.1"), 1.0)
    (mail,) = p.due(5.0)
    assert mail.subject == (
        "[lvsmon] 48 real servers down, 2 restored, 1 fallback change on director1"
    )


def test_changes_after_the_window_start_a_new_mail() -> None:
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    p.feed(quiesce(CONFIG, "10.0.0.3"), 5.0)  # the first window closed at 5.0
    mails = run(p, 20.0)
    assert [(t, len(m.changes)) for t, m in mails] == [(5.0, 1), (10.0, 1)]


def test_window_zero_one_mail_per_change() -> None:
    p = policy(window_s=0)
    for rip in ("10.0.0.2", "10.0.0.3"):
        p.feed(quiesce(CONFIG, rip), 0.0)
    p.feed(restore(CONFIG, "10.0.0.2"), 0.0)
    assert [m.subject for m in p.due(0.0)] == [
        Q2,
        "Quiescent real server: 10.0.0.3:80 (10.0.0.1:80) (Weight set to 0)",
        R2,
    ]


def test_rate_limit_holds_back_and_summarises() -> None:
    config = cfg(BASE.replace("emailalertfreq=60", "emailalertfreq=0"))  # no reminders
    p = policy(config, window_s=0, rate=2)
    sent = [
        quiesce(CONFIG, "10.0.0.2", at=0.0),
        quiesce(CONFIG, "10.0.0.3", at=10.0),
        restore(CONFIG, "10.0.0.2", at=20.0),
        restore(CONFIG, "10.0.0.3", at=30.0),
        delete(CONFIG, "10.0.0.2", at=40.0),
    ]
    mails: list[tuple[float, Mail]] = []
    for change in sent:
        p.feed(change, change.at)
        mails += [(change.at, m) for m in p.due(change.at)]
    assert [(t, m.held_back) for t, m in mails] == [(0.0, 0), (10.0, 0)]
    assert p.next_due() == 3600.0
    assert p.due(3599.0) == []
    (held,) = p.due(3600.0)
    assert held.held_back == 3
    assert held.changes == tuple(sent[2:])  # in order, none dropped
    assert held.subject == "[lvsmon] 1 real server down, 2 restored on director1"
    # The hour slides: the mail at 10.0 leaves it at 3610.
    p.feed(quiesce(CONFIG, "10.0.0.3"), 3605.0)
    assert p.due(3605.0) == []
    assert p.next_due() == 3610.0
    (single,) = p.due(3610.0)
    assert (single.subject, single.held_back) == (
        "Quiescent real server: 10.0.0.3:80 (10.0.0.1:80) (Weight set to 0)",
        1,
    )


def test_rate_limit_is_per_recipient_list() -> None:
    p = policy(window_s=0, rate=1)
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    p.feed(quiesce(CONFIG, "10.0.0.3"), 0.0)
    p.feed(quiesce(CONFIG, "10.0.0.6", "10.0.0.5"), 0.0)
    mails = p.due(0.0)
    assert [(m.to, len(m.changes), m.held_back) for m in mails] == [(OPS, 2, 2), (WEB, 1, 0)]


def test_flush_sends_everything_now() -> None:
    p = policy(rate=1)
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    assert len(p.due(5.0)) == 1
    p.phase("stopping")
    p.feed(quiesce(CONFIG, "10.0.0.3"), 6.0)
    (mail,) = p.flush(6.0)  # neither the window nor the hour's limit holds it at stop
    assert mail.status == "stopping"
    assert p.next_due() == 60.0  # only the reminders remain
    assert p.flush(7.0) == []


def test_reload_keeps_reminder_state() -> None:
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    p.feed(quiesce(CONFIG, "10.0.0.3"), 0.0)
    p.feed(quiesce(CONFIG, "10.0.0.6", "10.0.0.5"), 0.0)
    p.due(5.0)
    # 10.0.0.3 leaves the config, 10.0.0.5's virtual goes, a comment changes elsewhere.
    reloaded = cfg(
        BASE.replace("\treal=10.0.0.3:80 gate\n", "")
        .replace("virtual=10.0.0.5:80", "virtual=10.0.0.9:80")
        .replace("the shop", "the new shop")
    )
    p.use(reloaded)
    assert p.reminders == {(svc(), "10.0.0.2:80")}
    got = run(p, 70.0, start=30.0)
    assert subjects(got) == [(65.0, I2)]  # not restarted by the reload


def test_reload_that_stops_reminders() -> None:
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    p.use(cfg(BASE.replace("emailalertfreq=60", "emailalertfreq=0")))
    assert p.reminders == frozenset()


def test_real_deleted_by_a_reload_gets_no_reminders() -> None:
    """The reconciler deletes a real the new config dropped: a mail, but no outage to remind of."""
    reloaded = cfg(BASE.replace("\treal=10.0.0.3:80 gate\n", ""))
    p = policy()
    p.use(reloaded)
    p.feed(delete(CONFIG, "10.0.0.3"), 0.0)
    assert subjects(run(p, 1000.0)) == [(5.0, "Deleted real server: 10.0.0.3:80 (10.0.0.1:80)")]


def test_gate_real_with_another_port_is_known_by_its_kernel_port() -> None:
    """real=10.0.0.4:8080 gate on a :80 virtual is 10.0.0.4:80 in the kernel and its messages."""
    p = policy()
    p.feed(quiesce(CONFIG, "10.0.0.4"), 0.0)
    assert p.reminders == {(svc(), "10.0.0.4:80")}


def test_known_down_reminders_without_a_first_mail() -> None:
    p = policy()
    p.known_down(svc(), "10.0.0.2:80", 1000.0)
    p.known_down(svc(), "10.0.0.99:80", 1000.0)  # not configured: ignored
    assert p.due(1000.0) == []
    assert p.next_due() == 1060.0
    assert subjects(run(p, 1065.0, start=1000.0)) == [(1065.0, I2)]


def test_a_reminder_is_due_at_the_time_next_due_names() -> None:
    """231.59913671970824 + 30 - 231.59913671970824 < 30 in floats: found by the property test
    below, where the sender would have spun on a reminder never due."""
    p = policy(window_s=0)
    p.known_down(svc("10.0.0.5"), "10.0.0.6:80", 231.59913671970824)
    nxt = p.next_due()
    assert nxt is not None
    assert [m.subject for m in p.due(nxt)] == [
        "[web] Inaccessible real server: 10.0.0.6:80 (10.0.0.5:80)"
    ]


def test_fallback_change_mails_without_reminders() -> None:
    p = policy()
    p.feed(add(CONFIG, "127.0.0.1"), 0.0)
    assert subjects(run(p, 1000.0)) == [
        (5.0, "Added fallback server: 127.0.0.1:80 (10.0.0.1:80) (Weight set to 1)")
    ]


def test_status_is_the_phase_of_the_first_change() -> None:
    p = policy()
    p.phase("starting")
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)
    p.phase("running")
    (mail,) = p.due(5.0)
    assert mail.status == "starting"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        policy().phase("sleeping")
    with pytest.raises(ValueError):
        AlertPolicy(CONFIG, window_s=-1, rate_per_hour=0, hostname="h")
    with pytest.raises(ValueError):
        AlertPolicy(CONFIG, window_s=0, rate_per_hour=-1, hostname="h")


RIPS = ("10.0.0.2", "10.0.0.3", "10.0.0.6")


@settings(max_examples=200, deadline=None)
@given(
    window=st.sampled_from([0.0, 1.0, 5.0]),
    rate=st.sampled_from([0, 1, 3]),
    steps=st.lists(st.tuples(st.floats(0, 50), st.sampled_from(RIPS), st.booleans()), max_size=30),
)
def test_every_change_is_mailed_exactly_once(
    window: float, rate: int, steps: list[tuple[float, str, bool]]
) -> None:
    """Whatever the window and the limit: each change is in exactly one mail, in feed order per
    recipient list, never before its window closes, and no mail beyond the limit per hour."""
    p = policy(window_s=window, rate=rate)
    now = 0.0
    fed: list[Change] = []
    mails: list[tuple[float, Mail]] = []

    def until(t: float) -> None:
        for _ in range(1000):  # due(next_due()) always makes progress: never a spin
            nxt = p.next_due()
            if nxt is None or nxt > t:
                return
            mails.extend((nxt, m) for m in p.due(nxt))
        raise AssertionError("due(next_due()) made no progress")

    for gap, rip, up in steps:
        now += gap
        until(now)
        vip = "10.0.0.5" if rip == "10.0.0.6" else "10.0.0.1"
        change = (restore if up else quiesce)(CONFIG, rip, vip, now)
        fed.append(change)
        p.feed(change, now)
        mails.extend((now, m) for m in p.due(now))
    stop = now + 1.0
    flushed = p.flush(stop)
    for at, mail in mails:
        assert at >= min(c.at for c in mail.changes) + window  # never before its window closed
    if rate:
        for to in (OPS, WEB):  # 30 steps of at most 50 s: all within one hour
            assert sum(1 for _, m in mails if m.to == to) <= rate
    mails += [(stop, m) for m in flushed]
    got = [c for _, m in mails for c in m.changes if not c.reminder]
    assert len(got) == len(fed) and {id(c) for c in got} == {id(c) for c in fed}
    for to in (OPS, WEB):
        order = [c for _, m in mails if m.to == to for c in m.changes if not c.reminder]
        assert order == [c for c in fed if (WEB if c.service == svc("10.0.0.5") else OPS) == to]


RELAYS = """
    emailalert=ops@example.com
    smtp=relay1.example.com
    quiescent=yes
    virtual=10.0.0.1:80
    \treal=10.0.0.2:80 gate
    virtual=10.0.0.5:80
    \treal=10.0.0.6:80 gate
    \tsmtp=relay2.example.com:2525
    virtual=10.0.0.7:80
    \treal=10.0.0.8:80 gate
"""


def test_a_virtuals_own_relay_carries_its_mails_apart() -> None:
    """ldirectord lets a virtual name its own `smtp`: its changes go there, and are coalesced and
    rate-limited apart from those for the global relay, even for the same recipients."""
    config = cfg(RELAYS)
    p = policy(config, window_s=5)
    p.feed(quiesce(config, "10.0.0.2"), 100.0)
    p.feed(quiesce(config, "10.0.0.6", vip="10.0.0.5"), 100.5)
    p.feed(quiesce(config, "10.0.0.8", vip="10.0.0.7"), 101.0)
    mails = p.due(106.0)
    by_relay = {m.relay: [c.real for c in m.changes] for m in mails}
    assert by_relay == {
        ("relay1.example.com", 25): ["10.0.0.2:80", "10.0.0.8:80"],
        ("relay2.example.com", 2525): ["10.0.0.6:80"],
    }
    assert all(m.to == OPS for m in mails)


def test_the_rate_limit_counts_per_relay() -> None:
    config = cfg(RELAYS)
    p = policy(config, window_s=0, rate=1)
    p.feed(quiesce(config, "10.0.0.2"), 100.0)
    p.feed(quiesce(config, "10.0.0.6", vip="10.0.0.5"), 100.0)
    assert {m.relay for m in p.due(100.0)} == {
        ("relay1.example.com", 25),
        ("relay2.example.com", 2525),
    }
    p.feed(quiesce(config, "10.0.0.8", vip="10.0.0.7"), 101.0)
    assert p.due(101.0) == []  # relay1's one mail this hour is spent
    assert p.next_due() == 3700.0


def test_a_reload_names_the_reals_of_only_the_virtuals_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 22: a reload of 37,000 reals named every real for alerts (0.2 s), with e-mail
    alerts or without; now a virtual's reals are named when a reminder there needs them."""
    from lvsmon.alerts import policy as module

    named: list[str] = []
    real_names = module._configured_reals

    def naming(v: Virtual) -> frozenset[str]:
        named.append(str(v.key))
        return real_names(v)

    monkeypatch.setattr(module, "_configured_reals", naming)
    p = policy()
    p.use(CONFIG)
    assert named == []
    p.feed(quiesce(CONFIG, "10.0.0.2"), 0.0)  # a reminder: its virtual's reals are named
    assert named == [str(svc())]
    p.use(CONFIG)  # again for the kept reminder's virtual, and for no other
    assert named == [str(svc())] * 2
    assert p.reminders == {(svc(), "10.0.0.2:80")}
