//! A small blocking HTTP/1.1 client for the daemon's API (`leakmon status`, `report`, `trace`
//! and `top` use it): plain HTTP over [`TcpStream`] to a local daemon, with connect and read
//! timeouts, `Content-Length`, chunked and read-to-close bodies, the API token, and typed
//! one-line errors.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{Method, ProcessView};
use crate::report::OutputFormat;
use crate::serve::api::Token;

/// How long connecting to the daemon may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read from or write to the daemon may block by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted.
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// Longest status or header line accepted.
const MAX_LINE_BYTES: u64 = 64 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 100;

/// Why a call to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error(
        "cannot reach the leakmon daemon at {addr}: {} (is `leakmon run` running?)",
        describe_io(.error)
    )]
    Unreachable {
        /// The daemon's address.
        addr: SocketAddr,
        /// What connecting failed with.
        error: io::Error,
    },
    /// The daemon did not answer in time.
    #[error("the leakmon daemon at {addr} did not answer within {} s", .timeout.as_secs_f64())]
    TimedOut {
        /// The daemon's address.
        addr: SocketAddr,
        /// The read timeout that elapsed.
        timeout: Duration,
    },
    /// Sending the request or reading the answer failed after connecting.
    #[error("lost the connection to the leakmon daemon at {addr}: {}", describe_io(.error))]
    Connection {
        /// The daemon's address.
        addr: SocketAddr,
        /// What the read or write failed with.
        error: io::Error,
    },
    /// The answer is not valid HTTP/1.1.
    #[error("malformed HTTP answer from the leakmon daemon at {addr}: {detail}")]
    Malformed {
        /// The daemon's address.
        addr: SocketAddr,
        /// What is wrong with it.
        detail: String,
    },
    /// The daemon requires the API token and none was sent.
    #[error(
        "the leakmon daemon at {addr} requires its API token: pass --token-file FILE, or \
         --config with the daemon's configuration (daemon.token_file)"
    )]
    TokenRequired {
        /// The daemon's address.
        addr: SocketAddr,
    },
    /// The daemon answered with a 4xx or 5xx status; `message` is its `{"error": ...}` text.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The daemon's error text, or a description of the status when it sent none.
        message: String,
    },
    /// A successful answer's JSON body does not have the expected shape.
    #[error("cannot decode the leakmon daemon's answer to {request}: {error}")]
    Decode {
        /// The request, e.g. `GET /api/v1/processes`.
        request: String,
        /// What decoding failed with.
        error: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::TokenRequired { .. } => Some(401),
            _ => None,
        }
    }
}

/// An I/O error in lowercase words without the `(os error N)` suffix.
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_owned(),
        io::ErrorKind::UnexpectedEof => "the daemon closed the connection early".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        _ => {
            let text = error.to_string();
            let text = text
                .find(" (os error")
                .map_or(text.as_str(), |end| &text[..end]);
            let mut chars = text.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_lowercase().chain(chars).collect()
            })
        }
    }
}

/// The formats `GET /api/v1/processes/{pid}/report` serves: the [`OutputFormat`]s and an SVG
/// flame graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// The terminal summary.
    Text,
    /// The JSON contract.
    Json,
    /// Folded stacks.
    Folded,
    /// A gzipped pprof profile.
    Pprof,
    /// A flame graph.
    Svg,
}

impl ReportFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [ReportFormat; 5] = [
        ReportFormat::Text,
        ReportFormat::Json,
        ReportFormat::Folded,
        ReportFormat::Pprof,
        ReportFormat::Svg,
    ];

    /// The lowercase name, as in the `format` query parameter and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
            Self::Folded => "folded",
            Self::Pprof => "pprof",
            Self::Svg => "svg",
        }
    }
}

impl From<OutputFormat> for ReportFormat {
    fn from(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Text => Self::Text,
            OutputFormat::Json => Self::Json,
            OutputFormat::Folded => Self::Folded,
            OutputFormat::Pprof => Self::Pprof,
        }
    }
}

impl fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the [`ReportFormat`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format `{0}` (expected text, json, folded, pprof or svg)")]
pub struct UnknownReportFormat(pub String);

impl FromStr for ReportFormat {
    type Err = UnknownReportFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|format| format.name() == s)
            .ok_or_else(|| UnknownReportFormat(s.to_owned()))
    }
}

/// The daemon's answer to `POST /api/v1/processes/{pid}/trace`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TraceStarted {
    /// The process being traced.
    pub pid: u32,
    /// The length of the trace window.
    pub duration_seconds: f64,
    /// How it is traced (absent from daemons before the page-fault method).
    #[serde(default)]
    pub method: Method,
}

/// One HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    connect_timeout: Duration,
    read_timeout: Duration,
    token: Option<Token>,
}

impl Client {
    /// A client of the daemon listening on `addr`, with the default timeouts.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            token: None,
        }
    }

    /// The same client sending `token` as `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// The same client with other timeouts: `connect` bounds connecting, `read` each read and
    /// write.
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self
    }

    /// The daemon's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET /api/v1/processes`: every watched process, most relevant first.
    pub fn processes(&self) -> Result<Vec<ProcessView>, ClientError> {
        self.get_json("/api/v1/processes")
    }

    /// `GET /api/v1/status`: the daemon's health, read loosely (its shape may grow).
    pub fn status(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json("/api/v1/status")
    }

    /// `GET /api/v1/processes/{pid}/report?format=...[&method=...]`: the latest report of `pid`
    /// (by `method`, when given), encoded.
    pub fn report(
        &self,
        pid: u32,
        format: ReportFormat,
        method: Option<Method>,
    ) -> Result<Vec<u8>, ClientError> {
        let by = method.map_or_else(String::new, |method| format!("&method={method}"));
        let path = format!("/api/v1/processes/{pid}/report?format={format}{by}");
        Ok(self.request("GET", &path)?.body)
    }

    /// `POST /api/v1/processes/{pid}/trace?duration=SECS`: starts tracing `pid` for `duration`
    /// (rounded up to whole seconds).
    pub fn start_trace(&self, pid: u32, duration: Duration) -> Result<TraceStarted, ClientError> {
        let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        let path = format!("/api/v1/processes/{pid}/trace?duration={seconds}");
        let response = self.request("POST", &path)?;
        decode(&format!("POST {path}"), &response.body)
    }

    /// `GET /healthz`: whether the daemon answers.
    pub fn healthz(&self) -> Result<(), ClientError> {
        self.request("GET", "/healthz").map(drop)
    }

    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.request("GET", path)?;
        decode(&format!("GET {path}"), &response.body)
    }

    /// Sends one request and reads its answer; a 4xx or 5xx answer is an [`ClientError::Api`].
    fn request(&self, method: &str, path: &str) -> Result<Response, ClientError> {
        let addr = self.addr;
        let stream = TcpStream::connect_timeout(&addr, self.connect_timeout)
            .map_err(|error| ClientError::Unreachable { addr, error })?;
        let io_error = |error: io::Error| match error.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ClientError::TimedOut {
                addr,
                timeout: self.read_timeout,
            },
            _ => ClientError::Connection { addr, error },
        };
        stream
            .set_read_timeout(Some(self.read_timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.read_timeout)))
            .map_err(io_error)?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: leakmon/{}\r\n\
             Accept: */*\r\nConnection: close\r\nContent-Length: 0\r\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes();
        if let Some(token) = &self.token {
            request.extend_from_slice(b"Authorization: Bearer ");
            request.extend_from_slice(token.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        (&stream)
            .write_all(&request)
            .and_then(|()| (&stream).flush())
            .map_err(io_error)?;
        let response =
            read_response(&mut BufReader::new(&stream), method == "HEAD").map_err(|error| {
                match error {
                    ReadError::Io(error) => io_error(error),
                    ReadError::Malformed(detail) => ClientError::Malformed { addr, detail },
                }
            })?;
        if response.status == 401 && self.token.is_none() {
            return Err(ClientError::TokenRequired { addr });
        }
        if response.status >= 400 {
            return Err(ClientError::Api {
                status: response.status,
                message: error_message(response.status, &response.body),
            });
        }
        Ok(response)
    }
}

fn decode<T: serde::de::DeserializeOwned>(request: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|error| ClientError::Decode {
        request: request.to_owned(),
        error,
    })
}

/// The daemon's `{"error": "..."}` text, or the status and the first line of the body.
fn error_message(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    if let Ok(ErrorBody { error }) = serde_json::from_slice(body) {
        return error;
    }
    let text = String::from_utf8_lossy(body);
    let first = text.lines().map(str::trim).find(|line| !line.is_empty());
    match first {
        Some(line) => {
            let line: String = line.chars().take(200).collect();
            format!("the leakmon daemon answered HTTP {status}: {line}")
        }
        None => format!("the leakmon daemon answered HTTP {status}"),
    }
}

/// Why an answer could not be read.
#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

fn malformed<T>(detail: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError::Malformed(detail.into()))
}

/// Reads one HTTP/1.x answer, skipping interim 1xx answers.
fn read_response(reader: &mut impl BufRead, head_only: bool) -> Result<Response, ReadError> {
    loop {
        let status_line = read_line(reader)?;
        let status = parse_status_line(&status_line)?;
        let headers = read_headers(reader)?;
        if (100..200).contains(&status) {
            continue;
        }
        let no_body = head_only || status == 204 || status == 304;
        let body = if no_body {
            Vec::new()
        } else if header(&headers, "transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"))
        {
            read_chunked(reader)?
        } else if let Some(length) = header(&headers, "content-length") {
            let Ok(length) = length.parse::<usize>() else {
                return malformed(format!("bad Content-Length `{length}`"));
            };
            if length > MAX_BODY_BYTES {
                return malformed(format!("body of {length} bytes is too large"));
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            body
        } else {
            let mut body = Vec::new();
            reader
                .take(MAX_BODY_BYTES as u64 + 1)
                .read_to_end(&mut body)?;
            if body.len() > MAX_BODY_BYTES {
                return malformed("body is too large");
            }
            body
        };
        return Ok(Response { status, body });
    }
}

/// One CRLF- or LF-terminated line without its terminator; end of stream is an error.
fn read_line(reader: &mut impl BufRead) -> Result<String, ReadError> {
    let mut line = Vec::new();
    reader.take(MAX_LINE_BYTES).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        if line.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        if line.len() as u64 >= MAX_LINE_BYTES {
            return malformed("line too long");
        }
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(line) {
        Ok(line) => Ok(line),
        Err(_) => malformed("a status or header line is not UTF-8"),
    }
}

/// The status code of `HTTP/1.x CODE REASON`.
fn parse_status_line(line: &str) -> Result<u16, ReadError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return malformed(format!("bad status line `{line}`"));
    }
    match code.parse::<u16>() {
        Ok(code) if (100..600).contains(&code) => Ok(code),
        _ => malformed(format!("bad status line `{line}`")),
    }
}

/// Header lines up to the empty line, names lowercased.
fn read_headers(reader: &mut impl BufRead) -> Result<Vec<(String, String)>, ReadError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return malformed("too many headers");
        }
        let Some((name, value)) = line.split_once(':') else {
            return malformed(format!("bad header line `{line}`"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A chunked body: hex sizes (extensions ignored), data and CRLF, then a zero size and trailers.
fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return malformed(format!("bad chunk size `{line}`"));
        };
        if size == 0 {
            read_headers(reader)?;
            return Ok(body);
        }
        if body.len().saturating_add(size) > MAX_BODY_BYTES {
            return malformed("body is too large");
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return malformed("chunk data longer than its size");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::{self, JoinHandle};

    use super::*;

    /// Serves `answers` in turn, one per connection, and returns the requests it read.
    fn serve(answers: Vec<Vec<u8>>) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    request.push_str(&line);
                }
                requests.push(request);
                (&stream).write_all(&answer).unwrap();
            }
            requests
        });
        (addr, handle)
    }

    fn json_answer(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn process_json(pid: u32, comm: &str) -> String {
        format!(
            r#"{{"pid":{pid},"start_time_ticks":1,"comm":"{comm}","unit":null,"cgroup":null,
            "rss_bytes":1048576,"vsz_bytes":2097152,"anon_bytes":0,"swap_bytes":0,"threads":1,
            "open_fds":3,"rss_growth_bytes_per_second":10.0,"vsz_growth_bytes_per_second":0.0,
            "fd_growth_per_second":0.0,"suspected":false,"reasons":[],
            "seconds_until_exhaustion":null,"traced":false,"outstanding_bytes":null,
            "latest_report":null}}"#
        )
    }

    #[test]
    fn processes_with_content_length() {
        let body = format!("[{},{}]", process_json(1, "init"), process_json(42, "app"));
        let (addr, server) = serve(vec![json_answer("200 OK", &body)]);
        let processes = Client::new(addr).processes().unwrap();
        assert_eq!(processes.len(), 2);
        assert_eq!(processes[1].comm, "app");
        assert_eq!(processes[1].pid, 42);
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("GET /api/v1/processes HTTP/1.1\r\n"));
        assert!(requests[0].contains(&format!("Host: {addr}\r\n")));
    }

    #[test]
    fn chunked_report_with_extensions_and_trailers() {
        let answer = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
            7\r\nleakmon\r\n1;ext=1\r\n \r\n6\r\nreport\r\n0\r\nX-Trailer: 1\r\n\r\n"
            .to_vec();
        let (addr, server) = serve(vec![answer]);
        let body = Client::new(addr)
            .report(42, ReportFormat::Svg, None)
            .unwrap();
        assert_eq!(body, b"leakmon report");
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("GET /api/v1/processes/42/report?format=svg HTTP/1.1"));
    }

    #[test]
    fn body_read_to_close_without_length() {
        let (addr, server) = serve(vec![b"HTTP/1.0 200 OK\r\n\r\nok".to_vec()]);
        Client::new(addr).healthz().unwrap();
        server.join().unwrap();
    }

    #[test]
    fn not_found_carries_the_daemons_error_text() {
        let (addr, server) = serve(vec![
            json_answer("404 Not Found", r#"{"error": "no report for pid 42 yet"}"#),
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nboom\nmore".to_vec(),
        ]);
        let client = Client::new(addr);
        let error = client.report(42, ReportFormat::Json, None).unwrap_err();
        assert_eq!(error.status(), Some(404));
        assert_eq!(error.to_string(), "no report for pid 42 yet");
        let error = client.status().unwrap_err();
        assert_eq!(error.status(), Some(500));
        assert_eq!(
            error.to_string(),
            "the leakmon daemon answered HTTP 500: boom"
        );
        server.join().unwrap();
    }

    #[test]
    fn trace_posts_whole_seconds() {
        let (addr, server) = serve(vec![json_answer(
            "202 Accepted",
            r#"{"pid": 42, "duration_seconds": 2}"#,
        )]);
        let started = Client::new(addr)
            .start_trace(42, Duration::from_millis(1500))
            .unwrap();
        assert_eq!(
            started,
            TraceStarted {
                pid: 42,
                duration_seconds: 2.0,
                method: Method::Allocations,
            }
        );
        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("POST /api/v1/processes/42/trace?duration=2 HTTP/1.1"));
        assert!(requests[0].contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn refused_connection_names_the_address_and_the_remedy() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = Client::new(addr).processes().unwrap_err();
        assert!(
            matches!(error, ClientError::Unreachable { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "cannot reach the leakmon daemon at {addr}: connection refused \
                 (is `leakmon run` running?)"
            )
        );
    }

    #[test]
    fn silent_daemon_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client =
            Client::new(addr).with_timeouts(Duration::from_secs(1), Duration::from_millis(100));
        let error = client.healthz().unwrap_err();
        assert!(matches!(error, ClientError::TimedOut { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("the leakmon daemon at {addr} did not answer within 0.1 s")
        );
        drop(listener);
    }

    #[test]
    fn malformed_and_undecodable_answers() {
        let (addr, server) = serve(vec![
            b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(),
            json_answer("200 OK", r#"{"not": "a list"}"#),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
        ]);
        let client = Client::new(addr);
        let error = client.healthz().unwrap_err();
        assert!(matches!(error, ClientError::Malformed { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("bad status line `SSH-2.0-OpenSSH`")
        );
        let error = client.processes().unwrap_err();
        assert!(matches!(error, ClientError::Decode { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with(
                "cannot decode the leakmon daemon's answer to GET /api/v1/processes: "
            )
        );
        let error = client.healthz().unwrap_err();
        assert!(error.to_string().contains("bad chunk size `zz`"), "{error}");
        let error = client.healthz().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "lost the connection to the leakmon daemon at {addr}: \
                 the daemon closed the connection early"
            )
        );
        server.join().unwrap();
    }

    #[test]
    fn the_token_goes_in_the_authorization_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::testing::token_file(dir.path(), "s3cret\n", 0o600);
        let token = Token::read_owned_by(&path, crate::testing::euid()).unwrap();
        let (addr, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            json_answer(
                "401 Unauthorized",
                r#"{"error": "missing or wrong API token"}"#,
            ),
            json_answer(
                "401 Unauthorized",
                r#"{"error": "missing or wrong API token"}"#,
            ),
        ]);
        let with_token = Client::new(addr).with_token(token);
        with_token.healthz().unwrap();
        let error = with_token.status().unwrap_err();
        assert_eq!(error.to_string(), "missing or wrong API token");
        let error = Client::new(addr).status().unwrap_err();
        assert!(
            matches!(error, ClientError::TokenRequired { .. }),
            "{error:?}"
        );
        assert_eq!(error.status(), Some(401));
        assert_eq!(
            error.to_string(),
            format!(
                "the leakmon daemon at {addr} requires its API token: pass --token-file FILE, \
                 or --config with the daemon's configuration (daemon.token_file)"
            )
        );
        let requests = server.join().unwrap();
        assert!(requests[0].contains("Authorization: Bearer s3cret\r\n"));
        assert!(!requests[2].contains("Authorization"));
    }

    #[test]
    fn report_format_names_round_trip() {
        for format in ReportFormat::ALL {
            assert_eq!(format.to_string().parse::<ReportFormat>(), Ok(format));
        }
        for format in OutputFormat::ALL {
            assert_eq!(ReportFormat::from(format).name(), format.name());
        }
        assert_eq!(
            "png".parse::<ReportFormat>(),
            Err(UnknownReportFormat("png".to_owned()))
        );
    }

    #[test]
    fn io_errors_read_as_short_phrases() {
        assert_eq!(
            describe_io(&io::Error::from_raw_os_error(libc::EHOSTUNREACH)),
            "no route to host"
        );
        assert_eq!(
            describe_io(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            "connection refused"
        );
    }
}
