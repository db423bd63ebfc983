"""POST /plan: what a reload to a file would do to the kernel, from the running daemon's view.

Body: {"file": "/abs/path"} (no file: the running config's path, as the file is now on disk).
Answers {"config": path, "ops": [{"kind", "virtual", "real", "ipvsadm", "text"}], "changes": N};
400 for a bad request, 422 {"errors": ["file:line: message", ...]} for a config the reload would
refuse, 503 {"errors": [...]} when the kernel table cannot be read.

Nothing changes: the file is parsed and the plan computed in a thread (a 10,000-real config
takes about a second to parse, which must not delay the checks), from a snapshot of the engine.
Only the control socket takes it (POST): the daemon reads whatever file root names.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from lvsmon.api.app import DAEMON, BadBody, json_response, read_json_object
from lvsmon.config.errors import ConfigError
from lvsmon.config.load import load_new_config
from lvsmon.engine.planning import Running, plan_json
from lvsmon.ipvs.errors import BackendError


async def post_plan(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    try:
        body = await read_json_object(request) if request.can_read_body else {}
    except BadBody as exc:
        return json_response({"errors": [str(exc)]}, 400)
    path = body.get("file")
    if path is None:
        path = daemon.config.path
    if not isinstance(path, str) or not os.path.isabs(path):
        return json_response({"errors": ['expected {"file": "/absolute/path"}']}, 400)
    try:
        new = await asyncio.to_thread(load_new_config, path)
    except ConfigError as exc:
        return json_response({"errors": [str(d) for d in exc.diagnostics]}, 422)

    engine = daemon.engine
    actual = engine.actual
    if actual is None or engine.reconciler.retry_at is not None:
        # the reconciler dumps before its next pass (unknown table, or an op failed): so does
        # the plan, without handing the dump to the reconciler
        try:
            actual = await engine.backend.dump()
        except BackendError as exc:
            return json_response({"errors": [f"cannot read the IPVS table: {exc}"]}, 503)
    # taken in one go in the loop, where health and the table change: a consistent snapshot
    running = Running(
        engine.config,
        engine.plan,
        dict(engine.health),
        frozenset(engine.managed),
        actual,
        engine.leaving.leaving,  # replaced, never changed in place: a snapshot as it is
        dict(engine.steering.caps()),
    )
    maintained, drained = daemon.reload_preview()
    answer = await asyncio.to_thread(plan_json, running, new, maintained, drained)
    return json_response(answer)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/plan", post_plan)
