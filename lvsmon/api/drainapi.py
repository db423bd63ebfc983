"""POST /drain, POST /undrain (the control socket only: the middleware refuses them over TCP) and
GET /drains.

Body: {"real": "IP:PORT" | "IP" | a name, "virtual": "IP:PORT" | "tcp:IP:PORT" | "fwm:N" | null}.
Answers 200 {"action", "where", "results": [{"virtual", "real", "changed"}]}, one result per
(virtual, real) pair, changed false when it already was (not) drained; 400 {"error"} when the
request names nothing of the running config (the CLI's exit 2) or is not a JSON object; 500
{"error"} when the state cannot be written.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from lvsmon.api.app import DAEMON, BadBody, json_response, read_json_object
from lvsmon.engine.drain import DrainError


def _field(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise DrainError(f'"{name}" must be a non-empty string')
    return value.strip()


async def _command(request: web.Request, on: bool) -> web.Response:
    daemon = request.app[DAEMON]
    try:
        body = await read_json_object(request)
    except BadBody as exc:
        return json_response({"error": f'{exc} (expected a JSON object with "real")'}, 400)
    try:
        real = _field(body, "real", required=True)
        virtual = _field(body, "virtual", required=False)
        assert real is not None
        outcome = await daemon.drain_command(real, virtual, on)
    except DrainError as exc:
        return json_response({"error": str(exc)}, 400)
    except OSError as exc:
        where = daemon.drain_where
        return json_response({"error": f"cannot write the drain state {where}: {exc}"}, 500)
    return json_response(
        {
            "action": "drain" if on else "undrain",
            "where": daemon.drain_where,
            "results": [o.json() for o in outcome],
        }
    )


async def post_drain(request: web.Request) -> web.Response:
    return await _command(request, True)


async def post_undrain(request: web.Request) -> web.Response:
    return await _command(request, False)


async def get_drains(request: web.Request) -> web.Response:
    return json_response(request.app[DAEMON].drain_listing())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/drain", post_drain)
    app.router.add_post("/undrain", post_undrain)
    app.router.add_get("/drains", get_drains)
