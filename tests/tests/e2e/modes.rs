//! Ways of tracing other than from a command's start: attaching to a running process by pid,
//! and sampling allocations instead of recording every one.

use std::time::Duration;

use leakmon_tests::{assert_leak_within, assert_steady_leak, trace_command, trace_pid};

use crate::INTERVAL;

#[test]
fn attach_by_pid() {
    let run = trace_pid(
        &["--duration", "5", "--interval", "0.5"],
        "steady_leak",
        &["10"],
        Duration::from_secs(1),
    );
    let report = &run.report;
    assert!(
        (4.5..=6.5).contains(&report.duration_seconds),
        "--duration 5 watched for {} s",
        report.duration_seconds
    );
    assert_steady_leak(report);
}

#[test]
fn sampled() {
    // 30 s of steady_leak leak about 190 samples' worth at one per 64 KiB: a Poisson sampler's
    // estimate is then within 25% with overwhelming probability.
    let mut args = INTERVAL.to_vec();
    args.extend(["--sample-rate", "65536"]);
    let run = trace_command(&args, "steady_leak", &["30"]);
    assert_eq!(run.report.sample_rate, 65536);
    assert_leak_within(&run.report, &run.summary, 0.25);
}
