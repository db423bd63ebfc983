"""What the control server's route modules share: the application's keys, the handler type, the
JSON answer, the Unix-socket-only rule, and `DaemonView`, all that the API reads of the daemon.

The API types against `DaemonView`, not against the daemon: lvsmon.daemon builds the control
server and hands itself over (mypy checks there that the daemon is a `DaemonView`), so nothing in
lvsmon.api imports lvsmon.daemon.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import hdrs, web

from lvsmon.api.eventfeed import EventFeed
from lvsmon.api.guard import Connection

if TYPE_CHECKING:
    from lvsmon.config.model import Config
    from lvsmon.engine.arpguard import ArpGuard
    from lvsmon.engine.bgp import Announcer
    from lvsmon.engine.drain import Outcome
    from lvsmon.engine.engine import Engine
    from lvsmon.engine.planning import Forced


class DaemonView(Protocol):
    """The running daemon as the API sees it: read, and the two commands (drain, undrain)."""

    @property
    def config(self) -> Config:
        """The running config."""

    @property
    def engine(self) -> Engine:
        """The engine whose state /plan and /metrics read (never changed by the API)."""

    @property
    def feed(self) -> EventFeed:
        """The event stream of /events (its clients, for /metrics)."""

    @property
    def started_at(self) -> float:
        """When the daemon started, Unix time."""

    @property
    def last_good_config_at(self) -> float:
        """When the running config was loaded (start or reload), Unix time."""

    @property
    def reload_counts(self) -> dict[str, int]:
        """Config reloads (SIGHUP, autoreload) by result: {"ok": n, "rejected": n}."""

    @property
    def alert_mails(self) -> dict[str, int]:
        """Alert mails by result: {"sent": n, "dropped": n}."""

    @property
    def alert_mails_queued(self) -> int:
        """Alert mails waiting to be sent."""

    @property
    def bgp(self) -> Announcer | None:
        """The BGP announcer (GET /bgp, POST /bgp/drain; None: bgp is off)."""

    @property
    def arpguard(self) -> ArpGuard:
        """The ARP guard: its conflicts and counters (/metrics)."""

    @property
    def drain_where(self) -> str:
        """Where the running config's drain state is kept (a file, or "memory")."""

    def status_json(self, max_age: float = ...) -> bytes:
        """The status as compact JSON (GET /status)."""

    def drain_listing(self) -> dict[str, object]:
        """GET /drains."""

    async def drain_command(self, real: str, virtual: str | None, on: bool) -> list[Outcome]:
        """POST /drain, /undrain: DrainError for what names nothing, OSError for the state."""

    def reload_preview(self) -> tuple[Forced, Forced]:
        """The maintained and the drained pairs of a config that does not run (POST /plan)."""


DAEMON: web.AppKey[DaemonView] = web.AppKey("daemon")
FEED: web.AppKey[EventFeed] = web.AppKey("feed")
# names besides the listen address and localhost that a client may give as Host over TCP
ALLOWED_HOSTS: web.AppKey[frozenset[str]] = web.AppKey("allowed_hosts")

BODY_TIMEOUT_S = 5.0  # a POST's body arrives within this, or the request is refused

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data) + "\n", status=status, content_type="application/json"
    )


def on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    name = transport.get_extra_info("sockname") if transport is not None else None
    return isinstance(name, str)  # a TCP socket's name is a tuple


@web.middleware
async def local_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "GET" and not on_unix_socket(request):
        raise web.HTTPForbidden(text="lvsmon: commands are taken on the control socket only\n")
    return await handler(request)


def _host_name(header: str) -> str:
    """The name part of a Host header, lower case: `[v6]:port`, `name:port`, `name`."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    if text.count(":") == 1:
        text = text.partition(":")[0]
    return text.rstrip(".")


def _same_address(name: str, address: object) -> bool:
    try:
        return isinstance(address, str) and ipaddress.ip_address(name) == ipaddress.ip_address(
            address.partition("%")[0]
        )
    except ValueError:
        return False


@web.middleware
async def known_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Over TCP, only a Host naming the address the client reached, localhost or a configured
    name is served: a web page whose name an attacker re-points at the listener (DNS
    rebinding) gets 421, never the status. The control socket is served whatever the Host
    (curl's `http://lvsmon/...`); a request without Host (HTTP/1.0) comes from no browser."""
    if on_unix_socket(request):
        return await handler(request)
    header = request.headers.get(hdrs.HOST)
    if header is not None:
        name = _host_name(header)
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        local = sockname[0] if isinstance(sockname, tuple) else None
        if not (
            name in ("localhost", "localhost.localdomain")
            or name in request.app[ALLOWED_HOSTS]
            or _same_address(name, local)
        ):
            if isinstance(request.protocol, Connection):
                request.protocol.guard.count("host")
            raise web.HTTPMisdirectedRequest(
                text="lvsmon: this Host is not served here: use the listen address, localhost, "
                "or a name given with --listen-host\n"
            )
    return await handler(request)


class BadBody(ValueError):
    """A POST body that is not one JSON object in UTF-8 (the answer is 400)."""


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """A POST's body as a JSON object; BadBody for anything else: a body that does not arrive
    within BODY_TIMEOUT_S, too large (aiohttp's 1 MiB), not UTF-8 (lone surrogates escaped as
    \\uD800 included), not JSON, nested too deep for the parser, or not an object."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        raise BadBody(f"the body did not arrive within {BODY_TIMEOUT_S:g} s") from None
    except web.HTTPRequestEntityTooLarge:
        raise BadBody("the body is too large") from None
    try:
        value = json.loads(raw.decode("utf-8"))
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # no lone surrogate anywhere
    except UnicodeError:
        raise BadBody("the body is not UTF-8") from None
    except RecursionError:
        raise BadBody("the body is nested too deeply") from None
    except ValueError:
        raise BadBody("the body is not JSON") from None
    if not isinstance(value, dict):
        raise BadBody("the body must be a JSON object")
    return value
