"""Watching the configuration file for autoreload, callback and explicit reloads.

The rules (docs/operations.md, "Reload and autoreload rules"):

* a file is offered for applying only when it is a readable regular file, not empty, parses,
  and has settled: the same sha256 digest on two consecutive polls (an editor writing in place,
  a copy still running, a full disk all pass through states that must never be applied);
* every unusable state (missing, empty, a directory, not a regular file, unreadable, a symlink
  loop, invalid content) is logged once, changes nothing, and its end is logged once;
* autoreload never applies a file without any virtual service (it would delete them all); an
  explicit reload (SIGHUP, `lvsmon CFG reload`, i.e. :meth:`ConfigWatcher.load_now`) does;
* the settings that govern watching come from the running config: the caller passes
  ``autoreload`` in, so a file that was never applied cannot switch autoreload off;
* callback is reported once per settled change of a usable file's content.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from lvsmon.config.errors import ConfigError, Diagnostic
from lvsmon.config.load import parse_config, read_config_bytes
from lvsmon.config.model import Config

log = logging.getLogger("lvsmon")

# A stat is trusted to stand for the content only once the file's ctime is this much older than
# the moment the stat was taken ("racy git"): a write in the same timestamp tick as the one we
# saw would otherwise leave mtime, ctime and size as they were. Timestamps tick at 1-10 ms on
# local file systems; the margin also covers a file server whose clock is somewhat off.
RACY_NS: Final = 2_000_000_000

_StatKey = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Change:
    """What one poll found."""

    config: Config | None  # a parsed, settled config to apply now (None: nothing to apply)
    changed: bool  # the file settled on new usable content (-> run the callback)


NOTHING: Final = Change(None, False)


@dataclass(frozen=True, slots=True)
class _Verdict:
    digest: str
    error: ConfigError | None
    has_virtuals: bool


class ConfigWatcher:
    """Polls one configuration file. Not thread-safe; calls are serialised by an asyncio lock.

    ``running_digest`` is :attr:`Config.digest` of the config the daemon runs. ``read`` and
    ``parse`` are the loaders of :mod:`lvsmon.config.load` (tests count calls through them);
    ``clock`` is the wall clock in ns, compared with file ctimes.
    """

    def __init__(
        self,
        path: str,
        running_digest: str,
        *,
        read: Callable[[str], bytes] = read_config_bytes,
        parse: Callable[[bytes, str], Config] = parse_config,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = path
        self._read = read
        self._parse = parse
        self._clock = clock
        self._lock = asyncio.Lock()
        self._running = running_digest
        # the content the running config came from counts as one sighting: an unchanged file
        # is settled at the first poll
        self._seen: str | None = running_digest
        self._stat: _StatKey | None = None  # stat of the last read, if it may stand for content
        self._settled = running_digest  # last settled usable digest: baseline of `changed`
        self._verdict: _Verdict | None = None  # the last digest parsed, so it is parsed once
        self._problem: tuple[str, str] | None = None  # the unusable state last logged
        self._refused: str | None = None  # the no-virtual digest last logged
        # offered but not (yet) confirmed by applied(): offered again, less and less often
        self._pending: Config | None = None
        self._pending_wait = 0
        self._pending_backoff = 1
        # autoreloads refused: content that settled but is not a valid config (/metrics)
        self.rejected = 0

    @property
    def settled_digest(self) -> str:
        """The last content the file settled on (what a `changed` poll reported)."""
        return self._settled

    @property
    def running_digest(self) -> str:
        return self._running

    def applied(self, digest: str) -> None:
        """The daemon now runs the config parsed from content with this digest."""
        self._running = digest
        self._pending = None

    async def poll(self, *, autoreload: bool) -> Change:
        """Look at the file once (stat first; read, hash and parse only when needed).

        ``autoreload`` is the running config's setting. Without it nothing is offered for
        applying, but changes are still detected (callback) and problems still logged.
        """
        async with self._lock:
            return await self._poll(autoreload)

    async def load_now(self) -> Config | ConfigError:
        """Explicit reload: read and parse now, without settling; a file without any virtual
        service is returned too, an empty (0-byte) one is not. Errors are logged every time (an
        operator asked), and not again by the next polls while the file stays as it is."""
        async with self._lock:
            path = self.path
            try:
                st = os.stat(path)
            except OSError as exc:
                return self._unusable(_stat_error(exc), always=True)
            if (problem := _stat_problem(st)) is not None:
                return self._unusable(problem, always=True)
            try:
                data = await asyncio.to_thread(self._read, path)
            except ConfigError as exc:
                return self._unusable(("unreadable", _reason(exc)), always=True)
            if not data:
                return self._unusable(_EMPTY, always=True)
            try:
                config = await asyncio.to_thread(self._parse, data, path)
            except ConfigError as exc:
                digest = hashlib.sha256(data).hexdigest()
                self._verdict = _Verdict(digest, exc, False)
                self._invalid(digest, exc, always=True)
                return exc
            self._verdict = _Verdict(config.digest, None, bool(config.virtuals))
            self._usable()
            return config

    async def _poll(self, autoreload: bool) -> Change:
        path = self.path
        taken = self._clock()  # before the stat: errs on the side of distrusting it
        try:
            st = os.stat(path)
        except OSError as exc:
            self._forget()
            self._unusable(_stat_error(exc))
            return NOTHING
        if (problem := _stat_problem(st)) is not None:
            self._forget()
            self._unusable(problem)
            return NOTHING
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key == self._stat:
            return self._retry()  # _stat is only ever set for settled content: see below
        try:
            data, digest = await asyncio.to_thread(_read_and_hash, self._read, path)
        except ConfigError as exc:
            self._forget()
            self._unusable(("unreadable", _reason(exc)))
            return NOTHING
        if not data:
            self._forget()
            self._unusable(_EMPTY)
            return NOTHING
        previous, self._seen = self._seen, digest
        if digest != previous:
            self._pending = None
            # first sighting: a write may still be going on. The stat is not kept, so the next
            # poll reads again even if the stat did not move (same size, same timestamp tick).
            self._stat = None
            return NOTHING
        change = await self._settle(digest, data, autoreload)
        # only once decided: a poll cancelled while parsing must not leave the stat standing
        # for content nobody looked at
        self._stat = key if taken - st.st_ctime_ns >= RACY_NS else None
        return change

    async def _settle(self, digest: str, data: bytes, autoreload: bool) -> Change:
        """``data`` (hashing to ``digest``) was seen on two consecutive polls."""
        changed = digest != self._settled
        if digest == self._running:
            self._usable()
            if changed:
                self._settled = digest
                log.info("Configuration file '%s' has changed on disk", self.path)
            return Change(None, changed)
        config: Config | None = None
        verdict = self._verdict
        if verdict is None or verdict.digest != digest:
            try:
                config = await asyncio.to_thread(self._parse, data, self.path)
            except ConfigError as exc:
                verdict = _Verdict(digest, exc, False)
            else:
                verdict = _Verdict(config.digest, None, bool(config.virtuals))
            self._verdict = verdict
        if verdict.error is not None:
            if self._invalid(digest, verdict.error) and autoreload:
                self.rejected += 1  # once per content, like its log lines
            return NOTHING
        self._usable()
        if not changed:
            return self._retry()  # decided when it settled (a touch, a racy stat re-read)
        self._settled = digest
        log.info("Configuration file '%s' has changed on disk", self.path)
        if not autoreload:
            log.info(" - ignore new configuration")
            return Change(None, True)
        if not verdict.has_virtuals:
            if self._refused != digest:
                self._refused = digest
                log.warning(
                    "Configuration file '%s' defines no virtual service: autoreload does not "
                    "apply it, as that would delete every virtual service (keeping the running "
                    "configuration; an explicit reload applies it)",
                    self.path,
                )
            return Change(None, True)
        if config is None:
            # parsed before but not kept (a Config of 10,000 reals is large): only when a
            # digest settles again after the running config changed under it
            try:
                config = await asyncio.to_thread(self._parse, data, self.path)
            except ConfigError as exc:  # a parser that is not deterministic; stay safe
                self._invalid(digest, exc)
                return Change(None, True)
        log.info(" - reread new configuration")
        self._pending, self._pending_wait, self._pending_backoff = config, 1, 1
        return Change(config, True)

    def _retry(self) -> Change:
        """The daemon failed to apply what was offered (it did not call applied()): offer it
        again after 1, 2, 4 ... 64 polls, so a kernel that refuses for a while is not hammered
        (nor the log filled) every second, and the file's content is not forgotten either."""
        pending = self._pending
        if pending is None:
            return NOTHING
        self._pending_wait -= 1
        if self._pending_wait > 0:
            return NOTHING
        self._pending_backoff = min(self._pending_backoff * 2, 64)
        self._pending_wait = self._pending_backoff
        log.info("Configuration file '%s': applying it again", self.path)
        return Change(pending, False)

    def _forget(self) -> None:
        self._seen = None
        self._stat = None
        self._pending = None

    def _unusable(self, problem: tuple[str, str], *, always: bool = False) -> ConfigError:
        if always or problem != self._problem:
            self._problem = problem
            log.error(
                "Configuration file '%s' is unusable: %s (keeping the running configuration)",
                self.path,
                problem[1],
            )
        return ConfigError([Diagnostic(self.path, None, problem[1])])

    def _invalid(self, digest: str, error: ConfigError, *, always: bool = False) -> bool:
        """Log why the content is invalid, unless that was logged last; True when logged."""
        problem = ("invalid", digest)
        if always or problem != self._problem:
            self._problem = problem
            for d in error.diagnostics:
                log.error(
                    "Error reading file %s: %s (keeping the running configuration)", self.path, d
                )
            return True
        return False

    def _usable(self) -> None:
        if self._problem is not None:
            self._problem = None
            log.info("Configuration file '%s' is usable again", self.path)


_EMPTY: Final = ("empty", "empty (0 bytes)")


def _read_and_hash(read: Callable[[str], bytes], path: str) -> tuple[bytes, str]:
    data = read(path)
    return data, hashlib.sha256(data).hexdigest()


def _stat_error(exc: OSError) -> tuple[str, str]:
    if exc.errno == errno.ENOENT:
        return ("missing", "no such file")
    if exc.errno == errno.ELOOP:
        return ("loop", "symbolic link loop")
    if exc.errno == errno.EACCES:
        return ("unreadable", "permission denied")
    return ("unreadable", exc.strerror or str(exc))


def _stat_problem(st: os.stat_result) -> tuple[str, str] | None:
    # checked before any open: opening a FIFO for reading would block until a writer comes
    if stat.S_ISDIR(st.st_mode):
        return ("directory", "is a directory")
    if not stat.S_ISREG(st.st_mode):
        return ("special", "not a regular file")
    if st.st_size == 0:
        return _EMPTY
    return None


def _reason(exc: ConfigError) -> str:
    return "; ".join(d.message for d in exc.diagnostics) or "cannot read"
