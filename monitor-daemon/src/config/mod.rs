//! The daemon's configuration: the TOML file of `leakmon run --config FILE` (every key has a
//! documented default; `deploy/config.toml` is the commented default file), with unknown keys
//! and invalid values rejected naming the file, key and reason. It also owns the comparison of
//! two configurations that the daemon reports when it reloads on SIGHUP.

use std::{
    fmt::Display,
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

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

/// The origin errors of [`Config::validate`] name before [`ConfigError::with_origin`].
const UNNAMED_ORIGIN: &str = "configuration";
/// Settings the daemon applies only when it starts (sockets, directories and kernel map sizes).
const RESTART_ONLY: [&str; 7] = [
    "daemon.listen",
    "daemon.state_dir",
    "daemon.token_file",
    "daemon.allow_unauthenticated",
    "daemon.max_requests_per_second",
    "trace.max_allocations",
    "trace.max_stacks",
];
/// `watch.window_seconds` must hold at least this many samples.
const MIN_WINDOW_SAMPLES: f64 = 6.0;
/// Largest `trace.sample_rate` (1 TiB between samples).
const MAX_SAMPLE_RATE: u64 = 1 << 40;
/// Smallest capacity of a kernel map.
const MIN_MAP_ENTRIES: u32 = 1024;
/// Smallest `reports.max_bytes` (1 MiB).
const MIN_REPORT_BYTES: u64 = 1 << 20;

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
    parse_unvalidated(&text, &path.display().to_string())
}

/// Parses and validates configuration `text`; errors name `origin` (normally the file). An empty
/// text gives [`Config::default`].
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let config = parse_unvalidated(text, origin)?;
    config
        .validate()
        .map_err(|error| error.with_origin(origin))?;
    Ok(config)
}

/// [`parse`] without [`Config::validate`].
fn parse_unvalidated(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let document = DeTable::parse(text).map_err(|error| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: describe_syntax_error(text, &error),
    })?;
    check_keys(document.get_ref(), origin)?;
    Config::deserialize(toml::de::Deserializer::from(document.clone()))
        .map_err(|error| describe_value_error(document.get_ref(), origin, &error))
}

/// A `Result` of one validation rule: the dotted key and the reason when it fails.
type Rule = Result<(), (String, String)>;

/// Fails with `key` and the reason `reason()` unless `ok`.
fn ensure(ok: bool, key: &str, reason: impl FnOnce() -> String) -> Rule {
    if ok {
        Ok(())
    } else {
        Err((key.to_owned(), reason()))
    }
}

/// A duration setting: finite and greater than zero.
fn positive_seconds(key: &str, value: f64) -> Rule {
    ensure(value.is_finite() && value > 0.0, key, || {
        format!("must be a positive number of seconds (got {value})")
    })
}

/// A threshold setting: finite and not negative.
fn not_negative(key: &str, value: f64, unit: &str) -> Rule {
    ensure(value.is_finite() && value >= 0.0, key, || {
        format!("must be zero or a positive number of {unit} (got {value})")
    })
}

/// An integer setting with a lower bound.
fn at_least<T: PartialOrd + Display>(key: &str, value: T, min: T) -> Rule {
    ensure(value >= min, key, || {
        format!("must be at least {min} (got {value})")
    })
}

impl Config {
    /// Checks every value against what the daemon accepts (see `deploy/config.toml`). [`parse`]
    /// calls it; the daemon calls it again after applying command-line overrides. The error's
    /// origin is `configuration`; name the real one with [`ConfigError::with_origin`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(key, reason)| ConfigError::Invalid {
            origin: UNNAMED_ORIGIN.to_owned(),
            key,
            reason,
        })
    }

    /// The validation rules, in file order; the first failure wins.
    fn check(&self) -> Rule {
        let Self {
            daemon,
            watch,
            trace,
            reports,
            metrics,
        } = self;

        ensure(
            daemon.listen.ip().to_canonical().is_loopback()
                || daemon.token_file.is_some()
                || daemon.allow_unauthenticated,
            "daemon.listen",
            || {
                format!(
                    "{} is not a loopback address: set daemon.token_file to serve stack reports \
                     off-host, or daemon.allow_unauthenticated = true to serve them to anyone",
                    daemon.listen
                )
            },
        )?;
        ensure(daemon.state_dir.is_absolute(), "daemon.state_dir", || {
            format!(
                "must be an absolute path (got {})",
                daemon.state_dir.display()
            )
        })?;
        if let Some(token_file) = &daemon.token_file {
            ensure(token_file.is_absolute(), "daemon.token_file", || {
                format!("must be an absolute path (got {})", token_file.display())
            })?;
        }
        at_least(
            "daemon.max_requests_per_second",
            daemon.max_requests_per_second,
            1,
        )?;

        positive_seconds("watch.interval_seconds", watch.interval_seconds)?;
        positive_seconds("watch.window_seconds", watch.window_seconds)?;
        let min_window = watch.interval_seconds * MIN_WINDOW_SAMPLES;
        ensure(
            watch.window_seconds >= min_window,
            "watch.window_seconds",
            || {
                format!(
                    "must be at least {MIN_WINDOW_SAMPLES} times watch.interval_seconds, \
                 {min_window} (got {})",
                    watch.window_seconds
                )
            },
        )?;
        positive_seconds("watch.min_trend_seconds", watch.min_trend_seconds)?;
        ensure(
            watch.window_seconds >= watch.min_trend_seconds,
            "watch.window_seconds",
            || {
                format!(
                    "must be at least watch.min_trend_seconds, {} (got {})",
                    watch.min_trend_seconds, watch.window_seconds
                )
            },
        )?;
        not_negative(
            "watch.min_process_age_seconds",
            watch.min_process_age_seconds,
            "seconds",
        )?;
        at_least("watch.persistence", watch.persistence, 1)?;
        not_negative(
            "watch.min_rss_growth_bytes_per_second",
            watch.min_rss_growth_bytes_per_second,
            "bytes per second",
        )?;
        not_negative(
            "watch.min_vsz_growth_bytes_per_second",
            watch.min_vsz_growth_bytes_per_second,
            "bytes per second",
        )?;
        not_negative(
            "watch.min_fd_growth_per_second",
            watch.min_fd_growth_per_second,
            "descriptors per second",
        )?;
        ensure(
            (0.0..=1.0).contains(&watch.min_relative_growth),
            "watch.min_relative_growth",
            || {
                format!(
                    "must be a fraction from 0 to 1 (got {})",
                    watch.min_relative_growth
                )
            },
        )?;

        positive_seconds("trace.window_seconds", trace.window_seconds)?;
        positive_seconds("trace.interval_seconds", trace.interval_seconds)?;
        ensure(
            trace.window_seconds >= trace.interval_seconds,
            "trace.window_seconds",
            || {
                format!(
                    "must be at least trace.interval_seconds, {} (got {})",
                    trace.interval_seconds, trace.window_seconds
                )
            },
        )?;
        at_least("trace.max_concurrent", trace.max_concurrent, 1)?;
        positive_seconds("trace.cooldown_seconds", trace.cooldown_seconds)?;
        let events = trace.max_events_per_second;
        ensure(
            events.is_finite() && events > 0.0,
            "trace.max_events_per_second",
            || format!("must be a positive number of events per second (got {events})"),
        )?;
        ensure(
            trace.sample_rate <= MAX_SAMPLE_RATE,
            "trace.sample_rate",
            || {
                format!(
                    "must be at most {MAX_SAMPLE_RATE} bytes (got {})",
                    trace.sample_rate
                )
            },
        )?;
        for (index, target) in trace.targets.iter().enumerate() {
            ensure(target.selects(), &format!("trace.targets[{index}]"), || {
                format!(
                    "must select on at least one of {} with a non-empty value",
                    TargetSelector::FIELDS.join(", ")
                )
            })?;
        }
        at_least(
            "trace.max_allocations",
            trace.max_allocations,
            MIN_MAP_ENTRIES,
        )?;
        at_least("trace.max_stacks", trace.max_stacks, MIN_MAP_ENTRIES)?;

        at_least("reports.max_count", reports.max_count, 1)?;
        at_least("reports.max_bytes", reports.max_bytes, MIN_REPORT_BYTES)?;

        at_least("metrics.max_process_series", metrics.max_process_series, 1)
    }

    /// What differs from this configuration in `new`, one line per setting in file order, e.g.
    /// `watch.interval_seconds 2 -> 5`. Empty when nothing changed.
    pub fn reload_changes(&self, new: &Config) -> Vec<String> {
        self.changed(new)
            .map(|(old, new)| format!("{} {} -> {}", old.key(), old.value, new.value))
            .collect()
    }

    /// The changed settings that take effect only after a restart (every `daemon` key,
    /// `trace.max_allocations`, `trace.max_stacks`), named and separated by commas, e.g.
    /// `daemon.listen, trace.max_stacks`; `None` when a reload can apply `new`.
    pub fn requires_restart(&self, new: &Config) -> Option<String> {
        let keys: Vec<String> = self
            .changed(new)
            .map(|(old, _)| old.key())
            .filter(|key| RESTART_ONLY.contains(&key.as_str()))
            .collect();
        (!keys.is_empty()).then(|| keys.join(", "))
    }

    /// The settings whose value differs in `new`, as (old, new) pairs.
    fn changed(&self, new: &Config) -> impl Iterator<Item = (Setting, Setting)> {
        self.settings()
            .into_iter()
            .zip(new.settings())
            .filter(|(old, new)| old.value != new.value)
    }

    /// Every setting with its value rendered for people, in file order. The destructuring is
    /// exhaustive, so a new field fails to compile until it is listed here.
    fn settings(&self) -> Vec<Setting> {
        let mut list = Vec::new();
        let Self {
            daemon,
            watch,
            trace,
            reports,
            metrics,
        } = self;
        {
            let DaemonConfig {
                listen,
                state_dir,
                token_file,
                allow_unauthenticated,
                max_requests_per_second,
            } = daemon;
            push_settings!(list, "daemon": listen, state_dir, token_file, allow_unauthenticated,
                max_requests_per_second);
        }
        {
            let WatchConfig {
                interval_seconds,
                window_seconds,
                min_trend_seconds,
                min_process_age_seconds,
                persistence,
                min_rss_growth_bytes_per_second,
                min_vsz_growth_bytes_per_second,
                min_fd_growth_per_second,
                min_relative_growth,
            } = watch;
            push_settings!(list, "watch": interval_seconds, window_seconds, min_trend_seconds,
                min_process_age_seconds, persistence, min_rss_growth_bytes_per_second,
                min_vsz_growth_bytes_per_second, min_fd_growth_per_second, min_relative_growth);
        }
        {
            let TraceConfig {
                auto,
                window_seconds,
                interval_seconds,
                max_concurrent,
                cooldown_seconds,
                max_events_per_second,
                sample_rate,
                all_processes,
                targets,
                max_allocations,
                max_stacks,
            } = trace;
            push_settings!(list, "trace": auto, window_seconds, interval_seconds, max_concurrent,
                cooldown_seconds, max_events_per_second, sample_rate, all_processes, targets,
                max_allocations, max_stacks);
        }
        {
            let ReportsConfig {
                max_count,
                max_bytes,
            } = reports;
            push_settings!(list, "reports": max_count, max_bytes);
        }
        {
            let MetricsConfig { max_process_series } = metrics;
            push_settings!(list, "metrics": max_process_series);
        }
        list
    }
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

/// One setting of [`Config::settings`].
#[derive(Debug)]
struct Setting {
    /// The table, e.g. `watch`.
    section: &'static str,
    /// The key in the table, e.g. `interval_seconds`.
    name: &'static str,
    /// The value as people write it.
    value: String,
}

impl Setting {
    /// The dotted key, e.g. `watch.interval_seconds`.
    fn key(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// Pushes a [`Setting`] for each named binding, using the binding's name as the key.
macro_rules! push_settings {
    ($list:ident, $section:literal: $($field:ident),+ $(,)?) => {
        $($list.push(Setting {
            section: $section,
            name: stringify!($field),
            value: Render::render($field),
        });)+
    };
}
use push_settings;

/// How a setting's value reads in reload messages.
trait Render {
    /// The value as people write it.
    fn render(&self) -> String;
}

/// [`Render`] through [`Display`].
macro_rules! render_by_display {
    ($($type:ty),+) => {
        $(impl Render for $type {
            fn render(&self) -> String {
                self.to_string()
            }
        })+
    };
}
render_by_display!(bool, u32, u64, usize, f64, SocketAddr);

impl Render for PathBuf {
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl Render for Option<PathBuf> {
    fn render(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".to_owned(), |path| path.display().to_string())
    }
}

impl Render for Vec<TargetSelector> {
    fn render(&self) -> String {
        let targets: Vec<String> = self
            .iter()
            .map(|target| {
                let fields: Vec<String> = TargetSelector::FIELDS
                    .iter()
                    .zip(target.fields())
                    .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            })
            .collect();
        format!("[{}]", targets.join(", "))
    }
}

/// The allowed keys: each table with its keys, in file order.
fn schema() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut tables: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for setting in Config::default().settings() {
        match tables
            .iter_mut()
            .find(|(section, _)| *section == setting.section)
        {
            Some((_, names)) => names.push(setting.name),
            None => tables.push((setting.section, vec![setting.name])),
        }
    }
    tables
}

/// The entries of `table` in the order they appear in the file.
fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a str, &'a Spanned<DeValue<'i>>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
        .into_iter()
        .map(|(key, value)| (key.get_ref().as_ref(), value))
        .collect()
}

/// Rejects the first key (in file order) that the configuration does not have. Values of the
/// wrong type are left to deserialization.
fn check_keys(document: &DeTable<'_>, origin: &str) -> Result<(), ConfigError> {
    let unknown = |key: String, allowed: Vec<&'static str>| ConfigError::UnknownKey {
        origin: origin.to_owned(),
        key,
        allowed,
    };
    let tables = schema();
    for (section, value) in in_file_order(document) {
        let Some((_, names)) = tables.iter().find(|(name, _)| *name == section) else {
            return Err(unknown(
                section.to_owned(),
                tables.iter().map(|(name, _)| *name).collect(),
            ));
        };
        let DeValue::Table(table) = value.get_ref() else {
            continue;
        };
        for (name, value) in in_file_order(table) {
            if !names.contains(&name) {
                return Err(unknown(format!("{section}.{name}"), names.clone()));
            }
            if (section, name) != ("trace", "targets") {
                continue;
            }
            let DeValue::Array(targets) = value.get_ref() else {
                continue;
            };
            for (index, target) in targets.iter().enumerate() {
                let DeValue::Table(target) = target.get_ref() else {
                    continue;
                };
                if let Some((field, _)) = in_file_order(target)
                    .into_iter()
                    .find(|(field, _)| !TargetSelector::FIELDS.contains(field))
                {
                    return Err(unknown(
                        format!("trace.targets[{index}].{field}"),
                        TargetSelector::FIELDS.to_vec(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A parser message on one line.
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join("; ")
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A TOML syntax error on one line, with its line and column.
fn describe_syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = one_line(error.message());
    match error.span() {
        Some(span) => {
            let (line, column) = position(text, span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// A deserialization error (wrong type, integer out of range, unparsable address) attributed
/// to the key whose value it is about.
fn describe_value_error(
    document: &DeTable<'_>,
    origin: &str,
    error: &toml::de::Error,
) -> ConfigError {
    let key = error
        .span()
        .and_then(|span| locate_in(document, "", span.start));
    match key {
        Some(key) => ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            reason: plain_reason(error.message()),
        },
        // Without a position the error's own text names the key.
        None => ConfigError::Syntax {
            origin: origin.to_owned(),
            message: one_line(&error.to_string()),
        },
    }
}

/// The dotted key of the innermost entry of `table` (under `path`) whose value spans `offset`.
fn locate_in(table: &DeTable<'_>, path: &str, offset: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let key = key.get_ref();
        let path = if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        };
        locate(value, &path, offset)
    })
}

/// [`locate_in`] for a value at `path`: its innermost part spanning `offset`.
fn locate(value: &Spanned<DeValue<'_>>, path: &str, offset: usize) -> Option<String> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => locate_in(table, path, offset),
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| locate(item, &format!("{path}[{index}]"), offset)),
        _ => None,
    };
    inner.or_else(|| value.span().contains(&offset).then(|| path.to_owned()))
}

/// Serde's wording with Rust type names replaced by what a configuration file calls them.
fn plain_reason(message: &str) -> String {
    let message = one_line(message);
    if let Some(at) = message.find("expected struct ") {
        return format!("{}expected a table", &message[..at]);
    }
    const PLAIN: [(&str, &str); 5] = [
        ("expected f64", "expected a number"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
    ];
    PLAIN.iter().fold(message, |message, (rust, plain)| {
        message.replace(rust, plain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented default configuration.
    const DEPLOY_CONFIG: &str = include_str!("../../../deploy/config.toml");
    const ORIGIN: &str = "/etc/leakmon/config.toml";

    /// The dotted keys of `value`'s leaves (arrays count as leaves).
    fn dotted_keys(value: &toml::Value, prefix: &str, keys: &mut Vec<String>) {
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
    fn parse_error(text: &str) -> ConfigError {
        parse(text, ORIGIN).unwrap_err()
    }

    /// The key and reason of an `Invalid` error of parsing `text`.
    fn invalid(text: &str) -> (String, String) {
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
    fn unknown(text: &str) -> (String, Vec<&'static str>) {
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
    fn settings_name_every_serialized_key() {
        let listed: Vec<String> = Config::default()
            .settings()
            .iter()
            .map(Setting::key)
            .collect();
        // Keys without a default value are serialized once set.
        let mut with_every_key = Config::default();
        with_every_key.daemon.token_file = Some(PathBuf::from("/etc/leakmon/token"));
        let mut serialized = Vec::new();
        dotted_keys(
            &toml::Value::try_from(with_every_key).unwrap(),
            "",
            &mut serialized,
        );
        let mut sorted = listed.clone();
        sorted.sort();
        serialized.sort();
        assert_eq!(sorted, serialized);
        for key in RESTART_ONLY {
            assert!(listed.iter().any(|listed| listed == key), "{key}");
        }
        let target = TargetSelector {
            unit: Some("a".into()),
            comm: Some("b".into()),
            cgroup: Some("c".into()),
        };
        let mut target_keys = Vec::new();
        dotted_keys(
            &toml::Value::try_from(target).unwrap(),
            "",
            &mut target_keys,
        );
        target_keys.sort();
        let mut fields = TargetSelector::FIELDS.to_vec();
        fields.sort();
        assert_eq!(target_keys, fields);
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
    fn each_validation_rule_rejects_with_key_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[daemon]\nlisten = \"0.0.0.0:9464\"",
                "daemon.listen",
                "0.0.0.0:9464 is not a loopback address: set daemon.token_file",
            ),
            (
                "[daemon]\nlisten = \"[::]:9464\"\nallow_unauthenticated = false",
                "daemon.listen",
                "daemon.allow_unauthenticated = true",
            ),
            (
                "[daemon]\nlisten = \"[::ffff:10.0.0.1]:9464\"",
                "daemon.listen",
                "not a loopback address",
            ),
            (
                "[daemon]\nstate_dir = \"var/lib\"",
                "daemon.state_dir",
                "absolute path",
            ),
            (
                "[daemon]\ntoken_file = \"token\"",
                "daemon.token_file",
                "absolute path (got token)",
            ),
            (
                "[daemon]\nmax_requests_per_second = 0",
                "daemon.max_requests_per_second",
                "at least 1",
            ),
            (
                "[watch]\ninterval_seconds = -1",
                "watch.interval_seconds",
                "(got -1)",
            ),
            (
                "[watch]\ninterval_seconds = 0",
                "watch.interval_seconds",
                "positive",
            ),
            (
                "[watch]\ninterval_seconds = nan",
                "watch.interval_seconds",
                "(got NaN)",
            ),
            (
                "[watch]\nwindow_seconds = inf",
                "watch.window_seconds",
                "(got inf)",
            ),
            (
                "[watch]\nwindow_seconds = 11",
                "watch.window_seconds",
                "6 times",
            ),
            (
                "[watch]\nwindow_seconds = 50",
                "watch.window_seconds",
                "min_trend_seconds",
            ),
            (
                "[watch]\nmin_trend_seconds = 0",
                "watch.min_trend_seconds",
                "positive",
            ),
            (
                "[watch]\nmin_process_age_seconds = -0.5",
                "watch.min_process_age_seconds",
                "zero",
            ),
            (
                "[watch]\npersistence = 0",
                "watch.persistence",
                "at least 1",
            ),
            (
                "[watch]\nmin_rss_growth_bytes_per_second = -1",
                "watch.min_rss_growth_bytes_per_second",
                "bytes per second",
            ),
            (
                "[watch]\nmin_vsz_growth_bytes_per_second = -inf",
                "watch.min_vsz_growth_bytes_per_second",
                "bytes per second",
            ),
            (
                "[watch]\nmin_fd_growth_per_second = -1",
                "watch.min_fd_growth_per_second",
                "zero",
            ),
            (
                "[watch]\nmin_relative_growth = 1.5",
                "watch.min_relative_growth",
                "0 to 1",
            ),
            (
                "[watch]\nmin_relative_growth = -0.1",
                "watch.min_relative_growth",
                "0 to 1",
            ),
            (
                "[trace]\nwindow_seconds = 0",
                "trace.window_seconds",
                "positive",
            ),
            (
                "[trace]\ninterval_seconds = -2",
                "trace.interval_seconds",
                "positive",
            ),
            (
                "[trace]\nwindow_seconds = 1",
                "trace.window_seconds",
                "trace.interval_seconds",
            ),
            (
                "[trace]\nmax_concurrent = 0",
                "trace.max_concurrent",
                "at least 1",
            ),
            (
                "[trace]\ncooldown_seconds = 0",
                "trace.cooldown_seconds",
                "positive",
            ),
            (
                "[trace]\nmax_events_per_second = 0",
                "trace.max_events_per_second",
                "positive",
            ),
            (
                "[trace]\nsample_rate = 1099511627777",
                "trace.sample_rate",
                "at most 1099511627776",
            ),
            (
                "[[trace.targets]]\nunit = \"a\"\n[[trace.targets]]",
                "trace.targets[1]",
                "at least one",
            ),
            (
                "[[trace.targets]]\ncomm = \"\"",
                "trace.targets[0]",
                "non-empty",
            ),
            (
                "[trace]\nmax_allocations = 1023",
                "trace.max_allocations",
                "at least 1024",
            ),
            (
                "[trace]\nmax_stacks = 100",
                "trace.max_stacks",
                "at least 1024",
            ),
            (
                "[reports]\nmax_count = 0",
                "reports.max_count",
                "at least 1",
            ),
            (
                "[reports]\nmax_bytes = 1048575",
                "reports.max_bytes",
                "at least 1048576",
            ),
            (
                "[metrics]\nmax_process_series = 0",
                "metrics.max_process_series",
                "at least 1",
            ),
        ];
        for (text, key, reason) in cases {
            let (got_key, got_reason) = invalid(text);
            assert_eq!(got_key, *key, "{text}");
            assert!(got_reason.contains(reason), "{text}: {got_reason}");
        }
    }

    #[test]
    fn off_host_listen_needs_a_token_file_or_the_opt_out() {
        let token = parse(
            "[daemon]\nlisten = \"0.0.0.0:9464\"\ntoken_file = \"/etc/leakmon/token\"\n",
            ORIGIN,
        )
        .unwrap();
        assert_eq!(
            token.daemon.token_file.as_deref(),
            Some(Path::new("/etc/leakmon/token"))
        );
        assert!(!token.daemon.allow_unauthenticated);
        let open = parse(
            "[daemon]\nlisten = \"[::]:9464\"\nallow_unauthenticated = true\n",
            ORIGIN,
        )
        .unwrap();
        assert!(open.daemon.allow_unauthenticated && open.daemon.token_file.is_none());
        for loopback in [
            "127.0.0.1:1",
            "127.1.2.3:9464",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:80",
        ] {
            parse(&format!("[daemon]\nlisten = \"{loopback}\"\n"), ORIGIN).unwrap();
        }
        let message = parse_error("[daemon]\nlisten = \"192.168.1.5:9464\"\n").to_string();
        assert_eq!(
            message,
            "/etc/leakmon/config.toml: daemon.listen: 192.168.1.5:9464 is not a loopback \
             address: set daemon.token_file to serve stack reports off-host, or \
             daemon.allow_unauthenticated = true to serve them to anyone"
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
    fn limits_themselves_are_accepted() {
        parse(
            "[watch]\ninterval_seconds = 10\nwindow_seconds = 60\nmin_trend_seconds = 60\n\
             min_process_age_seconds = 0\npersistence = 1\nmin_rss_growth_bytes_per_second = 0\n\
             min_relative_growth = 1\n[trace]\nwindow_seconds = 2\nsample_rate = 1099511627776\n\
             max_allocations = 1024\nmax_stacks = 1024\n[reports]\nmax_bytes = 1048576\n",
            ORIGIN,
        )
        .unwrap();
    }

    #[test]
    fn validate_checks_overrides_and_takes_an_origin() {
        let mut config = Config::default();
        config.watch.interval_seconds = -1.0;
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "configuration: watch.interval_seconds: must be a positive number of seconds (got -1)"
        );
        assert_eq!(
            error.with_origin(ORIGIN).to_string(),
            "/etc/leakmon/config.toml: watch.interval_seconds: must be a positive number of \
             seconds (got -1)"
        );
    }

    #[test]
    fn unknown_top_level_key_lists_the_tables() {
        let (key, allowed) = unknown("[watch]\ninterval_seconds = 3\n[wacth]\n");
        assert_eq!(key, "wacth");
        assert_eq!(allowed, ["daemon", "watch", "trace", "reports", "metrics"]);
        assert_eq!(unknown("verbose = true").0, "verbose");
    }

    #[test]
    fn unknown_nested_key_is_dotted() {
        let (key, allowed) = unknown("[watch]\nintervall = 3\n");
        assert_eq!(key, "watch.intervall");
        assert!(allowed.contains(&"interval_seconds"));
        assert_eq!(unknown("watch.intervall = 3").0, "watch.intervall");
        assert_eq!(
            unknown("[trace]\nauto = true\nmax = 1\nmin = 2").0,
            "trace.max"
        );
        let (key, allowed) =
            unknown("[[trace.targets]]\nunit = \"a\"\n[[trace.targets]]\nname = \"x\"");
        assert_eq!(key, "trace.targets[1].name");
        assert_eq!(allowed, TargetSelector::FIELDS);
    }

    #[test]
    fn wrong_types_name_the_key() {
        let (key, reason) = invalid("[watch]\ninterval_seconds = \"fast\"\n");
        assert_eq!(key, "watch.interval_seconds");
        assert!(
            reason.contains("\"fast\"") && reason.contains("expected a number"),
            "{reason}"
        );
        let (key, reason) = invalid("[watch]\npersistence = -1\n");
        assert_eq!(key, "watch.persistence");
        assert!(
            reason.contains("-1") && reason.contains("from 0 to 4294967295"),
            "{reason}"
        );
        assert_eq!(
            invalid("[daemon]\nlisten = \"localhost\"").0,
            "daemon.listen"
        );
        assert_eq!(invalid("[trace]\nauto = 1").0, "trace.auto");
        assert_eq!(
            invalid("[[trace.targets]]\nunit = 5").0,
            "trace.targets[0].unit"
        );
        let (key, reason) = invalid("[trace]\ntargets = 5");
        assert_eq!(key, "trace.targets");
        assert!(reason.contains("expected an array"), "{reason}");
        assert_eq!(invalid("[trace]\ntargets = [1]").0, "trace.targets[0]");
        let (key, reason) = invalid("watch = 5");
        assert_eq!(key, "watch");
        assert!(reason.contains("expected a table"), "{reason}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let error = parse_error("[watch]\ninterval_seconds = 2\nwindow_seconds 300\n");
        let ConfigError::Syntax { origin, message } = &error else {
            panic!("expected Syntax, got {error:?}");
        };
        assert_eq!(origin, ORIGIN);
        assert!(message.starts_with("line 3, column "), "{message}");
        assert!(!message.contains('\n'), "{message}");
        let error = parse_error("[watch]\ninterval_seconds = 2\ninterval_seconds = 3\n");
        assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
        assert!(error.to_string().contains("line 3"), "{error}");
    }

    #[test]
    fn position_counts_lines_and_characters() {
        assert_eq!(position("", 0), (1, 1));
        assert_eq!(position("ab\ncd", 4), (2, 2));
        assert_eq!(position("é\nxé y", 7), (2, 4));
        assert_eq!(position("ab", 99), (1, 3));
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
    fn reload_changes_lists_each_change() {
        let old = Config::default();
        assert!(old.reload_changes(&old).is_empty());
        assert_eq!(old.requires_restart(&old), None);

        let mut new = old.clone();
        new.watch.interval_seconds = 5.0;
        new.watch.min_relative_growth = 0.1;
        new.trace.targets.push(TargetSelector {
            unit: Some("nginx.service".into()),
            comm: Some("nginx".into()),
            cgroup: None,
        });
        assert_eq!(
            old.reload_changes(&new),
            [
                "watch.interval_seconds 2 -> 5",
                "watch.min_relative_growth 0.05 -> 0.1",
                "trace.targets [] -> [{unit=nginx.service, comm=nginx}]",
            ]
        );
        assert_eq!(old.requires_restart(&new), None);

        new.daemon.listen = SocketAddr::from(([0, 0, 0, 0], 9464));
        new.trace.max_stacks = 65_536;
        let changes = old.reload_changes(&new);
        assert!(changes.contains(&"daemon.listen 127.0.0.1:9464 -> 0.0.0.0:9464".to_owned()));
        assert!(changes.contains(&"trace.max_stacks 32768 -> 65536".to_owned()));
        assert_eq!(
            old.requires_restart(&new).as_deref(),
            Some("daemon.listen, trace.max_stacks")
        );

        let mut secured = old.clone();
        secured.daemon.token_file = Some(PathBuf::from("/etc/leakmon/token"));
        secured.daemon.max_requests_per_second = 10;
        assert_eq!(
            old.reload_changes(&secured),
            [
                "daemon.token_file none -> /etc/leakmon/token",
                "daemon.max_requests_per_second 50 -> 10",
            ]
        );
        assert_eq!(
            old.requires_restart(&secured).as_deref(),
            Some("daemon.token_file, daemon.max_requests_per_second")
        );

        let mut moved = old.clone();
        moved.daemon.state_dir = PathBuf::from("/srv/leakmon");
        moved.trace.max_allocations = 1024;
        assert_eq!(
            old.requires_restart(&moved).as_deref(),
            Some("daemon.state_dir, trace.max_allocations")
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
             min_fd_growth_per_second, min_relative_growth)"
        );
        assert_eq!(
            errors[5].to_string(),
            "/etc/leakmon/config.toml: watch.interval_seconds: must be a positive number of \
             seconds (got -1)"
        );
    }
}
