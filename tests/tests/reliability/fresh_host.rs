//! A fresh host: nothing mounted on tracefs or debugfs (a minimal VM, a host whose init is not
//! systemd, many container hosts). Each test runs leakmon in a private mount namespace where
//! every tracefs and debugfs is unmounted first, so it does not depend on what an earlier run or
//! a person left mounted on this machine: leakmon must mount tracefs itself and say so, or, where
//! it may not mount (a seccomp profile refusing mount(2)), fail with one line naming the cause
//! and the fix, exit non-zero and leave nothing loaded.

use std::time::Duration;

use leakmon_tests::{
    BackgroundProcess, Daemon, Host, Report, assert_no_leakmon_program_loaded,
    assert_one_line_error, assert_steady_leak, describe_report, has_frame, run_leakmon_on,
    scenario_path, serial, trace_command_on, wait_for,
};

use crate::{WATCH_LIMIT, config};

/// The line leakmon logs when it mounted tracefs.
const MOUNTED: &str = "tracefs was not mounted: leakmon mounted it at /sys/kernel/tracing";

#[test]
fn trace_mounts_tracefs_and_names_the_leak() {
    let traced = trace_command_on(
        Host::NoTracefs,
        &["--interval", "0.5"],
        "steady_leak",
        &["6"],
    );
    assert!(
        traced.stderr.contains(MOUNTED),
        "leakmon did not say it mounted tracefs:\n{}",
        traced.stderr
    );
    assert_steady_leak(&traced.report);
}

#[test]
fn daemon_mounts_tracefs_and_traces_on_request() {
    let _serial = serial();
    let process = BackgroundProcess::scenario("steady_leak", &["60"]);
    let pid = process.pid();
    let daemon = Daemon::start_on(Host::NoTracefs, &config("", "auto = false"));
    daemon.wait_watched(pid, WATCH_LIMIT);
    daemon.request_trace(pid, 4.0, Duration::from_secs(5));
    wait_for(
        Duration::from_secs(30),
        "the on-demand trace's report",
        || daemon.process_view(pid)?.latest_report,
    );
    let report: Report = daemon.get_json(&format!("/api/v1/processes/{pid}/report?format=json"));
    assert!(
        report
            .stacks
            .iter()
            .any(|stack| stack.leaking && has_frame(stack, "leak_steady")),
        "the daemon's trace did not find steady_leak's leak\n{}",
        describe_report(&report)
    );
    daemon.terminate();
}

#[test]
fn no_permission_to_mount_is_one_line_and_leaves_nothing_loaded() {
    let scenario = scenario_path("steady_leak");
    let trace = run_leakmon_on(
        Host::NoTracefsNoMount,
        [
            "trace".as_ref(),
            "--".as_ref(),
            scenario.as_os_str(),
            "2".as_ref(),
        ],
    );
    assert_one_line_error(&trace, "tracefs is not mounted and mounting it");
    assert!(
        trace.stderr.contains("Operation not permitted")
            && trace
                .stderr
                .contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "the error does not name the cause and the fix: {}",
        trace.stderr
    );
    let state = tempfile::tempdir().expect("a temporary state directory");
    let daemon = run_leakmon_on(
        Host::NoTracefsNoMount,
        [
            "run".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--state-dir".as_ref(),
            state.path().as_os_str(),
        ],
    );
    assert_one_line_error(&daemon, "tracefs is not mounted and mounting it");
    assert_no_leakmon_program_loaded();
}
