"""The one IPv6 bracket rule (lvsmon/addr.py)."""

from __future__ import annotations

from lvsmon.addr import bracketed, host_port


def test_bracketed() -> None:
    assert bracketed("2001:db8::1") == "[2001:db8::1]"
    assert bracketed("::ffff:192.0.2.1") == "[::ffff:192.0.2.1]"
    assert bracketed("192.0.2.1") == "192.0.2.1"
    assert bracketed("mail.example.org") == "mail.example.org"
    assert bracketed("") == ""


def test_host_port() -> None:
    assert host_port("192.0.2.1", 80) == "192.0.2.1:80"
    assert host_port("2001:db8::1", 0) == "[2001:db8::1]:0"
