//! The unit tests' fixture: a router over a snapshot of three watched processes, a store of
//! four reports and a stand-in for the daemon's main loop, and the helpers that call it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use tempfile::TempDir;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use super::{Access, ApiState, Command, ErrorBody, Token, TraceAccepted, router};
use crate::config::ReportsConfig;
use crate::model::{OomKill, ProbeHealth, ProcessView, Reason, Snapshot, StoreHealth};
use crate::report::{Frame, Report, StackReport, Totals};
use crate::serve::store::ReportStore;
use crate::testing::{euid, process_view, token_file};

/// Watched, suspected, traced; has a report with a leaking stack.
pub(super) const LEAKY: u32 = 10;
/// Watched; the daemon refuses to trace it.
pub(super) const BUSY: u32 = 11;
/// Watched; the daemon drops the trace request unanswered.
pub(super) const DROPPED: u32 = 12;
/// Not watched any more (say, OOM-killed); has a report without a leaking stack.
pub(super) const GONE: u32 = 13;
/// Not watched; has a report without any stack holding memory.
pub(super) const EMPTY: u32 = 14;
/// A request rate no test reaches.
pub(super) const UNLIMITED: u32 = 1_000_000;
/// The token of [`token_file`].
pub(super) const TOKEN: &str = "s3cr3t-T0ken_value";

pub(super) struct Fixture {
    pub(super) router: Router,
    pub(super) state: ApiState,
    pub(super) _dir: TempDir,
}

pub(super) fn view(pid: u32, comm: &str) -> ProcessView {
    ProcessView {
        start_time_ticks: 100,
        unit: Some(format!("{comm}.service")),
        cgroup: Some(format!("/system.slice/{comm}.service")),
        anon_bytes: 1 << 19,
        ..process_view(pid, comm)
    }
}

pub(super) fn snapshot(loaded: bool) -> Snapshot {
    let mut leaky = view(LEAKY, "leaky");
    leaky.suspected = true;
    leaky.reasons = vec![Reason::Rss];
    leaky.rss_growth_bytes_per_second = 1e5;
    leaky.traced = true;
    leaky.outstanding_bytes = Some(5000);
    Snapshot {
        updated_unix_seconds: 1_700_000_000.0,
        processes: vec![leaky, view(BUSY, "busy"), view(DROPPED, "dropped")],
        probes: ProbeHealth {
            loaded,
            error: (!loaded).then(|| "not running as root".to_owned()),
            events: BTreeMap::from([("allocs".to_owned(), 7)]),
            dropped: BTreeMap::new(),
            map_entries: BTreeMap::from([("allocs".to_owned(), 3)]),
            traced_pids: vec![LEAKY],
        },
        oom_kills_total: 1,
        oom_kills: vec![OomKill {
            pid: GONE,
            start_time_ticks: 100,
            comm: "gone".to_owned(),
            unix_seconds: 1_699_999_990.0,
            rss_bytes: 1 << 30,
            limit_bytes: Some(1 << 30),
            limit: Some("memory.max of /system.slice/gone.service".to_owned()),
            report: None,
            culprit: Vec::new(),
        }],
        report_store: StoreHealth {
            errors_total: 2,
            unstored: 1,
            last_error: Some("cannot write x: No space left on device (os error 28)".to_owned()),
        },
    }
}

pub(super) fn frame(symbol: &str) -> Frame {
    Frame {
        address: 0x1000,
        symbol: Some(symbol.to_owned()),
        module: Some("/usr/bin/app".to_owned()),
        file: None,
        line: None,
        inlined: false,
        ..Default::default()
    }
}

pub(super) fn stack(bytes: u64, leaking: bool, symbols: &[&str]) -> StackReport {
    StackReport {
        bytes,
        allocations: 3,
        growth_bytes_per_second: if leaking { 100.0 } else { 0.0 },
        oldest_age_seconds: 5.0,
        leaking,
        frames: symbols.iter().map(|s| frame(s)).collect(),
        ..StackReport::default()
    }
}

pub(super) fn report(pid: u32, comm: &str, stacks: Vec<StackReport>) -> Report {
    Report {
        duration_seconds: 30.0,
        interval_seconds: 2.0,
        totals: Totals {
            outstanding_bytes: stacks.iter().map(|s| s.bytes).sum(),
            outstanding_allocations: 3,
        },
        ..crate::testing::report(pid, comm, stacks)
    }
}

pub(super) fn leaky_report() -> Report {
    report(
        LEAKY,
        "a<b>&c",
        vec![
            stack(1 << 20, true, &["leaky_function", "handle_request", "main"]),
            stack(1 << 10, false, &["innocent_function", "main"]),
        ],
    )
}

/// Answers trace commands as a daemon would: accepts [`LEAKY`], refuses [`BUSY`], drops the
/// rest unanswered.
pub(super) fn spawn_daemon(mut commands: mpsc::Receiver<Command>) {
    tokio::spawn(async move {
        while let Some(Command::Trace {
            pid,
            duration,
            method,
            reply,
        }) = commands.recv().await
        {
            match pid {
                LEAKY => {
                    let _ = reply.send(Ok(TraceAccepted {
                        pid,
                        duration_seconds: duration.as_secs_f64(),
                        method: method.unwrap_or(crate::model::Method::PageFaults),
                    }));
                }
                BUSY => {
                    let _ = reply.send(Err(format!("process {pid} is already traced")));
                }
                _ => drop(reply),
            }
        }
    });
}

pub(super) fn fixture_with(snapshot: Snapshot, max_process_series: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = ReportStore::open(dir.path(), ReportsConfig::default()).unwrap();
    for report in [
        report(LEAKY, "leaky", vec![stack(1, true, &["older_function"])]),
        leaky_report(),
        report(
            GONE,
            "gone",
            vec![
                stack(2048, false, &["innocent_function", "main"]),
                stack(1024, false, &["other_function", "main"]),
            ],
        ),
        report(EMPTY, "empty", Vec::new()),
    ] {
        store.save(report, None).1.unwrap();
    }
    let (_, snapshot) = watch::channel(Arc::new(snapshot));
    let (commands, receiver) = mpsc::channel(4);
    spawn_daemon(receiver);
    let state = ApiState {
        snapshot,
        store: Arc::new(store),
        commands,
        max_process_series,
        access: Access::new(None, UNLIMITED),
    };
    Fixture {
        router: router(state.clone()),
        state,
        _dir: dir,
    }
}

pub(super) fn fixture() -> Fixture {
    fixture_with(snapshot(true), 100)
}

/// The fixture's state served with `access`.
pub(super) fn guarded(fixture: &Fixture, access: Access) -> Router {
    router(ApiState {
        access,
        ..fixture.state.clone()
    })
}

/// A router requiring [`TOKEN`].
pub(super) fn with_token(fixture: &Fixture) -> Router {
    let path = token_file(fixture._dir.path(), &format!("{TOKEN}\n"), 0o600);
    let token = Token::read_owned_by(&path, euid()).unwrap();
    guarded(fixture, Access::new(Some(token), UNLIMITED))
}

pub(super) async fn call(
    router: &Router,
    method: Method,
    uri: &str,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    send(router, request).await
}

pub(super) async fn send(
    router: &Router,
    request: axum::http::Request<Body>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, body.to_vec())
}

pub(super) async fn get_ok(router: &Router, uri: &str) -> (HeaderMap, Vec<u8>) {
    let (status, headers, body) = call(router, Method::GET, uri).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    (headers, body)
}

pub(super) fn content_type(headers: &HeaderMap) -> &str {
    headers.get(CONTENT_TYPE).unwrap().to_str().unwrap()
}

/// Asserts an error answer: the status, a JSON content type and a one-line message.
pub(super) async fn expect_error(
    router: &Router,
    method: Method,
    uri: &str,
    expected: StatusCode,
) -> String {
    let (status, headers, body) = call(router, method.clone(), uri).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, expected, "{method} {uri}: {text}");
    assert_eq!(content_type(&headers), "application/json", "{uri}");
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        !error.error.is_empty() && !error.error.contains('\n'),
        "{text}"
    );
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 1, "{text}");
    error.error
}
