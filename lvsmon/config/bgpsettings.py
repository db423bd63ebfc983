"""The BGP announcement settings as the model holds them (config/bgpconf.py parses them; the
decision is engine/announce.py's). A leaf: model.py imports it, it imports nothing of lvsmon."""

from __future__ import annotations

from dataclasses import dataclass

MAX_U32 = 2**32 - 1
WORST_MED = MAX_U32  # the graceful stop's MED; no configured MED may equal it
DEFAULT_TABLE = 200
DEFAULT_PROTOCOL = 201
DEFAULT_MED = 100
DEFAULT_HOLDDOWN = 10
DEFAULT_DRAIN = 5


@dataclass(frozen=True, slots=True)
class MinUp:
    """A virtual's bar: `count` healthy reals, or `share` of its reals (rounded up, at least 1)."""

    count: int = 1
    share: float | None = None

    def needed(self, reals: int) -> int:
        if self.share is None:
            return self.count
        # exact for the 1/10000 steps values.share allows
        return max(1, -(-round(self.share * 10_000) * reals // 10_000))

    def __str__(self) -> str:
        if self.share is None:
            return str(self.count)
        return f"{self.share * 100:g}%"


ONE = MinUp()


@dataclass(frozen=True, slots=True)
class BgpVirtual:
    """One virtual's announcement settings (None on a virtual that is not announced)."""

    med: int = DEFAULT_MED
    minup: MinUp = ONE
    holddown: int = DEFAULT_HOLDDOWN
    communities: tuple[str, ...] = ()


DEFAULTS = BgpVirtual()


@dataclass(frozen=True, slots=True)
class BgpGlobal:
    mode: str = "no"
    table: int = DEFAULT_TABLE
    protocol: int = DEFAULT_PROTOCOL
    drain: int = DEFAULT_DRAIN
    require: str = "all"
    exabgpconf: str | None = None
    defaults: BgpVirtual = DEFAULTS  # the global bgpmed, bgpminup, bgpholddown, bgpcommunity

    @property
    def enabled(self) -> bool:
        return self.mode != "no"


NO_BGP = BgpGlobal()
