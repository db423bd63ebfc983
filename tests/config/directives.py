"""What the tests of lvsmon's own directives share: a config parsed as check-config parses it
(no support check: the tests name services freely) and the one-line errors of a bad one."""

from __future__ import annotations

import pytest

from lvsmon.config import ConfigError, parse_config
from lvsmon.config.model import Config


def parse(text: str) -> Config:
    return parse_config(text, "a.cf", check_support=False)


def errors(text: str) -> list[str]:
    """Each diagnostic of `text` as the one line check-config prints."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [str(d) for d in info.value.diagnostics]
