"""``lvsmon check-config [--json] FILE`` (also ``lvsmon -t FILE``)."""

from __future__ import annotations

import json
from typing import TextIO

from lvsmon.config import probehost, removalconf
from lvsmon.config.dump import config_to_dict
from lvsmon.config.errors import ConfigError
from lvsmon.config.load import load_config

EXIT_OK = 0
EXIT_CONFIG_ERROR = 2  # what ldirectord exits with on a configuration error


def check_config(path: str, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Exit 0 and (with as_json) print the effective configuration; or print every error as
    FILE:LINE: message on ``err`` and exit 2. Warnings go to ``err`` in both cases."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        _write(err, "".join(f"{d}\n" for d in exc.diagnostics))
        return EXIT_CONFIG_ERROR
    # the director's sysctls, for checks through the VIP
    if unready := probehost.diagnostics(config):
        _write(err, "".join(f"{d}\n" for d in unready))
        return EXIT_CONFIG_ERROR
    _write(err, "".join(f"{w.file}:{w.line}: warning: {w.message}\n" for w in config.warnings))
    # deadconns=expire on this director's kernel, as start and reload say it
    if problem := removalconf.deadconns_problem(
        config.virtuals, removalconf.read_expire_nodest_conn
    ):
        v, text = problem
        _write(err, f"{v.file}:{v.line}: warning: {text}\n")
    if as_json:
        _write(out, json.dumps(config_to_dict(config), indent=2, ensure_ascii=False) + "\n")
    return EXIT_OK


def _write(stream: TextIO, text: str) -> None:
    """Write and flush; a reader that closed its end (`check-config --json F | head -1`) has
    taken all it wanted, and the exit status still says whether the file is valid."""
    if not text:
        return
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        pass
