//! Processes whose files are not what the host's paths show: one in its own mount namespace
//! with a private copy of libc bind-mounted over the host's (a different inode, reached through
//! `/proc/PID/root`), and one whose binary was deleted while it runs (its code reached, and its
//! functions named, through `/proc/PID/map_files`). `leakmon trace --pid` must find each leak
//! and name the leaking function. And leakmon itself in a PID namespace of its own (a
//! container): it traces the processes of that namespace, numbered as it sees them, and refuses
//! one in a namespace nested below it in one line.

use std::os::unix::fs::MetadataExt as _;
use std::process::Command;
use std::time::Duration;

use leakmon_tests::{
    Report, assert_steady_leak, describe_report, find_descendant, leakmon_bin, scenario_path,
    serial, trace_spawned,
};

/// The host's libc, as Debian 12 installs it.
const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
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
    assert_steady_leak(&run.report);
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
    assert_steady_leak(&run.report);
}

#[test]
fn leakmon_in_its_own_pid_namespace() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("report.json");
    let traced = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(leakmon_bin())
        .args([
            "trace",
            "--format",
            "json",
            "--duration",
            "4",
            "--interval",
            "0.5",
        ])
        .arg("--output")
        .arg(&output)
        .arg("--")
        .arg(scenario_path("steady_leak"))
        .arg("8")
        .output()
        .expect("running leakmon trace under unshare");
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert!(traced.status.success(), "leakmon trace failed: {stderr}");
    let text = std::fs::read_to_string(&output).expect("reading the report");
    let report: Report = serde_json::from_str(&text).expect("a JSON report");
    eprintln!("leakmon in a PID namespace: {}", describe_report(&report));
    assert_steady_leak(&report);

    // A process in a PID namespace below leakmon's: its threads are numbered in that one.
    let script = format!(
        "unshare --pid --fork --mount-proc '{scenario}' 10 & \
         for i in $(seq 50); do \
           target=$(cat /proc/$!/task/$!/children 2>/dev/null | tr -d ' '); \
           [ -n \"$target\" ] && [ \"$(cat /proc/$target/comm)\" = steady_leak ] && break; \
           sleep 0.1; \
         done; \
         echo \"target $target\"; \
         exec '{leakmon}' trace --pid \"$target\" --duration 1",
        scenario = scenario_path("steady_leak").display(),
        leakmon = leakmon_bin().display()
    );
    let nested = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--", "sh", "-c"])
        .arg(&script)
        .output()
        .expect("running leakmon trace under unshare");
    let stdout = String::from_utf8_lossy(&nested.stdout);
    let stderr = String::from_utf8_lossy(&nested.stderr);
    let target = stdout
        .lines()
        .find_map(|line| line.strip_prefix("target "))
        .unwrap_or_else(|| panic!("the script found no target: {stdout}{stderr}"));
    assert!(!nested.status.success(), "leakmon traced a nested process");
    assert_eq!(
        stderr.trim(),
        format!(
            "leakmon: not tracing pid {target}: it is in a PID namespace nested in leakmon's, \
             which is not the host's; run leakmon in the host's PID namespace to trace it"
        )
    );
}
