"""What the control server's route modules share: the application's keys, the handler type, the
JSON answer, the Unix-socket-only rule, and `DaemonView`, all that the API reads of the daemon.

The API types against `DaemonView`, not against the daemon: lvsmon.daemon builds the control
server and hands itself over (mypy checks there that the daemon is a `DaemonView`), so nothing in
lvsmon.api imports lvsmon.daemon.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from lvsmon.api.eventfeed import EventFeed

if TYPE_CHECKING:
    from lvsmon.config.model import Config
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
