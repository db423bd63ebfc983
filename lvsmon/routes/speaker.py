"""What the announcer (engine/bgp.py) needs of a speaker (engine/bgp.make_speaker makes one)."""

from __future__ import annotations

from typing import Protocol


class Speaker(Protocol):
    """Routes in, BGP out, through a routing daemon lvsmon drives. Every method may raise
    routes.kernel.RouteError (or OSError); the announcer retries."""

    name: str

    async def start(self) -> list[str]:
        """Ready to announce; what a previous run left announced is gone (the prefixes)."""
        ...

    async def announce(self, vip: str, med: int, communities: tuple[str, ...]) -> None: ...

    async def withdraw(self, vip: str) -> None: ...

    async def present(self) -> dict[str, int] | None:
        """VIP -> MED as the routing daemon has them (None: it cannot tell)."""
        ...

    async def stop(self) -> None:
        """Nothing announced any more."""
        ...
