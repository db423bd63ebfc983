"""GET /metrics: Prometheus text format (to be filled by the metrics work)."""

from __future__ import annotations

from aiohttp import web


async def handler(request: web.Request) -> web.Response:
    return web.Response(text="", content_type="text/plain")
