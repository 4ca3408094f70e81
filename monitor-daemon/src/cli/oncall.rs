//! The on-call commands over the daemon's API as library functions, each returning what to
//! print: finding the daemon and its token, the status summary, a stored report, and asking the
//! daemon to trace a process; and the human units (durations, count rates, reasons, forecasts)
//! they and `leakmon top` share.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::cli::client::{Client, ClientError, ReportFormat};
use crate::config::{self, ConfigError};
use crate::model::{Method, OomKill, ProcessView, Reason, StoreHealth};
use crate::report::text::{human_bytes, human_rate, memory_line};
use crate::serve::api::{AccessError, Token};

/// The configuration the packaged unit runs the daemon with; the on-call commands read the
/// daemon's address and token file from it when it exists and no `--config` is given.
pub const SYSTEM_CONFIG: &str = "/etc/leakmon/config.toml";

/// How an on-call command finds the daemon: each `None` is taken from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// The daemon's address (`--daemon`).
    pub daemon: Option<SocketAddr>,
    /// The daemon's configuration (`--config`); [`SYSTEM_CONFIG`] when it exists otherwise.
    pub config: Option<PathBuf>,
    /// The API token file (`--token-file`).
    pub token_file: Option<PathBuf>,
}

/// Why the daemon's address or token could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration named (or found at [`SYSTEM_CONFIG`]) cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The token file cannot be used.
    #[error(transparent)]
    Token(#[from] AccessError),
}

/// A client of the daemon `options` describe: the address is `--daemon`, else the
/// configuration's `daemon.listen` (a wildcard listen is reached on loopback), else
/// `127.0.0.1:9464`; the token is read from `--token-file`, else `daemon.token_file`.
pub fn connect(options: &Connect) -> Result<Client, ConnectError> {
    connect_with(options, Path::new(SYSTEM_CONFIG))
}

/// [`connect`] with `system_config` in place of [`SYSTEM_CONFIG`].
fn connect_with(options: &Connect, system_config: &Path) -> Result<Client, ConnectError> {
    let daemon = if options.daemon.is_some() && options.token_file.is_some() {
        None
    } else {
        match &options.config {
            Some(path) => Some(config::read(path)?.daemon),
            None if system_config.exists() => Some(config::read(system_config)?.daemon),
            None => None,
        }
    };
    let daemon = daemon.unwrap_or_default();
    let addr = options.daemon.unwrap_or_else(|| reachable(daemon.listen));
    let client = Client::new(addr);
    Ok(
        match options.token_file.as_ref().or(daemon.token_file.as_ref()) {
            Some(path) => client.with_token(Token::read(path)?),
            None => client,
        },
    )
}

/// Where a client reaches a daemon listening on `listen`: on loopback for a wildcard address.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// `leakmon status`: a readable summary of the daemon's view: counts, suspects with their
/// reasons, growth and forecast, traced processes and the health of the probes.
pub fn status(client: &Client) -> Result<String, ClientError> {
    let health = client.status()?;
    let processes = client.processes()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    Ok(format_status(client.addr(), &health, &processes, now))
}

/// `leakmon report`: the latest report of `pid` (by `method`, when given) in `format`, as bytes
/// to write to stdout or a file.
pub fn report(
    client: &Client,
    pid: u32,
    format: ReportFormat,
    method: Option<Method>,
) -> Result<Vec<u8>, ClientError> {
    client.report(pid, format, method)
}

/// Asks the daemon to trace `pid` for `duration`; returns the confirmation to print.
pub fn trace(client: &Client, pid: u32, duration: Duration) -> Result<String, ClientError> {
    let started = client.start_trace(pid, duration)?;
    Ok(format!(
        "tracing pid {} by its {} for {}; its report will be available when the trace ends\n",
        started.pid,
        started.method.looks_at(),
        human_duration(started.duration_seconds)
    ))
}

/// The summary `status` prints, from the daemon's `/api/v1/status` answer (read loosely: the
/// probe health may be flattened into it or nested) and its process list, at `now_unix_seconds`
/// (to tell the age of the daemon's snapshot).
pub fn format_status(
    addr: SocketAddr,
    health: &Value,
    processes: &[ProcessView],
    now_unix_seconds: f64,
) -> String {
    let mut out = String::new();
    let top = health.as_object();
    match top
        .and_then(|map| map.get("version"))
        .and_then(Value::as_str)
    {
        Some(version) => {
            let _ = writeln!(out, "leakmon daemon at {addr}, version {version}");
        }
        None => {
            let _ = writeln!(out, "leakmon daemon at {addr}");
        }
    }
    let suspects: Vec<&ProcessView> = processes.iter().filter(|p| p.suspected).collect();
    let traced: Vec<&ProcessView> = processes.iter().filter(|p| p.traced).collect();
    let count = |key: &str, listed: usize| {
        top.and_then(|map| map.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(listed as u64)
    };
    let _ = write!(
        out,
        "processes: {} watched, {} suspected, {} traced",
        count("processes_watched", processes.len()),
        count("processes_suspected", suspects.len()),
        count("processes_traced", traced.len())
    );
    match top
        .and_then(|map| map.get("updated_unix_seconds"))
        .and_then(Value::as_f64)
    {
        Some(updated) if updated > 0.0 => {
            let age = (now_unix_seconds - updated).max(0.0);
            let _ = writeln!(out, " (updated {} ago)", human_duration(age.max(1.0)));
        }
        _ => out.push('\n'),
    }
    let probes = top.map(probe_fields);
    let counts = top
        .map(|map| daemon_counts(map, probes))
        .unwrap_or_default();
    if !counts.is_empty() {
        let _ = writeln!(out, "daemon: {}", counts.join(", "));
    }

    out.push('\n');
    if suspects.is_empty() {
        let _ = writeln!(out, "no suspected leaks");
    } else {
        let _ = writeln!(out, "suspects:");
        for process in &suspects {
            write_suspect(&mut out, process);
        }
    }

    let mut traced_pids: Vec<u64> = probes
        .and_then(|map| map.get("traced_pids"))
        .and_then(Value::as_array)
        .map(|pids| pids.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    traced_pids.retain(|pid| !traced.iter().any(|p| u64::from(p.pid) == *pid));
    if !traced.is_empty() || !traced_pids.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "traced:");
        for process in &traced {
            let outstanding = process
                .outstanding_bytes
                .map_or_else(|| "unknown".to_owned(), human_bytes);
            // A page-fault trace's figure is the resident memory its stacks brought in.
            let (by, held) = match process.trace_method {
                Some(Method::PageFaults) => (" by page faults", "resident"),
                Some(Method::Allocations) => (" by allocations", "outstanding"),
                None => ("", "outstanding"),
            };
            let _ = writeln!(
                out,
                "  {} {}{by}: {held} {outstanding}",
                process.pid, process.comm
            );
        }
        for pid in traced_pids {
            let _ = writeln!(out, "  {pid}");
        }
    }

    if let Some(top) = top {
        write_oom_kills(&mut out, top, now_unix_seconds);
        write_report_store(&mut out, top);
    }

    out.push('\n');
    write_probes(&mut out, probes);
    out
}

/// The recent OOM kills of the status answer, each with its report's culprit stack.
fn write_oom_kills(out: &mut String, top: &Map<String, Value>, now_unix_seconds: f64) {
    let total = top
        .get("oom_kills_total")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let kills: Vec<OomKill> = top
        .get("oom_kills")
        .and_then(|kills| serde_json::from_value(kills.clone()).ok())
        .unwrap_or_default();
    if total == 0 && kills.is_empty() {
        return;
    }
    out.push('\n');
    let _ = writeln!(out, "OOM kills: {total} since the daemon started");
    for kill in &kills {
        let limit = match (kill.limit_bytes, &kill.limit) {
            (Some(bytes), Some(name)) => format!(" of a {} limit ({name})", human_bytes(bytes)),
            (Some(bytes), None) => format!(" of a {} limit", human_bytes(bytes)),
            (None, _) => String::new(),
        };
        let ago = human_duration((now_unix_seconds - kill.unix_seconds).max(1.0));
        let _ = writeln!(
            out,
            "  {} {}: killed {ago} ago at RSS {}{limit}",
            kill.pid,
            kill.comm,
            human_bytes(kill.rss_bytes)
        );
        match (&kill.report, kill.culprit.is_empty()) {
            (Some(report), false) => {
                let _ = writeln!(out, "      report {report}; leaking in:");
                for frame in &kill.culprit {
                    let _ = writeln!(out, "        {frame}");
                }
            }
            (Some(report), true) => {
                let _ = writeln!(out, "      report {report}; no leaking stack in it");
            }
            (None, _) => {
                let _ = writeln!(out, "      no report (it was not traced before the kill)");
            }
        }
    }
}

/// The report store's health, when writing reports has failed.
fn write_report_store(out: &mut String, top: &Map<String, Value>) {
    let Some(store) = top
        .get("report_store")
        .and_then(|store| serde_json::from_value::<StoreHealth>(store.clone()).ok())
    else {
        return;
    };
    if store.errors_total == 0 && store.unstored == 0 {
        return;
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "REPORT STORE: {} failed write(s); {} report(s) held in memory only (served, and written \
         again every few seconds)",
        store.errors_total, store.unstored
    );
    if let Some(error) = &store.last_error {
        let _ = writeln!(out, "  last error: {error}");
    }
}

fn write_suspect(out: &mut String, process: &ProcessView) {
    let unit = process
        .unit
        .as_deref()
        .map(|unit| format!(" [{unit}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {} {}{unit}: {}",
        process.pid,
        process.comm,
        reasons_text(&process.reasons)
    );
    let _ = writeln!(
        out,
        "      RSS {} ({}), VSZ {} ({}), fds {} ({}), threads {} ({})",
        human_bytes(process.rss_bytes),
        human_rate(process.rss_growth_bytes_per_second),
        human_bytes(process.vsz_bytes),
        human_rate(process.vsz_growth_bytes_per_second),
        process.open_fds,
        human_count_rate(process.fd_growth_per_second),
        process.threads,
        human_count_rate(process.thread_growth_per_second),
    );
    if let Some(memory) = &process.memory {
        let _ = writeln!(out, "      {}", memory_line(memory));
    }
    let mut facts = Vec::new();
    if let Some(seconds) = process.seconds_until_exhaustion {
        let limit = process
            .memory_limit
            .as_ref()
            .filter(|_| process.reasons.contains(&Reason::Rss))
            .map(|limit| format!(" ({limit})"))
            .unwrap_or_default();
        facts.push(format!("runs out in {}{limit}", human_duration(seconds)));
    }
    if process.traced {
        facts.push("traced now".to_owned());
    }
    if let Some(report) = &process.latest_report {
        facts.push(format!("latest report {report}"));
    }
    if !facts.is_empty() {
        let _ = writeln!(out, "      {}", facts.join("; "));
    }
}

/// Keys of the probe health in the status answer.
const PROBE_KEYS: [&str; 6] = [
    "loaded",
    "error",
    "events",
    "dropped",
    "map_entries",
    "traced_pids",
];

/// The object holding the probe health: a nested object that has `loaded`, or the top level.
fn probe_fields(top: &Map<String, Value>) -> &Map<String, Value> {
    ["probes", "probe", "probe_health", "health"]
        .iter()
        .filter_map(|key| top.get(*key).and_then(Value::as_object))
        .find(|nested| nested.contains_key("loaded"))
        .unwrap_or(top)
}

/// Status fields shown on their own lines.
const SHOWN_KEYS: [&str; 6] = [
    "version",
    "updated_unix_seconds",
    "processes_watched",
    "processes_suspected",
    "processes_traced",
    "oom_kills_total",
];

/// Other numeric top-level fields (and those of a `counts` object) that are not probe health,
/// as `name=value`.
fn daemon_counts(top: &Map<String, Value>, probes: Option<&Map<String, Value>>) -> Vec<String> {
    let flattened = probes.is_some_and(|probes| std::ptr::eq(probes, top));
    let nested = top.get("counts").and_then(Value::as_object);
    top.iter()
        .filter(|(key, _)| !(flattened && PROBE_KEYS.contains(&key.as_str())))
        .filter(|(key, _)| !SHOWN_KEYS.contains(&key.as_str()))
        .chain(nested.into_iter().flatten())
        .filter(|(_, value)| value.is_number())
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

fn write_probes(out: &mut String, probes: Option<&Map<String, Value>>) {
    let Some(probes) = probes.filter(|probes| probes.contains_key("loaded")) else {
        let _ = writeln!(out, "probes: unknown (the daemon's status does not say)");
        return;
    };
    let loaded = probes.get("loaded").and_then(Value::as_bool) == Some(true);
    let error = probes.get("error").and_then(Value::as_str);
    match (loaded, error) {
        (true, None) => {
            let _ = writeln!(out, "probes: loaded");
        }
        (true, Some(error)) => {
            let _ = writeln!(out, "probes: loaded ({error})");
        }
        (false, Some(error)) => {
            let _ = writeln!(out, "probes: NOT LOADED: {error}");
        }
        (false, None) => {
            let _ = writeln!(out, "probes: NOT LOADED");
        }
    }
    let dropped = counters(probes, "dropped", true);
    if !dropped.is_empty() {
        let _ = writeln!(out, "  dropped: {}", dropped.join(", "));
    }
    let entries = counters(probes, "map_entries", false);
    if !entries.is_empty() {
        let _ = writeln!(out, "  map entries: {}", entries.join(", "));
    }
    let events = counters(probes, "events", true);
    if !events.is_empty() {
        let _ = writeln!(out, "  events: {}", events.join(", "));
    }
}

/// The `name=count` pairs of the object `key`, without zeros when `skip_zero`.
fn counters(probes: &Map<String, Value>, key: &str, skip_zero: bool) -> Vec<String> {
    probes
        .get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, value)| !(skip_zero && value.as_f64() == Some(0.0)))
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// A duration for people: `45 s`, `12m 05s`, `3h 12m`, `4d 06h`; `now` when not positive and
/// `unknown` when not finite.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "unknown".to_owned();
    }
    if seconds <= 0.0 {
        return "now".to_owned();
    }
    if seconds < 60.0 {
        return format!("{} s", seconds.round().max(1.0));
    }
    let whole = seconds.round() as u64;
    let (minutes, hours, days) = (whole / 60, whole / 3600, whole / 86_400);
    if hours == 0 {
        format!("{minutes}m {:02}s", whole % 60)
    } else if days == 0 {
        format!("{hours}h {:02}m", minutes % 60)
    } else {
        format!("{days}d {:02}h", hours % 24)
    }
}

/// A signed rate of a count per second: `+0.50/s`, `-12.0/s`, `0/s`.
pub fn human_count_rate(per_second: f64) -> String {
    if !per_second.is_finite() {
        return "unknown".to_owned();
    }
    if per_second == 0.0 {
        return "0/s".to_owned();
    }
    if per_second.abs() < 10.0 {
        format!("{per_second:+.2}/s")
    } else {
        format!("{per_second:+.1}/s")
    }
}

/// The reasons, comma-separated: `rss, fds`.
pub fn reasons_text(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|reason| reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The time until exhaustion, or `-` when nothing is running out.
pub fn forecast_text(seconds_until_exhaustion: Option<f64>) -> String {
    seconds_until_exhaustion.map_or_else(|| "-".to_owned(), human_duration)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Memory, MemoryClass};

    #[test]
    fn connect_finds_the_daemon_in_its_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = dir.path().join("absent.toml");
        let default = connect_with(&Connect::default(), &nowhere).unwrap();
        assert_eq!(default.addr(), "127.0.0.1:9464".parse().unwrap());

        let system = dir.path().join("system.toml");
        std::fs::write(&system, "[daemon]\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        let from_system = connect_with(&Connect::default(), &system).unwrap();
        assert_eq!(from_system.addr(), "127.0.0.1:9000".parse().unwrap());

        let named = dir.path().join("named.toml");
        std::fs::write(&named, "[daemon]\nlisten = \"[::]:9001\"\n").unwrap();
        let options = Connect {
            config: Some(named.clone()),
            ..Connect::default()
        };
        let from_named = connect_with(&options, &system).unwrap();
        assert_eq!(from_named.addr(), "[::1]:9001".parse().unwrap());

        let options = Connect {
            daemon: Some("127.0.0.2:9002".parse().unwrap()),
            config: Some(named),
            ..Connect::default()
        };
        let explicit = connect_with(&options, &system).unwrap();
        assert_eq!(explicit.addr(), "127.0.0.2:9002".parse().unwrap());
    }

    #[test]
    fn connect_names_a_bad_configuration_or_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.toml");
        std::fs::write(&broken, "[daemon]\nlisten = 9464\n").unwrap();
        let error = connect_with(&Connect::default(), &broken).unwrap_err();
        assert!(matches!(error, ConnectError::Config(_)), "{error:?}");
        assert!(
            error.to_string().starts_with(&broken.display().to_string()),
            "{error}"
        );

        let missing = dir.path().join("token");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!("[daemon]\ntoken_file = \"{}\"\n", missing.display()),
        )
        .unwrap();
        let options = Connect {
            config: Some(config),
            ..Connect::default()
        };
        let error = connect_with(&options, &broken).unwrap_err();
        assert!(matches!(error, ConnectError::Token(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}: cannot read the API token", missing.display())),
            "{error}"
        );
        let options = Connect {
            daemon: Some("127.0.0.1:9464".parse().unwrap()),
            token_file: Some(missing),
            ..Connect::default()
        };
        let error = connect_with(&options, &broken).unwrap_err();
        assert!(matches!(error, ConnectError::Token(_)), "{error:?}");
    }

    fn process(pid: u32, comm: &str) -> ProcessView {
        ProcessView {
            rss_bytes: 10 * 1024 * 1024,
            vsz_bytes: 100 * 1024 * 1024,
            open_fds: 12,
            ..crate::testing::process_view(pid, comm)
        }
    }

    fn processes() -> Vec<ProcessView> {
        let mut leaky = process(4242, "app");
        leaky.unit = Some("app.service".to_owned());
        leaky.suspected = true;
        leaky.reasons = vec![Reason::Rss, Reason::Fds];
        leaky.rss_growth_bytes_per_second = 3.0 * 1024.0 * 1024.0;
        leaky.fd_growth_per_second = 0.5;
        leaky.seconds_until_exhaustion = Some(2.0 * 3600.0 + 13.0 * 60.0);
        leaky.traced = true;
        leaky.trace_method = Some(Method::Allocations);
        leaky.outstanding_bytes = Some(12 * 1024 * 1024);
        leaky.latest_report = Some("4242-1700000000".to_owned());
        leaky.threads = 9;
        leaky.thread_growth_per_second = 0.25;
        leaky.memory = Some(Memory {
            heap: MemoryClass {
                resident_bytes: 8 << 20,
                growth_bytes_per_second: 3.0 * 1024.0 * 1024.0,
            },
            file: MemoryClass {
                resident_bytes: 2 << 20,
                growth_bytes_per_second: 0.0,
            },
            ..Memory::default()
        });
        vec![leaky, process(1, "init")]
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }

    #[test]
    fn status_with_nested_probe_health() {
        let health = json!({
            "version": "0.1.0",
            "updated_unix_seconds": 1000.0,
            "processes_watched": 143,
            "processes_suspected": 1,
            "processes_traced": 1,
            "reports_stored": 2,
            "probes": {
                "loaded": true,
                "error": null,
                "events": {"allocs": 100, "frees": 0},
                "dropped": {"map_full": 3, "stack_failed": 0},
                "map_entries": {"allocs": 1200, "stacks": 300},
                "traced_pids": [4242, 99]
            }
        });
        let text = format_status(addr(), &health, &processes(), 1003.2);
        assert_eq!(
            text,
            "leakmon daemon at 127.0.0.1:9464, version 0.1.0\n\
             processes: 143 watched, 1 suspected, 1 traced (updated 3 s ago)\n\
             daemon: reports_stored=2\n\
             \n\
             suspects:\n  \
               4242 app [app.service]: rss, fds\n      \
                 RSS 10.0 MiB (+3.0 MiB/s), VSZ 100.0 MiB (0 B/s), fds 12 (+0.50/s), threads 9 \
                 (+0.25/s)\n      \
                 memory: RSS 10.0 MiB, +180.0 MiB/min: heap +180.0 MiB/min\n      \
                 runs out in 2h 13m; traced now; latest report 4242-1700000000\n\
             \n\
             traced:\n  \
               4242 app by allocations: outstanding 12.0 MiB\n  \
               99\n\
             \n\
             probes: loaded\n  \
               dropped: map_full=3\n  \
               map entries: allocs=1200, stacks=300\n  \
               events: allocs=100\n"
        );
    }

    #[test]
    fn status_with_flattened_probe_health_that_failed() {
        let health = json!({
            "loaded": false,
            "error": "not running as root",
            "events": {},
            "dropped": {},
            "map_entries": {},
            "traced_pids": [],
            "counts": {"reports": 4}
        });
        let text = format_status(addr(), &health, &[process(1, "init")], 0.0);
        assert_eq!(
            text,
            "leakmon daemon at 127.0.0.1:9464\n\
             processes: 1 watched, 0 suspected, 0 traced\n\
             daemon: reports=4\n\
             \n\
             no suspected leaks\n\
             \n\
             probes: NOT LOADED: not running as root\n"
        );
    }

    #[test]
    fn status_lists_oom_kills_and_report_store_failures() {
        let health = json!({
            "version": "0.1.0",
            "processes_watched": 3,
            "processes_suspected": 0,
            "processes_traced": 0,
            "oom_kills_total": 2,
            "oom_kills": [
                {
                    "pid": 77, "start_time_ticks": 5, "comm": "flood",
                    "unix_seconds": 990.0, "rss_bytes": 1073741824u64,
                    "limit_bytes": 1073741824u64,
                    "limit": "memory.limit_in_bytes of /svc", "report": "1-77-flood",
                    "culprit": ["leak_on_error", "handle_request", "main"]
                },
                {
                    "pid": 78, "start_time_ticks": 6, "comm": "other",
                    "unix_seconds": 400.0, "rss_bytes": 1048576u64, "limit_bytes": null,
                    "limit": null, "report": null, "culprit": []
                }
            ],
            "report_store": {
                "errors_total": 3, "unstored": 1,
                "last_error": "cannot write x: No space left on device (os error 28)"
            },
            "probes": {"loaded": true}
        });
        let text = format_status(addr(), &health, &[], 1000.0);
        assert!(
            text.contains(
                "OOM kills: 2 since the daemon started\n  \
                   77 flood: killed 10 s ago at RSS 1.0 GiB of a 1.0 GiB limit \
                   (memory.limit_in_bytes of /svc)\n      \
                     report 1-77-flood; leaking in:\n        \
                       leak_on_error\n        \
                       handle_request\n        \
                       main\n  \
                   78 other: killed 10m 00s ago at RSS 1.0 MiB\n      \
                     no report (it was not traced before the kill)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "REPORT STORE: 3 failed write(s); 1 report(s) held in memory only (served, and \
                 written again every few seconds)\n  \
                   last error: cannot write x: No space left on device (os error 28)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("oom_kills_total="), "{text}");
        let quiet =
            json!({"oom_kills_total": 0, "report_store": {"errors_total": 0, "unstored": 0}});
        let text = format_status(addr(), &quiet, &[], 0.0);
        assert!(
            !text.contains("OOM") && !text.contains("REPORT STORE"),
            "{text}"
        );
    }

    #[test]
    fn status_without_probe_health() {
        let text = format_status(addr(), &json!("ok"), &[], 0.0);
        assert!(text.ends_with("probes: unknown (the daemon's status does not say)\n"));
    }

    #[test]
    fn durations_rates_and_reasons() {
        assert_eq!(human_duration(0.2), "1 s");
        assert_eq!(human_duration(45.4), "45 s");
        assert_eq!(human_duration(725.0), "12m 05s");
        assert_eq!(human_duration(3.0 * 3600.0 + 12.0 * 60.0 + 10.0), "3h 12m");
        assert_eq!(human_duration(4.0 * 86_400.0 + 6.0 * 3600.0), "4d 06h");
        assert_eq!(human_duration(-3.0), "now");
        assert_eq!(human_duration(f64::NAN), "unknown");
        assert_eq!(human_count_rate(0.5), "+0.50/s");
        assert_eq!(human_count_rate(-12.0), "-12.0/s");
        assert_eq!(human_count_rate(0.0), "0/s");
        assert_eq!(reasons_text(&[Reason::Vsz, Reason::Fds]), "vsz, fds");
        assert_eq!(forecast_text(None), "-");
        assert_eq!(forecast_text(Some(90.0)), "1m 30s");
    }
}
