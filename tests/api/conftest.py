"""Fixtures the control-server tests share with the daemon tests (real HTTP servers on loopback,
from tests/helpers.py). Append, do not replace: several test modules here use this file."""

from tests.helpers import webs  # noqa: F401  (a fixture, found by name)
