"""The command line's tests run lvsmon as a process against real HTTP servers on loopback."""

from tests.helpers import webs  # noqa: F401  (a fixture, found by name)
