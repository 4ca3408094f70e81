//! A traced process that calls `execve`: `leakmon trace --pid` follows it into the new program
//! (the probes are on the same libc), notes the exec, drops what the old image allocated, and
//! finds the new program's leak.

use std::process::Command;
use std::time::Duration;

use leakmon_tests::{describe_report, has_frame, scenario_path, trace_spawned};

/// `rss_leak` leaks this many bytes a second.
const RSS_LEAK_RATE: f64 = 262_144.0;

#[test]
fn trace_follows_execve() {
    let mut command = Command::new(scenario_path("exec_into"));
    command.arg("2").arg(scenario_path("rss_leak")).arg("5");
    let (run, _) = trace_spawned(
        command,
        "exec_into",
        "rss_leak",
        &["--duration", "60", "--interval", "0.5"],
        Duration::from_millis(700),
        |pid| pid,
    );
    let report = &run.report;
    assert!(
        report.notes.iter().any(|note| note.contains("execve")),
        "the report does not note the exec: {:?}\n{}",
        report.notes,
        describe_report(report)
    );
    assert!(
        !report
            .stacks
            .iter()
            .any(|stack| has_frame(stack, "leak_before_exec")),
        "memory of the image replaced by execve is still reported\n{}",
        describe_report(report)
    );
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| {
            panic!(
                "no leaking stack after the exec\n{}",
                describe_report(report)
            )
        });
    assert!(
        has_frame(top, "leak_rss_chunk"),
        "the top leaking stack is not rss_leak's\n{}",
        describe_report(report)
    );
    assert!(
        (top.growth_bytes_per_second - RSS_LEAK_RATE).abs() <= 0.25 * RSS_LEAK_RATE,
        "rss_leak leaks {RSS_LEAK_RATE} B/s; the report says {:.0} B/s\n{}",
        top.growth_bytes_per_second,
        describe_report(report)
    );
}
