"""Fixtures the control-server tests share with the daemon tests (real HTTP servers on loopback).
Append, do not replace: several test modules here use this file."""

from tests.daemon.conftest import webs  # noqa: F401  (a fixture, found by name)
