"""The daemon mails alerts end to end: a real fails and recovers, Postfix delivers to a Maildir,
the test reads ldirectord's subject and body fields there; a burst of failures is one mail."""

from __future__ import annotations

import email
import email.message
import email.policy
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checks.conftest import closed_port
from tests.servers.base import Server
from tests.servers.postfix import maildir, running_postfix

from .conftest import Running, Web, lvsmon, start, wait_for


@pytest.fixture(scope="module")
def postfix() -> Iterator[Server]:
    with running_postfix(("127.0.0.1",)) as server:
        yield server


def mails(server: Server) -> list[email.message.Message]:
    found = sorted(maildir(server).glob("*"))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in found]


def clear(server: Server) -> None:
    for p in maildir(server).glob("*"):
        p.unlink()


def config(webs: list[Web], postfix: Server, window: int) -> str:
    reals = "".join(f"\treal=127.0.0.1:{w.port} masq\n" for w in webs)
    return (
        "checktimeout=1\ncheckinterval=1\nquiescent=yes\n"
        f'emailalert="ops@lvsmon.test"\nsmtp=127.0.0.1:{postfix.ports["smtp"]}\n'
        f"smtptls=none\nemailalertwindow={window}\nemailalertfrom=lvsmon@lvsmon.test\n"
        f'virtual=127.0.0.100:80\n{reals}\tservice=http\n\treceive="alive"\n'
        '\tservicename="web"\n\tcomment="front pool"\n'
    )


def body(mail: email.message.Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


async def test_a_failure_and_its_recovery_are_mailed_with_ldirectords_fields(
    postfix: Server, webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    clear(postfix)
    cf = tmp_path / "alerts.cf"
    cf.write_text(config(webs[:1], postfix, window=0))
    r = await start(cf)
    stopper.append(r)
    web = webs[0]
    await wait_for(lambda: r.weights() == {web.port: 1}, within=15)
    await wait_for(lambda: len(mails(postfix)) >= 1, within=20)  # start-up's "Added real server"
    assert "Added real server" in str(mails(postfix)[0]["Subject"])
    clear(postfix)

    web.status = 503
    await wait_for(lambda: len(mails(postfix)) >= 1, within=20)
    down = mails(postfix)[0]
    subject = f"[web] Quiescent real server: 127.0.0.1:{web.port} (127.0.0.100:80)"
    assert str(down["Subject"]).startswith(subject)
    assert down["To"] == "ops@lvsmon.test" and down["From"] == "lvsmon@lvsmon.test"
    text = body(down)
    assert "Log-Message: [web] Quiescent real server:" in text  # as ldirectord: prefixed
    assert "Daemon-Status: running" in text
    assert "Service name: web" in text and "Comment: front pool" in text

    web.status = 200
    await wait_for(lambda: len(mails(postfix)) >= 2, within=20)
    up = [m for m in mails(postfix) if m is not None and "Restored" in str(m["Subject"])]
    assert up, [str(m["Subject"]) for m in mails(postfix)]


async def test_three_failures_at_once_are_one_mail(
    postfix: Server, webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    cf = tmp_path / "alerts.cf"
    cf.write_text(config(webs, postfix, window=2))
    r = await start(cf)
    stopper.append(r)
    await wait_for(lambda: len(r.weights()) == 3 and set(r.weights().values()) == {1}, within=15)
    await wait_for(lambda: len(mails(postfix)) >= 1, within=20)  # start-up's mail
    clear(postfix)

    for w in webs:
        w.status = 503
    await wait_for(lambda: len(mails(postfix)) >= 1, within=20)
    await wait_for(lambda: set(r.weights().values()) == {0}, within=10)
    assert len(mails(postfix)) == 1
    subject = str(mails(postfix)[0]["Subject"])
    assert "3" in subject, subject


def test_test_alert_proves_the_path(postfix: Server, tmp_path: Path) -> None:
    clear(postfix)
    cf = tmp_path / "alerts.cf"
    cf.write_text(config([Web(8080)], postfix, window=0))
    proc = lvsmon("test-alert", str(cf))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("test alert sent to ops@lvsmon.test via 127.0.0.1:")
    found = [m for m in mails(postfix) if "lvsmon test alert" in str(m["Subject"])]
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = [m for m in mails(postfix) if "lvsmon test alert" in str(m["Subject"])]
    assert found and "Daemon-Status: test" in body(found[0])


def test_test_alert_reports_a_dead_relay(tmp_path: Path) -> None:
    cf = tmp_path / "alerts.cf"
    cf.write_text(
        f'emailalert="ops@lvsmon.test"\nsmtp=127.0.0.1:{closed_port()}\nsmtptls=none\n'
        "virtual=127.0.0.100:80\n\treal=127.0.0.1:8080 masq\n\tservice=http\n"
    )
    proc = lvsmon("test-alert", str(cf))
    assert proc.returncode == 1
    assert "failed:" in proc.stderr and "Traceback" not in proc.stderr


async def test_a_real_down_at_start_gets_reminders_and_no_first_mail(
    postfix: Server, webs: list[Web], tmp_path: Path, stopper: list[Running]
) -> None:
    clear(postfix)
    web = webs[0]
    web.status = 503
    cf = tmp_path / "alerts.cf"
    cf.write_text(
        config([web], postfix, window=0).replace(
            "smtptls=none\n", "smtptls=none\nemailalertfreq=1\n"
        )
    )
    r = await start(cf)
    stopper.append(r)
    await wait_for(lambda: len(mails(postfix)) >= 2, within=20)
    subjects = [str(m["Subject"]) for m in mails(postfix)]
    assert all("Inaccessible real server: 127.0.0.1:" in s for s in subjects), subjects
