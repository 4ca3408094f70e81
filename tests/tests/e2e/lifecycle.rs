//! How a trace starts and ends, and what it leaves behind: Ctrl-C ends the window early and
//! still writes the report; a traced pid that exits ends the window; no leakmon program stays
//! loaded afterwards; not being root is a one-line error; and each allocator entry point's edge
//! cases (failed realloc, realloc to 0, reallocarray overflow, ...) are booked exactly.

use std::{collections::BTreeMap, ffi::OsString, time::Duration};

use leakmon_tests::{
    assert_no_leakmon_program_loaded, describe_report, has_frame, leakmon_bin, scenario_path,
    serial, start_leakmon, trace_output, trace_pid,
};
use monitor_daemon::report::Report;

use crate::INTERVAL;

#[test]
fn sigint_ends_the_window_and_writes_the_report() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = dir.path().join("report.json");
    let args: Vec<OsString> = vec![
        "trace".into(),
        "--format".into(),
        "json".into(),
        "--interval".into(),
        "0.5".into(),
        "--output".into(),
        output.clone().into(),
        "--".into(),
        scenario_path("steady_leak").into(),
        "60".into(),
    ];
    let leakmon = start_leakmon(&args);
    std::thread::sleep(Duration::from_secs(5));
    leakmon.signal(libc::SIGINT);
    let run = leakmon.finish();
    assert!(
        run.status.success(),
        "leakmon failed after SIGINT:\n{}",
        run.stderr
    );
    let report: Report = serde_json::from_slice(&std::fs::read(&output).expect("the report"))
        .expect("the report parses");
    assert!(
        report.duration_seconds < 20.0,
        "SIGINT did not end the window: {} s",
        report.duration_seconds
    );
    assert!(
        report.notes.iter().any(|note| note.contains("interrupted")),
        "the report does not say it was interrupted: {:?}",
        report.notes
    );
    let top = report.stacks.iter().find(|stack| stack.leaking);
    assert!(
        top.is_some_and(|stack| has_frame(stack, "leak_steady")),
        "no leaking leak_steady stack after SIGINT\n{}",
        describe_report(&report)
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{}", report.pid)).exists(),
        "the traced command outlived leakmon"
    );
    assert_no_leakmon_program_loaded();
}

#[test]
fn traced_process_exiting_ends_the_window() {
    let run = trace_pid(
        &["--duration", "60", "--interval", "0.5"],
        "steady_leak",
        &["4"],
        Duration::from_millis(500),
    );
    assert!(
        run.report.duration_seconds < 10.0,
        "the window went on after the process exited: {} s",
        run.report.duration_seconds
    );
    assert!(
        run.report.notes.iter().any(|note| note.contains("exited")),
        "the report does not say the process exited: {:?}",
        run.report.notes
    );
    let top = run.report.stacks.iter().find(|stack| stack.leaking);
    assert!(
        top.is_some_and(|stack| has_frame(stack, "leak_steady")),
        "the exited process's leak was not reported\n{}",
        describe_report(&run.report)
    );
    let _serial = serial();
    assert_no_leakmon_program_loaded();
}

#[test]
fn not_root_is_a_one_line_error() {
    let _serial = serial();
    let output = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(leakmon_bin())
        .args(["trace", "--pid", "1", "--duration", "1"])
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "leakmon succeeded without root");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line:\n{stderr}");
    assert!(
        stderr.contains("root"),
        "the error does not say root is needed: {stderr}"
    );
}

#[test]
fn root_without_cap_sys_admin_is_a_one_line_error() {
    let _serial = serial();
    let output = std::process::Command::new("setpriv")
        .args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin"])
        .arg(leakmon_bin())
        .args(["trace", "--pid", "1", "--duration", "1"])
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "leakmon succeeded without CAP_SYS_ADMIN"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "not one line:\n{stderr}");
    assert!(
        stderr.contains("without CAP_SYS_ADMIN"),
        "the error does not name the capability: {stderr}"
    );
}

#[test]
fn allocator_edge_cases_are_booked_exactly() {
    let mut args = INTERVAL.to_vec();
    args.extend(["--top", "100"]);
    let traced = trace_output("json", &args, "realloc_semantics", &["3"]);
    assert!(
        traced.run.status.success(),
        "leakmon failed:\n{}",
        traced.run.stderr
    );
    let report: Report = serde_json::from_slice(&traced.output).expect("the report parses");
    let sites_line = traced
        .run
        .stdout
        .lines()
        .find(|line| line.starts_with("{\"sites\""))
        .unwrap_or_else(|| panic!("no sites line in {}", traced.run.stdout));
    let sites: BTreeMap<String, BTreeMap<String, u64>> =
        serde_json::from_str(sites_line).expect("the sites line parses");
    let dropped: u64 = report.dropped.values().sum();
    assert_eq!(dropped, 0, "data was dropped: {:?}", report.dropped);
    for (function, &expected) in &sites["sites"] {
        let booked: u64 = report
            .stacks
            .iter()
            .filter(|stack| {
                stack
                    .frames
                    .iter()
                    .any(|frame| frame.symbol.as_deref() == Some(function.as_str()))
            })
            .map(|stack| stack.bytes)
            .sum();
        assert_eq!(
            booked,
            expected,
            "{function} leaked {expected} B; the report books {booked} B\n{}",
            describe_report(&report)
        );
    }
}
