"""bench/soak.py: its invariant and health rules on made-up samples, and a 90-second soak (CI's
version of the hour) at the hour's size, 1,000 reals in 20 virtuals; the daemon and the servers'
process take about half of one core between them.

90 s: the warm-up (the daemon's lateness window full, 50 s at 1,000 reals) then 40 s of chaos
after the baseline; a config edit every 5 s instead of 10 keeps the 3-minute run's count of edits
(at least 10), each one with half the time to show in the status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from random import Random
from typing import Any, cast

# bench/ is scripts, not a package: mypy knows its files as top-level modules, and so do we
BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from soak import FALLBACK, Health, Invariant, Layout, Servers, expected_state, mismatches  # noqa: E402

V = "tcp:127.100.0.1:80"  # slot 0: quiescent
VN = "tcp:127.100.0.2:80"  # slot 1: not quiescent


def quiescent(vkey: str) -> bool:
    return vkey == V


def status(*virtuals: tuple[str, list[tuple[str, str, int]]]) -> dict[str, Any]:
    """(virtual key, [(address:port, state, weight), ...]) -> a status file's content."""
    out = []
    for key, reals in virtuals:
        rs = []
        for dest, state, weight in reals:
            address, port = dest.rsplit(":", 1)
            rs.append({"address": address, "port": int(port), "state": state, "weight": weight})
        out.append({"key": key, "reals": rs})
    return {"virtuals": out}


A, B = "127.88.0.1:8080", "127.88.0.2:8080"


def test_a_table_as_the_rules_want_is_no_difference() -> None:
    st = status((V, [(A, "up", 3), (B, "down", 1)]), (VN, [(A, "down", 1), (B, "down", 1)]))
    table = {V: {A: 3, B: 0}, VN: {FALLBACK: 1}}
    assert mismatches(st, table, quiescent) == {}
    table[V] = {A: 3}  # a quiesced real that is absent is fine (never up, or deleted by hand)
    assert mismatches(st, table, quiescent) == {}


def test_every_kind_of_difference_is_found() -> None:
    st = status((V, [(A, "up", 3), (B, "down", 1)]), (VN, [(A, "up", 2), (B, "down", 1)]))
    table = {
        V: {A: 4, B: 0, FALLBACK: 1, "127.254.0.1:9": 5},  # weight, fallback, a stray dest
        VN: {A: 2, B: 0},  # a down real kept without quiescent
        "tcp:127.100.0.3:80": {},  # a service the config does not have
    }
    found = mismatches(st, table, quiescent)
    assert set(found) == {
        (V, A),
        (V, FALLBACK),
        (V, "127.254.0.1:9"),
        (VN, B),
        ("tcp:127.100.0.3:80", ""),
    }
    assert "weight 4, wanted 3" in found[(V, A)]


def test_a_missing_service_and_a_missing_fallback_are_found() -> None:
    st = status((V, [(A, "down", 1)]), (VN, [(A, "down", 1)]))
    found = mismatches(st, {V: {A: 0}}, quiescent)
    assert set(found) == {(V, FALLBACK), (VN, "")}


def test_soak_ninety_seconds() -> None:
    """The CI run: exit 0 means every acceptance figure held; the JSON is checked too."""
    minutes, reals = 1.5, 1000
    proc = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), "--minutes", str(minutes), "--reals", str(reals),
         "--virtuals", "20", "--seed", "13", "--edit-s", "5"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
    )  # fmt: skip
    print(proc.stdout)  # the table and the figures, for `pytest -s` and CI logs
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    fig = json.loads(lines[-1])
    assert proc.returncode == 0, f"{fig.get('failed')}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert fig["failed"] == []
    assert fig["violations"] == 0 and fig["tracebacks"] == 0 and fig["reload_misses"] == 0
    assert fig["health_errors"] == 0 and fig["health_judged_failing"] > 0
    assert fig["fd_end"] <= fig["fd_start"] + 3
    assert fig["children_end"] <= fig["children_start"]
    assert fig["rss_growth_pct"] < 10
    assert fig["config_edits"] >= 10 and fig["hups"] > 0
    assert fig["faults_injected"] > 0 and fig["drifts_injected"] > 10
    assert fig["drift_repairs"] > 0 and fig["differences_seen"] > 0
    assert fig["mode_switches"] > reals  # every real changed behaviour about once or more
    assert fig["minutes"] == minutes and fig["reals"] == reals


def test_a_difference_is_a_violation_only_when_it_lasts(tmp_path: Path) -> None:
    status_path, table_path = tmp_path / "status.json", tmp_path / "table.json"
    status_path.write_text(json.dumps(status((V, [(A, "up", 3)]))))
    inv = Invariant(str(status_path), str(table_path), settle_s=10)
    assert inv.sample(0.0) is None and inv.unreadable == 1  # no table file yet
    table_path.write_text(json.dumps({"table": {V: {A: 5}}}))
    for t in (1.0, 2.0, 6.0):
        assert inv.sample(t) == {(V, A): "state up: weight 5, wanted 3"}
    table_path.write_text(json.dumps({"table": {V: {A: 3}}}))
    assert inv.sample(7.0) == {}
    assert inv.violations == [] and inv.episodes == 1 and inv.longest_s == 6.0
    table_path.write_text(json.dumps({"table": {V: {A: 5}}}))
    for t in (8.0, 15.0, 19.0, 30.0):
        inv.sample(t)
    assert inv.violations == [f"{V} {A}: state up: weight 5, wanted 3, for 11.0 s"]  # once
    assert inv.episodes == 2 and inv.samples == 8


def test_a_real_kept_in_by_the_depool_threshold_serves() -> None:
    st = status((VN, [(A, "down", 2)]))
    st["virtuals"][0]["reals"][0]["kept_by_threshold"] = True
    assert mismatches(st, {VN: {A: 2}}, quiescent) == {}
    assert set(mismatches(st, {VN: {FALLBACK: 1}}, quiescent)) == {(VN, A), (VN, FALLBACK)}


def test_the_state_a_behaviour_must_give() -> None:
    assert expected_state("ok", "negotiate") == expected_state("ok", "connect") == "up"
    assert expected_state("slow", "negotiate") is None  # near the timeout: either
    for mode in ("refused", "hung", "5xx", "wrong", "tlsstall"):
        assert expected_state(mode, "negotiate") == "down"
        assert expected_state(mode, "connect") == ("down" if mode == "refused" else "up")


class FakeServers:
    def __init__(self, mode: dict[str, str], since: float) -> None:
        self.mode, self.since = mode, dict.fromkeys(mode, since)


def test_a_wrong_state_is_an_error_once_behaviour_and_checks_held() -> None:
    layout = Layout([("127.88.0.1", 8080, False), ("127.88.0.2", 8080, False)], 2, 1, Random(1))
    [v] = layout.virtuals.values()
    a, b = sorted(v.reals)
    servers = FakeServers({a: "hung", b: "ok"}, since=0.0)
    health = Health(stable_s=15)
    health.config_written(layout, now=0.0)
    st = status((v.key, [(a, "up", 1), (b, "up", 1)]))
    health.sample(st, layout, cast(Servers, servers), now=10.0)  # too early to judge
    assert health.judged == 0
    health.sample(st, layout, cast(Servers, servers), now=16.0)
    assert health.judged == 2 and health.judged_failing == 1 and health.errors == []
    health.sample(st, layout, cast(Servers, servers), now=17.0)  # seen twice: an error
    assert len(health.errors) == 1 and a in health.errors[0]
    v.checktype = "connect"  # now a hung real passes, after its checks have held
    health.config_written(layout, now=18.0)
    health.sample(st, layout, cast(Servers, servers), now=20.0)
    health.sample(st, layout, cast(Servers, servers), now=40.0)
    assert len(health.errors) == 1
