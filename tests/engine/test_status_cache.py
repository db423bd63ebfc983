"""Engine.status_texts() (its builder: lvsmon/engine/statusview.py) reuses a virtual's text
while nothing of it changed, and the daemon's StatusEncoder tells a changed status by them: both
must give exactly what a build from scratch gives (Engine.status()), after any sequence of
health, kernel, maintenance and drain changes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsmon.checks.base import CheckResult, CheckSpec
from lvsmon.engine.engine import Engine
from lvsmon.engine.health import RealHealth
from lvsmon.engine.jobs import RealRef
from lvsmon.engine.status import Status, StatusEncoder, unpack
from lvsmon.ipvs.memory import MemoryBackend
from lvsmon.ipvs.model import DestConf, Service, ServiceConf

from .conftest import cfg

CONFIG = "quiescent=yes\n" + "".join(
    f"virtual=10.0.0.{v}:80\n\tchecktype=connect\n"
    + "".join(f"\treal=10.1.{v}.{r}:80 masq\n" for r in range(1, 5))
    + ("\tdepoolthreshold=50%\n" if v == 3 else "")
    for v in range(1, 4)
)


def make_engine() -> Engine:
    async def run_check(spec: CheckSpec) -> CheckResult:
        return CheckResult(True, "ok")

    engine = Engine(cfg(CONFIG), MemoryBackend(), run_check=run_check)
    engine.health = {ref: RealHealth(up=True, checked=True) for ref in engine.plan.job_of}
    return engine


def fresh(engine: Engine) -> list[bytes]:
    """A build from scratch: no text kept."""
    engine.status_view.clear()
    return engine.status_texts()


def decoded(texts: list[bytes]) -> list[Any]:
    return [json.loads(unpack(t)) for t in texts]


def without_clock(entries: Any) -> Any:
    # held_until is wall time (now - monotonic + wall): equal only to the ms
    def rounded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (None if k == "held_until" else rounded(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    return rounded(json.loads(json.dumps(entries, sort_keys=True)))


healths = st.builds(
    RealHealth,
    up=st.booleans(),
    failcount=st.integers(0, 3),
    reason=st.sampled_from(["ok", "connect: connection refused", "http: status 503"]),
    checked=st.booleans(),
    down_at=st.floats(0, 100),
    passcount=st.integers(0, 2),
)
step = st.one_of(
    st.tuples(st.just("health"), st.integers(0, 11), healths),
    st.tuples(st.just("same health, new object"), st.integers(0, 11), st.none()),
    st.tuples(st.just("kernel"), st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("maintained"), st.sets(st.integers(0, 11), max_size=3), st.none()),
    st.tuples(st.just("drained"), st.sets(st.integers(0, 11), max_size=3), st.none()),
    st.tuples(st.just("status"), st.none(), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step, max_size=25))
def test_a_kept_entry_is_what_a_fresh_build_gives(steps: list[tuple[str, object, object]]) -> None:
    engine = make_engine()
    refs: list[RealRef] = list(engine.health)
    layouts = engine.layout()
    encoder = StatusEncoder()
    engine.status_texts()
    for kind, a, b in steps:
        if kind == "health":
            assert isinstance(a, int) and isinstance(b, RealHealth)
            engine.health[refs[a]] = b
        elif kind == "same health, new object":
            assert isinstance(a, int)
            engine.health[refs[a]] = dataclasses.replace(engine.health[refs[a]])
        elif kind == "kernel":
            assert isinstance(a, int) and isinstance(b, int)
            layout = layouts[a]
            dests = {s.dest: DestConf(weight=w) for w, s in enumerate(layout.reals[:b])}
            actual = dict(engine.reconciler.actual or {})
            actual[layout.key] = Service(ServiceConf(), dests)
            engine.reconciler.actual = actual
        elif kind in ("maintained", "drained"):
            assert isinstance(a, set)
            chosen = frozenset(refs[i] for i in a)
            if kind == "maintained":
                engine._maintained = chosen
            else:
                engine._drained = chosen
        kept = engine.status_texts()
        version = encoder.update(engine.status_head(), kept)
        # a second call with nothing changed gives the very same texts, and the same version
        again = engine.status_texts()
        assert all(x is y for x, y in zip(kept, again, strict=True))
        assert encoder.update(engine.status_head(), again) == version
        built = engine.status()  # entries built now, none kept
        assert without_clock(decoded(kept)) == without_clock(built["virtuals"])
        assert without_clock(decoded(fresh(engine))) == without_clock(built["virtuals"])
        whole = json.loads(encoder.text())
        assert without_clock(whole) == without_clock(built)


def test_only_the_virtual_that_changed_is_built_again() -> None:
    engine = make_engine()
    first = engine.status_texts()
    ref = next(r for r in engine.health if r.address == "10.1.2.3")
    engine.health[ref] = RealHealth(up=False, checked=True, reason="connect: connection refused")
    second = engine.status_texts()
    assert [x is y for x, y in zip(first, second, strict=True)] == [True, False, True]
    (real,) = [r for r in json.loads(unpack(second[1]))["reals"] if r["address"] == "10.1.2.3"]
    assert (real["state"], real["reason"]) == ("down", "connect: connection refused")


def test_a_reload_lays_the_places_out_again() -> None:
    engine = make_engine()
    engine.status()
    config = cfg(CONFIG.replace("\treal=10.1.1.1:80 masq\n", ""))
    engine.config = config
    engine.health = {
        ref: RealHealth(up=ref.address != "10.1.1.2", checked=True)
        for ref in engine.plan.job_of
        if ref.address != "10.1.1.1"
    }
    status = engine.status()
    reals = {r["address"]: r["state"] for r in status["virtuals"][0]["reals"]}
    assert reals == {"10.1.1.2": "down", "10.1.1.3": "up", "10.1.1.4": "up"}


def test_the_encoder_gives_compact_json_of_the_whole_status() -> None:
    engine = make_engine()
    encoder = StatusEncoder()
    status = engine.status()
    text = encoder.encode(status)
    assert b" " not in text.replace(b"connect: ", b"")  # compact
    assert json.loads(text) == json.loads(json.dumps(status))
    assert encoder.encode(engine.status()) == text  # the same bytes
    encoder.update(engine.status_head(), engine.status_texts())
    assert encoder.text() == text  # from the kept texts: the same bytes


def test_equal_maintained_and_drained_sets_anew_look_at_no_virtual(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The maintenance scan and the drain refresh may give an equal set as a new object each
    second: the whole last list again, without a look at any virtual (at 100,000 reals that
    look was 2,284 virtuals' health compared a second, for nothing)."""
    engine = make_engine()
    # a table read once (none, or an empty one, is a new empty table each time)
    engine.reconciler.actual = {engine.layout()[0].key: Service(ServiceConf(), {})}
    ref = next(iter(engine.health))
    engine._maintained, engine._drained = frozenset({ref}), frozenset()
    first = engine.status_texts()
    looked: list[int] = []
    view = engine.status_view
    original = view.health_places

    def counted(*args: Any) -> list[Sequence[int]]:
        looked.append(1)
        return original(*args)

    monkeypatch.setattr(view, "health_places", counted)
    engine._maintained, engine._drained = frozenset({ref}), frozenset()  # equal, new objects
    again = engine.status_texts()
    assert all(x is y for x, y in zip(first, again, strict=True))
    assert looked == []
    engine._maintained = frozenset()  # a change is seen
    assert json.loads(unpack(engine.status_texts()[0]))["reals"][0]["state"] == "up"
    assert looked == [1]


def test_the_encoder_keeps_its_version_while_nothing_changed() -> None:
    """The daemon's status file is only touched while the version stays: the whole text is
    not kept to compare (8 MB at 37,298 reals)."""
    engine = make_engine()
    encoder = StatusEncoder()

    def head(pid: int) -> Status:
        return {**engine.status_head(), "pid": pid}

    version = encoder.update(head(1), engine.status_texts())
    assert encoder.update(head(1), engine.status_texts()) == version
    changed = encoder.update(head(2), engine.status_texts())  # another field
    assert changed != version and json.loads(encoder.text())["pid"] == 2
    ref = next(iter(engine.health))
    engine.health[ref] = RealHealth(up=False, checked=True, reason="down")  # an entry
    again = encoder.update(head(2), engine.status_texts())
    assert again != changed
    assert json.loads(encoder.text()) == json.loads(json.dumps({**engine.status(), "pid": 2}))
    assert "_last" not in vars(encoder) and not any(
        isinstance(v, bytes) and len(v) > 100 for v in vars(encoder).values()
    )  # no whole text kept


def test_a_new_table_with_the_same_services_looks_at_no_virtual(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resync gives a new table object that keeps each equal service's object: the last list
    again, without a look at any virtual; a service changed in it is seen."""
    engine = make_engine()
    layout = engine.layout()
    engine.reconciler.actual = {v.key: Service(ServiceConf(), {}) for v in layout}
    first = engine.status_texts()
    looked: list[int] = []
    view = engine.status_view
    original = view.health_places

    def counted(*args: Any) -> list[Sequence[int]]:
        looked.append(1)
        return original(*args)

    monkeypatch.setattr(view, "health_places", counted)
    engine.reconciler.actual = dict(engine.reconciler.actual)  # a resync: new table, same services
    again = engine.status_texts()
    assert all(x is y for x, y in zip(first, again, strict=True)) and looked == []
    slot = layout[1].reals[0]
    actual = dict(engine.reconciler.actual)
    actual[layout[1].key] = Service(ServiceConf(), {slot.dest: DestConf(weight=5)})
    engine.reconciler.actual = actual
    changed = engine.status_texts()
    assert looked == [1] and json.loads(unpack(changed[1]))["reals"][0]["kernel_weight"] == 5
    assert changed[0] is first[0] and changed[2] is first[2]


def test_the_kept_texts_are_packed() -> None:
    """Issue 22: what the view keeps between seconds is each virtual's text compressed (212
    bytes a real as JSON, about 20 packed), and the encoder's whole text is the JSON."""
    engine = make_engine()
    texts = engine.status_texts()
    plain = [json.dumps(v, separators=(",", ":")).encode() for v in engine.status()["virtuals"]]
    assert [unpack(t) for t in texts] == plain
    assert sum(map(len, texts)) < sum(map(len, plain)) / 2


def test_a_packed_virtual_text_takes_the_preset_dictionary() -> None:
    """Issue 22: each virtual's status text is kept packed; with a dictionary of the entries'
    keys and words a 17-real virtual's text packs to under half of what zlib alone gives."""
    import json
    import zlib

    from lvsmon.engine.status import pack, unpack

    real = {
        "address": "127.77.0.18", "port": 8080, "state": "up", "drained": False,
        "kept_by_threshold": False, "checked": True, "failcount": 0, "reason": "ok",
        "rising": None, "held_until": None, "kernel_weight": 1, "weight": 1, "steering": None,
        "agent": None,
    }  # fmt: skip
    reals = [{**real, "address": f"127.77.0.{i}"} for i in range(17)]
    entry = {"name": "tcp:127.100.0.2:80", "key": "tcp:127.100.0.2:80", "file": "/x.cf",
             "line": 32, "depool_limited": False, "reals": reals}  # fmt: skip
    text = json.dumps(entry, separators=(",", ":")).encode()
    packed = pack(text)
    assert unpack(packed) == text and unpack(pack(b"")) == b""
    assert len(packed) * 2 < len(zlib.compress(text, 1))
