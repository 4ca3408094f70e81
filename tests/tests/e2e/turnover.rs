//! Turnover: a cache that filled before the trace attached and now replaces one old entry at a
//! time is flat in memory, though its stack's outstanding bytes climb for the whole window; the
//! frees of the entries the trace never saw allocated offset that growth, so the stack is
//! `turnover`, not leaking, while a leak beside it still is. Traced from its start, the same
//! cache is judged as before (a plateau).

use std::time::Duration;

use leakmon_tests::{
    Report, StackReport, TraceRun, assert_no_leak, assert_top_leak, describe_report, stacks_with,
    trace_command, trace_pid,
};

use crate::INTERVAL;

/// `cache_turnover` replaces 200 entries of 4 KiB a second.
const TURNOVER_RATE: f64 = 200.0 * 4096.0;

/// `cache_turnover leak` leaks this many bytes a second through `leak_block`.
const LEAK_RATE: f64 = 409_600.0;

/// Attaches for 8 s to `cache_turnover` (16 MiB, turned over in about 20 s) a second after it
/// filled its cache (in 2 s).
fn attached(extra: &[&str]) -> TraceRun {
    let mut args = vec!["14"];
    args.extend(extra);
    trace_pid(
        &["--duration", "8", "--interval", "0.5"],
        "cache_turnover",
        &args,
        Duration::from_secs(3),
    )
}

/// The stack through `cache_insert`: turnover, offset by the releases of `cache_insert` itself.
fn assert_cache_turns_over(report: &Report) -> &StackReport {
    let stacks = stacks_with(report, "cache_insert");
    let [cache] = stacks[..] else {
        panic!(
            "expected one stack through cache_insert\n{}",
            describe_report(report)
        );
    };
    assert!(
        cache.turnover && !cache.leaking,
        "cache_insert is not turnover\n{}",
        describe_report(report)
    );
    let growth = cache.growth_bytes_per_second;
    assert!(
        (growth - TURNOVER_RATE).abs() <= 0.25 * TURNOVER_RATE,
        "cache_insert's stack grows {growth:.0} B/s, not about {TURNOVER_RATE}\n{}",
        describe_report(report)
    );
    // The evidence: released bytes of entries older than the window, at cache_insert.
    assert!(
        cache.released_bytes as f64 >= 0.5 * growth * 6.0,
        "only {} B released against {growth:.0} B/s\n{}",
        cache.released_bytes,
        describe_report(report)
    );
    assert!(
        cache.release_sites.iter().any(|&site| {
            report.releases[site]
                .frames
                .iter()
                .any(|frame| frame.symbol.as_deref() == Some("cache_insert"))
        }),
        "cache_insert's stack is not offset by its own frees: {:?}\n{:?}",
        cache.release_sites,
        report.releases
    );
    for site in &report.releases {
        if site.frees > 100 {
            let per_free = site.bytes.expect("glibc says the bytes") / site.frees;
            assert_eq!(per_free, 4104, "4 KiB entries are 4104-byte glibc chunks");
        }
    }
    cache
}

#[test]
fn a_cache_attached_after_it_filled_is_turnover() {
    let run = attached(&[]);
    assert_eq!(run.summary.leak_function, None);
    assert_no_leak(&run.report);
    assert_cache_turns_over(&run.report);
}

#[test]
fn a_leak_beside_a_turning_cache_is_the_top_leak() {
    let run = attached(&["leak"]);
    assert_eq!(run.summary.leak_function.as_deref(), Some("leak_block"));
    assert_top_leak(&run.report, "leak_block", LEAK_RATE);
    assert_cache_turns_over(&run.report);
    for stack in stacks_with(&run.report, "leak_block") {
        assert!(
            !stack.turnover,
            "the leak was judged turnover\n{}",
            describe_report(&run.report)
        );
    }
}

#[test]
fn a_cache_traced_from_its_launch_plateaus() {
    let run = trace_command(INTERVAL, "cache_turnover", &["6"]);
    let report = &run.report;
    assert_no_leak(report);
    let cache = stacks_with(report, "cache_insert");
    let bytes: u64 = cache.iter().map(|stack| stack.bytes).sum();
    assert!(
        (16 << 20..=17 << 20).contains(&bytes),
        "the cache holds 16 MiB; its stacks {bytes} B\n{}",
        describe_report(report)
    );
    // Every entry it frees was seen allocated: nothing to offset, nothing judged turnover.
    assert!(
        cache
            .iter()
            .all(|stack| !stack.turnover && stack.released_bytes == 0),
        "{}",
        describe_report(report)
    );
    assert!(
        !report.releases.iter().any(|site| site
            .frames
            .iter()
            .any(|frame| frame.symbol.as_deref() == Some("cache_insert"))),
        "frees at cache_insert counted as releases of older memory: {:?}",
        report.releases
    );
}
