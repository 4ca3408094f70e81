//! The daemon's HTTP API (axum on tokio): the Prometheus metrics, the watched processes, their
//! stored reports in every format (with an SVG flame graph of the leaking stacks), on-demand
//! traces handed to the daemon's main loop as [`Command`]s, the probes' status and a liveness
//! check.
//!
//! Every error is a 4xx or 5xx status with a JSON body `{"error": "one line"}` ([`ErrorBody`]).
//!
//! [`Access`] guards it: with a token (`daemon.token_file`) every endpoint except `/metrics` and
//! `/healthz` requires `Authorization: Bearer TOKEN` (401 otherwise); a global token bucket
//! bounds the request rate and a second one the traces requested (429 beyond them); request
//! targets, headers and bodies are bounded in size (414, 431, 413).

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};
use log::warn;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::DaemonConfig;
use crate::model::{ProbeHealth, ProcessView, Snapshot};
use crate::report::folded::render_folded;
use crate::report::{OutputFormat, Report, encode};
use crate::serve::metrics;
use crate::serve::store::{ReportStore, StoreError};

/// Largest request body accepted; no route reads one.
pub const MAX_BODY_BYTES: usize = 4096;
/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 2048;
/// Most bytes of header names and values accepted in one request.
pub const MAX_HEADER_BYTES: usize = 8192;
/// Longest API token accepted in the token file.
pub const MAX_TOKEN_BYTES: usize = 1024;
/// A burst of requests holds this many times `daemon.max_requests_per_second`.
pub const BURST_SECONDS: f64 = 2.0;
/// Traces requested through the API per second (on top of the daemon's `trace.max_concurrent`).
pub const TRACE_REQUESTS_PER_SECOND: f64 = 1.0;
/// Traces requested through the API in one burst.
pub const TRACE_REQUEST_BURST: f64 = 10.0;
/// The endpoints served without the token.
const OPEN_PATHS: [&str; 2] = ["/metrics", "/healthz"];
/// The owner the token file must have.
const ROOT_UID: u32 = 0;
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
/// Stacks listed by the text format of a report.
const TEXT_TOP_STACKS: usize = 20;
/// Response header naming the stored report served.
const REPORT_ID_HEADER: HeaderName = HeaderName::from_static("x-leakmon-report-id");
/// Content type of the Prometheus text format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The latest snapshot the daemon published.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The stored reports.
    pub store: Arc<ReportStore>,
    /// Requests to the daemon's main loop.
    pub commands: mpsc::Sender<Command>,
    /// Processes with per-process metric series (see [`metrics::render`]).
    pub max_process_series: usize,
    /// Who may call, and how often.
    pub access: Access,
}

/// The API token: one line of printable ASCII. Its `Debug` output hides it, and it is never
/// logged.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(hidden)")
    }
}

/// Why the API cannot be served as configured. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The token file could not be opened or read.
    #[error("{}: cannot read the API token (daemon.token_file): {source}", path.display())]
    Read {
        /// The token file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Group or others may access the token file.
    #[error(
        "{}: the API token file must be readable by root only, but its mode is {mode:04o} \
         (chmod 600 it)",
        path.display()
    )]
    Mode {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token file is not owned by root.
    #[error(
        "{}: the API token file must be owned by root, but its owner is uid {uid}",
        path.display()
    )]
    Owner {
        /// The token file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// The token file holds no token.
    #[error("{}: the API token file is empty", path.display())]
    Empty {
        /// The token file.
        path: PathBuf,
    },
    /// The token is not one line of printable ASCII, or too long.
    #[error(
        "{}: the API token must be one line of at most {MAX_TOKEN_BYTES} printable ASCII \
         characters without spaces",
        path.display()
    )]
    Malformed {
        /// The token file.
        path: PathBuf,
    },
    /// A non-loopback address without a token or the explicit opt-out.
    #[error(
        "refusing to serve stack reports unauthenticated on {addr}: set daemon.token_file, or \
         daemon.allow_unauthenticated = true"
    )]
    Unauthenticated {
        /// The address.
        addr: SocketAddr,
    },
}

impl Token {
    /// Reads the token file at `path`: refuses one that group or others may access, that root
    /// does not own, or that holds no token. Surrounding whitespace (the final newline) is not
    /// part of the token.
    pub fn read(path: &FsPath) -> Result<Self, AccessError> {
        Self::read_owned_by(path, ROOT_UID)
    }

    /// [`Token::read`] with the owner the file must have.
    pub(crate) fn read_owned_by(path: &FsPath, owner: u32) -> Result<Self, AccessError> {
        let path_buf = || path.to_path_buf();
        let read_error = |source| AccessError::Read {
            path: path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let metadata = file.metadata().map_err(read_error)?;
        let mode = metadata.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(AccessError::Mode {
                path: path_buf(),
                mode,
            });
        }
        if metadata.uid() != owner {
            return Err(AccessError::Owner {
                path: path_buf(),
                uid: metadata.uid(),
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_BYTES as u64 + 64)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(AccessError::Empty { path: path_buf() });
        }
        if token.len() > MAX_TOKEN_BYTES || !token.iter().all(u8::is_ascii_graphic) {
            return Err(AccessError::Malformed { path: path_buf() });
        }
        Ok(Self(token.into()))
    }

    /// The token itself, for a client to send.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `presented` is the token, in a time that depends only on `presented`'s length.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = &self.0;
        let mut difference = u8::from(expected.len() != presented.len());
        for (index, byte) in presented.iter().enumerate() {
            let want = expected.get(index).copied().unwrap_or(0);
            difference |= std::hint::black_box(want ^ byte);
        }
        std::hint::black_box(difference) == 0
    }
}

/// A token bucket: `per_second` tokens a second, holding at most `capacity`.
#[derive(Debug)]
struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(per_second: f64, capacity: f64) -> Self {
        Self {
            per_second,
            capacity,
            tokens: capacity,
            updated: Instant::now(),
        }
    }

    /// Takes a token at `now` if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A [`TokenBucket`] shared by every clone.
#[derive(Debug, Clone)]
struct Limiter(Arc<Mutex<TokenBucket>>);

impl Limiter {
    fn new(per_second: f64, capacity: f64) -> Self {
        Self(Arc::new(Mutex::new(TokenBucket::new(per_second, capacity))))
    }

    /// Whether a request may go ahead now.
    fn allow(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(Instant::now())
    }
}

/// Who may call the API, and how often; clones share the rate limits.
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<Token>,
    max_requests_per_second: u32,
    requests: Limiter,
    traces: Limiter,
}

impl Access {
    /// Requires `token` (when given) on every endpoint but `/metrics` and `/healthz`, and answers
    /// `max_requests_per_second` requests a second in bursts of [`BURST_SECONDS`] times as many.
    pub fn new(token: Option<Token>, max_requests_per_second: u32) -> Self {
        let rate = f64::from(max_requests_per_second.max(1));
        Self {
            token,
            max_requests_per_second,
            requests: Limiter::new(rate, rate * BURST_SECONDS),
            traces: Limiter::new(TRACE_REQUESTS_PER_SECOND, TRACE_REQUEST_BURST),
        }
    }

    /// The access `daemon` configures: reads `daemon.token_file` (see [`Token::read`]); refuses a
    /// non-loopback `daemon.listen` without a token unless `daemon.allow_unauthenticated` is set,
    /// and then logs a warning.
    pub fn from_config(daemon: &DaemonConfig) -> Result<Self, AccessError> {
        let token = daemon.token_file.as_deref().map(Token::read).transpose()?;
        let addr = daemon.listen;
        if token.is_none() && !addr.ip().to_canonical().is_loopback() {
            if !daemon.allow_unauthenticated {
                return Err(AccessError::Unauthenticated { addr });
            }
            warn!("serving stack reports unauthenticated on {addr}");
        }
        Ok(Self::new(token, daemon.max_requests_per_second))
    }

    /// Whether the request carrying `headers` may reach `path`.
    fn admits(&self, path: &str, headers: &axum::http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if OPEN_PATHS.contains(&path) {
            return true;
        }
        headers
            .get(AUTHORIZATION)
            .and_then(|value| bearer(value.as_bytes()))
            .is_some_and(|presented| token.matches(presented))
    }
}

/// The credentials of an `Authorization: Bearer CREDENTIALS` value (the scheme is
/// case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let scheme = value.get(..SCHEME.len())?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| value[SCHEME.len()..].trim_ascii())
}

/// A request to the daemon's main loop.
#[derive(Debug)]
pub enum Command {
    /// Trace process `pid` for `duration`, then store its report.
    Trace {
        /// The process.
        pid: u32,
        /// Length of the trace window.
        duration: Duration,
        /// The answer: the accepted trace, or why not (served as 409 Conflict).
        reply: oneshot::Sender<Result<TraceAccepted, String>>,
    },
}

/// A trace the daemon accepted (the body of a 202 answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceAccepted {
    /// The process being traced.
    pub pid: u32,
    /// Length of the trace window.
    pub duration_seconds: f64,
}

/// The body of `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's version.
    pub version: String,
    /// When the snapshot was taken, in seconds since the Unix epoch.
    pub updated_unix_seconds: f64,
    /// Processes watched.
    pub processes_watched: usize,
    /// Watched processes suspected of leaking.
    pub processes_suspected: usize,
    /// Processes the allocation tracer is attached to.
    pub processes_traced: usize,
    /// The kernel side.
    pub probes: ProbeHealth,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, on one line.
    pub error: String,
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests under
/// way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

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

/// An error answer.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn internal(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, err.to_string()),
            StoreError::InvalidId(_) => Self::bad_request(err.to_string()),
            StoreError::Io { .. } | StoreError::Decode { .. } | StoreError::Encode(_) => {
                Self::internal(err)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let one_line = self
            .message
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        (self.status, axum::Json(ErrorBody { error: one_line })).into_response()
    }
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
}

/// `POST /api/v1/processes/{pid}/trace`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceParams {
    duration: Option<String>,
}

/// The formats a report is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReportFormat {
    Encoded(OutputFormat),
    Svg,
}

impl ReportFormat {
    fn parse(name: Option<&str>) -> Result<Self, ApiError> {
        match name {
            None | Some("json") => Ok(Self::Encoded(OutputFormat::Json)),
            Some("pprof") => Ok(Self::Encoded(OutputFormat::Pprof)),
            Some("folded") => Ok(Self::Encoded(OutputFormat::Folded)),
            Some("text") => Ok(Self::Encoded(OutputFormat::Text)),
            Some("svg") => Ok(Self::Svg),
            Some(other) => Err(ApiError::bad_request(format!(
                "unknown format `{other}` (expected json, pprof, folded, svg or text)"
            ))),
        }
    }
}

fn current(state: &ApiState) -> Arc<Snapshot> {
    Arc::clone(&state.snapshot.borrow())
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
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
    let store = Arc::clone(&state.store);
    // A watched process is only given reports of itself, not of an earlier process that had
    // the same pid; a process no longer watched (it exited, perhaps OOM-killed) gets its last.
    let current_start = current(&state)
        .processes
        .iter()
        .find(|process| process.pid == pid)
        .map(|process| process.start_time_ticks);
    tokio::task::spawn_blocking(move || report_response(&store, pid, current_start, format))
        .await
        .map_err(ApiError::internal)?
}

/// The latest stored report of `pid` in `format` (blocking: reads files, draws SVG).
fn report_response(
    store: &ReportStore,
    pid: u32,
    current_start: Option<u64>,
    format: ReportFormat,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no report for process {pid}"),
        )
    };
    let id = store
        .list()?
        .into_iter()
        .find(|meta| meta.pid == pid)
        .map(|meta| meta.id)
        .ok_or_else(not_found)?;
    if let Some(start) = current_start
        && let Some(reported) = store.read(&id)?.start_time_ticks
        && reported != start
    {
        return Err(not_found());
    }
    let (content_type, body) = match format {
        ReportFormat::Encoded(OutputFormat::Pprof) => {
            ("application/octet-stream", store.read_pprof(&id)?)
        }
        ReportFormat::Encoded(output) => {
            let report = store.read(&id)?;
            let body = encode(&report, output, TEXT_TOP_STACKS).map_err(ApiError::internal)?;
            let content_type = match output {
                OutputFormat::Json => "application/json",
                OutputFormat::Text | OutputFormat::Folded | OutputFormat::Pprof => {
                    "text/plain; charset=utf-8"
                }
            };
            (content_type, body)
        }
        ReportFormat::Svg => ("image/svg+xml", flame_graph(&id, &store.read(&id)?)?),
    };
    let mut response = ([(CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REPORT_ID_HEADER, value);
    }
    if format == ReportFormat::Encoded(OutputFormat::Pprof) {
        let disposition = format!("attachment; filename=\"{id}.pb.gz\"");
        if let Ok(value) = HeaderValue::from_str(&disposition) {
            headers.insert(CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}

/// An inferno flame graph of the report's leaking stacks, or of every stack when none leaks
/// (the title says which), drawn from the folded rendering.
fn flame_graph(id: &str, report: &Report) -> Result<Vec<u8>, ApiError> {
    let leaking: Vec<_> = report
        .stacks
        .iter()
        .filter(|s| s.leaking)
        .cloned()
        .collect();
    let (stacks, what) = if leaking.is_empty() {
        (
            report.stacks.clone(),
            "no stack is leaking: all outstanding memory",
        )
    } else {
        (leaking, "outstanding memory of the leaking stacks")
    };
    let view = Report {
        stacks,
        ..report.clone()
    };
    let folded = render_folded(&view);
    let mut lines: Vec<&str> = folded.lines().collect();
    if lines.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("report {id} has no stack holding outstanding memory to draw"),
        ));
    }
    lines.sort_unstable();

    let mut options = Options::default();
    options.title = format!("{} (pid {}): {what}", report.comm, report.pid);
    options.subtitle = Some(format!("leakmon report {id}"));
    options.count_name = "bytes".to_owned();
    options.colors = Palette::Basic(BasicPalette::Mem);
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines, &mut svg)
        .map_err(|err| ApiError::internal(format!("cannot draw the flame graph: {err}")))?;
    Ok(svg)
}

async fn trace(
    State(state): State<ApiState>,
    Pid(pid): Pid,
    Params(params): Params<TraceParams>,
) -> Result<Response, ApiError> {
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

/// A 429 answer telling the client to retry in a second.
fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
}

/// Answers 429 once the requests exceed `daemon.max_requests_per_second` (every endpoint,
/// before authentication, so guessing tokens is slow too).
async fn limit_rate(State(access): State<Access>, request: Request, next: Next) -> Response {
    if access.requests.allow() {
        return next.run(request).await;
    }
    let mut response = too_many(format!(
        "too many requests: the API answers {} a second (daemon.max_requests_per_second)",
        access.max_requests_per_second
    ))
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Rejects a request target longer than [`MAX_URI_BYTES`] (414) or headers larger than
/// [`MAX_HEADER_BYTES`] (431).
async fn limit_head(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("request target of {target} bytes exceeds {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers of {headers} bytes exceed {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Answers 401 unless the request may reach its endpoint (see [`Access`]).
async fn authenticate(State(access): State<Access>, request: Request, next: Next) -> Response {
    if access.admits(request.uri().path(), request.headers()) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API token: send `Authorization: Bearer TOKEN` with the token of \
         daemon.token_file",
    )
    .into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"leakmon\""),
    );
    response
}

/// Rejects a request announcing a body larger than [`MAX_BODY_BYTES`] before any handler runs.
async fn limit_body(request: Request, next: Next) -> Response {
    let length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match length {
        Some(length) if length > MAX_BODY_BYTES as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes exceeds {MAX_BODY_BYTES}"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};

    use axum::body::{Body, to_bytes};
    use axum::http::HeaderMap;
    use tempfile::TempDir;
    use tower::ServiceExt;

    use super::*;
    use crate::config::ReportsConfig;
    use crate::model::Reason;
    use crate::report::pprof::decode_pprof;
    use crate::report::{Frame, StackReport, Totals};
    use crate::testing::{euid, process_view, token_file};

    /// Watched, suspected, traced; has a report with a leaking stack.
    const LEAKY: u32 = 10;
    /// Watched; the daemon refuses to trace it.
    const BUSY: u32 = 11;
    /// Watched; the daemon drops the trace request unanswered.
    const DROPPED: u32 = 12;
    /// Not watched any more (say, OOM-killed); has a report without a leaking stack.
    const GONE: u32 = 13;
    /// Not watched; has a report without any stack holding memory.
    const EMPTY: u32 = 14;
    /// A request rate no test reaches.
    const UNLIMITED: u32 = 1_000_000;
    /// The token of [`token_file`].
    const TOKEN: &str = "s3cr3t-T0ken_value";

    struct Fixture {
        router: Router,
        state: ApiState,
        _dir: TempDir,
    }

    fn view(pid: u32, comm: &str) -> ProcessView {
        ProcessView {
            start_time_ticks: 100,
            unit: Some(format!("{comm}.service")),
            cgroup: Some(format!("/system.slice/{comm}.service")),
            anon_bytes: 1 << 19,
            ..process_view(pid, comm)
        }
    }

    fn snapshot(loaded: bool) -> Snapshot {
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
        }
    }

    fn frame(symbol: &str) -> Frame {
        Frame {
            address: 0x1000,
            symbol: Some(symbol.to_owned()),
            module: Some("/usr/bin/app".to_owned()),
            file: None,
            line: None,
            inlined: false,
        }
    }

    fn stack(bytes: u64, leaking: bool, symbols: &[&str]) -> StackReport {
        StackReport {
            bytes,
            allocations: 3,
            growth_bytes_per_second: if leaking { 100.0 } else { 0.0 },
            oldest_age_seconds: 5.0,
            leaking,
            frames: symbols.iter().map(|s| frame(s)).collect(),
        }
    }

    fn report(pid: u32, comm: &str, stacks: Vec<StackReport>) -> Report {
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

    fn leaky_report() -> Report {
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
    fn spawn_daemon(mut commands: mpsc::Receiver<Command>) {
        tokio::spawn(async move {
            while let Some(Command::Trace {
                pid,
                duration,
                reply,
            }) = commands.recv().await
            {
                match pid {
                    LEAKY => {
                        let _ = reply.send(Ok(TraceAccepted {
                            pid,
                            duration_seconds: duration.as_secs_f64(),
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

    fn fixture_with(snapshot: Snapshot, max_process_series: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = ReportStore::open(dir.path(), ReportsConfig::default()).unwrap();
        store
            .save(&report(
                LEAKY,
                "leaky",
                vec![stack(1, true, &["older_function"])],
            ))
            .unwrap();
        store.save(&leaky_report()).unwrap();
        store
            .save(&report(
                GONE,
                "gone",
                vec![
                    stack(2048, false, &["innocent_function", "main"]),
                    stack(1024, false, &["other_function", "main"]),
                ],
            ))
            .unwrap();
        store.save(&report(EMPTY, "empty", Vec::new())).unwrap();
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

    fn fixture() -> Fixture {
        fixture_with(snapshot(true), 100)
    }

    /// The fixture's state served with `access`.
    fn guarded(fixture: &Fixture, access: Access) -> Router {
        router(ApiState {
            access,
            ..fixture.state.clone()
        })
    }

    /// A router requiring [`TOKEN`].
    fn with_token(fixture: &Fixture) -> Router {
        let path = token_file(fixture._dir.path(), &format!("{TOKEN}\n"), 0o600);
        let token = Token::read_owned_by(&path, euid()).unwrap();
        guarded(fixture, Access::new(Some(token), UNLIMITED))
    }

    async fn call(router: &Router, method: Method, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        send(router, request).await
    }

    async fn send(
        router: &Router,
        request: axum::http::Request<Body>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, headers, body.to_vec())
    }

    async fn get_ok(router: &Router, uri: &str) -> (HeaderMap, Vec<u8>) {
        let (status, headers, body) = call(router, Method::GET, uri).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        (headers, body)
    }

    fn content_type(headers: &HeaderMap) -> &str {
        headers.get(CONTENT_TYPE).unwrap().to_str().unwrap()
    }

    /// Asserts an error answer: the status, a JSON content type and a one-line message.
    async fn expect_error(
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
    async fn report_in_every_format() {
        let fixture = fixture();
        let router = &fixture.router;
        let expected = leaky_report();

        for uri in [
            "/api/v1/processes/10/report",
            "/api/v1/processes/10/report?format=json",
        ] {
            let (headers, body) = get_ok(router, uri).await;
            assert_eq!(content_type(&headers), "application/json");
            let report: Report = serde_json::from_slice(&body).unwrap();
            assert_eq!(report, expected, "the latest report is served");
            let id = headers.get(REPORT_ID_HEADER).unwrap().to_str().unwrap();
            assert!(id.contains("-10-"), "{id}");
        }

        let (headers, body) = get_ok(router, "/api/v1/processes/10/report?format=pprof").await;
        assert_eq!(content_type(&headers), "application/octet-stream");
        assert_eq!(&body[..2], [0x1f, 0x8b], "gzip magic");
        assert_eq!(decode_pprof(&body).unwrap().sample.len(), 2);
        let disposition = headers.get(CONTENT_DISPOSITION).unwrap().to_str().unwrap();
        assert!(disposition.ends_with(".pb.gz\""), "{disposition}");

        let (headers, body) = get_ok(router, "/api/v1/processes/10/report?format=folded").await;
        assert!(content_type(&headers).starts_with("text/plain"));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "main;handle_request;leaky_function 1048576\nmain;innocent_function 1024\n"
        );

        let (headers, body) = get_ok(router, "/api/v1/processes/10/report?format=text").await;
        assert!(content_type(&headers).starts_with("text/plain"));
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("LEAKING") && text.contains("leaky_function"),
            "{text}"
        );

        // A process that is gone keeps its report.
        let (_, body) = get_ok(router, "/api/v1/processes/13/report").await;
        assert_eq!(serde_json::from_slice::<Report>(&body).unwrap().pid, GONE);
    }

    #[tokio::test]
    async fn svg_flame_graph_of_the_leaking_stacks() {
        let fixture = fixture();
        let (headers, body) =
            get_ok(&fixture.router, "/api/v1/processes/10/report?format=svg").await;
        assert_eq!(content_type(&headers), "image/svg+xml");
        let svg = String::from_utf8(body).unwrap();
        assert!(
            svg.starts_with("<?xml") || svg.starts_with("<svg"),
            "{}",
            &svg[..100]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("leaky_function"));
        assert!(
            !svg.contains("innocent_function"),
            "only the leaking stacks are drawn"
        );
        assert!(svg.contains("leaking stacks"));
        // The command name is escaped, so the document stays well-formed.
        assert!(!svg.contains("a<b>&c") && svg.contains("a&lt;b&gt;&amp;c"));

        let (_, body) = get_ok(&fixture.router, "/api/v1/processes/13/report?format=svg").await;
        let svg = String::from_utf8(body).unwrap();
        assert!(svg.contains("no stack is leaking"));
        assert!(svg.contains("innocent_function") && svg.contains("other_function"));

        expect_error(
            &fixture.router,
            Method::GET,
            "/api/v1/processes/14/report?format=svg",
            StatusCode::NOT_FOUND,
        )
        .await;
    }

    #[tokio::test]
    async fn report_errors() {
        let fixture = fixture();
        let router = &fixture.router;
        let message = expect_error(
            router,
            Method::GET,
            "/api/v1/processes/999/report",
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(message.contains("no report for process 999"), "{message}");
        for query in [
            "format=xml",
            "format=JSON",
            "format=",
            "top=5",
            "format=json&format=text",
            "format=json&x",
        ] {
            let uri = format!("/api/v1/processes/10/report?{query}");
            expect_error(router, Method::GET, &uri, StatusCode::BAD_REQUEST).await;
        }
        // The format is checked before the store is.
        expect_error(
            router,
            Method::GET,
            "/api/v1/processes/999/report?format=xml",
            StatusCode::BAD_REQUEST,
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
            let (status, headers, body) = call(router, Method::POST, uri).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{uri}");
            assert_eq!(content_type(&headers), "application/json");
            let accepted: TraceAccepted = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                accepted,
                TraceAccepted {
                    pid: LEAKY,
                    duration_seconds: seconds
                }
            );
        }

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

    /// GET `uri` with an `Authorization` header of `authorization`, when given.
    async fn get_with(
        router: &Router,
        uri: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = axum::http::Request::builder().uri(uri);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        send(router, request.body(Body::empty()).unwrap()).await
    }

    #[tokio::test]
    async fn token_guards_every_endpoint_but_metrics_and_healthz() {
        let fixture = fixture();
        let router = with_token(&fixture);
        let wrong = [
            None,
            Some(String::new()),
            Some("Bearer".to_owned()),
            Some("Bearer ".to_owned()),
            Some("Bearer wrong".to_owned()),
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
            Some(format!("Bearer {TOKEN}x")),
            Some(format!("Bearer {}", TOKEN.to_uppercase())),
            Some(format!("Basic {TOKEN}")),
            Some(format!("Bearer{TOKEN}")),
            Some(TOKEN.to_owned()),
        ];
        for uri in [
            "/api/v1/status",
            "/api/v1/processes",
            "/api/v1/processes/10",
            "/api/v1/processes/10/report?format=svg",
            "/no/such/route",
            "/metrics/",
            "/healthz/x",
        ] {
            for authorization in &wrong {
                let (status, headers, body) =
                    get_with(&router, uri, authorization.as_deref()).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {authorization:?}");
                assert_eq!(content_type(&headers), "application/json");
                assert_eq!(
                    headers.get(WWW_AUTHENTICATE).unwrap(),
                    "Bearer realm=\"leakmon\""
                );
                let error: ErrorBody = serde_json::from_slice(&body).unwrap();
                assert!(error.error.contains("API token"), "{}", error.error);
                assert!(!error.error.contains(TOKEN), "the token is never echoed");
            }
        }
        for authorization in [format!("Bearer {TOKEN}"), format!("bearer  {TOKEN} ")] {
            let (status, _, body) =
                get_with(&router, "/api/v1/processes/10", Some(&authorization)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let one: ProcessView = serde_json::from_slice(&body).unwrap();
            assert_eq!(one.pid, LEAKY);
        }
        for uri in ["/metrics", "/healthz"] {
            let (status, _, _) = get_with(&router, uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri} is open");
            let (status, _, _) = get_with(&router, uri, Some("Bearer wrong")).await;
            assert_eq!(status, StatusCode::OK, "{uri} ignores the header");
        }

        let post = |authorization: Option<String>| {
            let mut request = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/api/v1/processes/10/trace?duration=5");
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            request.body(Body::empty()).unwrap()
        };
        let (status, _, _) = send(&router, post(None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = send(&router, post(Some(format!("Bearer {TOKEN}")))).await;
        assert_eq!(status, StatusCode::ACCEPTED);

        // Without a token, nothing is asked.
        let (status, _, _) = get_with(&fixture.router, "/api/v1/status", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn token_comparison() {
        let token = Token(b"abcdef".as_slice().into());
        assert!(token.matches(b"abcdef"));
        for wrong in [
            b"".as_slice(),
            b"abcde",
            b"abcdeg",
            b"abcdef\0",
            b"abcdefabcdef",
            b"bbcdef",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(hidden)");
        assert_eq!(bearer(b"Bearer x"), Some(b"x".as_slice()));
        assert_eq!(bearer(b"BEARER x "), Some(b"x".as_slice()));
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Basic xyzxyzx"), None);
    }

    #[test]
    fn token_file_must_be_root_only_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let me = euid();
        let good = token_file(dir.path(), &format!("  {TOKEN}\r\n"), 0o400);
        let token = Token::read_owned_by(&good, me).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));

        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o610] {
            let path = token_file(dir.path(), TOKEN, mode);
            let error = Token::read_owned_by(&path, me).unwrap_err();
            assert!(
                matches!(error, AccessError::Mode { mode: got, .. } if got == mode),
                "{mode:o}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains("readable by root only"), "{message}");
            assert!(message.contains(&format!("0{mode:o}")), "{message}");
        }
        let error = Token::read_owned_by(&good, me + 1).unwrap_err();
        assert!(
            matches!(error, AccessError::Owner { uid, .. } if uid == me),
            "{error:?}"
        );
        for empty in ["", "\n", " \t\r\n"] {
            let path = token_file(dir.path(), empty, 0o600);
            let error = Token::read_owned_by(&path, me).unwrap_err();
            assert!(matches!(error, AccessError::Empty { .. }), "{error:?}");
        }
        for malformed in [
            "two words".to_owned(),
            "two\nlines".to_owned(),
            "caf\u{e9}".to_owned(),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            let path = token_file(dir.path(), &malformed, 0o600);
            let error = Token::read_owned_by(&path, me).unwrap_err();
            assert!(matches!(error, AccessError::Malformed { .. }), "{error:?}");
        }
        let long = token_file(dir.path(), &"x".repeat(MAX_TOKEN_BYTES), 0o600);
        Token::read_owned_by(&long, me).unwrap();
        let error = Token::read_owned_by(&dir.path().join("missing"), me).unwrap_err();
        assert!(matches!(error, AccessError::Read { .. }), "{error:?}");
        assert!(!error.to_string().contains('\n'), "{error}");
    }

    #[test]
    fn startup_refuses_a_group_or_world_readable_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), TOKEN, 0o644);
        let config = DaemonConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            token_file: Some(path.clone()),
            ..DaemonConfig::default()
        };
        let message = Access::from_config(&config).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: the API token file must be readable by root only, but its mode is 0644 \
                 (chmod 600 it)",
                path.display()
            )
        );
        // Root-only and owned by root: accepted when the tests run as root.
        let path = token_file(dir.path(), TOKEN, 0o600);
        let result = Access::from_config(&DaemonConfig {
            token_file: Some(path),
            ..config
        });
        match euid() {
            ROOT_UID => assert!(result.unwrap().token.is_some()),
            _ => assert!(matches!(result, Err(AccessError::Owner { .. }))),
        }
    }

    #[test]
    fn off_host_without_token_needs_the_opt_out() {
        let off_host = DaemonConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9464)),
            ..DaemonConfig::default()
        };
        let error = Access::from_config(&off_host).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refusing to serve stack reports unauthenticated on 0.0.0.0:9464: set \
             daemon.token_file, or daemon.allow_unauthenticated = true"
        );
        let opted_out = Access::from_config(&DaemonConfig {
            allow_unauthenticated: true,
            ..off_host
        })
        .unwrap();
        assert!(opted_out.token.is_none());
        let local = Access::from_config(&DaemonConfig::default()).unwrap();
        assert!(local.token.is_none());
        assert_eq!(local.max_requests_per_second, 50);
    }

    #[test]
    fn token_bucket_refills_at_its_rate_up_to_its_capacity() {
        let mut bucket = TokenBucket::new(50.0, 100.0);
        let start = bucket.updated;
        assert!((0..100).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(!bucket.take(start + Duration::from_millis(10)));
        assert!(bucket.take(start + Duration::from_millis(21)));
        assert!(!bucket.take(start + Duration::from_millis(21)));
        let later = start + Duration::from_secs(3600);
        assert!((0..100).all(|_| bucket.take(later)), "refilled");
        assert!(!bucket.take(later), "but not beyond its capacity");
        // A clock going backwards takes nothing and gives nothing.
        assert!(!bucket.take(start));
    }

    #[tokio::test]
    async fn requests_beyond_the_burst_are_answered_429() {
        let fixture = fixture();
        let access = Access::new(None, 1);
        let router = guarded(&fixture, access.clone());
        for uri in ["/healthz", "/api/v1/status"] {
            let (status, _, _) = get_with(&router, uri, None).await;
            assert_eq!(status, StatusCode::OK, "{uri} is within the burst of 2");
        }
        for uri in ["/healthz", "/metrics", "/api/v1/status", "/no/such/route"] {
            let (status, headers, body) = get_with(&router, uri, None).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{uri}");
            assert_eq!(headers.get(RETRY_AFTER).unwrap(), "1");
            let error: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert!(
                error.error.contains("daemon.max_requests_per_second"),
                "{}",
                error.error
            );
        }
        // Clones of an Access share its bucket.
        let (status, _, _) = get_with(&guarded(&fixture, access), "/healthz", None).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }

    #[tokio::test]
    async fn trace_requests_beyond_their_burst_are_answered_429() {
        let fixture = fixture();
        let router = &fixture.router;
        for _ in 0..TRACE_REQUEST_BURST as usize {
            let (status, _, _) = call(
                router,
                Method::POST,
                "/api/v1/processes/10/trace?duration=5",
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        let message = expect_error(
            router,
            Method::POST,
            "/api/v1/processes/10/trace?duration=5",
            StatusCode::TOO_MANY_REQUESTS,
        )
        .await;
        assert!(message.contains("too many trace requests"), "{message}");
        // Other requests still go through, and bad trace requests are still answered 400.
        get_ok(router, "/api/v1/status").await;
        expect_error(
            router,
            Method::POST,
            "/api/v1/processes/10/trace?duration=0",
            StatusCode::BAD_REQUEST,
        )
        .await;
    }

    #[tokio::test]
    async fn long_targets_and_large_headers_are_refused() {
        let fixture = fixture();
        let router = &fixture.router;
        let padding = "x".repeat(MAX_URI_BYTES);
        let message = expect_error(
            router,
            Method::GET,
            &format!("/api/v1/processes?{padding}"),
            StatusCode::URI_TOO_LONG,
        )
        .await;
        assert!(!message.contains("xxxx"), "the target is not echoed");
        let fits = format!("/healthz?{}", &padding[..MAX_URI_BYTES - "/healthz?".len()]);
        expect_error(router, Method::GET, &fits, StatusCode::BAD_REQUEST).await;

        let request = |bytes: usize| {
            axum::http::Request::builder()
                .uri("/healthz")
                .header("x-padding", "y".repeat(bytes))
                .body(Body::empty())
                .unwrap()
        };
        let (status, headers, _) = send(router, request(MAX_HEADER_BYTES)).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(content_type(&headers), "application/json");
        let (status, _, _) = send(router, request(MAX_HEADER_BYTES - "x-padding".len())).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_over_tcp_until_shutdown() {
        let fixture = fixture();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, fixture.state.clone(), async {
            let _ = stopped.await;
        }));

        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("\r\n\r\nok"), "{response}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
