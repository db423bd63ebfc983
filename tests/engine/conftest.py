from __future__ import annotations

import textwrap

from lvsmon.config import Config, parse_config
from tests.helpers import webs  # noqa: F401  (the fixture, shared)


def cfg(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "test.cf")
