//! Bad input: leakmon must exit non-zero with a one-line error that names the problem.

use std::ffi::OsStr;

use leakmon_tests::{assert_one_line_error, run_leakmon, scenario_path, trace_output};

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

#[test]
fn zombie_pid_is_gone() {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("starting true");
    let pid = child.id();
    leakmon_tests::wait_for(std::time::Duration::from_secs(10), "true to exit", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
            .then_some(())
    });
    let run = run_leakmon(["trace", "--pid", &pid.to_string(), "--duration", "1"]);
    child.wait().expect("reaping true");
    assert_one_line_error(&run, &format!("process {pid} is gone"));
}
