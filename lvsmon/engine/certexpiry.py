"""Certificates that expire soon (issue 25, point 4: `sslexpirywarn`): the engine's view of
each TLS-checked real's certificate, and the one rule of when that is worth a word.

A TLS check of a virtual with `sslexpirywarn = N` (days) reads its server certificate's
notAfter (checks/tlsverify.py; with `sslverify = no` too) and hands it over in
`CheckResult.cert_not_after`. The check runner passes it here for every such result (before
its steady shortcut, which skips a healthy real's repeated results): `CertWatch.observe`.

* `expiry`: per (virtual, real), the latest notAfter read: the metric
  `lvsmon_real_certificate_expiry_seconds{virtual,real}` is its distance from now.
* The rule (`CertWatch.observe`): a real whose certificate ends within its virtual's days (or
  has ended) gets a `CertificateExpiring` event when first seen so, then at most once per
  REPEAT_S (a day) while it stays so; a new certificate (another notAfter) counts as first
  seen. The event is the log's warning, the /events entry and the mail (alerts/sender.py
  mails each one): so the mail is at most once a day per real too. Both clocks are injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Final

from lvsmon.config.model import Config
from lvsmon.engine.events import CertificateExpiring, Event
from lvsmon.engine.jobs import RealRef
from lvsmon.ipvs.model import ServiceKey

REPEAT_S: Final = 86400.0
"""At most one warning per real in this long (a day)."""

DAY_S: Final = 86400.0


class CertWatch:
    """The certificates' notAfter per (virtual, real), and when to warn."""

    __slots__ = ("_days", "_publish", "_wall", "_warned", "expiry")

    def __init__(
        self,
        publish: Callable[[Event], None],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._publish = publish
        self._wall = wall
        self._days: dict[ServiceKey, int] = {}
        self.expiry: dict[RealRef, float] = {}
        # per real warned about: the notAfter warned of, and when
        self._warned: dict[RealRef, tuple[float, float]] = {}

    def configure(self, config: Config, refs: Collection[RealRef] = ()) -> None:
        """The days of each virtual (a reload); what is kept of reals no longer watched goes.
        `refs`: the config's reals (those of a virtual without sslexpirywarn go anyway)."""
        self._days = {v.key: v.tls.expirywarn for v in config.virtuals if v.tls.expirywarn > 0}
        if not self.expiry and not self._warned:
            return  # nothing kept: no pass over the config's reals
        days = self._days
        present = set(refs)
        for kept in (self.expiry, self._warned):
            for ref in [r for r in kept if r.service not in days or r not in present]:
                del kept[ref]

    @property
    def watching(self) -> bool:
        return bool(self._days)

    def observe(self, refs: Collection[RealRef], not_after: float) -> None:
        """A check of these reals read a certificate ending at `not_after`."""
        days_of = self._days
        now: float | None = None
        for ref in refs:
            days = days_of.get(ref.service)
            if days is None:
                continue  # this virtual does not ask (another of the real's may)
            self.expiry[ref] = not_after
            if now is None:
                now = self._wall()
            if not_after - now > days * DAY_S:
                self._warned.pop(ref, None)  # renewed, or not yet near: warn afresh next time
                continue
            last = self._warned.get(ref)
            if last is not None and last[0] == not_after and now - last[1] < REPEAT_S:
                continue
            self._warned[ref] = (not_after, now)
            self._publish(CertificateExpiring(ref, not_after, days, now))


def expiry_text(event: CertificateExpiring) -> str:
    """The warning's words (the log, the mail): when, and in how long."""
    day = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(event.not_after))
    left = event.not_after - event.at
    if left <= 0:
        return f"TLS certificate of real server {event.ref} expired on {day}"
    within = f"in {left / 3600:.0f} hours" if left < DAY_S else f"in {left / DAY_S:.0f} days"
    return (
        f"TLS certificate of real server {event.ref} expires on {day} ({within}; "
        f"sslexpirywarn = {event.days})"
    )
