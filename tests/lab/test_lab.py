"""The real lvsmon daemon balancing real traffic through the real kernel's IPVS (LVS-NAT).

Each test asserts on the kernel table as `ipvsadm -Sn` prints it and on what a client in its own
network namespace gets through the VIP. The tests run in file order over one shared lab.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from tests.lab.daemonctl import DETECTION_BOUND, KERNEL_CHANGE, RESYNC_BOUND, lab_config
from tests.lab.labrun import MEASURED, LabRun
from tests.lab.netlab import (
    OTHER_VIP,
    VIP,
    TableWatch,
    Weights,
    add_other_service,
    dest_stats,
    ipvsadm_save,
    lab_part,
    real_ip,
    run,
    save_services,
    save_weights,
)

pytestmark = pytest.mark.kernel

V80 = f"{VIP}:80"
V8080 = f"{VIP}:8080"
OTHER = f"{OTHER_VIP}:80"
LAB_SERVICES = (V80, V8080, OTHER)
FALLBACK = "127.0.0.1:80"
OTHER_ENTRY: Weights = {(OTHER, f"{real_ip(1)}:80"): 2}
ALL_REALS = {"rs1", "rs2", "rs3", "rs4"}
SETTLE = 90.0  # bounds a hung lab only; TCG is slow and the host is shared


def rs(n: int) -> str:
    return f"{real_ip(n)}:80"


def healthy(lab: LabRun) -> Weights:
    table = {(V80, rs(n)): w for n, w in lab.weights.items()}
    table |= {(V8080, rs(n)): 1 for n in (1, 2, 3)}
    return table | OTHER_ENTRY


def kernel() -> Weights:
    return lab_part(save_weights(ipvsadm_save()), LAB_SERVICES)


def settle_healthy(lab: LabRun) -> None:
    lab.net.heal([n for n in lab.weights if n <= 3])
    want = healthy(lab)
    with TableWatch(LAB_SERVICES) as watch:
        watch.wait_for(lambda w: w == want, SETTLE, "all reals healthy in the kernel")
    assert kernel() == want


def measure(
    watch: TableWatch, what: str, pred: Callable[[Weights], bool], after: float = 0.0
) -> float:
    """Seconds from the watch's start to `pred` holding (in a state first seen at or after
    `after`), recorded for the summary."""
    seconds = watch.wait_for(pred, SETTLE, what, after)
    MEASURED.append((what, seconds))
    return seconds


def test_1_all_healthy_traffic_reaches_every_real(lab: LabRun) -> None:
    lines = ipvsadm_save()
    assert lab_part(save_weights(lines), LAB_SERVICES) == healthy(lab)
    assert {V80, V8080, OTHER} <= save_services(lines)
    answers = lab.net.curl(9)
    assert set(answers) == {"rs1", "rs2", "rs3"}, answers


def test_2_stopped_server_is_quiesced_or_deleted_within_the_bound(lab: LabRun) -> None:
    settle_healthy(lab)
    lab.net.reals[2].kill()
    with TableWatch(LAB_SERVICES) as watch:
        quiesced = measure(
            watch, "rs2 stopped -> weight 0 on :80", lambda w: w.get((V80, rs(2))) == 0
        )
        deleted = measure(
            watch, "rs2 stopped -> deleted from :8080", lambda w: (V8080, rs(2)) not in w
        )
    assert quiesced <= DETECTION_BOUND, f"quiesced after {quiesced:.2f} s"
    assert deleted <= DETECTION_BOUND, f"deleted after {deleted:.2f} s"
    want = healthy(lab) | {(V80, rs(2)): 0}
    del want[(V8080, rs(2))]
    assert kernel() == want
    answers = lab.net.curl(8)
    assert set(answers) == {"rs1", "rs3"}, answers
    answers = lab.net.curl(4, port=8080)
    assert set(answers) <= {"rs1", "rs3"}, answers


def test_3_wrong_content_is_quiesced_or_deleted_within_the_bound(lab: LabRun) -> None:
    settle_healthy(lab)
    lab.net.reals[3].set_body("200 OK but not the page we want\nrs3\n")
    with TableWatch(LAB_SERVICES) as watch:
        quiesced = measure(
            watch, "rs3 wrong content -> weight 0 on :80", lambda w: w.get((V80, rs(3))) == 0
        )
        deleted = measure(
            watch, "rs3 wrong content -> deleted from :8080", lambda w: (V8080, rs(3)) not in w
        )
    assert quiesced <= DETECTION_BOUND, f"quiesced after {quiesced:.2f} s"
    assert deleted <= DETECTION_BOUND, f"deleted after {deleted:.2f} s"
    want = healthy(lab) | {(V80, rs(3)): 0}
    del want[(V8080, rs(3))]
    assert kernel() == want
    answers = lab.net.curl(8)
    assert set(answers) == {"rs1", "rs2"}, answers


def test_4_all_down_the_sorry_server_answers(lab: LabRun) -> None:
    for n in (1, 2, 3):
        lab.net.reals[n].kill()
    want = {(V80, rs(n)): 0 for n in (1, 2, 3)} | {(V80, FALLBACK): 1} | OTHER_ENTRY
    with TableWatch(LAB_SERVICES) as watch:
        seconds = measure(watch, "all stopped -> fallback in :80", lambda w: w == want)
    assert seconds <= DETECTION_BOUND + 1.0, f"fallback after {seconds:.2f} s"
    lines = ipvsadm_save()
    # the :8080 service stays, empty (quiescent=no, no fallback): lvsmon never deletes a service
    # it manages while running
    assert lab_part(save_weights(lines), LAB_SERVICES) == want
    assert V8080 in save_services(lines)
    assert f"-a -t {V80} -r {FALLBACK} -g -w 1" in lines
    assert lab.net.curl(4) == ["sorry"] * 4


def test_5_one_back_takes_over_from_the_fallback(lab: LabRun) -> None:
    lab.net.heal([2])
    want = {(V80, rs(1)): 0, (V80, rs(2)): 1, (V80, rs(3)): 0, (V8080, rs(2)): 1} | OTHER_ENTRY
    with TableWatch(LAB_SERVICES) as watch:
        measure(watch, "rs2 back -> restored, fallback gone (recovery)", lambda w: w == want)
    assert kernel() == want
    assert lab.net.curl(6) == ["rs2"] * 6


def test_6_autoreload_changes_exactly_what_the_edit_says(lab: LabRun) -> None:
    settle_healthy(lab)
    # traffic first, so every real has connection counters to lose if it were re-created
    lab.net.curl(6)
    lab.net.hold_connections(3)
    before_lines = ipvsadm_save()
    before = lab_part(save_weights(before_lines), LAB_SERVICES)
    before_stats = dest_stats()
    log_offset = lab.daemon.log_size()

    lab.weights = {1: 3, 2: 1, 3: 1, 4: 1}
    want = healthy(lab)
    changed = {(V80, rs(1)), (V80, rs(4))}
    with TableWatch(LAB_SERVICES) as watch:
        lab.daemon.write_config(lab_config(lab.daemon.logfile, lab.weights))
        seconds = watch.wait_for(lambda w: w == want, SETTLE, "the edit applied")
        MEASURED.append(("config edit -> rs4 added and rs1 weight 3 (autoreload)", seconds))
    # every state the kernel went through differs from the old table only in the two entries
    for _, state in watch.states:
        assert {k: v for k, v in state.items() if k not in changed} == {
            k: v for k, v in before.items() if k not in changed
        }, state
        assert state.get((V80, rs(1))) in (1, 3) and state.get((V80, rs(4))) in (None, 1), state

    after_lines = ipvsadm_save()
    assert set(after_lines) - set(before_lines) == {
        f"-a -t {V80} -r {rs(1)} -m -w 3",
        f"-a -t {V80} -r {rs(4)} -m -w 1",
    }
    assert set(before_lines) - set(after_lines) == {f"-a -t {V80} -r {rs(1)} -m -w 1"}

    # connections opened before the edit still work, on three different reals: their IPVS entries
    # (and destinations) survived
    held = lab.net.finish_held()
    assert sorted(held) == ["rs1", "rs2", "rs3"], held
    after_stats = dest_stats()
    for key, conns in before_stats.items():
        assert after_stats.get(key, -1) >= conns, (key, conns, after_stats.get(key))

    changes = [line for line in lab.daemon.log_since(log_offset) if KERNEL_CHANGE.search(line)]
    assert len(changes) == 2, changes
    assert any(f"real server: {rs(4)} ({V80})" in c and "Added" in c for c in changes), changes
    assert any(f"{rs(1)} ({V80}) (Weight set to 3)" in c for c in changes), changes

    # wlc sends new connections to the reals with the fewest (weighted) recent ones: rs4 first
    answers = Counter(lab.net.curl(8))
    assert "rs4" in answers and set(answers) <= ALL_REALS, answers


def test_7_kill9_and_restart_changes_nothing(lab: LabRun) -> None:
    settle_healthy(lab)
    before_lines = ipvsadm_save()
    lab.daemon.kill9()
    log_offset = lab.daemon.log_size()
    with TableWatch(LAB_SERVICES) as watch:
        lab.daemon.start()
        # two full rounds of checks after the restart: time to do anything it would do
        pid = lab.daemon.pid()
        deadline = time.monotonic() + SETTLE
        while not (lab.daemon.status().get("pid") == pid and lab.daemon.checks_done() >= 8):
            assert time.monotonic() < deadline, "the restarted daemon does not check"
            time.sleep(0.2)
    assert len(watch.states) == 1, watch.states  # not one kernel change, not even a transient
    assert ipvsadm_save() == before_lines
    changes = [line for line in lab.daemon.log_since(log_offset) if KERNEL_CHANGE.search(line)]
    assert changes == []
    stats = lab.daemon.status().get("stats")
    assert isinstance(stats, dict) and stats.get("ops_applied") == 0, stats
    assert set(lab.net.curl(6)) <= ALL_REALS


def managed_lines(lines: list[str]) -> list[str]:
    """The `ipvsadm -Sn` rules of the two services lvsmon manages, in a stable order."""
    return sorted(line for line in lines if line.split()[2] in (V80, V8080))


def resyncs(lab: LabRun) -> int:
    stats = lab.daemon.status().get("stats")
    done = stats.get("resyncs", 0) if isinstance(stats, dict) else 0
    return done if isinstance(done, int) else 0


def drift_lines(lab: LabRun, log_offset: int) -> list[str]:
    return [
        line
        for line in lab.daemon.log_since(log_offset)
        if "IPVS table drift on " in line or "Repaired drift: " in line
    ]


def test_8_resync_repairs_ipvsadm_C_and_hand_edits_and_nothing_else(lab: LabRun) -> None:
    """Changes behind lvsmon's back, which no health check notices: its periodic resync finds
    them and repairs its own services within one resync interval; services it does not manage,
    cleared or added by hand, stay exactly as the operator left them."""
    settle_healthy(lab)
    before_lines = ipvsadm_save()
    managed = managed_lines(before_lines)
    want = lab_part(healthy(lab), (V80, V8080))
    log_offset = lab.daemon.log_size()
    repairs_before = lab.daemon.status().get("stats", {})

    # (1) ipvsadm -C: everything goes, the foreign service too
    with TableWatch(LAB_SERVICES) as watch:
        run("ipvsadm", "-C")
        watch.record()
        cleared_at = watch.first(lambda w: not w)
        assert cleared_at is not None, watch.states
        restored = measure(
            watch,
            "ipvsadm -C -> both managed services restored (resync)",
            lambda w: lab_part(w, (V80, V8080)) == want,
            cleared_at,
        )
        restored_table = watch.current()
    assert cleared_at <= restored <= RESYNC_BOUND, f"restored after ipvsadm -C in {restored:.2f} s"
    assert restored_table == want, restored_table  # the foreign service is not re-created
    assert managed_lines(ipvsadm_save()) == managed

    # (3) a service added by hand on lvsmon's own VIP, while the foreign one is still gone:
    # several resyncs leave both as the operator left them
    hand = f"{VIP}:443"
    run("ipvsadm", "-A", "-t", hand, "-s", "rr")
    for n, w in ((1, 5), (4, 0)):
        run("ipvsadm", "-a", "-t", hand, "-r", rs(n), "-m", "-w", str(w))
    hand_lines = [line for line in ipvsadm_save() if line.split()[2] == hand]
    assert len(hand_lines) == 3, hand_lines
    with TableWatch((*LAB_SERVICES, hand)) as watch:
        seen = resyncs(lab)
        deadline = time.monotonic() + SETTLE
        while resyncs(lab) < seen + 3:  # the status file lags up to 1 s: two whole resyncs
            assert time.monotonic() < deadline, "the daemon does not resync"
            time.sleep(0.2)
    assert len(watch.states) == 1, watch.states
    lines = ipvsadm_save()
    assert [line for line in lines if line.split()[2] == hand] == hand_lines
    assert OTHER not in save_services(lines)
    run("ipvsadm", "-D", "-t", hand)
    add_other_service()
    assert sorted(ipvsadm_save()) == sorted(before_lines)

    # (2) one real deleted by hand on :80, another's weight edited by hand on :8080
    with TableWatch(LAB_SERVICES) as watch:
        run("ipvsadm", "-d", "-t", V80, "-r", rs(2))
        run("ipvsadm", "-e", "-t", V8080, "-r", rs(3), "-m", "-w", "9")
        watch.record()
        # a resync may fall between the two commands: each drift is timed on its own
        deleted_at = watch.first(lambda w: (V80, rs(2)) not in w)
        edited_at = watch.first(lambda w: w.get((V8080, rs(3))) == 9)
        assert deleted_at is not None and edited_at is not None, watch.states
        readded = measure(
            watch,
            "rs2 deleted from :80 by hand -> re-added (resync)",
            lambda w: w.get((V80, rs(2))) == want[(V80, rs(2))],
            deleted_at,
        )
        reweighted = measure(
            watch,
            "rs3 weight 9 on :8080 by hand -> weight 1 again (resync)",
            lambda w: w.get((V8080, rs(3))) == 1,
            edited_at,
        )
        watch.wait_for(
            lambda w: w == healthy(lab), SETTLE, "the whole table back", max(readded, reweighted)
        )
    assert readded <= RESYNC_BOUND, f"rs2 re-added after {readded:.2f} s"
    assert reweighted <= RESYNC_BOUND, f"rs3 weight restored after {reweighted:.2f} s"
    # the foreign service, back in place, saw no change while lvsmon repaired its own
    assert all(lab_part(w, (OTHER,)) == OTHER_ENTRY for _, w in watch.states), watch.states
    assert sorted(ipvsadm_save()) == sorted(before_lines)

    # (4) the log says what drifted and what was repaired, in ldirectord's wording
    drift = drift_lines(lab, log_offset)
    for expected in (
        f"IPVS table drift on {V80}: the service was deleted; repairing",
        f"IPVS table drift on {V8080}: the service was deleted; repairing",
        f"Repaired drift: Added virtual server: {V80}",
        f"Repaired drift: Added virtual server: {V8080}",
        *(
            f"Repaired drift: Added real server: {rs(n)} ({V80}) (Weight set to {w})"
            for n, w in lab.weights.items()
        ),
        *(f"Repaired drift: Added real server: {rs(n)} ({V8080})" for n in (1, 2, 3)),
        f"IPVS table drift on {V80}: {rs(2)} deleted; repairing",
        f"Repaired drift: Added real server: {rs(2)} ({V80}) (Weight set to 1)",
        f"IPVS table drift on {V8080}: {rs(3)} weight 1 -> 9; repairing",
        f"Repaired drift: Restored real server: {rs(3)} ({V8080}) (Weight set to 1)",
    ):
        assert any(expected in line for line in drift), (expected, drift)
    # nothing about the services lvsmon does not manage
    assert not [line for line in drift if OTHER_VIP in line or hand in line], drift
    stats = lab.daemon.status().get("stats")
    assert isinstance(stats, dict) and isinstance(repairs_before, dict)
    assert stats.get("drift_repairs", 0) > repairs_before.get("drift_repairs", 0), stats
    assert set(lab.net.curl(6)) <= ALL_REALS


def test_9_stop_cleans_the_managed_services_only(lab: LabRun) -> None:
    lab.daemon.stop()
    assert not lab.daemon.running()
    assert not lab.daemon.pidfile.exists()
    lines = ipvsadm_save()
    assert V80 not in save_services(lines) and V8080 not in save_services(lines)
    assert lab_part(save_weights(lines), LAB_SERVICES) == OTHER_ENTRY
    assert f"-A -t {OTHER} -s rr" in lines
