//! A daemon restarted while a process is traced: SIGTERM mid-trace stores the trace cut short
//! (partial, saying why); a new daemon on the same state directory serves that report, and can
//! trace the same process again, from scratch.

use std::time::Duration;

use leakmon_tests::{
    BackgroundProcess, Daemon, Report, describe_report, has_frame, serial, wait_for,
};

use crate::{WATCH_LIMIT, config};

#[test]
fn restart_keeps_reports_and_can_trace_again() {
    let _serial = serial();
    let state = tempfile::tempdir().expect("a temporary state directory");
    let config = config("", "auto = false");
    let process = BackgroundProcess::scenario("steady_leak", &["120"]);
    let pid = process.pid();

    let first = Daemon::start_with_state_dir(&config, state.path());
    first.wait_watched(pid, WATCH_LIMIT);
    first.request_trace(pid, 600.0, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    first.terminate();

    let second = Daemon::start_with_state_dir(&config, state.path());
    let old: Report = second.get_json(&format!("/api/v1/processes/{pid}/report?format=json"));
    assert_eq!(old.pid, pid, "the stored report is about another process");
    assert!(
        old.partial && old.notes.iter().any(|note| note.contains("daemon stopped")),
        "the trace cut short by SIGTERM is not marked so\n{}",
        describe_report(&old)
    );
    assert!(
        old.stacks
            .iter()
            .any(|stack| has_frame(stack, "leak_steady")),
        "the stored report lost the leak\n{}",
        describe_report(&old)
    );
    let old_id = second
        .request(
            "GET",
            &format!("/api/v1/processes/{pid}/report?format=json"),
        )
        .headers
        .iter()
        .find(|(name, _)| name == "x-leakmon-report-id")
        .map(|(_, id)| id.clone())
        .expect("a report id header");

    // The same process, traced again by the new daemon.
    second.wait_watched(pid, WATCH_LIMIT);
    second.request_trace(pid, 3.0, Duration::from_secs(5));
    let new_id = wait_for(Duration::from_secs(20), "a new report", || {
        second
            .process_view(pid)?
            .latest_report
            .filter(|id| *id != old_id)
    });
    let new: Report = second.get_json(&format!("/api/v1/processes/{pid}/report?format=json"));
    eprintln!(
        "report {new_id} after the restart: {}",
        describe_report(&new)
    );
    assert!(
        !new.partial || new.dropped.values().any(|&count| count > 0),
        "the new trace was cut short\n{}",
        describe_report(&new)
    );
    assert!(
        new.events.get("allocs").copied().unwrap_or(0) > 0
            && new
                .stacks
                .iter()
                .any(|stack| has_frame(stack, "leak_steady")),
        "the new trace saw nothing of steady_leak\n{}",
        describe_report(&new)
    );
    drop(second);
    drop(process);
}
