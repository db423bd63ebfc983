"""negotiate http/https/http_proxy against real aiohttp servers on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from lvsmon.checks import CheckSpec, run_check
from lvsmon.checks.http_request import build_target
from tests.checks.conftest import SERVER_NAME, HttpServer, raw_server
from tests.helpers import closed_port


def spec(server: HttpServer | None = None, **kw: Any) -> CheckSpec:
    fields: dict[str, Any] = {"kind": "negotiate", "service": "http", "timeout": 5}
    if server is not None:
        fields.update(host=server.host, port=server.port)
    fields.update(kw)
    return CheckSpec(**fields)


async def test_up_with_matching_receive(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, request="/ok", receive=r"still\s+alive"))
    assert result.ok, result.reason
    assert result.reason == "http: status 200"
    assert result.latency_s > 0
    assert http_server.seen.methods == ["GET"]
    assert http_server.seen.targets == ["/ok"]
    assert http_server.seen.user_agents == ["lvsmon"]


async def test_leading_slash_is_ensured(http_server: HttpServer) -> None:
    assert (await run_check(spec(http_server, request="ok"))).ok
    assert http_server.seen.targets == ["/ok"]


async def test_body_not_matching_receive(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, request="/ok", receive="^dead"))
    assert (result.ok, result.reason) == (False, "http: body does not match receive")


async def test_receive_is_searched_across_lines(http_server: HttpServer) -> None:
    assert (await run_check(spec(http_server, request="/ok", receive="^rs1$"))).ok is False
    assert (await run_check(spec(http_server, request="/ok", receive="(?m)^rs1$"))).ok


@pytest.mark.parametrize("code", [404, 500, 503])
async def test_error_status_is_down(http_server: HttpServer, code: int) -> None:
    result = await run_check(spec(http_server, request=f"/status/{code}"))
    assert (result.ok, result.reason) == (False, f"http: status {code}")


async def test_other_2xx_is_up(http_server: HttpServer) -> None:
    assert (await run_check(spec(http_server, request="/status/202"))).ok


async def test_redirect_is_not_followed(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, request="/redirect"))
    assert not result.ok
    assert result.reason == "http: status 302 (redirect to /ok not followed)"
    assert http_server.seen.targets == ["/redirect"]


async def test_chunked_response(http_server: HttpServer) -> None:
    assert (await run_check(spec(http_server, request="/chunked", receive="still alive"))).ok


async def test_head_request(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, request="/ok", httpmethod="HEAD"))
    assert result.ok, result.reason
    assert http_server.seen.methods == ["HEAD"]


async def test_host_header_defaults_to_real_with_port(http_server: HttpServer) -> None:
    await run_check(spec(http_server))
    assert http_server.seen.hosts == [f"127.0.0.1:{http_server.port}"]


async def test_host_header_from_virtualhost(http_server: HttpServer) -> None:
    await run_check(spec(http_server, virtualhost=SERVER_NAME))
    assert http_server.seen.hosts == [SERVER_NAME]


async def test_ipv6_real(http_server6: HttpServer) -> None:
    result = await run_check(spec(http_server6, request="/ok", receive="alive"))
    assert result.ok, result.reason
    assert http_server6.seen.hosts == [f"[::1]:{http_server6.port}"]


def test_host_header_omits_default_port() -> None:
    request = build_target(spec(host="192.0.2.1", port=80)).request
    assert b"\r\nHost: 192.0.2.1\r\n" in request
    request = build_target(spec(host="2001:db8::1", port=443, service="https")).request
    assert b"\r\nHost: [2001:db8::1]\r\n" in request
    request = build_target(spec(host="2001:db8::1", port=80, service="https")).request
    assert b"\r\nHost: [2001:db8::1]:80\r\n" in request


async def test_slow_trickle_body_hits_the_one_deadline(http_server: HttpServer) -> None:
    # every byte arrives well within any per-read timeout; only a whole-exchange deadline ends it
    result = await run_check(spec(http_server, request="/trickle", receive="y", timeout=0.4))
    assert (result.ok, result.reason) == (False, "timeout after 0.4s during http")


async def test_connection_refused() -> None:
    result = await run_check(spec(host="127.0.0.1", port=closed_port()))
    assert (result.ok, result.reason) == (False, "connect: connection refused")


async def test_server_that_never_answers() -> None:
    async with raw_server(None) as peer:
        result = await run_check(spec(host="127.0.0.1", port=peer.port, timeout=0.3))
    assert (result.ok, result.reason) == (False, "timeout after 0.3s during http")


async def test_not_http() -> None:
    async with raw_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n") as peer:
        result = await run_check(spec(host="127.0.0.1", port=peer.port))
    assert not result.ok
    assert result.reason.startswith("http: malformed status line 'SSH-2.0")


async def test_closed_without_response() -> None:
    async with raw_server(b"") as peer:
        result = await run_check(spec(host="127.0.0.1", port=peer.port))
    assert (result.ok, result.reason) == (False, "http: connection closed without a response")


async def test_truncated_body() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstill alive"
    async with raw_server(reply) as peer:
        result = await run_check(spec(host="127.0.0.1", port=peer.port))
    assert (result.ok, result.reason) == (
        False,
        "http: connection closed before the end of the body",
    )


async def test_absolute_url_request_overrides_real(http_server: HttpServer) -> None:
    url = f"http://127.0.0.1:{http_server.port}/ok"
    # the real's own address has nothing listening: the URL decides where to connect
    result = await run_check(spec(host="127.0.0.1", port=closed_port(), request=url))
    assert result.ok, result.reason
    assert http_server.seen.targets == ["/ok"]
    assert http_server.seen.hosts == [f"127.0.0.1:{http_server.port}"]


async def test_http_proxy_sends_the_absolute_url(http_server: HttpServer) -> None:
    url = "http://backend.example.test/ok?probe=1"
    result = await run_check(spec(http_server, service="http_proxy", request=url, receive="alive"))
    assert result.ok, result.reason
    assert http_server.seen.targets == [url]
    assert http_server.seen.hosts == ["backend.example.test"]


async def test_http_proxy_needs_an_absolute_url(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, service="http_proxy", request="/ok"))
    assert not result.ok
    assert result.reason == "http_proxy: request '/ok' must be an absolute URL (http://...)"
    assert http_server.seen.targets == []


async def test_request_is_percent_encoded(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, request="/a b/ä?q=%41"))
    assert result.ok, result.reason
    assert http_server.seen.targets == ["/a%20b/%C3%A4?q=%41"]
    # no header injection through the request
    request = build_target(spec(host="192.0.2.1", port=80, request="/x\r\nX: y")).request
    assert request.startswith(b"GET /x%0D%0AX:%20y HTTP/1.1\r\nHost: 192.0.2.1\r\n")


async def test_virtualhost_with_control_characters_is_refused(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, virtualhost="a\r\nX-Injected: 1"))
    assert not result.ok and "control characters" in result.reason
    assert http_server.seen.hosts == []


async def test_https_without_virtualhost_sends_no_sni(https_server: HttpServer) -> None:
    result = await run_check(spec(https_server, service="https", request="/ok", receive="alive"))
    assert result.ok, result.reason  # the certificate is from an unknown CA: not verified
    assert https_server.seen.sni == [None]
    assert https_server.seen.hosts == [f"127.0.0.1:{https_server.port}"]


async def test_https_virtualhost_is_sni_and_host(https_server: HttpServer) -> None:
    result = await run_check(
        spec(https_server, service="https", request="/ok", virtualhost=SERVER_NAME)
    )
    assert result.ok, result.reason
    assert https_server.seen.sni == [SERVER_NAME]
    assert https_server.seen.hosts == [SERVER_NAME]


async def test_https_virtualhost_with_port_sends_the_name_only(https_server: HttpServer) -> None:
    vhost = f"{SERVER_NAME}:8443"
    assert (await run_check(spec(https_server, service="https", virtualhost=vhost))).ok
    assert https_server.seen.sni == [SERVER_NAME]
    assert https_server.seen.hosts == [vhost]


async def test_https_against_plain_http_fails_in_tls(http_server: HttpServer) -> None:
    result = await run_check(spec(http_server, service="https"))
    assert not result.ok
    assert result.reason.startswith("tls: "), result.reason


async def test_tls_handshake_that_never_completes() -> None:
    async with raw_server(None) as peer:
        result = await run_check(
            spec(host="127.0.0.1", port=peer.port, service="https", timeout=0.3)
        )
    assert (result.ok, result.reason) == (False, "timeout after 0.3s during tls")
