//! End-to-end tests of the daemon, `leakmon run`: one daemon watches leaking scenario programs
//! (RSS, VSZ, file descriptors, threads) beside non-leaking controls (a thread pool among them),
//! must suspect each leak for the right reason within [`DETECTION_LIMIT`] and never a control,
//! traces the RSS leak on its own and stores a report naming the leaking function, exports
//! metrics that `promtool` accepts and a real Prometheus server scrapes, answers bad requests
//! with JSON errors, and detaches every probe on SIGTERM. It needs root, like every eBPF test.

mod config;
mod metrics;
mod oom;
mod prometheus;
mod report_store;
mod runtimes;
mod story;
mod token;

use std::time::Duration;

/// Seconds of an automatic trace window (`trace.window_seconds`).
const TRACE_WINDOW_SECONDS: u64 = 20;

/// The daemon's configuration in these tests: short trace windows sampled every second, and the
/// default watch settings, which the detection targets are for.
fn daemon_config() -> String {
    format!(
        "# leakmon run, as the daemon tests start it.\n\
         [trace]\n\
         auto = true\n\
         window_seconds = {TRACE_WINDOW_SECONDS}\n\
         interval_seconds = 1\n"
    )
}

/// A leak must be suspected this soon after its process started.
const DETECTION_LIMIT: Duration = Duration::from_secs(120);

/// How often the tests read `/api/v1/processes` (the default watch interval).
const POLL: Duration = Duration::from_secs(2);

/// How long each scenario would run (its argv[1]); they are killed when the test ends.
const SCENARIO_SECONDS: &str = "300";
