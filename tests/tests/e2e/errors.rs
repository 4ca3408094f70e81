//! Bad input: leakmon must exit non-zero with a one-line error that names the problem.

use std::ffi::OsStr;

use leakmon_tests::{LeakmonRun, run_leakmon, scenario_path, trace_output};

/// Asserts a failed run whose stderr is one line mentioning `needle` (case-insensitively).
fn assert_one_line_error(run: &LeakmonRun, needle: &str) {
    assert!(
        !run.status.success(),
        "leakmon succeeded; stderr:\n{}",
        run.stderr
    );
    let message = run.stderr.trim();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "expected a one-line error, got:\n{}",
        run.stderr
    );
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "the error does not mention {needle:?}: {message}"
    );
}

#[test]
fn missing_pid() {
    let run = run_leakmon(["trace", "--pid", "999999999", "--duration", "1"]);
    assert_one_line_error(&run, "999999999");
}

#[test]
fn unwritable_output() {
    let scenario = scenario_path("steady_leak");
    let run = run_leakmon([
        OsStr::new("trace"),
        OsStr::new("--output"),
        OsStr::new("/proc/nonexistent/x"),
        OsStr::new("--"),
        scenario.as_os_str(),
        OsStr::new("1"),
    ]);
    assert!(
        !run.status.success(),
        "leakmon succeeded; stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/proc/nonexistent/x"),
        "the error does not name the output file:\n{}",
        run.stderr
    );
}

#[test]
fn static_binary() {
    let traced = trace_output("json", &[], "static_prog", &["1"]);
    assert_one_line_error(&traced.run, "static");
    assert!(
        traced.output.is_empty(),
        "a report was written for a program that cannot be traced"
    );
}
