"""``lvsmon check-config [--json] FILE`` (also ``lvsmon -t FILE``)."""

from __future__ import annotations

import json
from typing import TextIO

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
        for d in exc.diagnostics:
            print(str(d), file=err)
        return EXIT_CONFIG_ERROR
    for w in config.warnings:
        print(f"{w.file}:{w.line}: warning: {w.message}", file=err)
    if as_json:
        json.dump(config_to_dict(config), out, indent=2, ensure_ascii=False)
        out.write("\n")
    return EXIT_OK
