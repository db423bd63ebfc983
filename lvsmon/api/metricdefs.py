"""The metrics /metrics serves: each family's name, type and help text (lvsmon.api.metrics builds
the body). docs/operations.md lists them; tests/api/test_metrics.py holds the two together."""

from __future__ import annotations

from lvsmon.engine.checkstats import REASON_CLASSES

# every family: (type, help)
FAMILIES: dict[str, tuple[str, str]] = {
    # per real: labels virtual, real
    "lvsmon_real_up": (
        "gauge",
        "1 while the real's checks say it is up (maintenance, drain aside).",
    ),
    "lvsmon_real_weight": (
        "gauge",
        "The real's weight in the kernel table; no sample while it is not in the table.",
    ),
    "lvsmon_real_maintenance": ("gauge", "1 while the real is in maintenance (forced down)."),
    "lvsmon_real_drained": (
        "gauge",
        "1 while the real is drained (lvsmon drain): weight 0, its connections go on.",
    ),
    "lvsmon_real_agent_weight": (
        "gauge",
        "The weight the real's agent asks for (agent check): its share of the configured weight,"
        " 0 with drain, maint or down; only reals with an agent check have a sample.",
    ),
    "lvsmon_real_certificate_expiry_seconds": (
        "gauge",
        "Seconds until the real's TLS certificate expires (negative: expired), as its last"
        " check read it; only reals of virtuals with sslexpirywarn have a sample.",
    ),
    "lvsmon_real_ramping": (
        "gauge",
        "1 while slow start ramps the real's weight (slowstart); only ramping reals have a sample.",
    ),
    "lvsmon_real_transitions_total": (
        "counter",
        "Times the real's checks took it down (direction=down) or brought it back (up).",
    ),
    "lvsmon_real_check_failures_total": (
        "counter",
        "Failed checks of the real's check job by reason class ("
        + ", ".join(REASON_CLASSES)
        + "); a class appears at its first failure.",
    ),
    "lvsmon_check_duration_seconds": (
        "histogram",
        "How long the real's checks took, start to result; its _count is the real's checks (of "
        "its check job: a check shared by several virtuals runs once).",
    ),
    # per virtual: label virtual
    "lvsmon_virtual_reals": ("gauge", "Reals configured in the virtual service."),
    "lvsmon_virtual_reals_up": (
        "gauge",
        "Reals of the virtual service that serve: up, not in maintenance, not drained.",
    ),
    "lvsmon_virtual_fallback_active": (
        "gauge",
        "1 while the virtual service has a fallback and none of its reals serves.",
    ),
    "lvsmon_virtual_depool_limited": (
        "gauge",
        "Reals the virtual's depool threshold keeps in service although their checks fail "
        "(0: not limited).",
    ),
    # the daemon
    "lvsmon_build_info": ("gauge", "lvsmon's version (label version); always 1."),
    "lvsmon_start_time_seconds": ("gauge", "When the daemon started, Unix time."),
    "lvsmon_check_jobs": (
        "gauge",
        "Distinct checks scheduled (a real in several virtuals with the same check is one).",
    ),
    "lvsmon_checks_total": ("counter", "Checks finished."),
    "lvsmon_check_failures_total": ("counter", "Checks that failed."),
    "lvsmon_checks_unknown_total": (
        "counter",
        "Checks that timed out while the daemon itself was late (event loop lag): neither a "
        "pass nor a failure.",
    ),
    "lvsmon_checks_untrusted_total": (
        "counter",
        "Checks that timed out while the daemon was late, counted as failures all the same: "
        "their check had timed out late for too long (checks cannot be trusted).",
    ),
    "lvsmon_event_loop_lag_seconds": (
        "gauge",
        "The event loop's largest lag within the last minute: how late a 100 ms timer woke.",
    ),
    "lvsmon_event_loop_lost_seconds_total": (
        "counter",
        "Time the event loop ran late, in all (a suspend of the host included).",
    ),
    "lvsmon_checks_per_second": (
        "gauge",
        "Checks finished per second since an earlier scrape (up to a minute back); "
        "rate(lvsmon_checks_total[1m]) is the Prometheus way.",
    ),
    "lvsmon_checks_running": ("gauge", "Checks in flight now."),
    "lvsmon_check_slots_skipped_total": (
        "counter",
        "Check slots skipped because the job's previous check was still running.",
    ),
    "lvsmon_check_slots_deferred_total": (
        "counter",
        "Check starts the admission window held back: the daemon was overloaded, and they "
        "started late instead of into a loop that could not read their answers in time.",
    ),
    "lvsmon_check_admission_window": (
        "gauge",
        "Checks the runner lets be in flight now; it shrinks when the event loop runs late.",
    ),
    "lvsmon_check_start_lateness_seconds": (
        "summary",
        "How late checks started against their slot; quantiles over the last 20,000 starts.",
    ),
    "lvsmon_reconciles_total": ("counter", "Passes bringing the kernel table to the desired one."),
    "lvsmon_resyncs_total": ("counter", "Periodic reads of the kernel table (resyncinterval)."),
    "lvsmon_reconcile_ops_total": (
        "counter",
        "Kernel table changes lvsmon made, by result (applied, failed).",
    ),
    "lvsmon_reconcile_drift_repairs_total": (
        "counter",
        "Kernel table changes that repaired a change made behind lvsmon's back.",
    ),
    "lvsmon_reconcile_retry_pending": (
        "gauge",
        "1 while a failed kernel table change waits for its retry.",
    ),
    "lvsmon_config_reloads_total": (
        "counter",
        "Configuration reloads (signal, autoreload) by result (ok, rejected).",
    ),
    "lvsmon_config_last_reload_success_timestamp_seconds": (
        "gauge",
        "When the running configuration was loaded (start or reload), Unix time.",
    ),
    "lvsmon_alert_mails_total": (
        "counter",
        "Alert mails by result: sent, or dropped (outbox full, or not sent within an hour).",
    ),
    "lvsmon_alert_mails_queued": ("gauge", "Alert mails waiting to be sent."),
    "lvsmon_events_published_total": ("counter", "Events published on the event stream."),
    "lvsmon_events_dropped_total": (
        "counter",
        "Events a slow subscriber (log, alerts, hooks, control server) lost to its full queue.",
    ),
    "lvsmon_control_sse_clients": ("gauge", "Clients following /events now."),
    "lvsmon_control_sse_cut_off_total": (
        "counter",
        "Clients of /events cut off for reading too slowly.",
    ),
    "lvsmon_control_refused_total": (
        "counter",
        "Control connections (socket and --listen) refused or ended by the server, by reason: "
        "cap (over --listen-max-connections), fds (over the control server's share of file "
        "descriptors), host (a Host not served: 421), timeout (request headers not complete in "
        "time, or idle too long), stalled (an answer left unread too long).",
    ),
    "lvsmon_arp_conflicts_active": (
        "gauge",
        "ARP conflicts the ARP guard sees now: a MAC not the director's answering ARP for a "
        "guarded VIP, per VIP, interface and MAC.",
    ),
    "lvsmon_arp_conflicts_total": ("counter", "ARP conflicts the ARP guard found, in all."),
    "lvsmon_arp_guard_rounds_total": ("counter", "Rounds of ARP requests the ARP guard sent."),
    "lvsmon_arp_guard_failures_total": (
        "counter",
        "ARP guard rounds that could not ask everywhere (no route to a real, an interface down, "
        "no CAP_NET_RAW, ARP replies beyond the round's byte bound).",
    ),
    "lvsmon_metrics_build_seconds": ("gauge", "How long the previous /metrics body took to build."),
    "lvsmon_metrics_built_timestamp_seconds": (
        "gauge",
        "When this /metrics body's build began, Unix time: its values are at least this recent.",
    ),
    # BGP announcements (bgp = bird|exabgp); no sample without bgp
    "lvsmon_bgp_announced": (
        "gauge",
        "1 while the VIP (label vip) is announced over BGP, 0 while withdrawn.",
    ),
    "lvsmon_bgp_director_drained": (
        "gauge",
        "1 while the director is drained (lvsmon drain --director): nothing announced.",
    ),
    "lvsmon_bgp_speaker_failures_total": (
        "counter",
        "Announcements, withdrawals and reads the routing daemon (BIRD's kernel table, ExaBGP) "
        "refused; each is retried.",
    ),
}
