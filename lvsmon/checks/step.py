"""Which step a running check is in, so a deadline or an error can say where it struck."""

from __future__ import annotations


class Step:
    """Mutable on purpose: a check sets `name` as it moves on ("connect", "tls", "http")."""

    __slots__ = ("name",)

    def __init__(self, name: str = "start") -> None:
        self.name = name
