//! Who may call the API and how much: the API token (read from `daemon.token_file`, compared in
//! constant time), the refusal to serve off-host without one, the token buckets bounding the
//! request rate and the traces requested, and the middleware that answers 401, 413, 414, 429
//! and 431.

use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use log::warn;

use super::responses::{ApiError, too_many};
use crate::config::DaemonConfig;

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
pub(super) struct Limiter(Arc<Mutex<TokenBucket>>);

impl Limiter {
    fn new(per_second: f64, capacity: f64) -> Self {
        Self(Arc::new(Mutex::new(TokenBucket::new(per_second, capacity))))
    }

    /// Whether a request may go ahead now.
    pub(super) fn allow(&self) -> bool {
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
    pub(super) traces: Limiter,
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

/// Answers 429 once the requests exceed `daemon.max_requests_per_second` (every endpoint,
/// before authentication, so guessing tokens is slow too).
pub(super) async fn limit_rate(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
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
pub(super) async fn limit_head(request: Request, next: Next) -> Response {
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
pub(super) async fn authenticate(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
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
pub(super) async fn limit_body(request: Request, next: Next) -> Response {
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
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, Method};

    use super::*;
    use crate::model::ProcessView;
    use crate::serve::api::ErrorBody;
    use crate::serve::api::fixture::{
        LEAKY, TOKEN, call, content_type, expect_error, fixture, get_ok, guarded, send, with_token,
    };
    use crate::testing::{euid, token_file};

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
}
