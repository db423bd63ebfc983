"""`lvsmon [CONFIG] drain --director` / `undrain --director`: the running daemon's BGP drain.

drain: every VIP this director announces is announced with GRACEFUL_SHUTDOWN and the worst MED
for `bgpdrain` s (the routers move the traffic to the other directors while this one still
serves), then withdrawn, and stays so while the daemon runs; the command returns then.
undrain: the VIPs are decided afresh and announced at once where their pools are healthy.
Not kept across a restart. Exit 0 done, 1 no daemon answers, 2 the config has no `bgp`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from lvsmon.text import clean

if TYPE_CHECKING:
    from lvsmon.cli.control import Control


def run_director_drain(command: str, control: Control) -> int:
    from lvsmon.api.client import ControlUnavailable, request

    try:
        status, body = request(control.socket_path, "POST", f"/bgp/{command}")
    except ControlUnavailable as exc:
        print(f"lvsmon: {command} --director needs the running daemon: {exc}", file=sys.stderr)
        return 1
    if status != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else str(body).strip()
        print(clean(f"lvsmon: {error or f'the daemon answered HTTP {status}'}"), file=sys.stderr)
        return 2 if status == 409 else 1
    print(f"director {'drained' if body.get('drained') else 'undrained'} ({body.get('speaker')})")
    for vip in body.get("vips") or []:
        if isinstance(vip, dict):
            state = "announced" if vip.get("announced") else "withdrawn"
            print(clean(f"{vip.get('vip')}: {state}: {vip.get('reason')}"))
    return 0
