//! Reliability tests of leakmon under conditions a fleet meets sooner or later: thousands of
//! short-lived processes (some traced as they exit), a daemon stopped or killed mid-trace,
//! kernel maps too small for the program traced, a pid reused by a new process, a traced process
//! that calls `execve`, a process with its own copy of libc in another mount namespace, a
//! binary deleted while it runs, leakmon in a PID namespace of its own, a process that exits or
//! an attach that fails half-way, and a daemon restarted on its state directory. Each needs root
//! and real eBPF, like every end-to-end test; they run one at a time (`serial`).

mod attach;
mod churn;
mod exec;
mod fresh_host;
mod full_maps;
mod namespaces;
mod pid_reuse;
mod restart;
mod teardown;

use std::time::Duration;

/// How long the daemon may take to notice a new process (a few 0.5 s watch ticks).
const WATCH_LIMIT: Duration = Duration::from_secs(10);

/// A daemon configuration for these tests: processes sampled twice a second (so a new process
/// is watched, and a leak suspected, within seconds), trace windows sampled twice a second, by
/// the allocation method (these tests are about the allocator probes, their maps and their
/// teardown), no automatic tracing unless `trace` says so; `watch` and `trace` are extra lines
/// of those sections.
fn config(watch: &str, trace: &str) -> String {
    format!(
        "[watch]\n\
         interval_seconds = 0.5\n\
         window_seconds = 10\n\
         min_trend_seconds = 2\n\
         min_process_age_seconds = 0\n\
         persistence = 1\n\
         {watch}\n\
         [trace]\n\
         interval_seconds = 0.5\n\
         cooldown_seconds = 1\n\
         method = \"allocations\"\n\
         {trace}\n"
    )
}
