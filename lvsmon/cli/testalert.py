"""`lvsmon test-alert [--to ADDR] FILE`: one mail through the configured path, now.

An operator proves the path (relay, port, TLS, AUTH, or the local sendmail) before an outage
rather than during one. One mail per relay the file uses (the global `smtp`, and each virtual's
own), to the recipients whose alerts go through it (or to `--to`); the outcome of each SMTP
conversation is printed, exit 0 when every relay accepted its mail, 1 when one did not, 2 for a
config error.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TextIO

from lvsmon.alerts.delivery import DeliveryError, deliver
from lvsmon.alerts.policy import Relay
from lvsmon.alerts.sender import smtp_settings
from lvsmon.config.errors import ConfigError
from lvsmon.config.load import load_config
from lvsmon.config.model import Config


def routes(config: Config) -> dict[Relay, tuple[str, ...]]:
    """Every relay the file sends alerts through (global `smtp` and each virtual's), with the
    addresses that get mail through it, in order of first mention."""
    found: dict[Relay, list[str]] = {}
    s = config.settings
    if s.emailalert:
        found.setdefault((s.smtp, s.smtpport), []).extend(s.emailalert)
    for v in config.virtuals:
        if v.emailalert:
            found.setdefault((v.smtp, v.smtpport), []).extend(v.emailalert)
    return {relay: tuple(dict.fromkeys(a for a in to if a)) for relay, to in found.items()}


def test_alert(path: str, to: tuple[str, ...], *, out: TextIO, err: TextIO) -> int:
    """One test mail per relay; 0 when every relay accepted its mail."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        err.write("".join(f"{d}\n" for d in exc.diagnostics))
        return 2
    plan = routes(config)
    if to:  # --to: those addresses, through every relay the file uses (the global one if none)
        relays = list(plan) or [(config.settings.smtp, config.settings.smtpport)]
        plan = {relay: to for relay in relays}
    if not plan:
        err.write(f"{path}: no emailalert address in this file; give one with --to\n")
        return 2
    failed = 0
    for relay, targets in plan.items():
        failed += _send_one(config, relay, targets, out=out, err=err)
    return 1 if failed else 0


def _send_one(
    config: Config, relay: Relay, targets: tuple[str, ...], *, out: TextIO, err: TextIO
) -> int:
    settings = smtp_settings(config, relay)
    host = socket.gethostname()
    via = (
        f"{settings.host}:{settings.port} (tls={settings.tls}"
        f"{', auth as ' + settings.user if settings.user else ''})"
        if settings.host
        else f"the local {settings.sendmail} -t"
    )
    subject = f"lvsmon test alert from {host}"
    body = (
        f"ldirectord host: {host}\nLog-Message: {subject}\nDaemon-Status: test\n\n"
        f"This mail proves the alert path of {config.path}: {via}.\n"
    )
    sender = config.settings.emailalertfrom or settings.sender
    try:
        asyncio.run(deliver(settings, targets, subject, body, sender))
    except DeliveryError as exc:
        err.write(f"test alert to {', '.join(targets)} via {via} failed: {exc}\n")
        return 1
    out.write(f"test alert sent to {', '.join(targets)} via {via}\n")
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="lvsmon test-alert",
        description="Send one test alert mail through the path the configuration names.",
    )
    parser.add_argument("--to", action="append", default=[], help="recipient (repeatable)")
    parser.add_argument("file", help="the ldirectord.cf")
    args = parser.parse_args(argv)
    return test_alert(args.file, tuple(args.to), out=sys.stdout, err=sys.stderr)
