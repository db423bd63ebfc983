"""A client of the control socket for the command line (plan, drain) and the tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

TIMEOUT_S = 30.0


class ControlUnavailable(Exception):
    """No daemon answers on the socket (not running, or not this version)."""


async def _request(path: str, method: str, url: str, body: Any | None) -> tuple[int, str]:
    connector = aiohttp.UnixConnector(path=path)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.request(method, f"http://lvsmon{url}", json=body) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlUnavailable(f"no daemon answers on {path}: {exc}") from exc


def request(socket_path: str, method: str, url: str, body: Any | None = None) -> tuple[int, Any]:
    """(HTTP status, the decoded JSON body or the text) from the daemon at `socket_path`."""
    status, text = asyncio.run(_request(socket_path, method, url, body))
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text
