//! `leakmon trace --method page-faults`: growth attributed to the code whose writes bring new
//! pages in, whatever allocates them. The leak scenarios that touch their memory (built as
//! distributions build, without frame pointers) must name their culprit in the top leaking
//! stack, and the controls (a cache that plateaus, a batch freed periodically, churn), attached
//! once they have warmed up as a running service would be, must not be flagged: once their memory
//! is touched, reusing it brings no new page.

use std::time::Duration;

use leakmon_tests::{
    Report, StackReport, assert_no_leak, describe_report, has_frame, stacks_with, trace_command,
    trace_pid,
};

use crate::RUN_SECONDS;

/// Options of every run: the page-fault method, totals sampled twice a second.
const PAGE_FAULTS: &[&str] = &["--method", "page-faults", "--interval", "0.5"];

fn traced(scenario: &str) -> Report {
    let run = trace_command(PAGE_FAULTS, scenario, &[RUN_SECONDS]);
    assert_eq!(
        run.report.method,
        leakmon_tests::Method::PageFaults,
        "the report does not say how it looked"
    );
    run.report
}

/// The top leaking stack names `function`; returns every stack through it. Their growth
/// together is what the function brings in: a runtime's allocator also writes some of those
/// pages (Go clears a reused span in `memclrNoHeapPointers` under the caller's frames), and
/// such a stack can fall and rise as the runtime gives pages back, failing the growth rule on
/// its own while the function's memory keeps growing.
fn assert_top_leak(report: &Report, function: &str) -> Vec<StackReport> {
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| panic!("no leaking stack\n{}", describe_report(report)));
    assert!(
        has_frame(top, function),
        "the top leaking stack does not name {function}\n{}",
        describe_report(report)
    );
    stacks_with(report, function).into_iter().cloned().collect()
}

#[test]
fn steady_leak_at_its_rate() {
    let report = traced("steady_leak_nofp");
    // The leak's pages are brought in where malloc writes its chunk headers and where
    // leak_steady fills the records: several stacks, all through leak_steady.
    let growth: f64 = assert_top_leak(&report, "leak_steady")
        .iter()
        .map(|stack| stack.growth_bytes_per_second)
        .sum();
    assert!(
        (growth - 409_600.0).abs() <= 0.25 * 409_600.0,
        "leak_steady leaks 409600 B/s; its pages grow at {growth:.0} B/s\n{}",
        describe_report(&report)
    );
}

#[test]
fn error_path_leak() {
    assert_top_leak(&traced("error_path_leak_nofp"), "read_request");
}

#[test]
fn thread_leak() {
    assert_top_leak(&traced("thread_leak_nofp"), "produce_message");
}

#[test]
fn mmap_leak() {
    assert_top_leak(&traced("mmap_leak_nofp"), "map_region");
}

#[test]
fn exception_leak() {
    assert_top_leak(&traced("exception_leak_nofp"), "process_item");
}

#[test]
fn controls_are_not_flagged() {
    // From its launch, a program's heap grows as it warms up (churn's resident heap doubles in
    // its first two seconds): a service is looked at once it runs.
    for control in ["cache_plateau", "sawtooth", "churn"] {
        let run = trace_pid(
            &[PAGE_FAULTS, &["--duration", "8"]].concat(),
            control,
            &["14"],
            Duration::from_secs(3),
        );
        assert_no_leak(&run.report);
    }
}

/// A Go program (statically linked, no C allocator to probe): its leak is found by the pages
/// its code writes, named by the Go function.
#[test]
fn go_program_names_its_function() {
    let report = traced("go_leak");
    let stacks = assert_top_leak(&report, "main.rememberEvent");
    let growth: f64 = stacks
        .iter()
        .map(|stack| stack.growth_bytes_per_second)
        .sum();
    assert!(
        (growth - 409_600.0).abs() <= 0.3 * 409_600.0,
        "main.rememberEvent keeps 409600 B/s; its pages grow at {growth:.0} B/s\n{}",
        describe_report(&report)
    );
}
