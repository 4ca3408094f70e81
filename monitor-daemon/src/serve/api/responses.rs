//! What the API answers: the JSON bodies of its answers, the one-line JSON error every 4xx and
//! 5xx carries, and a stored report in each format it is served in, the SVG flame graph among
//! them.

use std::fmt;

use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};
use serde::{Deserialize, Serialize};

use crate::model::{Method, OomKill, ProbeHealth, StoreHealth};
use crate::report::folded::render_folded;
use crate::report::{OutputFormat, Report, encode};
use crate::serve::store::{ReportStore, StoreError};

/// Stacks listed by the text format of a report.
const TEXT_TOP_STACKS: usize = 20;
/// Response header naming the stored report served.
const REPORT_ID_HEADER: HeaderName = HeaderName::from_static("x-leakmon-report-id");

/// A trace the daemon accepted (the body of a 202 answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceAccepted {
    /// The process being traced.
    pub pid: u32,
    /// Length of the trace window.
    pub duration_seconds: f64,
    /// How it is traced.
    #[serde(default)]
    pub method: Method,
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
    /// OOM kills of watched processes since the daemon started.
    #[serde(default)]
    pub oom_kills_total: u64,
    /// The latest OOM kills, newest first, with the culprit stack of each one's report.
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
    /// Writing reports to the state directory.
    #[serde(default)]
    pub report_store: StoreHealth,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, on one line.
    pub error: String,
}

/// An error answer.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn internal(message: impl fmt::Display) -> Self {
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

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A 429 answer telling the client to retry in a second.
pub(super) fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
}

/// The formats a report is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReportFormat {
    Encoded(OutputFormat),
    Svg,
}

impl ReportFormat {
    pub(super) fn parse(name: Option<&str>) -> Result<Self, ApiError> {
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

/// The latest report of `pid` in `format`, from memory or disk (blocking: reads files, draws
/// SVG).
pub(super) fn report_response(
    store: &ReportStore,
    pid: u32,
    current_start: Option<u64>,
    format: ReportFormat,
    method: Option<Method>,
) -> Result<Response, ApiError> {
    let not_found = || {
        let by = method.map_or_else(String::new, |method| format!(" by {method}"));
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no report{by} for process {pid}"),
        )
    };
    let (id, report) = store.latest_for(pid, method)?.ok_or_else(not_found)?;
    if let Some(start) = current_start
        && let Some(reported) = report.start_time_ticks
        && reported != start
    {
        return Err(not_found());
    }
    let (content_type, body) = match format {
        ReportFormat::Encoded(OutputFormat::Pprof) => {
            ("application/octet-stream", store.read_pprof(&id)?)
        }
        ReportFormat::Encoded(output) => {
            let body = encode(&report, output, TEXT_TOP_STACKS).map_err(ApiError::internal)?;
            let content_type = match output {
                OutputFormat::Json => "application/json",
                OutputFormat::Text | OutputFormat::Folded | OutputFormat::Pprof => {
                    "text/plain; charset=utf-8"
                }
            };
            (content_type, body)
        }
        ReportFormat::Svg => ("image/svg+xml", flame_graph(&id, &report)?),
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

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::*;
    use crate::report::pprof::decode_pprof;
    use crate::serve::api::fixture::{
        GONE, content_type, expect_error, fixture, get_ok, leaky_report,
    };

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
}
