"""HTTPS, POPS and IMAPS on the prober (issue 22 goal 3): the plans http.py and drive.py make
wrap the dialogue in `tls.TlsDialogue`, no `stream.converse` task, and a real's next check
resumes the TLS session its last one got (tls.SESSIONS)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import pytest
import trustme

from lvsmon.checks import CheckSpec, http
from lvsmon.checks import drive as drive_module
from lvsmon.checks.dialogue import Dialogue
from lvsmon.checks.pop import PopDialogue
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe, run_check
from lvsmon.checks.tls import SESSIONS, TlsDialogue, session_key
from tests.checks.test_tls import server_context, tcp_server, tls_web


class Made:
    """Every TlsDialogue a module makes, kept to look at its layer afterwards."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
        self.made: list[TlsDialogue] = []
        made = self.made

        class Recorded(TlsDialogue):
            def __init__(self, inner: Dialogue, *args: Any, **kw: Any) -> None:
                super().__init__(inner, *args, **kw)
                made.append(self)

        monkeypatch.setattr(module, "TlsDialogue", Recorded)


def https(port: int, service: str = "https", **kw: Any) -> CheckSpec:
    return CheckSpec(
        kind="negotiate", service=service, host="127.0.0.1", port=port, timeout=5, **kw
    )


@pytest.fixture
def no_converse(monkeypatch: pytest.MonkeyPatch) -> None:
    async def converse(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("https to an address literal went through stream.converse")

    monkeypatch.setattr(http, "converse", converse)


@pytest.mark.usefixtures("no_converse")
async def test_run_check_https_runs_on_the_prober_and_resumes(
    tls_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Made(monkeypatch, http).made
    async with tls_web(tls_ca) as server:
        spec = https(server.port, request="/ok")
        SESSIONS.drop(session_key("127.0.0.1", server.port, ""))
        first = await run_check(spec)
        second = await run_check(spec)
    assert (first.ok, first.reason) == (True, "http: status 200")
    assert (second.ok, second.reason) == (True, "http: status 200")
    assert len(made) == 2
    assert (made[0].layer.offered, made[0].layer.session_reused) == (None, False)
    assert made[1].layer.offered is not None
    assert made[1].layer.session_reused
    assert server.seen.targets == ["/ok", "/ok"]


async def test_the_runners_plan_is_tls_with_sni_and_resumes(
    tls_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Made(monkeypatch, http).made
    async with tls_web(tls_ca) as server:
        spec = https(server.port, virtualhost="www.example.test")
        plan = plan_probe(spec)  # what the runner asks: a plan, so no task of its own
        assert isinstance(plan, http.TlsHttpPlan)
        assert (plan.sni, plan.key) == (
            "www.example.test",
            session_key("127.0.0.1", server.port, "www.example.test"),
        )
        SESSIONS.drop(plan.key)
        results = [await prober_for().probe(plan) for _ in range(3)]
    assert [(r.ok, r.reason) for r in results] == [(True, "http: status 200")] * 3
    assert server.seen.sni == ["www.example.test"] * 3
    assert [d.layer.session_reused for d in made] == [False, True, True]


async def test_https_url_to_an_address_literal_is_on_the_prober(tls_ca: trustme.CA) -> None:
    async with tls_web(tls_ca) as server:
        url = f"https://127.0.0.1:{server.port}/ok"
        spec = https(1, service="http", request=url)  # the URL's port, not the real's
        plan = plan_probe(spec)
        assert isinstance(plan, http.TlsHttpPlan)
        result = await prober_for().probe(plan)
    assert (result.ok, result.reason) == (True, "http: status 200")


async def test_pops_plan_is_tls_on_the_prober_and_resumes(
    tls_ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = Made(monkeypatch, drive_module).made

    async def pop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write(b"+OK ready\r\n")
            while line := await reader.readline():
                writer.write(b"+OK\r\n")
                if line == b"QUIT\r\n":
                    break
        writer.close()

    async with tcp_server(pop, server_context(tls_ca)) as port:
        spec = CheckSpec(
            kind="negotiate",
            service="pops",
            host="127.0.0.1",
            port=port,
            timeout=5,
            login="user",
            passwd="secret",
        )
        SESSIONS.drop(session_key("127.0.0.1", port, ""))
        plan = plan_probe(spec)
        assert plan is not None
        first = await prober_for().probe(plan)
        second = await run_check(spec)  # the task path probes the same plan
    assert (first.ok, first.reason) == (True, "pops: logged in")
    assert (second.ok, second.reason) == (True, "pops: logged in")
    assert [type(d.inner) for d in made] == [PopDialogue, PopDialogue]
    assert [d.layer.session_reused for d in made] == [False, True]
