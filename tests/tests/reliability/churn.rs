//! Process churn: thousands of short-lived processes (fork, exec, a few allocations, exit), some
//! of them traced when they exit (a `trace.targets` selector on their name, and traces requested
//! over the API on short-lived leaking processes), must leave the daemon as it was: its resident
//! memory back within a small margin of the baseline taken after a warm-up round, and no entry of
//! any kernel map left for a dead process, as the kernel itself shows (`bpftool map dump`) and as
//! `GET /api/v1/status` reports (`probes.map_entries`, refreshed every 10 s).

use std::collections::BTreeMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use leakmon_tests::{
    BackgroundProcess, Daemon, Report, STATE_MAPS, kernel_maps_of, rss_kib, scenario_path, serial,
    wait_for,
};

use crate::{WATCH_LIMIT, config};

/// Children of the churn proper, and of the warm-up round.
const CHURN: usize = 3000;
/// Every this many children lingers [`LINGER_MS`], long enough to be watched and traced.
const LINGER_EVERY: usize = 600;
const LINGER_MS: &str = "1500";
/// Short-lived leaking processes traced over the API until they exit.
const TRACED_EXITS: usize = 5;

/// How much the daemon's resident memory may exceed its post-warm-up baseline: heap
/// fragmentation and the allocator's caches move it by a few hundred KiB; a leak of even 1 KiB
/// per process churned would add 3 MiB.
const RSS_MARGIN_KIB: u64 = 2048;

fn churn_config() -> String {
    config(
        "",
        "auto = false\n\
         window_seconds = 3\n\
         max_concurrent = 4\n\
         targets = [{ comm = \"churn_child\" }]",
    )
}

/// Runs `churn_spawner` over `children` children, 4 at a time.
fn churn(children: usize) {
    let output = Command::new(scenario_path("churn_spawner"))
        .arg(scenario_path("churn_child"))
        .args([
            &children.to_string(),
            "4",
            &LINGER_EVERY.to_string(),
            LINGER_MS,
        ])
        .output()
        .expect("running churn_spawner");
    assert!(
        output.status.success(),
        "churn_spawner failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts `count` short-lived leaking processes one after the other, has the daemon trace each
/// (for longer than it lives) as soon as it runs, and waits for them all to exit. Each lives 6 s:
/// long enough for the daemon to answer the request (it admits one a second, and finishing
/// other traces blocks it for a second or two).
fn traced_exits(daemon: &Daemon, count: usize) {
    let mut processes = Vec::new();
    for _ in 0..count {
        let process = BackgroundProcess::scenario("steady_leak", &["6"]);
        let pid = process.pid();
        daemon.wait_watched(pid, WATCH_LIMIT);
        // Caught between its execve and the loader mapping libc, a process has no allocator
        // to probe yet (the daemon then answers 409): wait for its own libc.
        wait_for(WATCH_LIMIT, "steady_leak to map libc", || {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            (exe.ends_with("steady_leak") && maps.contains("libc.so")).then_some(())
        });
        daemon.request_trace(pid, 60.0, Duration::from_secs(4));
        processes.push(process);
    }
    for process in &processes {
        let pid = process.pid();
        wait_for(
            Duration::from_secs(20),
            "a traced steady_leak to exit",
            || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or(true, |stat| stat.contains(") Z "))
                    .then_some(())
            },
        );
    }
}

/// Waits until the daemon traces nothing and the kernel maps it holds are empty; returns how
/// long that took.
fn settle(daemon: &Daemon) -> Duration {
    let started = Instant::now();
    wait_for(Duration::from_secs(20), "every trace to end", || {
        daemon.status().probes.traced_pids.is_empty().then_some(())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kernel = kernel_maps_of(daemon.pid());
        if kernel.entries.values().all(|&entries| entries == 0) {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no trace runs, yet the kernel maps of the daemon still hold entries: {kernel:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The stored reports, parsed.
fn reports(daemon: &Daemon) -> Vec<Report> {
    let dir = daemon.state_dir().join("reports");
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .filter_map(|path| serde_json::from_slice(&std::fs::read(path).ok()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn exited_reports(reports: &[Report], comm: &str) -> usize {
    reports
        .iter()
        .filter(|report| {
            report.comm == comm && report.notes.iter().any(|note| note.contains("exited"))
        })
        .count()
}

#[test]
fn churn_leaves_no_state_behind() {
    let _serial = serial();
    let daemon = Daemon::start(&churn_config());
    let daemon_pid = daemon.pid();

    // Warm-up: the same load as the measured churn (churn plus traces to their processes'
    // exit), so the daemon's caches (the symbolizer keeps libc's debug information once) and
    // the allocator's high-water mark under that load are reached first; what is measured
    // after is growth per churn, which a leak would show.
    let started = Instant::now();
    let warm_up = thread::spawn(|| churn(CHURN));
    traced_exits(&daemon, TRACED_EXITS);
    warm_up.join().expect("the warm-up churn thread");
    settle(&daemon);
    wait_for(
        Duration::from_secs(60),
        "the warm-up traces' reports",
        || (exited_reports(&reports(&daemon), "steady_leak") >= TRACED_EXITS).then_some(()),
    );
    let baseline_kib = rss_kib(daemon_pid);
    let before = reports(&daemon);
    eprintln!(
        "warm-up in {:.1} s; daemon RSS {baseline_kib} KiB",
        started.elapsed().as_secs_f64()
    );

    // The churn, with traced processes exiting in the middle of it.
    let started = Instant::now();
    let spawner = thread::spawn(|| churn(CHURN));
    traced_exits(&daemon, TRACED_EXITS);
    spawner.join().expect("the churn thread");
    let churned = started.elapsed();
    let settled = settle(&daemon);
    // Reports are written off the daemon's main loop, after the probes are detached (the
    // kernel takes a grace period per probe): wait for the traced exits' reports to land.
    wait_for(
        Duration::from_secs(60),
        "the reports of the traced exits",
        || {
            let written = exited_reports(&reports(&daemon), "steady_leak")
                - exited_reports(&before, "steady_leak");
            (written >= TRACED_EXITS).then_some(())
        },
    );
    let after = reports(&daemon);
    eprintln!(
        "{CHURN} processes churned and {TRACED_EXITS} traced to their exit in {:.1} s; settled \
         in {:.1} s; {} reports",
        churned.as_secs_f64(),
        settled.as_secs_f64(),
        after.len()
    );

    // The traces of exiting processes ran and ended as such.
    let requested = exited_reports(&after, "steady_leak") - exited_reports(&before, "steady_leak");
    assert!(
        requested >= TRACED_EXITS,
        "{TRACED_EXITS} steady_leak processes were traced until they exited; {requested} reports \
         say the process exited"
    );
    let targets = exited_reports(&after, "churn_child") - exited_reports(&before, "churn_child");
    assert!(
        targets >= 1,
        "no lingering churn_child (a trace.targets match) was traced until it exited; reports: \
         {:?}",
        after.iter().map(|report| &report.comm).collect::<Vec<_>>()
    );

    // The kernel holds nothing for the dead: checked by `settle`; the TARGETS map in particular.
    let kernel = kernel_maps_of(daemon_pid);
    assert!(
        kernel.targets.is_empty(),
        "TARGETS still registers pids after every trace ended: {:?}",
        kernel.targets
    );
    assert_eq!(
        kernel.target_bits, 0,
        "the filter in front of TARGETS still has bits set after every trace ended"
    );
    assert_eq!(
        kernel
            .entries
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        {
            let mut names = STATE_MAPS.to_vec();
            names.sort_unstable();
            names
        },
        "bpftool did not show every state map of the daemon"
    );

    // Dead processes are no longer listed.
    let views: Vec<monitor_daemon::model::ProcessView> = daemon.get_json("/api/v1/processes");
    let dead: Vec<u32> = views
        .iter()
        .filter(|view| view.comm == "churn_child" || view.comm == "steady_leak")
        .map(|view| view.pid)
        .collect();
    assert!(dead.is_empty(), "dead processes are still listed: {dead:?}");

    // Resident memory is back to the baseline.
    let end_kib = rss_kib(daemon_pid);
    eprintln!(
        "daemon RSS: baseline {baseline_kib} KiB, after the churn {end_kib} KiB ({:+} KiB)",
        end_kib as i64 - baseline_kib as i64
    );
    assert!(
        end_kib <= baseline_kib + RSS_MARGIN_KIB,
        "the daemon's RSS grew from {baseline_kib} KiB to {end_kib} KiB over the churn of \
         {CHURN} processes (margin {RSS_MARGIN_KIB} KiB)"
    );

    // The daemon's own account agrees once it refreshed it (every 10 s).
    let started = Instant::now();
    loop {
        let reported: BTreeMap<String, u64> = daemon.status().probes.map_entries;
        let stale: Vec<(&str, u64)> = STATE_MAPS
            .iter()
            .filter_map(|name| Some((*name, *reported.get(*name)?)))
            .filter(|(_, entries)| *entries != 0)
            .collect();
        if stale.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "GET /api/v1/status still reports entries {stale:?} 25 s after every trace ended \
             (its sweep refreshes them every 10 s), while the kernel's maps are empty: {:?}; \
             probes.map_entries: {reported:?}",
            kernel_maps_of(daemon_pid)
        );
        thread::sleep(Duration::from_millis(500));
    }
}
