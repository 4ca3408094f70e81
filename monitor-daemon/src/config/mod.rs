//! The daemon's configuration: the TOML file of `leakmon run --config FILE` (every key has a
//! documented default; `deploy/config.toml` is the commented default file), with unknown keys
//! and invalid values rejected naming the file, key and reason. It also owns the comparison of
//! two configurations that the daemon reports when it reloads on SIGHUP.
//!
//! The configuration is shared by every layer (the watcher, the store, the API, the on-call
//! commands and the daemon read their sections) and uses nothing else of the crate. This file
//! holds the settings and the entry points; its submodules read the TOML document, rejecting
//! unknown keys and putting the parser's errors on one line (`document`), check the values
//! (`validate`) and compare two configurations (`reload`).

mod document;
mod reload;
mod validate;

use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Largest `trace.sample_rate` (1 TiB between samples).
pub const MAX_SAMPLE_RATE: u64 = 1 << 40;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// HTTP API and metrics address. Default `127.0.0.1:9464` (loopback only).
    pub listen: SocketAddr,
    /// Where reports are kept. Default `/var/lib/leakmon`.
    pub state_dir: PathBuf,
    /// A file holding the API token (readable by root only); with it every endpoint except
    /// `/metrics` and `/healthz` requires `Authorization: Bearer TOKEN`. Default none.
    pub token_file: Option<PathBuf>,
    /// Serve the API without a token on a non-loopback `listen` address (stack reports reveal
    /// code). Default false.
    pub allow_unauthenticated: bool,
    /// Requests the API answers per second, in bursts of up to twice as many; more are answered
    /// 429. Default 50.
    pub max_requests_per_second: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            state_dir: PathBuf::from("/var/lib/leakmon"),
            token_file: None,
            allow_unauthenticated: false,
            max_requests_per_second: 50,
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
    /// Smallest growth of threads that can raise a suspicion. Default 0.5/s.
    pub min_thread_growth_per_second: f64,
    /// The growth over the trend's span must also be at least this fraction of the current
    /// value. Default 0.05.
    pub min_relative_growth: f64,
    /// A resource forecast to run out within this many seconds can make its process suspected
    /// within a few samples (`exhaustion_imminent`). Default 300.
    pub imminent_seconds: f64,
    /// ... once its current run of growth has used at least this fraction of the room it
    /// started with. Default 0.2.
    pub imminent_min_fraction: f64,
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
            min_thread_growth_per_second: 0.5,
            min_relative_growth: 0.05,
            imminent_seconds: 300.0,
            imminent_min_fraction: 0.2,
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

/// How the daemon traces a process (`trace.method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceMethod {
    /// Page faults first (cheap, any allocator or runtime); an allocation trace follows when
    /// `trace.follow_with_allocations` is set and the process is still suspected.
    #[default]
    Auto,
    /// Page faults only.
    #[serde(alias = "page_faults")]
    PageFaults,
    /// Allocator probes only.
    Allocations,
}

impl TraceMethod {
    /// The name in the configuration file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::PageFaults => "page-faults",
            Self::Allocations => "allocations",
        }
    }
}

impl std::fmt::Display for TraceMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `[trace]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Trace a suspected process automatically. Default true.
    pub auto: bool,
    /// How: `auto` (page faults first, then allocations), `page-faults` or `allocations`.
    /// Default `auto`.
    pub method: TraceMethod,
    /// Under `auto`, a page-fault trace whose process is still suspected when its window ends
    /// is followed by an allocation trace (leak versus cache, outstanding objects), when the
    /// process has an allocator to probe. Default true.
    pub follow_with_allocations: bool,
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
    /// Overhead budget of page-fault traces: a trace whose traced processes take more write
    /// faults than this (per second, together) is stopped early and its report marked
    /// partial. Default 20000 (80 MB/s of growth).
    pub max_faults_per_second: f64,
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
    /// Capacity of the kernel's unwind rows map (8 bytes a row; a C library needs about
    /// 28,000, a large program a few hundred thousand). Default 1048576.
    pub max_unwind_rows: u32,
    /// Seconds between the interim reports of a trace of a process whose exhaustion is
    /// imminent: its report is stored this often during the window, not only at its end, so
    /// that the evidence is on disk when the OOM killer strikes. Default 10.
    pub report_refresh_seconds: f64,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            auto: true,
            method: TraceMethod::Auto,
            follow_with_allocations: true,
            window_seconds: 60.0,
            interval_seconds: 2.0,
            max_concurrent: 2,
            cooldown_seconds: 1800.0,
            max_events_per_second: 200_000.0,
            max_faults_per_second: 20_000.0,
            sample_rate: 0,
            all_processes: false,
            targets: Vec::new(),
            max_allocations: 262_144,
            max_stacks: 32_768,
            max_unwind_rows: 1 << 20,
            report_refresh_seconds: 10.0,
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
        Self {
            max_count: 200,
            max_bytes: 256 * 1024 * 1024,
        }
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
        Self {
            max_process_series: 100,
        }
    }
}

/// Why a configuration was not accepted. Every variant displays as one line that starts with the
/// file (or other origin) the configuration came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// The parser's message on one line, starting with the line and column.
        message: String,
    },
    /// A key the configuration does not have.
    #[error("{origin}: unknown key `{key}` (allowed here: {})", allowed.join(", "))]
    UnknownKey {
        /// The file.
        origin: String,
        /// The dotted key, e.g. `watch.intervall`.
        key: String,
        /// The keys allowed where it was found.
        allowed: Vec<&'static str>,
    },
    /// A value of the wrong type, or outside what the setting accepts.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        /// The file.
        origin: String,
        /// The dotted key, e.g. `watch.interval_seconds` or `trace.targets[0]`.
        key: String,
        /// What the value must be, and the value found.
        reason: String,
    },
}

impl ConfigError {
    /// The same error attributed to `origin` (a file, or e.g. "command line"). Errors from
    /// [`Config::validate`] name the origin `configuration` until given the real one.
    /// [`ConfigError::Read`] keeps the path it failed to read.
    #[must_use]
    pub fn with_origin(self, origin: &str) -> Self {
        let origin = origin.to_owned();
        match self {
            Self::Read { .. } => self,
            Self::Syntax { message, .. } => Self::Syntax { origin, message },
            Self::UnknownKey { key, allowed, .. } => Self::UnknownKey {
                origin,
                key,
                allowed,
            },
            Self::Invalid { key, reason, .. } => Self::Invalid {
                origin,
                key,
                reason,
            },
        }
    }
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let config = read(path)?;
    config
        .validate()
        .map_err(|error| error.with_origin(&path.display().to_string()))?;
    Ok(config)
}

/// Reads and parses the configuration file at `path` (syntax, keys and types) without
/// [`Config::validate`], for a caller that applies command-line overrides (such as
/// `--allow-unauthenticated`) before validating.
pub fn read(path: &Path) -> Result<Config, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    document::parse_unvalidated(&text, &path.display().to_string())
}

/// Parses and validates configuration `text`; errors name `origin` (normally the file). An empty
/// text gives [`Config::default`].
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let config = document::parse_unvalidated(text, origin)?;
    config
        .validate()
        .map_err(|error| error.with_origin(origin))?;
    Ok(config)
}

impl TargetSelector {
    /// The selector's keys in `[[trace.targets]]`.
    const FIELDS: [&'static str; 3] = ["unit", "comm", "cgroup"];

    /// The fields in the order of [`TargetSelector::FIELDS`]; exhaustive, so a new field fails to
    /// compile until it is listed.
    fn fields(&self) -> [Option<&str>; 3] {
        let Self { unit, comm, cgroup } = self;
        [unit.as_deref(), comm.as_deref(), cgroup.as_deref()]
    }

    /// Whether at least one field is given and non-empty.
    fn selects(&self) -> bool {
        self.fields()
            .iter()
            .flatten()
            .any(|value| !value.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented default configuration.
    const DEPLOY_CONFIG: &str = include_str!("../../../deploy/config.toml");
    pub(super) const ORIGIN: &str = "/etc/leakmon/config.toml";

    /// The dotted keys of `value`'s leaves (arrays count as leaves).
    pub(super) fn dotted_keys(value: &toml::Value, prefix: &str, keys: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    dotted_keys(value, &path, keys);
                }
            }
            _ => keys.push(prefix.to_owned()),
        }
    }

    fn default_keys() -> Vec<String> {
        let mut keys = Vec::new();
        dotted_keys(
            &toml::Value::try_from(Config::default()).unwrap(),
            "",
            &mut keys,
        );
        keys
    }

    /// The error of parsing `text`, which must fail.
    pub(super) fn parse_error(text: &str) -> ConfigError {
        parse(text, ORIGIN).unwrap_err()
    }

    /// The key and reason of an `Invalid` error of parsing `text`.
    pub(super) fn invalid(text: &str) -> (String, String) {
        match parse_error(text) {
            ConfigError::Invalid {
                origin,
                key,
                reason,
            } => {
                assert_eq!(origin, ORIGIN);
                (key, reason)
            }
            other => panic!("expected Invalid for {text:?}, got {other:?}"),
        }
    }

    /// The key and allowed keys of an `UnknownKey` error of parsing `text`.
    pub(super) fn unknown(text: &str) -> (String, Vec<&'static str>) {
        match parse_error(text) {
            ConfigError::UnknownKey {
                origin,
                key,
                allowed,
            } => {
                assert_eq!(origin, ORIGIN);
                (key, allowed)
            }
            other => panic!("expected UnknownKey for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        assert_eq!(parse("", ORIGIN).unwrap(), Config::default());
        assert_eq!(
            parse("# nothing\n\n[watch]\n", ORIGIN).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn defaults_are_the_documented_values_and_valid() {
        let config = Config::default();
        assert_eq!(config.daemon.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(config.daemon.state_dir, Path::new("/var/lib/leakmon"));
        assert_eq!(config.daemon.token_file, None);
        assert!(!config.daemon.allow_unauthenticated);
        assert_eq!(config.daemon.max_requests_per_second, 50);
        assert_eq!(config.watch.interval_seconds, 2.0);
        assert_eq!(config.watch.window_seconds, 300.0);
        assert_eq!(config.trace.max_allocations, 262_144);
        assert_eq!(config.reports.max_bytes, 256 << 20);
        assert_eq!(config.metrics.max_process_series, 100);
        config.validate().unwrap();
    }

    #[test]
    fn deploy_config_is_the_default() {
        assert_eq!(
            parse(DEPLOY_CONFIG, "deploy/config.toml").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn deploy_config_lists_every_key_in_its_table() {
        let lines: Vec<&str> = DEPLOY_CONFIG.lines().map(str::trim).collect();
        for key in default_keys() {
            let (table, name) = key.split_once('.').unwrap();
            let header = format!("[{table}]");
            let start = lines.iter().position(|line| *line == header);
            let start = start.unwrap_or_else(|| panic!("no {header} in deploy/config.toml"));
            let section = lines[start + 1..]
                .iter()
                .take_while(|line| !line.starts_with('['));
            let mut section = section.peekable();
            let mut found = false;
            let mut commented = false;
            let mut previous = "";
            for line in section.by_ref() {
                if line.starts_with(&format!("{name} =")) {
                    found = true;
                    commented = previous.starts_with('#');
                }
                previous = line;
            }
            assert!(found, "deploy/config.toml does not set {key}");
            assert!(commented, "deploy/config.toml has no comment above {key}");
        }
        for field in TargetSelector::FIELDS {
            assert!(
                DEPLOY_CONFIG.contains(&format!("#   {field} ")),
                "target field {field}"
            );
        }
    }

    #[test]
    fn values_override_defaults() {
        let config = parse(
            "[daemon]\nlisten = \"0.0.0.0:9000\"\nallow_unauthenticated = true\n\
             [watch]\ninterval_seconds = 5\n\
             min_relative_growth = 0.1\n[trace]\nauto = false\n\
             [[trace.targets]]\nunit = \"nginx.service\"\n[[trace.targets]]\ncomm = \"pg\"\n",
            ORIGIN,
        )
        .unwrap();
        let mut expected = Config::default();
        expected.daemon.listen = SocketAddr::from(([0, 0, 0, 0], 9000));
        expected.daemon.allow_unauthenticated = true;
        expected.watch.interval_seconds = 5.0;
        expected.watch.min_relative_growth = 0.1;
        expected.trace.auto = false;
        expected.trace.targets = vec![
            TargetSelector {
                unit: Some("nginx.service".into()),
                ..TargetSelector::default()
            },
            TargetSelector {
                comm: Some("pg".into()),
                ..TargetSelector::default()
            },
        ];
        assert_eq!(config, expected);
    }

    #[test]
    fn trace_methods_are_named_as_on_the_command_line() {
        for (text, method) in [
            ("auto", TraceMethod::Auto),
            ("page-faults", TraceMethod::PageFaults),
            ("page_faults", TraceMethod::PageFaults),
            ("allocations", TraceMethod::Allocations),
        ] {
            let config = parse(&format!("[trace]\nmethod = \"{text}\"\n"), ORIGIN).unwrap();
            assert_eq!(config.trace.method, method, "{text}");
        }
        assert_eq!(Config::default().trace.method, TraceMethod::Auto);
        assert_eq!(TraceMethod::PageFaults.to_string(), "page-faults");
        let error = parse("[trace]\nmethod = \"uprobes\"\n", ORIGIN)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("trace.method") && !error.contains('\n'),
            "{error}"
        );
    }

    #[test]
    fn read_leaves_validation_to_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(&path, "[daemon]\nlisten = \"0.0.0.0:9464\"\n").unwrap();
        let mut config = read(&path).unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("daemon.listen")
        );
        config.daemon.allow_unauthenticated = true;
        config.validate().unwrap();
        fs::write(&path, "[daemon]\nlisten = 5\n").unwrap();
        assert_eq!(
            read(&path).unwrap_err().to_string().split(": ").nth(1),
            Some("daemon.listen")
        );
    }

    #[test]
    fn load_reads_the_file_or_names_it() {
        let dir = std::env::temp_dir().join(format!("leakmon-config-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        fs::write(&path, "[metrics]\nmax_process_series = 7\n").unwrap();
        assert_eq!(load(&path).unwrap().metrics.max_process_series, 7);
        fs::write(&path, "[metrics]\nmax_process_series = 0\n").unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(message.starts_with(&format!("{}: metrics.max_process_series: ", path.display())));
        fs::remove_dir_all(&dir).unwrap();
        let error = load(&path).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: cannot read: ", path.display()))
        );
    }

    #[test]
    fn every_error_displays_as_one_line_starting_with_the_origin() {
        let errors = [
            load(Path::new("/nonexistent/leakmon.toml")).unwrap_err(),
            parse_error("[watch"),
            parse_error("\"unterminated = 1"),
            parse_error("[watch]\nintervall = 1"),
            parse_error("[watch]\ninterval_seconds = \"fast\""),
            parse_error("[watch]\ninterval_seconds = -1"),
        ];
        assert!(
            errors[0]
                .to_string()
                .starts_with("/nonexistent/leakmon.toml: ")
        );
        for error in &errors[1..] {
            assert!(
                error.to_string().starts_with(&format!("{ORIGIN}: ")),
                "{error}"
            );
        }
        for error in &errors {
            assert!(!error.to_string().contains('\n'), "{error}");
        }
        assert_eq!(
            errors[3].to_string(),
            "/etc/leakmon/config.toml: unknown key `watch.intervall` (allowed here: \
             interval_seconds, window_seconds, min_trend_seconds, min_process_age_seconds, \
             persistence, min_rss_growth_bytes_per_second, min_vsz_growth_bytes_per_second, \
             min_fd_growth_per_second, min_relative_growth, min_thread_growth_per_second, \
             imminent_seconds, imminent_min_fraction)"
        );
        assert_eq!(
            errors[5].to_string(),
            "/etc/leakmon/config.toml: watch.interval_seconds: must be a positive number of \
             seconds (got -1)"
        );
    }
}
