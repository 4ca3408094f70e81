//! The fast leak of issue 11: a service whose error path leaks 256 B per rejected request,
//! flooded with 80,000 bad requests a second (about 20 MB/s), in a memory cgroup limited to
//! 1 GiB (the v1 memory controller or v2, whichever the host has), under the default watch
//! settings. The daemon must flag it as `exhaustion_imminent`, trace it and have a report on disk
//! naming the leaking function before the OOM killer strikes; then record the kill in that
//! report (`end.reason` `oom_kill`), in `leakmon_oom_kills_total` and in `leakmon status`, and
//! keep serving the dead process's report. Beside it, a control in a cgroup of its own fills a
//! 128 MiB cache at 40 MB/s and stops: never suspected; and the same flood with no limit but the
//! host's memory (far from exhausted) is found by the trend rules within [`UNLIMITED_LIMIT`].

use std::time::{Duration, Instant};

use leakmon_tests::{
    BackgroundProcess, Daemon, MemoryCgroup, describe_report, has_frame, oncall_status,
    scenario_path, serial,
};
use monitor_daemon::model::{ProcessView, Reason};
use monitor_daemon::report::{EndReason, Report};

/// The cgroups' limit.
const LIMIT: u64 = 1 << 30;
/// How long the flooded service idles first: it must be older than the default
/// `watch.min_process_age_seconds` (30 s) when the flood begins, as a running service is.
const IDLE_SECONDS: &str = "35";
/// The leak function of `flood_leak`.
const LEAK_FUNCTION: &str = "record_rejection";
/// How long the whole test may take, from the flood's start.
const LIMIT_AFTER_FLOOD: Duration = Duration::from_secs(90);
/// How soon the flood with no memory limit must be suspected, from its start.
const UNLIMITED_LIMIT: Duration = Duration::from_secs(90);

/// A longer trace window than the other daemon tests', so the kill falls within it.
fn config() -> String {
    "[trace]\nauto = true\nwindow_seconds = 60\n".to_owned()
}

fn find(views: &[ProcessView], pid: u32) -> Option<&ProcessView> {
    views.iter().find(|view| view.pid == pid)
}

/// The stored report of `pid` that names `LEAK_FUNCTION` in a leaking stack, read from the
/// state directory's files.
fn report_on_disk(daemon: &Daemon, pid: u32) -> Option<Report> {
    let reports = daemon.state_dir().join("reports");
    let entries = std::fs::read_dir(reports).ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let (_, rest) = name.split_once('-')?;
        if !rest.starts_with(&format!("{pid}-")) || !name.ends_with(".json") {
            return None;
        }
        let report: Report = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
        report
            .stacks
            .iter()
            .any(|stack| stack.leaking && has_frame(stack, LEAK_FUNCTION))
            .then_some(report)
    })
}

/// When the flood with no limit, `pid`, is suspected: `since_flood` (it must not be imminent).
fn unlimited_suspected(views: &[ProcessView], pid: u32, since_flood: Duration) -> Option<Duration> {
    let view = find(views, pid).filter(|view| view.suspected)?;
    assert!(
        !view.reasons.contains(&Reason::ExhaustionImminent),
        "the flood with the host's memory to fill is not imminent: {view:?}"
    );
    eprintln!(
        "the flood with no limit suspected {:.1} s into it at RSS {} MiB: {view:?}",
        since_flood.as_secs_f64(),
        view.rss_bytes >> 20
    );
    Some(since_flood)
}

#[test]
fn a_flood_in_a_memory_cgroup_is_explained_on_disk_before_the_oom_kill() {
    let _serial = serial();
    let flooded = MemoryCgroup::create("leakmon-e2e-flood", LIMIT);
    let bounded = MemoryCgroup::create("leakmon-e2e-burst", LIMIT);
    let daemon = Daemon::start(&config());
    let program = scenario_path("flood_leak");
    let mut flood = BackgroundProcess::spawn(
        flooded.command(&program, &["300", IDLE_SECONDS, "80000"]),
        "flood_leak",
    );
    // 128 MiB at 160,000 records of 256 B a second (41 MB/s), then kept.
    let burst_bytes = (128u64 << 20).to_string();
    let mut burst = BackgroundProcess::spawn(
        bounded.command(&program, &["300", IDLE_SECONDS, "160000", &burst_bytes]),
        "flood_leak (bounded burst)",
    );
    let mut unlimited = BackgroundProcess::scenario("flood_leak", &["300", IDLE_SECONDS, "80000"]);
    let (pid, control, free) = (flood.pid(), burst.pid(), unlimited.pid());
    let started = Instant::now();
    let idle = Duration::from_secs(IDLE_SECONDS.parse().expect("seconds"));
    eprintln!(
        "flood_leak pid {pid} in {} (cgroup {}), control pid {control}",
        flooded.path,
        if flooded.unified { "v2" } else { "v1" }
    );

    let mut flagged = None;
    let mut traced = None;
    let mut on_disk = None;
    let mut last_view = None;
    let mut unlimited_found = None;
    while !flood.has_exited() {
        let since_flood = started.elapsed().saturating_sub(idle);
        assert!(
            since_flood < LIMIT_AFTER_FLOOD,
            "flood_leak was not killed {} s into the flood; its view: {last_view:?}",
            LIMIT_AFTER_FLOOD.as_secs()
        );
        let views: Vec<ProcessView> = daemon.get_json("/api/v1/processes");
        if unlimited_found.is_none() {
            unlimited_found = unlimited_suspected(&views, free, since_flood);
        }
        if let Some(view) = find(&views, control) {
            assert!(
                !view.suspected,
                "the bounded burst was suspected {:.0} s into it: {view:?}",
                since_flood.as_secs_f64()
            );
        }
        if let Some(view) = find(&views, pid) {
            if flagged.is_none() && view.reasons.contains(&Reason::ExhaustionImminent) {
                assert!(
                    view.suspected && view.reasons.contains(&Reason::Rss),
                    "{view:?}"
                );
                assert!(
                    view.seconds_until_exhaustion.is_some_and(|s| s < 120.0),
                    "{view:?}"
                );
                let limit = view.memory_limit.as_ref().expect("the cgroup's limit");
                assert_eq!(
                    (limit.limit, limit.cgroup.as_deref()),
                    (LIMIT, Some(flooded.path.as_str())),
                    "{view:?}"
                );
                eprintln!(
                    "flagged {:.1} s into the flood at RSS {} MiB: {view:?}",
                    since_flood.as_secs_f64(),
                    view.rss_bytes >> 20
                );
                flagged = Some(since_flood);
            }
            if traced.is_none() && view.traced {
                traced = Some(since_flood);
            }
            last_view = Some(view.clone());
        }
        if on_disk.is_none()
            && let Some(report) = report_on_disk(&daemon, pid)
        {
            eprintln!(
                "on disk {:.1} s into the flood: {}",
                since_flood.as_secs_f64(),
                describe_report(&report)
            );
            on_disk = Some(since_flood);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let killed = started.elapsed().saturating_sub(idle);
    let status = flood.exit_status().expect("flood_leak has exited");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(9),
        "flood_leak was not killed: {status}"
    );
    eprintln!("OOM-killed {:.1} s into the flood", killed.as_secs_f64());
    let flagged = flagged.expect("the flood was never flagged exhaustion_imminent");
    let traced = traced.expect("the flood was never seen traced");
    let on_disk = on_disk.expect("no report naming the leak was on disk before the kill");
    assert!(
        flagged <= Duration::from_secs(20),
        "flagged after {flagged:?}"
    );
    assert!(traced < killed && on_disk < killed);
    let unlimited_found = unlimited_found.unwrap_or_else(|| {
        leakmon_tests::wait_for(UNLIMITED_LIMIT, "the flood with no limit suspected", || {
            let views: Vec<ProcessView> = daemon.get_json("/api/v1/processes");
            unlimited_suspected(&views, free, started.elapsed().saturating_sub(idle))
        })
    });
    assert!(unlimited_found <= UNLIMITED_LIMIT, "{unlimited_found:?}");
    unlimited.assert_running();
    drop(unlimited);

    // The kill is recorded on the report, which stays served.
    let report = leakmon_tests::wait_for(
        Duration::from_secs(20),
        "the OOM kill on the report",
        || {
            let report: Report =
                daemon.get_json(&format!("/api/v1/processes/{pid}/report?format=json"));
            report.end.is_some().then_some(report)
        },
    );
    let end = report.end.clone().expect("an end");
    assert_eq!(
        end.reason,
        EndReason::OomKill,
        "{}",
        describe_report(&report)
    );
    assert_eq!(end.signal, Some(9));
    assert_eq!(end.limit_bytes, Some(LIMIT));
    assert!(end.rss_bytes > LIMIT / 2, "{end:?}");
    assert!(!report.interim, "{}", describe_report(&report));
    let top = report.stacks.iter().find(|stack| stack.leaking);
    assert!(
        top.is_some_and(|stack| has_frame(stack, LEAK_FUNCTION)),
        "{}",
        describe_report(&report)
    );
    let stored = report_on_disk(&daemon, pid).expect("the report on disk");
    assert_eq!(stored.end.map(|end| end.reason), Some(EndReason::OomKill));

    let status = daemon.status();
    assert!(status.oom_kills_total >= 1, "{status:?}");
    let kill = status
        .oom_kills
        .iter()
        .find(|kill| kill.pid == pid)
        .unwrap_or_else(|| panic!("the kill is not listed: {status:?}"));
    assert_eq!(
        kill.culprit.first().map(String::as_str),
        Some(LEAK_FUNCTION)
    );
    let metrics = daemon.get_text("/metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("leakmon_oom_kills_total ")
                && line != "leakmon_oom_kills_total 0"),
        "{metrics}"
    );
    let text = oncall_status(daemon.addr());
    assert!(
        text.contains(&format!("{pid} flood_leak: killed")) && text.contains(LEAK_FUNCTION),
        "{text}"
    );
    burst.assert_running();
    let views: Vec<ProcessView> = daemon.get_json("/api/v1/processes");
    let control_view = find(&views, control).expect("the control is watched");
    assert!(!control_view.suspected, "{control_view:?}");
    assert!(
        control_view.rss_bytes > 100 << 20,
        "the burst did not run: {control_view:?}"
    );
    daemon.terminate();
}
