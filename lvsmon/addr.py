"""An address as it is written next to a port: an IPv6 literal goes in brackets.

A leaf at the top of the package, below both ``lvsmon.ipvs`` and ``lvsmon.checks`` (the checks
know nothing of the kernel table, so the helper cannot live in ``ipvs/model.py``).
"""

from __future__ import annotations


def bracketed(host: str) -> str:
    """``2001:db8::1`` as ``[2001:db8::1]``; an IPv4 address or a name as it is. Anything with a
    colon counts as IPv6, so pass an address without brackets."""
    return f"[{host}]" if ":" in host else host


def host_port(host: str, port: int) -> str:
    """``192.0.2.1:80``, ``[2001:db8::1]:80``."""
    return f"{bracketed(host)}:{port}"
