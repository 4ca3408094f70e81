//! HTTP request targets driven through the API's router (`api::router`) with tower's `oneshot`
//! on a fake daemon: one watched process with a stored report, tracing available, a main loop
//! that is gone. The first byte picks the method (even GET, odd POST), the rest is the path and
//! query (prefixed with `/api/v1/processes/` unless it starts with `/`). No request panics or
//! is answered with a 5xx status other than 503.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Uri};
use libfuzzer_sys::fuzz_target;
use monitor_daemon::serve::api::{Access, ApiState, router};
use monitor_daemon::config::ReportsConfig;
use monitor_daemon::model::{ProbeHealth, ProcessView, Snapshot};
use monitor_daemon::report::{Frame, Report, StackReport, Totals};
use monitor_daemon::serve::store::ReportStore;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt as _;

/// The watched process, which has a report.
const PID: u32 = 10;

struct Fake {
    runtime: Runtime,
    router: Router,
}

fn view() -> ProcessView {
    ProcessView {
        pid: PID,
        start_time_ticks: 100,
        comm: "leaky".to_owned(),
        unit: Some("leaky.service".to_owned()),
        cgroup: Some("/system.slice/leaky.service".to_owned()),
        rss_bytes: 1 << 20,
        vsz_bytes: 1 << 22,
        anon_bytes: 1 << 19,
        swap_bytes: 0,
        threads: 1,
        open_fds: 3,
        rss_growth_bytes_per_second: 1e5,
        vsz_growth_bytes_per_second: 0.0,
        fd_growth_per_second: 0.0,
        thread_growth_per_second: 0.0,
        suspected: true,
        reasons: Vec::new(),
        seconds_until_exhaustion: None,
        memory_limit: None,
        traced: false,
        trace_method: None,
        outstanding_bytes: None,
        latest_report: None,
        memory: None,
    }
}

fn stack(bytes: u64, leaking: bool, symbols: &[&str]) -> StackReport {
    StackReport {
        bytes,
        allocations: 3,
        growth_bytes_per_second: if leaking { 100.0 } else { 0.0 },
        oldest_age_seconds: 5.0,
        leaking,
        frames: symbols
            .iter()
            .map(|symbol| Frame {
                address: 0x1000,
                symbol: Some((*symbol).to_owned()),
                module: Some("/usr/bin/app".to_owned()),
                file: None,
                line: None,
                inlined: false,
                ..Default::default()
            })
            .collect(),
        ..StackReport::default()
    }
}

fn fake() -> Fake {
    let dir = std::env::temp_dir().join(format!("leakmon-fuzz-api-{}", std::process::id()));
    let store = ReportStore::open(&dir, ReportsConfig::default()).expect("a report store");
    let stacks = vec![
        stack(1 << 20, true, &["leaky_function", "main"]),
        stack(1 << 10, false, &["innocent_function", "main"]),
    ];
    let (_, written) = store.save(
        Report {
            pid: PID,
            start_time_ticks: Some(100),
            comm: "leaky".to_owned(),
            duration_seconds: 30.0,
            interval_seconds: 2.0,
            sample_rate: 0,
            min_age_seconds: 0.0,
            partial: false,
            notes: Vec::new(),
            probes: Vec::new(),
            totals: Totals {
                outstanding_bytes: stacks.iter().map(|s| s.bytes).sum(),
                outstanding_allocations: 6,
            },
            dropped: BTreeMap::new(),
            events: BTreeMap::new(),
            stacks,
            ..Default::default()
        },
        None,
    );
    written.expect("a stored report");
    let snapshot = Snapshot {
        updated_unix_seconds: 1_700_000_000.0,
        processes: vec![view()],
        probes: ProbeHealth {
            loaded: true,
            ..ProbeHealth::default()
        },
        ..Snapshot::default()
    };
    // The main loop is gone: a trace request that gets this far is answered 503 at once.
    let (commands, _) = mpsc::channel(1);
    let state = ApiState {
        snapshot: watch::channel(Arc::new(snapshot)).1,
        store: Arc::new(store),
        commands,
        max_process_series: 100,
        access: Access::new(None, u32::MAX),
    };
    Fake {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        router: router(state),
    }
}

fuzz_target!(|data: &[u8]| {
    static FAKE: OnceLock<Fake> = OnceLock::new();
    let Some((&selector, target)) = data.split_first() else {
        return;
    };
    let method = if selector % 2 == 0 {
        Method::GET
    } else {
        Method::POST
    };
    let target = if target.starts_with(b"/") {
        target.to_vec()
    } else {
        [b"/api/v1/processes/".as_slice(), target].concat()
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let Ok(request) = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
    else {
        return;
    };
    let fake = FAKE.get_or_init(fake);
    let Ok(response) = fake.runtime.block_on(fake.router.clone().oneshot(request));
    let status = response.status();
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{status}"
    );
});
