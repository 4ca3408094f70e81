//! The daemon's configuration: the TOML file of `leakmon run --config FILE` (every key has a
//! documented default; `deploy/config.toml` is the commented default file), with unknown keys
//! and invalid values rejected naming the file, key and reason.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the daemon listens and keeps its state.
    pub daemon: DaemonConfig,
    /// The always-on process watcher.
    pub watch: WatchConfig,
    /// Escalation to allocation tracing.
    pub trace: TraceConfig,
    /// Retention of stored reports.
    pub reports: ReportsConfig,
    /// The Prometheus exposition.
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            daemon: DaemonConfig::default(),
            watch: WatchConfig::default(),
            trace: TraceConfig::default(),
            reports: ReportsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// HTTP API and metrics address. Default `127.0.0.1:9464` (loopback only).
    pub listen: SocketAddr,
    /// Where reports are kept. Default `/var/lib/leakmon`.
    pub state_dir: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            state_dir: PathBuf::from("/var/lib/leakmon"),
        }
    }
}

/// `[watch]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Seconds between two samples of every process. Default 2.
    pub interval_seconds: f64,
    /// Seconds of history the trends are fitted over (the history kept per process). Default 300.
    pub window_seconds: f64,
    /// A trend must span at least this many seconds of samples before it can raise a suspicion.
    /// Default 60.
    pub min_trend_seconds: f64,
    /// A process younger than this is never suspected (start-up growth). Default 30.
    pub min_process_age_seconds: f64,
    /// Consecutive evaluations a trend must hold before the process is suspected. Default 3.
    pub persistence: u32,
    /// Smallest RSS growth that can raise a suspicion. Default 32768 (32 KiB/s).
    pub min_rss_growth_bytes_per_second: f64,
    /// Smallest VSZ growth that can raise a suspicion. Default 1048576 (1 MiB/s).
    pub min_vsz_growth_bytes_per_second: f64,
    /// Smallest growth of open file descriptors that can raise a suspicion. Default 0.5/s.
    pub min_fd_growth_per_second: f64,
    /// The growth over the trend's span must also be at least this fraction of the current
    /// value. Default 0.05.
    pub min_relative_growth: f64,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 2.0,
            window_seconds: 300.0,
            min_trend_seconds: 60.0,
            min_process_age_seconds: 30.0,
            persistence: 3,
            min_rss_growth_bytes_per_second: 32_768.0,
            min_vsz_growth_bytes_per_second: 1_048_576.0,
            min_fd_growth_per_second: 0.5,
            min_relative_growth: 0.05,
        }
    }
}

/// Selects processes to trace continuously: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSelector {
    /// systemd unit name, e.g. `nginx.service`.
    pub unit: Option<String>,
    /// Command name (`/proc/PID/comm`).
    pub comm: Option<String>,
    /// cgroup v2 path, or a prefix of it.
    pub cgroup: Option<String>,
}

/// `[trace]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Trace a suspected process automatically. Default true.
    pub auto: bool,
    /// Length of an automatic or on-demand trace window, in seconds. Default 60.
    pub window_seconds: f64,
    /// Seconds between samples of the per-stack totals. Default 2.
    pub interval_seconds: f64,
    /// Processes traced at once. Default 2.
    pub max_concurrent: usize,
    /// Seconds before the same process is traced automatically again. Default 1800.
    pub cooldown_seconds: f64,
    /// Overhead budget: a trace whose probes fire more often than this (per second) is stopped
    /// early and its report marked partial. Default 200000.
    pub max_events_per_second: f64,
    /// Mean bytes between sampled allocations (0 records every allocation). Default 0.
    pub sample_rate: u64,
    /// Trace every process (opt-in, for hosts that want it). Default false.
    pub all_processes: bool,
    /// Processes traced continuously (in back-to-back windows). Default none.
    pub targets: Vec<TargetSelector>,
    /// Capacity of the kernel's outstanding-allocations map. Default 262144.
    pub max_allocations: u32,
    /// Capacity of the kernel's stacks map. Default 32768.
    pub max_stacks: u32,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            auto: true,
            window_seconds: 60.0,
            interval_seconds: 2.0,
            max_concurrent: 2,
            cooldown_seconds: 1800.0,
            max_events_per_second: 200_000.0,
            sample_rate: 0,
            all_processes: false,
            targets: Vec::new(),
            max_allocations: 262_144,
            max_stacks: 32_768,
        }
    }
}

/// `[reports]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Reports kept at most (oldest removed first). Default 200.
    pub max_count: usize,
    /// Bytes of reports kept at most. Default 268435456 (256 MiB).
    pub max_bytes: u64,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self { max_count: 200, max_bytes: 256 * 1024 * 1024 }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Processes with per-process series, most relevant first. Default 100.
    pub max_process_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { max_process_series: 100 }
    }
}
