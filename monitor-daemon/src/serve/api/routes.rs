//! The API's routes and their handlers: the path and query extractors (a pid, the query
//! parameters each route takes and nothing else), the snapshot's processes and status, the
//! metrics, a stored report, and trace requests handed to the daemon's main loop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::access::{
    MAX_BODY_BYTES, TRACE_REQUEST_BURST, TRACE_REQUESTS_PER_SECOND, authenticate, limit_body,
    limit_head, limit_rate,
};
use super::responses::{ApiError, ReportFormat, Status, json, report_response, too_many};
use super::{ApiState, Command};
use crate::model::{ProcessView, Snapshot};
use crate::serve::metrics;

/// Largest pid the kernel can hand out (`pid_max` is at most 2^22).
pub const MAX_PID: u32 = 1 << 22;
/// Length of an on-demand trace when the request gives none, in seconds.
pub const DEFAULT_TRACE_SECONDS: f64 = 60.0;
/// Shortest on-demand trace, in seconds.
pub const MIN_TRACE_SECONDS: f64 = 1.0;
/// Longest on-demand trace, in seconds.
pub const MAX_TRACE_SECONDS: f64 = 3600.0;
/// How long a trace request waits for the daemon's main loop to take and answer it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Content type of the Prometheus text format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .route("/api/v1/status", get(status))
        .route("/api/v1/processes", get(processes))
        .route("/api/v1/processes/{pid}", get(process))
        .route("/api/v1/processes/{pid}/report", get(process_report))
        .route("/api/v1/processes/{pid}/trace", post(trace))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(limit_body))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.access.clone(),
            authenticate,
        ))
        .layer(middleware::from_fn(limit_head))
        .layer(middleware::from_fn_with_state(
            state.access.clone(),
            limit_rate,
        ))
        .with_state(state)
}

/// A pid from the path: decimal, 1 to [`MAX_PID`].
#[derive(Debug, Clone, Copy)]
struct Pid(u32);

impl<S: Send + Sync> FromRequestParts<S> for Pid {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad = |what: &str| {
            ApiError::bad_request(format!(
                "bad pid `{what}`: expected a decimal number from 1 to {MAX_PID}"
            ))
        };
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| bad("(not UTF-8)"))?;
        if raw.is_empty() || raw.len() > 7 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&raw));
        }
        match raw.parse::<u32>() {
            Ok(pid) if (1..=MAX_PID).contains(&pid) => Ok(Self(pid)),
            _ => Err(bad(&raw)),
        }
    }
}

/// The query string deserialized into `T` (which denies unknown fields), with a JSON error.
#[derive(Debug)]
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::bad_request(format!("bad query: {}", rejection.body_text()))
            })
    }
}

/// A route taking no query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `GET /api/v1/processes/{pid}/report`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    format: Option<String>,
    method: Option<String>,
}

/// `POST /api/v1/processes/{pid}/trace`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceParams {
    duration: Option<String>,
    method: Option<String>,
}

/// The `method` parameter: `page-faults` (or `page_faults`) or `allocations`.
fn trace_method(raw: Option<&str>) -> Result<Option<crate::model::Method>, ApiError> {
    use crate::model::Method as Traced;
    match raw {
        None => Ok(None),
        Some("page-faults" | "page_faults") => Ok(Some(Traced::PageFaults)),
        Some("allocations") => Ok(Some(Traced::Allocations)),
        Some(other) => Err(ApiError::bad_request(format!(
            "bad method `{other}`: expected page-faults or allocations"
        ))),
    }
}

fn current(state: &ApiState) -> Arc<Snapshot> {
    Arc::clone(&state.snapshot.borrow())
}

async fn get_metrics(State(state): State<ApiState>, _: Params<NoParams>) -> Response {
    let snapshot = current(&state);
    let text = metrics::render(&snapshot, state.max_process_series);
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

async fn healthz(_: Params<NoParams>) -> Response {
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

async fn status(State(state): State<ApiState>, _: Params<NoParams>) -> Response {
    let snapshot = current(&state);
    let status = Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        updated_unix_seconds: snapshot.updated_unix_seconds,
        processes_watched: snapshot.processes.len(),
        processes_suspected: snapshot.processes.iter().filter(|p| p.suspected).count(),
        processes_traced: metrics::traced_count(&snapshot),
        probes: snapshot.probes.clone(),
        oom_kills_total: snapshot.oom_kills_total,
        oom_kills: snapshot.oom_kills.clone(),
        report_store: snapshot.report_store.clone(),
    };
    json(StatusCode::OK, &status)
}

async fn processes(State(state): State<ApiState>, _: Params<NoParams>) -> Response {
    json(StatusCode::OK, &current(&state).processes)
}

fn watched(snapshot: &Snapshot, pid: u32) -> Result<&ProcessView, ApiError> {
    snapshot
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("process {pid} is not watched"),
            )
        })
}

async fn process(
    State(state): State<ApiState>,
    Pid(pid): Pid,
    _: Params<NoParams>,
) -> Result<Response, ApiError> {
    let snapshot = current(&state);
    Ok(json(StatusCode::OK, watched(&snapshot, pid)?))
}

async fn process_report(
    State(state): State<ApiState>,
    Pid(pid): Pid,
    Params(params): Params<ReportParams>,
) -> Result<Response, ApiError> {
    let format = ReportFormat::parse(params.format.as_deref())?;
    let method = trace_method(params.method.as_deref())?;
    let store = Arc::clone(&state.store);
    // A watched process is only given reports of itself, not of an earlier process that had
    // the same pid; a process no longer watched (it exited, perhaps OOM-killed) gets its last.
    let current_start = current(&state)
        .processes
        .iter()
        .find(|process| process.pid == pid)
        .map(|process| process.start_time_ticks);
    tokio::task::spawn_blocking(move || report_response(&store, pid, current_start, format, method))
        .await
        .map_err(ApiError::internal)?
}

async fn trace(
    State(state): State<ApiState>,
    Pid(pid): Pid,
    Params(params): Params<TraceParams>,
) -> Result<Response, ApiError> {
    let method = trace_method(params.method.as_deref())?;
    let seconds = match params.duration.as_deref() {
        None => DEFAULT_TRACE_SECONDS,
        Some(raw) => match raw.parse::<f64>() {
            Ok(s) if (MIN_TRACE_SECONDS..=MAX_TRACE_SECONDS).contains(&s) => s,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "bad duration `{raw}`: expected seconds from {MIN_TRACE_SECONDS} to \
                     {MAX_TRACE_SECONDS}"
                )));
            }
        },
    };
    {
        let snapshot = current(&state);
        watched(&snapshot, pid)?;
        if !snapshot.probes.loaded {
            let why = snapshot
                .probes
                .error
                .as_deref()
                .unwrap_or("probes not loaded");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("tracing is unavailable: {why}"),
            ));
        }
    }
    if !state.access.traces.allow() {
        return Err(too_many(format!(
            "too many trace requests: at most {TRACE_REQUEST_BURST} at once and \
             {TRACE_REQUESTS_PER_SECOND} a second"
        )));
    }

    let (reply, answer) = oneshot::channel();
    let command = Command::Trace {
        pid,
        duration: Duration::from_secs_f64(seconds),
        method,
        reply,
    };
    let unavailable = |why: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why);
    let exchange = async {
        state
            .commands
            .send(command)
            .await
            .map_err(|_| unavailable("the daemon is shutting down"))?;
        answer
            .await
            .map_err(|_| unavailable("the daemon dropped the request"))
    };
    let answer = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| unavailable("the daemon did not answer in time"))??;
    match answer {
        Ok(accepted) => Ok(json(StatusCode::ACCEPTED, &accepted)),
        Err(reason) => Err(ApiError::new(StatusCode::CONFLICT, reason)),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::header::CONTENT_LENGTH;
    use tokio::sync::{mpsc, watch};
    use tower::ServiceExt;

    use super::*;
    use crate::serve::api::fixture::{
        LEAKY, call, content_type, expect_error, fixture, fixture_with, get_ok, snapshot,
    };
    use crate::serve::api::{ErrorBody, TraceAccepted};

    #[tokio::test]
    async fn healthz_and_metrics() {
        let fixture = fixture_with(snapshot(true), 1);
        let (headers, body) = get_ok(&fixture.router, "/healthz").await;
        assert_eq!(body, b"ok");
        assert!(content_type(&headers).starts_with("text/plain"));

        let (headers, body) = get_ok(&fixture.router, "/metrics").await;
        assert!(content_type(&headers).starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains(
                r#"leakmon_process_rss_bytes{pid="10",comm="leaky",unit="leaky.service"}"#
            )
        );
        assert!(!text.contains(r#"pid="11""#), "series cap not applied");
        assert!(text.contains("leakmon_processes_watched 3"));
        expect_error(
            &fixture.router,
            Method::GET,
            "/metrics?x=1",
            StatusCode::BAD_REQUEST,
        )
        .await;
    }

    #[tokio::test]
    async fn processes_and_one_process() {
        let fixture = fixture();
        let (headers, body) = get_ok(&fixture.router, "/api/v1/processes").await;
        assert_eq!(content_type(&headers), "application/json");
        let list: Vec<ProcessView> = serde_json::from_slice(&body).unwrap();
        assert_eq!(list, snapshot(true).processes);

        let (_, body) = get_ok(&fixture.router, "/api/v1/processes/11").await;
        let one: ProcessView = serde_json::from_slice(&body).unwrap();
        assert_eq!(one, snapshot(true).processes[1]);

        let message = expect_error(
            &fixture.router,
            Method::GET,
            "/api/v1/processes/999",
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(message.contains("999"), "{message}");
        expect_error(
            &fixture.router,
            Method::GET,
            "/api/v1/processes?all=1",
            StatusCode::BAD_REQUEST,
        )
        .await;
        expect_error(
            &fixture.router,
            Method::GET,
            "/api/v1/processes/10?format=json",
            StatusCode::BAD_REQUEST,
        )
        .await;
    }

    #[tokio::test]
    async fn bad_pids_are_rejected() {
        let fixture = fixture();
        for pid in [
            "abc",
            "0",
            "4194305",
            "-1",
            "99999999999",
            "1e3",
            "+5",
            "%20",
            "1%2F2",
            "%FF",
            "10.0",
        ] {
            for (method, suffix) in [
                (Method::GET, ""),
                (Method::GET, "/report"),
                (Method::POST, "/trace"),
            ] {
                let uri = format!("/api/v1/processes/{pid}{suffix}");
                let message =
                    expect_error(&fixture.router, method, &uri, StatusCode::BAD_REQUEST).await;
                assert!(message.contains("bad pid"), "{uri}: {message}");
            }
        }
        // The largest valid pid is fine, just not watched.
        expect_error(
            &fixture.router,
            Method::GET,
            "/api/v1/processes/4194304",
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    #[tokio::test]
    async fn trace_commands() {
        let fixture = fixture();
        let router = &fixture.router;
        for (uri, seconds) in [
            ("/api/v1/processes/10/trace?duration=5", 5.0),
            ("/api/v1/processes/10/trace?duration=2.5", 2.5),
            ("/api/v1/processes/10/trace?duration=3600", 3600.0),
            ("/api/v1/processes/10/trace?duration=1", 1.0),
            ("/api/v1/processes/10/trace", DEFAULT_TRACE_SECONDS),
        ] {
            let method = crate::model::Method::PageFaults;
            let (status, headers, body) = call(router, Method::POST, uri).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{uri}");
            assert_eq!(content_type(&headers), "application/json");
            let accepted: TraceAccepted = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                accepted,
                TraceAccepted {
                    pid: LEAKY,
                    duration_seconds: seconds,
                    method,
                }
            );
        }
        // The method asked for reaches the daemon; an unknown one is refused.
        for (query, method) in [
            ("method=allocations", crate::model::Method::Allocations),
            ("method=page-faults", crate::model::Method::PageFaults),
            (
                "duration=2&method=page_faults",
                crate::model::Method::PageFaults,
            ),
        ] {
            let uri = format!("/api/v1/processes/10/trace?{query}");
            let (status, _, body) = call(router, Method::POST, &uri).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{uri}");
            let accepted: TraceAccepted = serde_json::from_slice(&body).unwrap();
            assert_eq!(accepted.method, method, "{uri}");
        }
        let message = expect_error(
            router,
            Method::POST,
            "/api/v1/processes/10/trace?method=valgrind",
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains("bad method `valgrind`"), "{message}");

        for duration in ["0", "0.5", "3601", "abc", "NaN", "inf", "-5", "", "1e9"] {
            let uri = format!("/api/v1/processes/10/trace?duration={duration}");
            let message = expect_error(router, Method::POST, &uri, StatusCode::BAD_REQUEST).await;
            assert!(message.contains("duration"), "{uri}: {message}");
        }
        expect_error(
            router,
            Method::POST,
            "/api/v1/processes/10/trace?seconds=5",
            StatusCode::BAD_REQUEST,
        )
        .await;

        let message = expect_error(
            router,
            Method::POST,
            "/api/v1/processes/11/trace",
            StatusCode::CONFLICT,
        )
        .await;
        assert_eq!(message, "process 11 is already traced");
        expect_error(
            router,
            Method::POST,
            "/api/v1/processes/999/trace",
            StatusCode::NOT_FOUND,
        )
        .await;
        expect_error(
            router,
            Method::POST,
            "/api/v1/processes/12/trace",
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
        expect_error(
            router,
            Method::GET,
            "/api/v1/processes/10/trace",
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
    }

    #[tokio::test]
    async fn trace_unavailable() {
        let fixture = fixture_with(snapshot(false), 100);
        let message = expect_error(
            &fixture.router,
            Method::POST,
            "/api/v1/processes/10/trace",
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
        assert!(message.contains("not running as root"), "{message}");

        // A daemon whose main loop is gone.
        let (commands, receiver) = mpsc::channel(1);
        drop(receiver);
        let state = ApiState {
            commands,
            snapshot: watch::channel(Arc::new(snapshot(true))).1,
            ..fixture.state.clone()
        };
        let message = expect_error(
            &router(state),
            Method::POST,
            "/api/v1/processes/10/trace",
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
        assert!(message.contains("shutting down"), "{message}");
    }

    #[tokio::test]
    async fn status_counts() {
        let fixture = fixture();
        let (headers, body) = get_ok(&fixture.router, "/api/v1/status").await;
        assert_eq!(content_type(&headers), "application/json");
        let status: Status = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            status,
            Status {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                updated_unix_seconds: 1_700_000_000.0,
                processes_watched: 3,
                processes_suspected: 1,
                processes_traced: 1,
                probes: snapshot(true).probes,
                oom_kills_total: 1,
                oom_kills: snapshot(true).oom_kills,
                report_store: snapshot(true).report_store,
            }
        );
    }

    #[tokio::test]
    async fn unknown_routes_methods_and_large_bodies() {
        let fixture = fixture();
        let router = &fixture.router;
        for uri in [
            "/",
            "/api",
            "/api/v1/processes/10/x",
            "/api/v2/status",
            "/api/v1/processes/",
        ] {
            expect_error(router, Method::GET, uri, StatusCode::NOT_FOUND).await;
        }
        expect_error(
            router,
            Method::POST,
            "/metrics",
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;
        expect_error(
            router,
            Method::DELETE,
            "/api/v1/processes/10",
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .await;

        let request = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/processes/10/trace")
            .header(CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(serde_json::from_slice::<ErrorBody>(&body).is_ok());
    }
}
