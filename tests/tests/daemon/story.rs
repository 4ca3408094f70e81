//! The whole story of one daemon run: leaks are suspected for the right reason and in time,
//! controls never are, the RSS leak is traced automatically into a stored report that names
//! its leaking function, a suspect's view says what its memory is made of, the thread leak's
//! forecast runs against its cgroup's `pids.max`, the metrics pass `promtool` and reach a real
//! Prometheus, on-demand traces and bad requests get the documented answers, and SIGTERM
//! detaches every probe.
//!
//! Timing budget (the test fails past each limit): daemon and Prometheus start (at most 30 s
//! each, about 2 s in practice); detection within [`DETECTION_LIMIT`] of each leak's start
//! (about 95 s with the default watch settings: only samples from 30 s of age count, a trend
//! must span 60 s and hold for 3 consecutive samples); the Prometheus query within
//! [`PROMETHEUS_LIMIT`] (Prometheus has been scraping all along, so at once in practice); the
//! automatic report within [`REPORT_SLACK`] past one trace window after the RSS leak was
//! suspected (about 25 s); then a few seconds of requests and at most 10 s to exit. About 2.5
//! minutes in all, under 4 at the limits.

use std::ffi::CString;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use leakmon_tests::{
    BackgroundProcess, Daemon, HttpResponse, assert_no_leakmon_program_loaded, describe_report,
    has_frame, scenario_path, serial,
};
use monitor_daemon::model::{ProcessView, Reason};
use monitor_daemon::report::Report;
use serde_json::Value;

use crate::metrics::{assert_exposition, assert_promtool_accepts};
use crate::prometheus::Prometheus;
use crate::{DETECTION_LIMIT, POLL, SCENARIO_SECONDS, TRACE_WINDOW_SECONDS, daemon_config};

/// How long Prometheus may take to show the suspected RSS leak once the daemon suspects it.
const PROMETHEUS_LIMIT: Duration = Duration::from_secs(30);

/// How long past one trace window the automatic report of the RSS leak may take (the trace
/// starts at the next watch evaluation; the report is symbolized and written after it).
const REPORT_SLACK: Duration = Duration::from_secs(40);

/// The leaks start this long after the RSS leak and the controls, so the RSS leak is suspected
/// first and gets the first automatic trace.
const STAGGER: Duration = Duration::from_secs(5);

/// The function of `rss_leak` that leaks.
const RSS_LEAK_FUNCTION: &str = "leak_rss_chunk";

/// `pids.max` of the cgroup the thread leak runs in.
const PIDS_MAX: u64 = 2000;

/// A cgroup of the v1 `pids` hierarchy (this host's kind) with a `pids.max`, removed when
/// dropped (once its processes are gone).
struct PidsCgroup(PathBuf);

impl PidsCgroup {
    /// A new cgroup under `/sys/fs/cgroup/pids`; `None` on a host without that hierarchy.
    fn create() -> Option<Self> {
        let root = PathBuf::from("/sys/fs/cgroup/pids");
        if !root.join("cgroup.procs").exists() {
            eprintln!(
                "no cgroup v1 pids hierarchy: the thread forecast is not checked against pids.max"
            );
            return None;
        }
        let dir = root.join(format!("leakmon-story-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        std::fs::write(dir.join("pids.max"), PIDS_MAX.to_string())
            .unwrap_or_else(|error| panic!("setting {}/pids.max: {error}", dir.display()));
        Some(PidsCgroup(dir))
    }

    /// Makes `command`'s process join the cgroup before it runs its program.
    fn enter(&self, command: &mut Command) {
        let procs = CString::new(
            self.0
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("no NUL in a cgroup path");
        // SAFETY: only async-signal-safe calls between fork and exec; `procs` outlives them
        // (the closure owns it).
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // The processes are killed by now; their exit may take a moment to reach the cgroup.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.0.display());
    }
}

/// A leaking scenario and what the daemon must find.
struct Leak {
    name: &'static str,
    reason: Reason,
    /// The rate it leaks at, per second, in the reason's unit (bytes, descriptors).
    rate: f64,
    process: BackgroundProcess,
    started: Instant,
    /// When the daemon first suspected it, and how long after its start.
    detected: Option<(Instant, Duration)>,
    /// Whether a poll has seen it traced.
    seen_traced: bool,
}

impl Leak {
    fn start(name: &'static str, reason: Reason, rate: f64) -> Self {
        let mut command = Command::new(scenario_path(name));
        command.arg(SCENARIO_SECONDS);
        Self::start_command(name, reason, rate, command)
    }

    fn start_command(name: &'static str, reason: Reason, rate: f64, command: Command) -> Self {
        Leak {
            name,
            reason,
            rate,
            process: BackgroundProcess::spawn(command, name),
            started: Instant::now(),
            detected: None,
            seen_traced: false,
        }
    }

    /// The growth rate the daemon reports for this leak's reason.
    fn reported_rate(&self, view: &ProcessView) -> f64 {
        match self.reason {
            Reason::Rss => view.rss_growth_bytes_per_second,
            Reason::Vsz => view.vsz_growth_bytes_per_second,
            Reason::Fds => view.fd_growth_per_second,
            Reason::Threads | Reason::ExhaustionImminent => view.thread_growth_per_second,
        }
    }

    /// Records whether it is traced, and the first poll that suspects it for its reason,
    /// whose view it checks.
    fn observe(&mut self, views: &[ProcessView]) {
        let pid = self.process.pid();
        let view = find(views, pid);
        self.seen_traced |= view.is_some_and(|view| view.traced);
        if self.detected.is_some() {
            return;
        }
        let elapsed = self.started.elapsed();
        let Some(view) = view.filter(|view| view.suspected && view.reasons.contains(&self.reason))
        else {
            assert!(
                elapsed <= DETECTION_LIMIT,
                "{} (pid {pid}) was not suspected for {:?} within {} s; the daemon's view: {view:?}",
                self.name,
                self.reason,
                DETECTION_LIMIT.as_secs()
            );
            return;
        };
        assert!(
            elapsed <= DETECTION_LIMIT,
            "{} (pid {pid}) was suspected only {:.0} s after it started (limit {} s)",
            self.name,
            elapsed.as_secs_f64(),
            DETECTION_LIMIT.as_secs()
        );
        assert_eq!(view.comm, self.name, "the comm of pid {pid}");
        let rate = self.reported_rate(view);
        assert!(
            rate > 0.0 && rate >= self.rate / 2.0 && rate <= self.rate * 2.0,
            "{} leaks {} per second; the daemon reports a growth of {rate} per second: {view:?}",
            self.name,
            self.rate
        );
        if matches!(self.reason, Reason::Rss | Reason::Threads) {
            assert!(
                view.seconds_until_exhaustion
                    .is_some_and(|seconds| seconds.is_finite() && seconds > 0.0),
                "no positive seconds_until_exhaustion for {}: {view:?}",
                self.name
            );
        }
        eprintln!(
            "{} suspected for {:?} after {:.1} s at {rate:.0}/s: {view:?}",
            self.name,
            self.reason,
            elapsed.as_secs_f64()
        );
        self.detected = Some((Instant::now(), elapsed));
    }
}

/// The scenarios the daemon watches: leaks and controls, killed when this is dropped (and then
/// the thread leak's cgroup removed).
struct Fleet {
    leaks: Vec<Leak>,
    controls: Vec<(&'static str, BackgroundProcess)>,
    pids_cgroup: Option<PidsCgroup>,
}

impl Fleet {
    /// Starts the RSS leak and the controls, then, [`STAGGER`] later, the other leaks (the
    /// thread leak in a cgroup limited to [`PIDS_MAX`] tasks, where the host has the v1 pids
    /// hierarchy).
    fn start() -> Self {
        let rss = Leak::start("rss_leak", Reason::Rss, 256.0 * 1024.0);
        let controls = [
            "cache_plateau",
            "sawtooth",
            "churn",
            "startup_then_plateau",
            "thread_pool",
        ]
        .into_iter()
        .map(|name| (name, BackgroundProcess::scenario(name, &[SCENARIO_SECONDS])))
        .collect();
        thread::sleep(STAGGER);
        let pids_cgroup = PidsCgroup::create();
        let mut threads = Command::new(scenario_path("stuck_workers"));
        threads.arg(SCENARIO_SECONDS);
        if let Some(cgroup) = &pids_cgroup {
            cgroup.enter(&mut threads);
        }
        let leaks = vec![
            rss,
            Leak::start("vsz_leak", Reason::Vsz, 5.0 * 1024.0 * 1024.0),
            Leak::start("fd_leak", Reason::Fds, 20.0),
            Leak::start_command("stuck_workers", Reason::Threads, 4.0, threads),
        ];
        Fleet {
            leaks,
            controls,
            pids_cgroup,
        }
    }

    fn leak(&self, name: &str) -> &Leak {
        self.leaks
            .iter()
            .find(|leak| leak.name == name)
            .unwrap_or_else(|| panic!("no leak {name}"))
    }

    /// Reads `/api/v1/processes`, checks that every scenario still runs and that no control
    /// is suspected, and records the leaks suspected for the first time.
    fn poll(&mut self, daemon: &Daemon) -> Vec<ProcessView> {
        for leak in &mut self.leaks {
            leak.process.assert_running();
        }
        for (_, control) in &mut self.controls {
            control.assert_running();
        }
        let views: Vec<ProcessView> = daemon.get_json("/api/v1/processes");
        for (name, control) in &self.controls {
            if let Some(view) = find(&views, control.pid()) {
                assert!(
                    !view.suspected,
                    "the control {name} (pid {}) is suspected: {view:?}",
                    control.pid()
                );
            }
        }
        for leak in &mut self.leaks {
            leak.observe(&views);
        }
        views
    }

    /// Polls every [`POLL`] until `done` holds for the latest views; panics with `what` once
    /// `limit` has passed.
    fn poll_until(
        &mut self,
        daemon: &Daemon,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&Self, &[ProcessView]) -> bool,
    ) -> Vec<ProcessView> {
        let started = Instant::now();
        loop {
            let views = self.poll(daemon);
            if done(self, &views) {
                return views;
            }
            assert!(
                started.elapsed() <= limit,
                "{what}: not within {} s",
                limit.as_secs()
            );
            thread::sleep(POLL);
        }
    }

    /// Asserts that the daemon watches every control, so "never suspected" was a finding.
    fn assert_controls_watched(&self, views: &[ProcessView]) {
        for (name, control) in &self.controls {
            assert!(
                find(views, control.pid()).is_some(),
                "the daemon does not list the control {name} (pid {})",
                control.pid()
            );
        }
    }
}

fn find(views: &[ProcessView], pid: u32) -> Option<&ProcessView> {
    views.iter().find(|view| view.pid == pid)
}

/// Asserts a 4xx answer (a 409 included) whose body is a JSON object with a non-empty `error` string.
fn assert_json_error(response: &HttpResponse, request: &str) {
    assert!(
        (400..500).contains(&response.status),
        "{request} answered {}, not 4xx: {}",
        response.status,
        response.text()
    );
    let body: Value = response.json();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{request} answered {} without an error message: {body}",
        response.status
    );
}

/// Whether gzipped `bytes` gunzip to something containing `needle`.
fn gunzips_to_contain(bytes: &[u8], needle: &str) -> bool {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .expect("the profile gunzips");
    plain
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn daemon_suspects_leaks_traces_them_and_exports_metrics() {
    let _serial = serial();
    let daemon = Daemon::start(&daemon_config());
    let mut prometheus = Prometheus::start(daemon.addr());
    let mut fleet = Fleet::start();

    // Every leak is suspected for its reason in time; no control ever is (checked at each poll
    // from here on).
    fleet.poll_until(
        &daemon,
        "every leak suspected",
        DETECTION_LIMIT + POLL,
        |fleet, _| fleet.leaks.iter().all(|leak| leak.detected.is_some()),
    );
    let rss = fleet.leak("rss_leak");
    let rss_pid = rss.process.pid();
    let (rss_detected, _) = rss.detected.expect("the RSS leak was suspected");
    let fd_pid = fleet.leak("fd_leak").process.pid();
    let threads_pid = fleet.leak("stuck_workers").process.pid();
    if fleet.pids_cgroup.is_some() {
        // Forecast against the cgroup's pids.max: what is left of 2000 at 4 threads a second
        // (kernel.threads-max, the other limit, leaves hours).
        let view: ProcessView = daemon.get_json(&format!("/api/v1/processes/{threads_pid}"));
        let forecast = view.seconds_until_exhaustion;
        assert!(
            forecast.is_some_and(|seconds| seconds > 0.0 && seconds < PIDS_MAX as f64 / 4.0),
            "the thread leak's forecast is not against pids.max {PIDS_MAX}: {view:?}"
        );
    }

    // Prometheus scrapes the suspicion.
    let promql = "leakmon_process_leak_suspected{comm=\"rss_leak\"} == 1";
    let rss_label = rss_pid.to_string();
    let started = Instant::now();
    loop {
        let last = match prometheus.query(promql) {
            Ok(result) => {
                if result
                    .iter()
                    .any(|series| series["metric"]["pid"].as_str() == Some(rss_label.as_str()))
                {
                    break;
                }
                format!("{result:?}")
            }
            Err(error) => error,
        };
        assert!(
            started.elapsed() <= PROMETHEUS_LIMIT,
            "Prometheus did not return {promql} for pid {rss_pid} within {} s; last: \
             {last}\ntargets: {}",
            PROMETHEUS_LIMIT.as_secs(),
            prometheus.targets()
        );
        fleet.poll(&daemon);
        thread::sleep(Duration::from_secs(1));
    }

    // The automatic trace of the RSS leak stores a report.
    let report_deadline = rss_detected + Duration::from_secs(TRACE_WINDOW_SECONDS) + REPORT_SLACK;
    let report_limit = report_deadline.saturating_duration_since(Instant::now());
    let views = fleet.poll_until(
        &daemon,
        "the automatic report of rss_leak",
        report_limit,
        |_, views| find(views, rss_pid).is_some_and(|view| view.latest_report.is_some()),
    );
    let view = find(&views, rss_pid).expect("rss_leak is listed");
    assert!(
        fleet.leak("rss_leak").seen_traced,
        "rss_leak got a report but was never seen traced: {view:?}"
    );
    let id = view.latest_report.clone().expect("a report id");
    eprintln!(
        "report {id} of rss_leak {:.1} s after it was suspected",
        rss_detected.elapsed().as_secs_f64()
    );

    let report: Report =
        daemon.get_json(&format!("/api/v1/processes/{rss_pid}/report?format=json"));
    assert_eq!(report.pid, rss_pid, "the report is about another process");
    let top = report.stacks.iter().find(|stack| stack.leaking);
    assert!(
        top.is_some_and(|stack| has_frame(stack, RSS_LEAK_FUNCTION)),
        "the top leaking stack does not go through {RSS_LEAK_FUNCTION}\n{}",
        describe_report(&report)
    );

    let reports = daemon.state_dir().join("reports");
    let json_path = reports.join(format!("{id}.json"));
    let stored: Report = serde_json::from_slice(
        &std::fs::read(&json_path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", json_path.display())),
    )
    .unwrap_or_else(|error| panic!("{} does not parse: {error}", json_path.display()));
    assert_eq!(
        stored.pid,
        rss_pid,
        "{} is about another process",
        json_path.display()
    );
    let pprof_path = reports.join(format!("{id}.pb.gz"));
    let stored_pprof = std::fs::read(&pprof_path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", pprof_path.display()));
    assert!(
        stored_pprof.starts_with(&[0x1f, 0x8b]),
        "{} is not gzipped: starts {:02x?}",
        pprof_path.display(),
        &stored_pprof[..stored_pprof.len().min(4)]
    );
    assert!(
        gunzips_to_contain(&stored_pprof, RSS_LEAK_FUNCTION),
        "{} does not name {RSS_LEAK_FUNCTION}",
        pprof_path.display()
    );

    let report_path = format!("/api/v1/processes/{rss_pid}/report");
    let svg = daemon.get_text(&format!("{report_path}?format=svg"));
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "format=svg is not an SVG document: {}",
        &svg[..svg.len().min(300)]
    );
    let folded = daemon.get_text(&format!("{report_path}?format=folded"));
    assert!(
        folded.contains(RSS_LEAK_FUNCTION),
        "format=folded does not name {RSS_LEAK_FUNCTION}:\n{folded}"
    );
    let pprof = daemon.get_ok(&format!("{report_path}?format=pprof")).body;
    assert!(
        pprof.starts_with(&[0x1f, 0x8b]) && gunzips_to_contain(&pprof, RSS_LEAK_FUNCTION),
        "format=pprof is not a gzipped profile naming {RSS_LEAK_FUNCTION}"
    );

    // The metrics.
    let exposition = daemon.get_text("/metrics");
    assert_exposition(&exposition, rss_pid);
    assert_promtool_accepts(&exposition);

    // An on-demand trace of the descriptor leak: accepted, or refused at the concurrency limit.
    let target = format!("/api/v1/processes/{fd_pid}/trace?duration=5");
    let response = daemon.post(&target);
    match response.status {
        202 => {
            let _: Value = response.json();
        }
        409 => assert_json_error(&response, &format!("POST {target}")),
        status => panic!(
            "POST {target} answered {status}, not 202 or 409: {}",
            response.text()
        ),
    }

    // Bad requests.
    for target in [
        "/api/v1/no-such-thing".to_owned(),
        "/api/v1/processes/abc/report".to_owned(),
        format!("{report_path}?format=bogus"),
    ] {
        let response = daemon.request("GET", &target);
        assert_json_error(&response, &format!("GET {target}"));
    }

    let views = fleet.poll(&daemon);
    fleet.assert_controls_watched(&views);

    // What the suspects' memory is made of, as GET /api/v1/processes/{pid} says (sampled since
    // they became suspected, a minute or more ago by now).
    for (pid, class) in [(rss_pid, "heap"), (threads_pid, "thread_stacks")] {
        let view: ProcessView = daemon.get_json(&format!("/api/v1/processes/{pid}"));
        let memory = view
            .memory
            .as_ref()
            .unwrap_or_else(|| panic!("no memory object for suspect {pid}: {view:?}"));
        assert_eq!(
            memory.fastest_growing().map(|(name, _)| name),
            Some(class),
            "pid {pid} ({}) does not grow in {class}: {memory:?}",
            view.comm
        );
    }

    // SIGTERM: exit 0 in time, with every probe detached.
    let took = daemon.terminate();
    assert!(
        took < Duration::from_secs(10),
        "leakmon run took {:.1} s to exit after SIGTERM",
        took.as_secs_f64()
    );
    assert_no_leakmon_program_loaded();
    drop(fleet);
}
