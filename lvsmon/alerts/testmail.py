"""`lvsmon test-alert [--to ADDR] FILE`: one mail through the configured path, now.

An operator proves the path (relay, port, TLS, AUTH, or the local sendmail) before an outage
rather than during one. The mail goes to every recipient the file names (global `emailalert` and
each virtual's), or to `--to`; the outcome of the SMTP conversation is printed, exit 0 when the
relay accepted the mail, 1 when it did not, 2 for a config error.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TextIO

from lvsmon.alerts.delivery import DeliveryError, deliver
from lvsmon.alerts.sender import smtp_settings
from lvsmon.config.errors import ConfigError
from lvsmon.config.load import load_config
from lvsmon.config.model import Config


def recipients(config: Config) -> tuple[str, ...]:
    """Every address the file sends alerts to, in order of first mention."""
    found = list(config.settings.emailalert)
    for v in config.virtuals:
        found.extend(v.emailalert)
    return tuple(dict.fromkeys(a for a in found if a))


def test_alert(path: str, to: tuple[str, ...], *, out: TextIO, err: TextIO) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        err.write("".join(f"{d}\n" for d in exc.diagnostics))
        return 2
    targets = to or recipients(config)
    if not targets:
        err.write(f"{path}: no emailalert address in this file; give one with --to\n")
        return 2
    settings = smtp_settings(config)
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
