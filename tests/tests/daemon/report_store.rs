//! Evidence that survives a full or read-only state directory: the daemon's state directory is
//! a small tmpfs in a private mount namespace; while it is full, and while it is mounted
//! read-only, a finished trace's report is served from memory, the failures are counted
//! (`leakmon_report_store_errors_total`, `leakmon status`), and the report is written once the
//! file system takes it again.

use std::time::Duration;

use leakmon_tests::{
    BackgroundProcess, Daemon, Host, assert_top_leak, oncall_status, serial, wait_for,
};
use monitor_daemon::report::Report;

/// A short on-demand trace.
const TRACE_SECONDS: f64 = 4.0;
/// How long a report may take to be written again once there is room (the daemon retries every
/// 10 s).
const RETRY_LIMIT: Duration = Duration::from_secs(30);

fn config() -> String {
    "[trace]\nauto = false\ninterval_seconds = 1\n".to_owned()
}

/// Traces `pid` on demand and waits for its report to be served and a write of it to fail;
/// gives the report's id and the errors counted before.
fn trace_while_unwritable(daemon: &Daemon, pid: u32) -> String {
    let errors = daemon.status().report_store.errors_total;
    daemon.request_trace(pid, TRACE_SECONDS, Duration::from_secs(10));
    let status = wait_for(Duration::from_secs(30), "a failed report write", || {
        let status = daemon.status();
        (status.report_store.errors_total > errors && status.report_store.unstored > 0)
            .then_some(status)
    });
    let error = status.report_store.last_error.clone().unwrap_or_default();
    eprintln!("the write failed: {error}");
    let response = daemon.get_ok(&format!("/api/v1/processes/{pid}/report?format=json"));
    let report: Report = response.json();
    assert_top_leak(&report, "leak_steady", leakmon_tests::STEADY_RATE);
    let id = response
        .headers
        .iter()
        .find(|(name, _)| name == "x-leakmon-report-id")
        .map(|(_, value)| value.clone())
        .expect("the report's id");
    let (_, files) = daemon.in_its_mounts("ls \"$STATE/reports\"");
    assert!(!files.contains(&id), "{id} is on disk: {files}");
    let metrics = daemon.get_text("/metrics");
    assert!(
        metrics.lines().any(|line| line
            == format!(
                "leakmon_report_store_errors_total {}",
                daemon.status().report_store.errors_total
            )),
        "{metrics}"
    );
    let text = oncall_status(daemon.addr());
    assert!(text.contains("REPORT STORE:"), "{text}");
    id
}

/// Waits until the report `id` is written.
fn wait_written(daemon: &Daemon, id: &str) {
    wait_for(RETRY_LIMIT, &format!("report {id} written"), || {
        let (_, files) = daemon.in_its_mounts("ls \"$STATE/reports\"");
        (files.contains(&format!("{id}.json")) && daemon.status().report_store.unstored == 0)
            .then_some(())
    });
}

#[test]
fn reports_survive_a_full_and_a_read_only_state_directory() {
    let _serial = serial();
    let daemon = Daemon::start_on(Host::StateOnTmpfs, &config());
    let mut leak = BackgroundProcess::scenario("steady_leak", &["300"]);
    let pid = leak.pid();
    daemon.wait_watched(pid, Duration::from_secs(20));

    // Full: a file takes every page left.
    let (_, output) = daemon.in_its_mounts("dd if=/dev/zero of=\"$STATE/filler\" bs=4096");
    assert!(
        output.contains("No space left on device"),
        "the tmpfs did not fill up: {output}"
    );
    let id = trace_while_unwritable(&daemon, pid);
    assert!(
        daemon
            .status()
            .report_store
            .last_error
            .is_some_and(|error| error.contains("No space left on device")),
        "{:?}",
        daemon.status().report_store
    );
    daemon.in_its_mounts("rm \"$STATE/filler\"");
    wait_written(&daemon, &id);

    // Read-only.
    let (status, output) = daemon.in_its_mounts("mount -o remount,ro \"$STATE\"");
    assert!(status.success(), "remounting read-only: {output}");
    let id = trace_while_unwritable(&daemon, pid);
    assert!(
        daemon
            .status()
            .report_store
            .last_error
            .is_some_and(|error| error.contains("Read-only file system")),
        "{:?}",
        daemon.status().report_store
    );
    daemon.in_its_mounts("mount -o remount,rw \"$STATE\"");
    wait_written(&daemon, &id);
    leak.assert_running();
    daemon.terminate();
}
