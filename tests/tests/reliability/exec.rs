//! A traced process that calls `execve`: `leakmon trace --pid` follows it into the new program
//! (the probes are on the same libc), notes the exec, drops what the old image allocated, and
//! finds the new program's leak.

use std::process::Command;
use std::time::Duration;

use leakmon_tests::{assert_top_leak, describe_report, has_frame, scenario_path, trace_spawned};

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
    assert_top_leak(report, "leak_rss_chunk", RSS_LEAK_RATE);
}
