"""Which alert mails are due, and when: pure (no I/O; the caller passes the clock in).

ldirectord's rules (ldirectord-spec.md §8), kept:
  * recipients: the virtual's `emailalert`, else the global one (the config's effective values
    already merge them); none → no mail;
  * `emailalertstatus`: a change is mailed only while the daemon's phase is in the virtual's list;
  * reminders "Inaccessible real server: rip:port (vip:port)" every `emailalertfreq` seconds for a
    real still down (0 = none), cleared when it comes back; the reminder clock runs even while the
    status filter or an empty recipient list keeps the mails back, as in ldirectord;
  * a lone change keeps ldirectord's subject, "[servicename] " first when the virtual has one.
lvsmon's additions, so that a switch dying does not flood the inbox:
  * coalescing: the changes for one recipient list within `window_s` of the first go out as one
    mail with a counting subject ("[lvsmon] 48 real servers down, 2 restored on HOST");
    window_s = 0 gives ldirectord's one mail per change;
  * mails go through the relay (`smtp`) of the virtual they are about, as in ldirectord; changes
    are coalesced and rate-limited per route (recipients, relay);
  * a rate limit per recipient list: at most `rate_per_hour` mails in any sliding hour
    (0 = unlimited); what it holds back waits and goes out in the next mail it allows, summarised
    (`Mail.held_back`), never dropped;
  * reminder state survives a reload for reals still configured in the same virtual, and
    `known_down` arms reminders for a real found down at start without mailing it again.
All times are the caller's clock (`now`); `Change.at` is carried for the reader, never compared.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass, field

from lvsmon.alerts.changes import Change, reminder_of
from lvsmon.config.model import DAEMON_STATES, Config, GlobalSettings, Virtual
from lvsmon.engine.wording import virtual_label
from lvsmon.ipvs.model import DestKey, ServiceKey, kernel_dest_port

HOUR = 3600.0

Relay = tuple[str | None, int]
"""Where a mail goes: the `smtp` host and port of the virtual it is about (the global one unless
the virtual names its own, as ldirectord allows); host None = the local sendmail."""

Route = tuple[tuple[str, ...], Relay]
"""Recipients and relay: the unit of coalescing and of the rate limit."""


@dataclass(frozen=True, slots=True)
class Mail:
    """One mail to send. `held_back`: how many mails the rate limit kept back and folded into
    this one (0: none). `status`: the daemon's phase when its first change happened (the
    "Daemon-Status" ldirectord reports for a change: ldirectord mailed at once, so its status was
    the phase of the change; a mail that waited for a window or the rate limit keeps it).
    `relay`: the `smtp` relay of the virtual(s) it is about."""

    to: tuple[str, ...]
    subject: str
    changes: tuple[Change, ...]
    held_back: int
    status: str
    relay: Relay = (None, 25)


@dataclass(slots=True)
class _Batch:
    """Changes for one recipient list that will go out as one mail (unless the rate limit
    merges several batches)."""

    to: tuple[str, ...]
    relay: Relay
    opened: float
    status: str
    prefix: str  # "[servicename] " of the first change's virtual, for a lone change
    changes: list[Change] = field(default_factory=list)
    held: int = 0  # the would-be mails in it that the rate limit kept back


@dataclass(slots=True)
class _Reminder:
    label: str  # the virtual's "vip:port" as in ldirectord's subject
    last: float  # when the real went down or the last reminder was due


def summary_subject(changes: tuple[Change, ...] | list[Change], hostname: str) -> str:
    """The subject of a mail with several changes: "[lvsmon] 48 real servers down, 2 restored,
    3 still down, 1 fallback change on HOST"."""
    down = sum(1 for c in changes if c.kind == "down" and not c.reminder)
    still = sum(1 for c in changes if c.reminder)
    up = sum(1 for c in changes if c.kind == "up")
    fallback = sum(1 for c in changes if c.kind == "fallback")
    depool = sum(1 for c in changes if c.kind == "depool")
    arp = sum(1 for c in changes if c.kind == "arp")
    bgp = sum(1 for c in changes if c.kind == "bgp")
    cert = sum(1 for c in changes if c.kind == "cert")
    parts = [
        f"{n} {word}" for n, word in ((down, "down"), (up, "restored"), (still, "still down")) if n
    ]
    if parts:
        n = down or up or still
        parts[0] = parts[0].replace(f"{n} ", f"{n} real server{'s' if n != 1 else ''} ", 1)
    if fallback:
        parts.append(f"{fallback} fallback change{'s' if fallback != 1 else ''}")
    if depool:
        parts.append(f"{depool} depool threshold change{'s' if depool != 1 else ''}")
    if arp:
        parts.append(f"{arp} ARP guard change{'s' if arp != 1 else ''}")
    if bgp:
        parts.append(f"{bgp} BGP change{'s' if bgp != 1 else ''}")
    if cert:
        parts.append(f"{cert} certificate{'s' if cert != 1 else ''} expiring")
    return f"[lvsmon] {', '.join(parts)} on {hostname}"


def _configured_reals(v: Virtual) -> frozenset[str]:
    """The reals of a virtual as change_of names them: the kernel's destination key, "rip:port"."""
    return frozenset(
        str(kernel_dest_port(v.key, DestKey.of(r.address, r.port), r.forward)) for r in v.reals
    )


class AlertPolicy:
    def __init__(
        self,
        config: Config,
        *,
        window_s: float,
        rate_per_hour: int,
        hostname: str | None = None,
    ) -> None:
        if window_s < 0 or rate_per_hour < 0:
            raise ValueError("window_s and rate_per_hour must not be negative")
        self.window_s = window_s
        self.rate_per_hour = rate_per_hour
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self._phase = "starting"
        self._reminders: dict[tuple[ServiceKey, str], _Reminder] = {}
        self._batches: list[_Batch] = []  # in opening order
        self._sent: dict[Route, deque[float]] = {}  # send times in the last hour
        self.use(config)

    # -- inputs ------------------------------------------------------------------------------

    def use(self, config: Config) -> None:
        """A (re)load: keep the reminders of reals still configured in the same virtual."""
        self._config = config
        self._virtuals = {v.key: v for v in config.virtuals}
        # each virtual's reals as alerts name them, built on first need: a reload of 37,000
        # reals spent 0.2 s building them all, with e-mail alerts or without
        self._reals: dict[ServiceKey, frozenset[str]] = {}
        for key in [k for k in self._reminders if not self._armable(*k)]:
            del self._reminders[key]
        # A virtual's label only changes with its key, so the kept labels are still right.

    def phase(self, name: str) -> None:
        if name not in DAEMON_STATES:
            raise ValueError(f"unknown daemon phase {name!r} (known: {', '.join(DAEMON_STATES)})")
        self._phase = name

    def feed(self, change: Change, now: float) -> None:
        key = (change.service, change.real)
        if change.kind == "up":
            self._reminders.pop(key, None)
        elif change.kind == "down" and not change.reminder:
            # A real deleted because a reload removed it is no outage: no reminders for it.
            if self._armable(*key):
                self._reminders[key] = _Reminder(virtual_label(change.service), now)
            else:
                self._reminders.pop(key, None)
        self._queue(change, now)

    def known_down(self, service: ServiceKey, real: str, now: float) -> None:
        """A real found down at start or adoption: its reminders run from `now`, without a
        first mail (so a restart sends no spurious mail for it)."""
        if self._armable(service, real):
            self._reminders[(service, real)] = _Reminder(virtual_label(service), now)

    # -- outputs -----------------------------------------------------------------------------

    def due(self, now: float) -> list[Mail]:
        """The mails to send at `now`, in order; the reminders due by then are queued first."""
        self._remind(now)
        return self._release(now, flush=False)

    def flush(self, now: float) -> list[Mail]:
        """Everything queued, now (at stop): no waiting for windows; the rate limit still
        merges, so each recipient list gets at most one mail beyond its limit."""
        return self._release(now, flush=True)

    def next_due(self) -> float | None:
        """When `due` may next return something (None: nothing queued, no reminders)."""
        times: list[float] = []
        for r_key, rem in self._reminders.items():
            freq = self._settings(r_key[0]).emailalertfreq
            if freq:
                times.append(rem.last + freq)
        for batch in self._batches:
            ready = batch.opened + self.window_s
            sent = self._sent.get((batch.to, batch.relay))
            if self.rate_per_hour and sent and len(sent) >= self.rate_per_hour:
                ready = max(ready, sent[0] + HOUR)
            times.append(ready)
        return min(times, default=None)

    @property
    def reminders(self) -> frozenset[tuple[ServiceKey, str]]:
        """The (service, real) pairs reminders run for (for status and tests)."""
        return frozenset(self._reminders)

    # -- internals ---------------------------------------------------------------------------

    def _armable(self, service: ServiceKey, real: str) -> bool:
        return bool(self._settings(service).emailalertfreq) and real in self._configured(service)

    def _configured(self, service: ServiceKey) -> frozenset[str]:
        reals = self._reals.get(service)
        if reals is None:
            v = self._virtuals.get(service)
            reals = self._reals[service] = frozenset() if v is None else _configured_reals(v)
        return reals

    def _settings(self, service: ServiceKey) -> Virtual | GlobalSettings:
        """The virtual's effective alert settings; the global ones for a service the config no
        longer has (its last ops after a reload)."""
        v = self._virtuals.get(service)
        return v if v is not None else self._config.settings

    def _remind(self, now: float) -> None:
        for (service, real), rem in self._reminders.items():
            freq = self._settings(service).emailalertfreq
            # The same sum as next_due's: `now - last >= freq` can miss by a rounding error at
            # the very time next_due named, and the caller would spin on it.
            if freq and now >= rem.last + freq:
                rem.last = now
                self._queue(reminder_of(service, real, rem.label, now), now)

    def _queue(self, change: Change, now: float) -> None:
        settings = self._settings(change.service)
        to = settings.emailalert
        if self._phase not in settings.emailalertstatus or not to:
            return
        relay = (settings.smtp, settings.smtpport)
        if self.window_s > 0:
            for batch in self._batches:
                if batch.to == to and batch.relay == relay and now < batch.opened + self.window_s:
                    batch.changes.append(change)
                    return
        v = self._virtuals.get(change.service)
        prefix = f"[{v.servicename}] " if v is not None and v.servicename else ""
        self._batches.append(_Batch(to, relay, now, self._phase, prefix, [change]))

    def _allowance(self, route: Route, now: float) -> int | None:
        """Mails `route` may still carry in the hour up to `now` (None: no limit)."""
        if not self.rate_per_hour:
            return None
        sent = self._sent.setdefault(route, deque())
        while sent and sent[0] <= now - HOUR:
            sent.popleft()
        return self.rate_per_hour - len(sent)

    def _release(self, now: float, *, flush: bool) -> list[Mail]:
        ready: dict[Route, list[_Batch]] = {}
        waiting: list[_Batch] = []
        for batch in self._batches:
            if flush or now >= batch.opened + self.window_s:
                ready.setdefault((batch.to, batch.relay), []).append(batch)
            else:
                waiting.append(batch)
        mails: list[Mail] = []
        for route, batches in ready.items():
            allowed = self._allowance(route, now)
            if allowed is not None:
                if flush:
                    allowed = max(allowed, 1)
                if allowed <= 0:
                    for batch in batches:
                        batch.held = batch.held or 1
                    waiting.extend(batches)
                    continue
                if len(batches) > allowed:
                    # The last mail the limit allows carries everything beyond it.
                    batches = [*batches[: allowed - 1], self._merge(batches[allowed - 1 :])]
            for batch in batches:
                mails.append(self._mail(batch))
                if allowed is not None:
                    self._sent[route].append(now)
        # Held batches stay ahead of newer ones so that the next mail carries them first.
        self._batches = sorted(waiting, key=lambda b: b.opened)
        return mails

    @staticmethod
    def _merge(batches: list[_Batch]) -> _Batch:
        """Several would-be mails as one; each counts as held back (it waited for the limit)."""
        first = batches[0]
        merged = _Batch(first.to, first.relay, first.opened, first.status, first.prefix)
        for batch in batches:
            merged.changes.extend(batch.changes)
            merged.held += batch.held or 1
        return merged

    def _mail(self, batch: _Batch) -> Mail:
        changes = tuple(batch.changes)
        if len(changes) == 1:
            subject = batch.prefix + changes[0].subject
        else:
            subject = summary_subject(changes, self.hostname)
        return Mail(batch.to, subject, changes, batch.held, batch.status, batch.relay)
