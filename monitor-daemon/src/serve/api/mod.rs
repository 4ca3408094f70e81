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
//!
//! The routes and their handlers are in `routes`, authentication and limits in `access`, and
//! the bodies and errors of the answers in `responses`; this module holds what they share.

mod access;
#[cfg(test)]
mod fixture;
mod responses;
mod routes;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use self::access::{
    Access, AccessError, BURST_SECONDS, MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_TOKEN_BYTES,
    MAX_URI_BYTES, TRACE_REQUEST_BURST, TRACE_REQUESTS_PER_SECOND, Token,
};
pub use self::responses::{ErrorBody, Status, TraceAccepted};
pub use self::routes::{
    DEFAULT_TRACE_SECONDS, MAX_PID, MAX_TRACE_SECONDS, MIN_TRACE_SECONDS, router,
};
use crate::model::Snapshot;
use crate::serve::store::ReportStore;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The latest snapshot the daemon published.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// The stored reports.
    pub store: Arc<ReportStore>,
    /// Requests to the daemon's main loop.
    pub commands: mpsc::Sender<Command>,
    /// Processes with per-process metric series (see [`metrics::render`](super::metrics::render)).
    pub max_process_series: usize,
    /// Who may call, and how often.
    pub access: Access,
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
        /// How, when the request says (else as `trace.method` says).
        method: Option<crate::model::Method>,
        /// The answer: the accepted trace, or why not (served as 409 Conflict).
        reply: oneshot::Sender<Result<TraceAccepted, String>>,
    },
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::serve::api::fixture::fixture;

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
