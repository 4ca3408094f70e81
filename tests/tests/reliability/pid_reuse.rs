//! Pid reuse: the daemon knows a process by its pid and start time, so a new process that gets
//! the pid of a dead one starts a fresh history. A leaking process is suspected and traced
//! automatically (a report is stored); it is killed and a new, idle process is started with the
//! same pid (through `/proc/sys/kernel/ns_last_pid`); the daemon's view of that pid must then be
//! the new process's alone: its start time, its name, no growth, no suspicion, no report.

use std::process::Command;
use std::time::Duration;

use leakmon_tests::{BackgroundProcess, Daemon, serial, spawn_with_pid, wait_for};

use crate::config;

#[test]
fn a_reused_pid_starts_a_fresh_history() {
    let _serial = serial();
    let daemon = Daemon::start(&config("", "auto = true\nwindow_seconds = 2"));
    let old = BackgroundProcess::scenario("rss_leak", &["60"]);
    let pid = old.pid();
    let old_view = wait_for(
        Duration::from_secs(30),
        "rss_leak to be suspected and get a report",
        || {
            daemon
                .process_view(pid)
                .filter(|view| view.suspected && view.latest_report.is_some())
        },
    );
    eprintln!("the old process: {old_view:?}");
    drop(old);

    let new = spawn_with_pid(
        || {
            let mut command = Command::new("sleep");
            command.arg("60");
            command
        },
        "sleep",
        pid,
        500,
    )
    .unwrap_or_else(|| panic!("could not start a process with pid {pid} again"));
    let new_view = wait_for(
        Duration::from_secs(10),
        "the new process to be watched",
        || {
            daemon
                .process_view(pid)
                .filter(|view| view.start_time_ticks != old_view.start_time_ticks)
        },
    );
    // A few more samples of the new process.
    std::thread::sleep(Duration::from_secs(2));
    let view = daemon.process_view(pid).unwrap_or(new_view);
    eprintln!("the new process: {view:?}");
    assert_eq!(view.comm, "sleep", "the view of pid {pid}: {view:?}");
    assert!(
        !view.suspected && view.reasons.is_empty(),
        "the new process inherited the suspicion: {view:?}"
    );
    assert!(
        view.rss_growth_bytes_per_second.abs() < 4096.0,
        "the new process, idle, shows the old one's growth: {view:?}"
    );
    assert!(!view.traced, "the new process is traced: {view:?}");
    assert_eq!(
        view.latest_report, None,
        "the new process (never traced) shows the old process's report {:?} as its latest",
        old_view.latest_report
    );
    drop(new);
}
