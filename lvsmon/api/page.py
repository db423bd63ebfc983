"""GET /: the live status page, and the three files it is made of (lvsmon/api/static).

Everything the page needs is served from here: an operator's browser opening a load balancer's
page makes no request to anywhere else, and the Content-Security-Policy says so to the browser
(no inline script, no other origin), so that even a real's name or a check's reason shown on the
page can never run as script.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# name in static/ -> content type; nothing else there is served
FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # small files, and a page left open across an upgrade must not keep an old app.js
    "Cache-Control": "no-cache",
}

STATIC: web.AppKey[dict[str, bytes]] = web.AppKey("page_static")


def load_static() -> dict[str, bytes]:
    folder = resources.files("lvsmon.api").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in FILES}


def _file_response(request: web.Request, name: str) -> web.Response:
    body = request.app[STATIC][name]
    return web.Response(
        body=body, content_type=FILES[name], charset="utf-8", headers=HEADERS.copy()
    )


async def index(request: web.Request) -> web.Response:
    return _file_response(request, "index.html")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES or name == "index.html":
        raise web.HTTPNotFound(text="lvsmon: no such file\n")
    return _file_response(request, name)


def add_routes(app: web.Application) -> None:
    # read once: the files are part of the installed package and small (tens of kB)
    app[STATIC] = load_static()
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
