"""FallbackCommands (alerts/hooks.py): the right command per FallbackChanged, and O(1) work per
event (issue 22: a start-up at 2,284 virtuals publishes one event per virtual; scanning every
virtual of the config for each event made that quadratic)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from lvsmon.alerts.hooks import Commands, FallbackCommands
from lvsmon.config import Config, parse_config
from lvsmon.config.model import Virtual
from lvsmon.engine.events import FallbackChanged


class CountingVirtuals(tuple[Virtual, ...]):
    """A config's virtuals that count how many of them were visited."""

    visited = 0

    def __iter__(self) -> Iterator[Virtual]:
        for v in super().__iter__():
            CountingVirtuals.visited += 1
            yield v


class Recorder(Commands):
    def __init__(self) -> None:
        super().__init__()
        self.started: list[list[str]] = []

    def start(self, argv: Sequence[str]) -> None:
        self.started.append(list(argv))


def many(n: int, command_every: int = 1) -> Config:
    lines = []
    for i in range(n):
        lines.append(f"virtual=10.1.{i // 250}.{i % 250 + 1}:80")
        lines.append("\treal=10.2.0.1:80 gate")
        lines.append("\tchecktype=on")
        if i % command_every == 0:
            lines.append(f'\tfallbackcommand="/usr/local/bin/fb {i}"')
    config = parse_config("\n".join(lines) + "\n", "many.cf")
    return dataclasses.replace(config, virtuals=CountingVirtuals(config.virtuals))


def test_runs_the_command_of_the_virtual_the_event_names() -> None:
    config = many(5, command_every=2)  # virtuals 0, 2, 4 have a command
    commands = Recorder()
    hook = FallbackCommands(lambda: config, commands)
    v = config.virtuals
    hook(FallbackChanged(v[2].key, True))
    hook(FallbackChanged(v[1].key, True))  # no command: nothing runs
    hook(FallbackChanged(v[4].key, False))
    assert commands.started == [
        ["/usr/local/bin/fb", "2", "start", "10.1.0.3:80", "tcp"],
        ["/usr/local/bin/fb", "4", "stop", "10.1.0.5:80", "tcp"],
    ]


def test_n_events_visit_each_virtual_once_per_config() -> None:
    n = 300
    config = many(n)
    commands = Recorder()
    hook = FallbackCommands(lambda: config, commands)
    CountingVirtuals.visited = 0
    for v in list(tuple.__iter__(config.virtuals)):
        hook(FallbackChanged(v.key, True))
    assert len(commands.started) == n
    # the index is built once (n visits); before, every event scanned every virtual (n * n)
    assert CountingVirtuals.visited == n


def test_a_reload_is_seen_by_the_next_event() -> None:
    old, new = many(3), many(3, command_every=3)  # the reload drops two commands
    running = [old]
    commands = Recorder()
    hook = FallbackCommands(lambda: running[0], commands)
    key = old.virtuals[1].key
    hook(FallbackChanged(key, True))
    running[0] = new
    hook(FallbackChanged(key, False))
    assert [argv[-3] for argv in commands.started] == ["start"]
