"""GET /bgp (each VIP's announcement: announced or not, why, since, MED), POST /bgp/drain and
POST /bgp/undrain (`lvsmon drain --director`; the control socket only, as every command).

/bgp answers {"speaker": "bird"|"exabgp"|null, "drained": bool, "vips": [...]}; a daemon without
`bgp` answers speaker null and no VIP. The drain answers once every VIP is withdrawn (bgpdrain
s, at most 20), with the same body; 409 {"error"} without `bgp`.
"""

from __future__ import annotations

from aiohttp import web

from lvsmon.api.app import DAEMON, json_response


def _body(request: web.Request) -> dict[str, object]:
    announcer = request.app[DAEMON].bgp
    if announcer is None:
        return {"speaker": None, "drained": False, "vips": []}
    return dict(announcer.summary())


async def get_bgp(request: web.Request) -> web.Response:
    return json_response(_body(request))


async def _drain(request: web.Request, on: bool) -> web.Response:
    announcer = request.app[DAEMON].bgp
    if announcer is None:
        return json_response({"error": "this daemon announces nothing (no bgp in its config)"}, 409)
    await announcer.drain_director(on)
    return json_response(_body(request))


async def post_drain(request: web.Request) -> web.Response:
    return await _drain(request, True)


async def post_undrain(request: web.Request) -> web.Response:
    return await _drain(request, False)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/bgp", get_bgp)
    app.router.add_post("/bgp/drain", post_drain)
    app.router.add_post("/bgp/undrain", post_undrain)
