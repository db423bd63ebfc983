"""sslverify, sslcafile, sslname, sslexpirywarn (checks/tlsverify.py) against real servers:
nginx (https) and Dovecot (imaps, pops) presenting good, expired, self-signed, wrong-name and
soon-expiring certificates that openssl makes here (realservers/tlsservers.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks import tlsverify as tv
from lvsmon.checks.prober import prober_for
from lvsmon.checks.registry import plan_probe
from lvsmon.checks.tls import SESSIONS, TlsSetting
from realservers.base import Server, server_dir
from realservers.dovecot import USERS
from realservers.tlsservers import (
    ADDRESSES,
    EXPIRING_DAYS,
    NAME,
    OTHER_NAME,
    make_certs,
    running_dovecot,
    running_nginx,
)

Certs = dict[str, tuple[Path, Path]]

# what each setting says of each certificate: None is up
EXPECTED: dict[str, dict[str, str | None]] = {
    "no": {k: None for k in ("good", "expired", "selfsigned", "wrongname", "expiring")},
    "chain": {
        "good": None,
        "expired": "tls: certificate expired on 2021-01-01",
        "selfsigned": "tls: self-signed certificate",
        "wrongname": None,
        "expiring": None,
    },
    "name": {
        "good": None,
        "expired": "tls: certificate expired on 2021-01-01",
        "selfsigned": "tls: self-signed certificate",
        "wrongname": f"tls: certificate name mismatch: got {OTHER_NAME} (wanted {NAME})",
        "expiring": None,
    },
}


@pytest.fixture(scope="module")
def certs() -> Iterator[tuple[Path, Certs]]:
    with server_dir("tls-certs") as d:
        made = make_certs(d / "certs")
        yield d / "certs" / "ca.pem", made


@pytest.fixture(scope="module")
def nginx(certs: tuple[Path, Certs]) -> Iterator[Server]:
    with running_nginx(certs[1]) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot(certs: tuple[Path, Certs]) -> Iterator[Server]:
    with running_dovecot(certs[1]) as server:
        yield server


def https(nginx: Server, kind: str, **kw: Any) -> CheckSpec:
    return CheckSpec(
        kind="negotiate", service="https", host="127.0.0.1", port=nginx.ports[kind], timeout=5, **kw
    )


def mail(dovecot: Server, service: str, kind: str, **kw: Any) -> CheckSpec:
    port = dovecot.ports["imaps" if service == "imaps" else "pop3s"]
    return CheckSpec(
        kind="negotiate",
        service=service,
        host=ADDRESSES[kind],
        port=port,
        timeout=5,
        login="lvsmon",
        passwd=USERS["lvsmon"],
        **kw,
    )


def verdict(result: Any, up_reason: str) -> str | None:
    if result.ok:
        assert result.reason == up_reason
        return None
    return str(result.reason)


def ca_of(certs: tuple[Path, Certs], verify: str) -> dict[str, str]:
    return {} if verify == "no" else {"sslcafile": str(certs[0])}


# ---- https: nginx -------------------------------------------------------------------------------


@pytest.mark.parametrize("verify", ["no", "chain", "name"])
@pytest.mark.parametrize("kind", ["good", "expired", "selfsigned", "wrongname", "expiring"])
async def test_https_each_setting_against_each_certificate(
    nginx: Server, certs: tuple[Path, Certs], verify: str, kind: str
) -> None:
    spec = https(nginx, kind, sslverify=verify, sslname=NAME, **ca_of(certs, verify))
    result = await run_check(spec)  # the prober's plan (an address literal)
    assert verdict(result, "http: status 200") == EXPECTED[verify][kind]


async def test_https_chain_without_cafile_uses_the_system_store(nginx: Server) -> None:
    """The test CA is in no system store: even the good certificate is of an unknown CA."""
    result = await run_check(https(nginx, "good", sslverify="chain"))
    assert (result.ok, result.reason) == (False, "tls: unknown CA")


async def test_name_defaults_to_virtualhost_then_the_address(
    nginx: Server, certs: tuple[Path, Certs]
) -> None:
    ca = ca_of(certs, "name")
    by_vhost = await run_check(https(nginx, "good", sslverify="name", virtualhost=NAME, **ca))
    assert (by_vhost.ok, by_vhost.reason) == (True, "http: status 200")
    by_address = await run_check(https(nginx, "good", sslverify="name", **ca))
    assert (by_address.ok, by_address.reason) == (
        False,
        f"tls: certificate name mismatch: got {NAME} (wanted 127.0.0.1)",
    )


async def test_name_is_sent_as_sni(nginx: Server, certs: tuple[Path, Certs]) -> None:
    spec = https(nginx, "good", sslverify="name", sslname=NAME, **ca_of(certs, "name"))
    plan = plan_probe(spec)
    assert plan is not None
    assert (plan.sni, plan.key) == (  # type: ignore[attr-defined]
        NAME,
        ("127.0.0.1", nginx.ports["good"], NAME, "name", spec.sslcafile),
    )


async def test_a_session_of_no_verification_is_not_offered_to_a_verifying_check(
    nginx: Server, certs: tuple[Path, Certs]
) -> None:
    """Resumption skips the certificate: a session the unverified check got must not let a
    verifying check of the same real through."""
    unverified = https(nginx, "selfsigned")
    for _ in range(2):  # the second resumes: there is a session in the cache
        assert (await run_check(unverified)).ok
    verifying = https(nginx, "selfsigned", sslverify="chain", **ca_of(certs, "chain"))
    for _ in range(2):
        result = await run_check(verifying)
        assert (result.ok, result.reason) == (False, "tls: self-signed certificate")


async def test_a_verified_session_resumes(nginx: Server, certs: tuple[Path, Certs]) -> None:
    spec = https(nginx, "good", sslverify="name", sslname=NAME, **ca_of(certs, "name"))
    key = TlsSetting(spec, "127.0.0.1", spec.port, "").key
    SESSIONS.drop(key)
    for _ in range(3):
        result = await run_check(spec)
        assert (result.ok, result.reason) == (True, "http: status 200")
    entry = SESSIONS.offer(key)  # one kept under the verifying setting's key
    assert entry is not None and entry.session is not None


async def test_contexts_are_shared_per_setting(certs: tuple[Path, Certs]) -> None:
    cafile = ca_of(certs, "chain")["sslcafile"]
    assert tv.context_for("chain", cafile) is tv.context_for("chain", cafile)
    assert tv.context_for("chain", cafile) is not tv.context_for("name", cafile)
    assert tv.context_for("no", "") is tv.context_for("no", cafile)  # no CA without verifying


@pytest.mark.parametrize("verify", ["no", "chain"])
async def test_expiry_is_read_with_or_without_verification(
    nginx: Server, certs: tuple[Path, Certs], verify: str
) -> None:
    spec = https(nginx, "expiring", sslverify=verify, sslexpiry=True, **ca_of(certs, verify))
    for _ in range(2):  # a resumed session has the certificate too
        result = await run_check(spec)
        assert result.ok, result.reason
        assert result.cert_not_after is not None
        left = result.cert_not_after - time.time()
        assert EXPIRING_DAYS * 86400 - 3600 < left <= EXPIRING_DAYS * 86400
    plain = await run_check(https(nginx, "expiring"))
    assert plain.ok and plain.cert_not_after is None  # not asked for: not read


async def test_expired_certificate_read_with_verification_off(nginx: Server) -> None:
    result = await run_check(https(nginx, "expired", sslexpiry=True))
    assert result.ok
    assert result.cert_not_after is not None
    assert time.strftime("%Y-%m-%d", time.gmtime(result.cert_not_after)) == "2021-01-01"


# ---- imaps and pops: Dovecot --------------------------------------------------------------------


@pytest.mark.parametrize("service", ["imaps", "pops"])
@pytest.mark.parametrize("verify", ["no", "chain", "name"])
@pytest.mark.parametrize("kind", ["good", "expired", "selfsigned", "wrongname"])
async def test_mail_each_setting_against_each_certificate(
    dovecot: Server, certs: tuple[Path, Certs], service: str, verify: str, kind: str
) -> None:
    spec = mail(dovecot, service, kind, sslverify=verify, sslname=NAME, **ca_of(certs, verify))
    result = await run_check(spec)
    assert verdict(result, f"{service}: logged in") == EXPECTED[verify][kind]


async def test_imaps_expiry_on_the_prober(dovecot: Server, certs: tuple[Path, Certs]) -> None:
    spec = mail(dovecot, "imaps", "expiring", sslverify="name", sslname=NAME, sslexpiry=True)
    spec = CheckSpec(**{**_fields(spec), "sslcafile": ca_of(certs, "name")["sslcafile"]})
    plan = plan_probe(spec)
    assert plan is not None
    result = await prober_for().probe(plan)
    assert (result.ok, result.reason) == (True, "imaps: logged in")
    assert result.cert_not_after is not None
    assert 0 < result.cert_not_after - time.time() <= EXPIRING_DAYS * 86400


def _fields(spec: CheckSpec) -> dict[str, Any]:
    names = (
        "service", "login", "passwd", "sslverify", "sslname", "sslexpiry", "virtualhost",
    )  # fmt: skip
    return {
        "kind": spec.kind, "host": spec.host, "port": spec.port, "timeout": spec.timeout,
        **{n: getattr(spec, n) for n in names},
    }  # fmt: skip


# ---- the pure parts -----------------------------------------------------------------------------


def test_der_walk_reads_validity_and_names(certs: tuple[Path, Certs]) -> None:
    import ssl

    der = ssl.PEM_cert_to_DER_cert(certs[1]["wrongname"][0].read_text())
    assert tv.cert_names(der) == [OTHER_NAME]
    der = ssl.PEM_cert_to_DER_cert(certs[1]["expired"][0].read_text())
    assert tv.not_after(der) == 1609459200.0  # 2021-01-01T00:00:00Z
    assert tv.not_before(der) == 1577836800.0
    assert tv._ends[der] == 1609459200.0  # remembered: the next check's is a lookup
    assert tv.not_after(b"\x30\x03garbage") is None
    assert tv.cert_names(b"") == []


def test_cafile_problems(tmp_path: Path, certs: tuple[Path, Certs]) -> None:
    assert tv.cafile_problem(ca_of(certs, "chain")["sslcafile"]) is None
    assert tv.cafile_problem("ca.pem") == "sslcafile must be an absolute path, not 'ca.pem'"
    missing = tmp_path / "nope.pem"
    assert tv.cafile_problem(str(missing)) == f"sslcafile {missing}: No such file or directory"
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert tv.cafile_problem(str(junk)) == f"sslcafile {junk}: no PEM certificate in it"
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    problem = tv.cafile_problem(str(bad))
    assert problem is not None and problem.startswith(f"sslcafile {bad}: not a usable PEM")


# ---- ldaps: slapd (realservers/slapd.py: a self-signed certificate for ldap.lvsmon.test) ----


@pytest.fixture(scope="module")
def slapd() -> Iterator[Server]:
    from realservers.slapd import running_slapd

    with running_slapd(("127.0.0.1",)) as server:
        yield server


def ldaps(slapd: Server, **kw: Any) -> CheckSpec:
    from realservers.slapd import SUFFIX

    return CheckSpec(
        kind="negotiate",
        service="ldaps",
        host="127.0.0.1",
        port=slapd.ports["ldaps"],
        timeout=5,
        request=f"/{SUFFIX}",
        **kw,
    )


async def test_ldaps_each_setting(slapd: Server) -> None:
    from realservers.slapd import SUFFIX

    own = str(slapd.dir / "tls" / "cert.pem")  # its own certificate as the CA file: trusted
    up = (True, f"ldaps: found {SUFFIX}")
    cases = [
        ({}, up),
        ({"sslverify": "chain"}, (False, "tls: self-signed certificate")),
        ({"sslverify": "chain", "sslcafile": own}, up),
        ({"sslverify": "name", "sslcafile": own, "sslname": "ldap.lvsmon.test"}, up),
        (
            {"sslverify": "name", "sslcafile": own, "sslname": NAME},
            (False, f"tls: certificate name mismatch: got ldap.lvsmon.test (wanted {NAME})"),
        ),
    ]
    for kw, expected in cases:
        result = await run_check(ldaps(slapd, **kw))
        assert (result.ok, result.reason) == expected, kw
    read = await run_check(ldaps(slapd, sslexpiry=True))
    assert read.ok and read.cert_not_after is not None
    assert 0 < read.cert_not_after - time.time() <= 2 * 86400  # self_signed: -days 2


async def test_https_url_naming_a_host_verifies_too(
    nginx: Server, certs: tuple[Path, Certs]
) -> None:
    """An absolute request URL with a host name goes through stream.converse (resolved at
    check time): verified alike; its reasons come without the chain's dates and names."""
    ca = ca_of(certs, "name")

    def url_spec(kind: str, **kw: Any) -> CheckSpec:
        url = f"https://localhost:{nginx.ports[kind]}/"
        return CheckSpec(
            kind="negotiate", service="http", host="127.0.0.1", port=1, timeout=5,
            request=url, **kw,
        )  # fmt: skip

    good = await run_check(url_spec("good", sslverify="name", sslname=NAME, **ca))
    assert (good.ok, good.reason) == (True, "http: status 200")
    expired = await run_check(url_spec("expired", sslverify="chain", **ca))
    assert (expired.ok, expired.reason) == (False, "tls: certificate expired")
    wrong = await run_check(url_spec("wrongname", sslverify="name", **ca))  # wanted: localhost
    assert (wrong.ok, wrong.reason) == (False, "tls: certificate name mismatch")


def test_a_changed_cafile_is_read_again_a_bad_one_keeps_the_last(
    tmp_path: Path, certs: tuple[Path, Certs]
) -> None:
    now = [0.0]
    contexts = tv.Contexts(clock=lambda: now[0])
    path = tmp_path / "ca.pem"
    ca_text = certs[0].read_text()
    path.write_text(ca_text)
    first = contexts.get("chain", str(path))
    assert contexts.get("chain", str(path)) is first
    path.write_text(ca_text + (certs[1]["selfsigned"][0]).read_text())  # one more CA
    now[0] = tv.CAFILE_RECHECK_S - 1
    assert contexts.get("chain", str(path)) is first  # not looked at yet
    now[0] = tv.CAFILE_RECHECK_S + 1
    second = contexts.get("chain", str(path))
    assert second is not first and len(second.get_ca_certs()) == 2
    path.write_text("garbage, then a long line to change the size\n")
    now[0] = 3 * tv.CAFILE_RECHECK_S
    assert contexts.get("chain", str(path)) is second  # the last good one
