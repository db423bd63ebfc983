from __future__ import annotations

import textwrap

from lvsmon.config import Config, parse_config


def cfg(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "test.cf")


from ..daemon.conftest import webs  # noqa: E402,F401  (the fixture, shared)
