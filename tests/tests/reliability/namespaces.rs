//! Processes whose files are not what the host's paths show: one in its own mount namespace
//! with a private copy of libc bind-mounted over the host's (a different inode, reached through
//! `/proc/PID/root`), and one whose binary was deleted while it runs (its code reached, and its
//! functions named, through `/proc/PID/map_files`). `leakmon trace --pid` must find each leak
//! and name the leaking function.

use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::time::Duration;

use leakmon_tests::{
    TraceRun, describe_report, find_descendant, has_frame, scenario_path, trace_spawned,
};

/// The host's libc, as Debian 12 installs it.
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
/// `steady_leak` leaks this many bytes a second.
const STEADY_RATE: f64 = 409_600.0;

/// Asserts that the top leaking stack goes through `leak_steady`, named, at its rate.
fn assert_steady_leak(run: &TraceRun) {
    let report = &run.report;
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| panic!("no leaking stack\n{}", describe_report(report)));
    assert!(
        has_frame(top, "leak_steady"),
        "the top leaking stack does not name leak_steady\n{}",
        describe_report(report)
    );
    assert!(
        (top.growth_bytes_per_second - STEADY_RATE).abs() <= 0.25 * STEADY_RATE,
        "leak_steady leaks {STEADY_RATE} B/s; the report says {:.0} B/s\n{}",
        top.growth_bytes_per_second,
        describe_report(report)
    );
}

/// The inode of the libc a process has mapped.
fn mapped_libc_inode(pid: u32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/maps: {error}"));
    maps.lines()
        .filter(|line| line.ends_with("/libc.so.6"))
        .find_map(|line| line.split_whitespace().nth(4)?.parse().ok())
        .unwrap_or_else(|| panic!("pid {pid} maps no libc.so.6:\n{maps}"))
}

#[test]
fn libc_copy_in_another_mount_namespace() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let copy = dir.path().join("libc.so.6");
    std::fs::copy(LIBC, &copy).unwrap_or_else(|error| panic!("copying {LIBC}: {error}"));
    let host_inode = std::fs::metadata(LIBC).expect("the host's libc").ino();
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "mount --bind '{}' {LIBC} && exec '{}' 8",
            copy.display(),
            scenario_path("steady_leak").display()
        ));
    let (run, pid) = trace_spawned(
        command,
        "unshare steady_leak",
        "steady_leak",
        &["--duration", "4", "--interval", "0.5"],
        Duration::from_millis(500),
        |root| {
            let pid = find_descendant(root, "steady_leak", Duration::from_secs(10));
            let inode = mapped_libc_inode(pid);
            assert_ne!(
                inode, host_inode,
                "steady_leak in the namespace maps the host's libc (inode {host_inode}), not the copy"
            );
            pid
        },
    );
    eprintln!(
        "pid {pid} in its own mount namespace: {}",
        describe_report(&run.report)
    );
    assert_steady_leak(&run);
}

#[test]
fn binary_deleted_while_running() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let copy = dir.path().join("steady_leak");
    std::fs::copy(scenario_path("steady_leak"), &copy).expect("copying steady_leak");
    let mut command = Command::new(&copy);
    command.arg("8");
    let (run, pid) = trace_spawned(
        command,
        "deleted steady_leak",
        "steady_leak",
        &["--duration", "4", "--interval", "0.5"],
        Duration::from_millis(500),
        |pid| {
            // Once it runs (its comm is its own), the file goes.
            find_descendant(pid, "steady_leak", Duration::from_secs(10));
            std::fs::remove_file(&copy).expect("deleting the running binary");
            pid
        },
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    eprintln!("pid {pid} ({exe:?}): {}", describe_report(&run.report));
    assert_steady_leak(&run);
}
