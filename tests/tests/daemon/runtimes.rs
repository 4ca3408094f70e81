//! The daemon's default method (`trace.method = "auto"`) on programs an allocator probe cannot
//! explain: a Go program (statically linked, no malloc) and a Python script leaking small
//! objects through pymalloc's arenas. Each is suspected and traced first by its page faults,
//! whose report names the Go function or the Python function; the Python script, still
//! suspected when that window ends, is then traced by its allocations, in a report that names
//! the page-fault report it follows; the Go program, with no allocator to probe, is not. The
//! API, the metrics and the on-call commands say how each process is traced.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use leakmon_tests::{
    BackgroundProcess, Daemon, assert_no_leakmon_program_loaded, describe_report, has_frame,
    leakmon_bin, python_script, serial,
};
use monitor_daemon::model::{Method, ProcessView};
use monitor_daemon::report::{Language, Report};

use crate::{DETECTION_LIMIT, POLL, SCENARIO_SECONDS, TRACE_WINDOW_SECONDS, daemon_config};

/// How long past a trace window its report may take (the trace starts at the next watch
/// evaluation; the report is symbolized and written after it).
const REPORT_SLACK: Duration = Duration::from_secs(30);
/// The Go scenario's leaking function.
const GO_FUNCTION: &str = "main.rememberEvent";
/// The Python scenario's leaking function.
const PYTHON_FUNCTION: &str = "index_session";

fn find(views: &[ProcessView], pid: u32) -> Option<&ProcessView> {
    views.iter().find(|view| view.pid == pid)
}

/// Asserts that `report`, traced by `method`, has a top leaking stack with a frame named
/// `function` (of `language`) and a note containing `note`; `what` names it in the failure.
fn assert_explains(
    report: &Report,
    what: &str,
    method: Method,
    (function, language): (&str, Language),
    note: Option<&str>,
) {
    assert_eq!(report.method, method, "{what}");
    let named = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .is_some_and(|stack| {
            has_frame(stack, function)
                && stack.frames.iter().any(|frame| frame.language == language)
        });
    assert!(
        named,
        "{what} does not name {function}\n{}",
        describe_report(report)
    );
    if let Some(note) = note {
        assert!(
            report.notes.iter().any(|line| line.contains(note)),
            "{what} has no note saying \"{note}\"\n{}",
            describe_report(report)
        );
    }
}

/// What the test saw of one leaking program.
#[derive(Debug, Default)]
struct Seen {
    /// The methods it was seen traced by, in order.
    methods: Vec<Method>,
}

impl Seen {
    fn record(&mut self, view: Option<&ProcessView>) {
        if let Some(method) = view.and_then(|view| view.trace_method)
            && self.methods.last() != Some(&method)
        {
            self.methods.push(method);
        }
    }
}

#[test]
fn go_and_python_leaks_are_named_by_page_faults_then_allocations_follow() {
    let _serial = serial();
    let daemon = Daemon::start(&daemon_config());
    let mut go = BackgroundProcess::scenario("go_leak", &[SCENARIO_SECONDS]);
    let mut python_command = Command::new("python3");
    python_command
        .arg(python_script("py_small_leak.py"))
        .arg(SCENARIO_SECONDS);
    let mut python = BackgroundProcess::spawn(python_command, "py_small_leak.py");
    let (go_pid, python_pid) = (go.pid(), python.pid());
    let (mut go_seen, mut python_seen) = (Seen::default(), Seen::default());
    let mut metrics_checked = false;

    // Both are suspected, traced by their page faults and reported.
    let window = Duration::from_secs(TRACE_WINDOW_SECONDS);
    let limit = DETECTION_LIMIT + window + REPORT_SLACK;
    let started = Instant::now();
    loop {
        go.assert_running();
        python.assert_running();
        let views: Vec<ProcessView> = daemon.get_json("/api/v1/processes");
        go_seen.record(find(&views, go_pid));
        python_seen.record(find(&views, python_pid));
        if !metrics_checked
            && find(&views, go_pid).and_then(|view| view.trace_method) == Some(Method::PageFaults)
        {
            let metrics = daemon.get_text("/metrics");
            let series = r#"leakmon_processes_traced_by_method{method="page_faults"} "#;
            let traced = metrics
                .lines()
                .find_map(|line| line.strip_prefix(series))
                .and_then(|value| value.parse::<f64>().ok());
            assert!(traced.is_some_and(|n| n >= 1.0), "{series}: {traced:?}");
            let addr = daemon.addr().to_string();
            let output = Command::new(leakmon_bin())
                .args(["status", "--daemon", &addr])
                .output()
                .expect("running leakmon status");
            let status = String::from_utf8_lossy(&output.stdout);
            assert!(
                status.contains(&format!("{go_pid} go_leak by page faults: resident")),
                "leakmon status does not say how go_leak is traced:\n{status}"
            );
            metrics_checked = true;
        }
        let reported = |pid| find(&views, pid).is_some_and(|view| view.latest_report.is_some());
        if reported(go_pid) && reported(python_pid) {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "no page-fault report of both within {} s: go_leak {:?}, py_small_leak {:?}",
            limit.as_secs(),
            find(&views, go_pid),
            find(&views, python_pid)
        );
        thread::sleep(POLL);
    }
    assert!(
        metrics_checked,
        "go_leak was never seen traced by page faults"
    );

    let report_of = |pid: u32, method: &str| -> Report {
        daemon.get_json(&format!(
            "/api/v1/processes/{pid}/report?format=json&method={method}"
        ))
    };
    assert_explains(
        &report_of(go_pid, "page-faults"),
        "the Go program's page-fault report",
        Method::PageFaults,
        (GO_FUNCTION, Language::Native),
        None,
    );
    assert_explains(
        &report_of(python_pid, "page_faults"),
        "the Python script's page-fault report",
        Method::PageFaults,
        (PYTHON_FUNCTION, Language::Python),
        Some("an allocation trace follows"),
    );

    // The Python script is then traced by its allocations, in a report that says which
    // page-fault report it follows.
    let limit = window + REPORT_SLACK;
    let started = Instant::now();
    let python_allocations = loop {
        python.assert_running();
        let views: Vec<ProcessView> = daemon.get_json("/api/v1/processes");
        go_seen.record(find(&views, go_pid));
        python_seen.record(find(&views, python_pid));
        let response = daemon.request(
            "GET",
            &format!("/api/v1/processes/{python_pid}/report?format=json&method=allocations"),
        );
        if response.status == 200 {
            break serde_json::from_slice::<Report>(&response.body).expect("a JSON report");
        }
        assert!(
            started.elapsed() < limit,
            "no allocation report of py_small_leak {} s after its page-fault report; its view: \
             {:?}",
            limit.as_secs(),
            find(&views, python_pid)
        );
        thread::sleep(POLL);
    };
    assert_explains(
        &python_allocations,
        "the Python script's allocation report",
        Method::Allocations,
        (PYTHON_FUNCTION, Language::Python),
        Some("follows the page-fault trace of report"),
    );
    assert_eq!(
        python_seen.methods,
        [Method::PageFaults, Method::Allocations],
        "py_small_leak"
    );
    // The Go program has no allocator to probe: no allocation trace follows.
    assert_eq!(go_seen.methods, [Method::PageFaults], "go_leak");
    let response = daemon.request(
        "GET",
        &format!("/api/v1/processes/{go_pid}/report?format=json&method=allocations"),
    );
    assert_eq!(response.status, 404, "{}", response.text());

    drop(daemon);
    assert_no_leakmon_program_loaded();
}
