//! Full maps: with the smallest kernel maps the configuration accepts (1024 outstanding
//! allocations, 1024 stacks), a process keeping 50 000 blocks from 2000 stacks is traced in a
//! degraded way: the report is marked partial and counts what was dropped, the dropped counter
//! rises in `/metrics`, and the daemon stays up, healthy, with its maps emptied afterwards.

use std::time::{Duration, Instant};

use leakmon_tests::{
    BackgroundProcess, Daemon, Report, describe_report, kernel_maps_of, serial, wait_for,
};

use crate::{WATCH_LIMIT, config};

/// The smallest map capacity `trace.max_allocations` and `trace.max_stacks` accept.
const MIN_MAP_ENTRIES: u64 = 1024;

/// `many_blocks` waits this long before allocating: the trace must be attached by then.
const DELAY_SECONDS: f64 = 3.0;

/// The value of `leakmon_probe_events_dropped_total{reason="REASON"}` in an exposition.
fn dropped_metric(exposition: &str, reason: &str) -> f64 {
    let series = format!("leakmon_probe_events_dropped_total{{reason=\"{reason}\"}}");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {series}:\n{exposition}"))
}

#[test]
fn full_maps_degrade_the_trace_not_the_daemon() {
    let _serial = serial();
    let daemon = Daemon::start(&config(
        "",
        "auto = false\n\
         max_allocations = 1024\n\
         max_stacks = 1024",
    ));
    let dropped_before = dropped_metric(&daemon.get_text("/metrics"), "allocs_map_full");

    let started = Instant::now();
    let process =
        BackgroundProcess::scenario("many_blocks", &[&DELAY_SECONDS.to_string(), "50000", "30"]);
    let pid = process.pid();
    daemon.wait_watched(pid, WATCH_LIMIT);
    daemon.request_trace(pid, 5.0, Duration::from_secs(1));
    assert!(
        started.elapsed().as_secs_f64() < DELAY_SECONDS - 0.5,
        "the trace of many_blocks started {:.1} s after it, too late for its allocations at {DELAY_SECONDS} s",
        started.elapsed().as_secs_f64()
    );

    let id = wait_for(Duration::from_secs(30), "the report of many_blocks", || {
        daemon.process_view(pid)?.latest_report
    });
    let report: Report = daemon.get_json(&format!("/api/v1/processes/{pid}/report?format=json"));
    eprintln!("report {id}: {}", describe_report(&report));
    let dropped = |name: &str| report.dropped.get(name).copied().unwrap_or(0);
    assert!(
        report.partial,
        "a trace that lost data is not marked partial\n{}",
        describe_report(&report)
    );
    assert!(
        dropped("allocs_map_full") > 0 && dropped("stacks_map_full") > 0,
        "50000 blocks from 2000 stacks into maps of {MIN_MAP_ENTRIES} entries, yet dropped is {:?}",
        report.dropped
    );
    assert!(
        report.totals.outstanding_allocations <= MIN_MAP_ENTRIES,
        "more outstanding allocations than the map holds\n{}",
        describe_report(&report)
    );
    assert!(
        report.notes.iter().any(|note| note.contains("lost")),
        "the report does not say data was lost: {:?}",
        report.notes
    );

    // The daemon is fine, and says what it dropped.
    let health = daemon.request("GET", "/healthz");
    assert_eq!(health.status, 200, "healthz: {}", health.text());
    let dropped_after = dropped_metric(&daemon.get_text("/metrics"), "allocs_map_full");
    assert!(
        dropped_after > dropped_before,
        "leakmon_probe_events_dropped_total{{reason=\"allocs_map_full\"}} went from \
         {dropped_before} to {dropped_after}"
    );
    wait_for(
        Duration::from_secs(10),
        "the daemon's maps to empty",
        || {
            kernel_maps_of(daemon.pid())
                .entries
                .values()
                .all(|&entries| entries == 0)
                .then_some(())
        },
    );
    drop(process);
}
