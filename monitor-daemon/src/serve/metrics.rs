//! The Prometheus text exposition (format 0.0.4) of a [`Snapshot`]: per-process gauges for the
//! most relevant processes (with, for the suspected and traced ones among them, what their
//! memory is made of, one series per class), the probes' counters and map sizes, and the
//! daemon's own process metrics under the standard `process_*` names.
//!
//! Written by hand: every family gets its `# HELP` and `# TYPE` lines and its samples together,
//! label values are escaped, and floats use the spellings Prometheus parses (`NaN`, `+Inf`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use monitor_common::Stat;

use crate::model::{MemoryClass, Method, ProcessView, Reason, Snapshot};
use crate::watch::procfs;

/// Renders `snapshot` in the Prometheus text format. Only the first `max_process_series`
/// processes (the snapshot is ordered most relevant first) get per-process series.
pub fn render(snapshot: &Snapshot, max_process_series: usize) -> String {
    let mut out = Exposition::default();
    let processes = &snapshot.processes[..snapshot.processes.len().min(max_process_series)];
    let probes = &snapshot.probes;

    out.family(
        "leakmon_build_info",
        "gauge",
        "Always 1; the version label says which leakmon is running.",
    );
    out.sample(
        "leakmon_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    out.gauge(
        "leakmon_snapshot_timestamp_seconds",
        "When the published snapshot was taken, in seconds since the Unix epoch.",
        snapshot.updated_unix_seconds,
    );
    out.gauge(
        "leakmon_processes_watched",
        "Processes the watcher samples.",
        snapshot.processes.len() as f64,
    );
    out.gauge(
        "leakmon_processes_suspected",
        "Watched processes suspected of leaking.",
        snapshot.processes.iter().filter(|p| p.suspected).count() as f64,
    );
    out.gauge(
        "leakmon_processes_traced",
        "Processes a tracer is attached to (either method).",
        traced_count(snapshot) as f64,
    );
    out.family(
        "leakmon_processes_traced_by_method",
        "gauge",
        "Processes traced now, by method (page_faults: their page faults; allocations: the \
         allocator probes).",
    );
    for method in Method::ALL {
        let traced = snapshot
            .processes
            .iter()
            .filter(|p| p.trace_method == Some(method))
            .count();
        out.sample(
            "leakmon_processes_traced_by_method",
            &[("method", method.name())],
            traced as f64,
        );
    }
    out.gauge(
        "leakmon_processes_without_series",
        "Watched processes left without per-process series by the series cap.",
        (snapshot.processes.len() - processes.len()) as f64,
    );
    out.gauge(
        "leakmon_probes_loaded",
        "1 when the eBPF programs are loaded, else 0.",
        flag(probes.loaded),
    );

    out.family(
        "leakmon_probe_events_total",
        "counter",
        "Ordinary probe activity since the daemon started, by event.",
    );
    for (name, value) in counters(&probes.events, false) {
        out.sample(
            "leakmon_probe_events_total",
            &[("event", name)],
            value as f64,
        );
    }
    out.family(
        "leakmon_probe_events_dropped_total",
        "counter",
        "Probe data lost since the daemon started, by reason.",
    );
    for (name, value) in counters(&probes.dropped, true) {
        out.sample(
            "leakmon_probe_events_dropped_total",
            &[("reason", name)],
            value as f64,
        );
    }
    out.family(
        "leakmon_oom_kills_total",
        "counter",
        "Watched processes the kernel's OOM killer killed since the daemon started.",
    );
    out.sample(
        "leakmon_oom_kills_total",
        &[],
        snapshot.oom_kills_total as f64,
    );
    out.family(
        "leakmon_report_store_errors_total",
        "counter",
        "Failed attempts to write a report to the state directory (a full or read-only file \
         system) since the daemon started.",
    );
    out.sample(
        "leakmon_report_store_errors_total",
        &[],
        snapshot.report_store.errors_total as f64,
    );
    out.gauge(
        "leakmon_reports_unstored",
        "Reports held in memory only, served from there and written again until they are stored.",
        snapshot.report_store.unstored as f64,
    );
    out.family(
        "leakmon_bpf_map_entries",
        "gauge",
        "Entries in each kernel map.",
    );
    for (map, entries) in &probes.map_entries {
        out.sample("leakmon_bpf_map_entries", &[("map", map)], *entries as f64);
    }

    process_families(&mut out, processes);
    self_metrics(&mut out);
    out.text
}

/// Processes the tracer is attached to, as the API's status also counts them.
pub fn traced_count(snapshot: &Snapshot) -> usize {
    snapshot.probes.traced_pids.len()
}

/// A per-process gauge: its name, its help, and the value of a process (`None`: no sample).
type ProcessFamily = (&'static str, &'static str, fn(&ProcessView) -> Option<f64>);

const PROCESS_FAMILIES: [ProcessFamily; 14] = [
    ("leakmon_process_rss_bytes", "Resident set size.", |p| {
        Some(p.rss_bytes as f64)
    }),
    ("leakmon_process_vsz_bytes", "Virtual memory size.", |p| {
        Some(p.vsz_bytes as f64)
    }),
    (
        "leakmon_process_anon_bytes",
        "Resident anonymous memory.",
        |p| Some(p.anon_bytes as f64),
    ),
    ("leakmon_process_swap_bytes", "Swapped-out memory.", |p| {
        Some(p.swap_bytes as f64)
    }),
    ("leakmon_process_threads", "Threads.", |p| {
        Some(p.threads as f64)
    }),
    ("leakmon_process_open_fds", "Open file descriptors.", |p| {
        Some(p.open_fds as f64)
    }),
    (
        "leakmon_process_rss_growth_bytes_per_second",
        "Robust growth of the resident set size over the watch window.",
        |p| Some(p.rss_growth_bytes_per_second),
    ),
    (
        "leakmon_process_vsz_growth_bytes_per_second",
        "Robust growth of the virtual memory size over the watch window.",
        |p| Some(p.vsz_growth_bytes_per_second),
    ),
    (
        "leakmon_process_open_fds_growth_per_second",
        "Robust growth of the open file descriptors over the watch window.",
        |p| Some(p.fd_growth_per_second),
    ),
    (
        "leakmon_process_threads_growth_per_second",
        "Robust growth of the threads over the watch window.",
        |p| Some(p.thread_growth_per_second),
    ),
    (
        "leakmon_process_leak_suspected",
        "1 when the process is suspected of leaking, else 0.",
        |p| Some(flag(p.suspected)),
    ),
    (
        "leakmon_process_seconds_until_exhaustion",
        "Forecast seconds until the growing resource runs out (only processes with a forecast).",
        |p| p.seconds_until_exhaustion,
    ),
    (
        "leakmon_process_traced",
        "1 while a tracer (either method) is attached to the process, else 0.",
        |p| Some(flag(p.traced)),
    ),
    (
        "leakmon_process_outstanding_bytes",
        "Outstanding bytes the allocation tracer sees (only traced processes).",
        |p| p.outstanding_bytes.filter(|_| p.traced).map(|b| b as f64),
    ),
];

/// A per-class gauge of a process's memory: its name, its help, and the value of a class.
type ClassFamily = (&'static str, &'static str, fn(&MemoryClass) -> f64);

fn process_families(out: &mut Exposition, processes: &[ProcessView]) {
    for (name, help, value) in PROCESS_FAMILIES {
        out.family(name, "gauge", help);
        for process in processes {
            if let Some(v) = value(process) {
                let pid = process.pid.to_string();
                let labels = process_labels(process, &pid);
                out.sample(name, &labels, v);
            }
        }
    }
    let name = "leakmon_process_leak_reason";
    out.family(
        name,
        "gauge",
        "1 for each reason the process is suspected of leaking (rss, vsz, fds, threads, \
         exhaustion_imminent), else 0.",
    );
    for process in processes {
        let pid = process.pid.to_string();
        for reason in Reason::ALL {
            let mut labels = process_labels(process, &pid).to_vec();
            labels.push(("reason", reason.as_str()));
            out.sample(name, &labels, flag(process.reasons.contains(&reason)));
        }
    }
    let memory_families: [ClassFamily; 2] = [
        (
            "leakmon_process_memory_bytes",
            "What the memory of a suspected or traced process is made of, by class (heap, \
             anon_mappings, thread_stacks, file, shmem: resident bytes; swap: bytes in swap).",
            |class| class.resident_bytes as f64,
        ),
        (
            "leakmon_process_memory_growth_bytes_per_second",
            "Robust growth of each class of the memory of a suspected or traced process.",
            |class| class.growth_bytes_per_second,
        ),
    ];
    for (name, help, value) in memory_families {
        out.family(name, "gauge", help);
        for process in processes {
            let Some(memory) = &process.memory else {
                continue;
            };
            let pid = process.pid.to_string();
            for (class_name, class) in memory.classes() {
                let mut labels = process_labels(process, &pid).to_vec();
                labels.push(("class", class_name));
                out.sample(name, &labels, value(class));
            }
        }
    }
}

fn process_labels<'a>(process: &'a ProcessView, pid: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("pid", pid),
        ("comm", &process.comm),
        ("unit", process.unit.as_deref().unwrap_or("")),
    ]
}

/// The daemon's own process metrics from `/proc`; any that cannot be read are left out.
fn self_metrics(out: &mut Exposition) {
    let pid = std::process::id();
    let ticks = clock_ticks_per_second();
    if let Some((cpu_ticks, start_ticks)) = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_self_stat(&stat))
    {
        out.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        out.sample("process_cpu_seconds_total", &[], cpu_ticks as f64 / ticks);
        if let Some(boot) = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| parse_boot_time(&stat))
        {
            out.gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + start_ticks as f64 / ticks,
            );
        }
    }
    if let Ok(status) = procfs::read_status(pid) {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            status.vm_rss as f64,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            status.vm_size as f64,
        );
        out.gauge(
            "process_threads",
            "Number of OS threads in the process.",
            status.threads as f64,
        );
    }
    if let Ok(fds) = procfs::count_fds(pid) {
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds as f64,
        );
    }
}

/// `utime + stime` and `starttime` (fields 14, 15 and 22) of `/proc/self/stat`, in clock ticks.
fn parse_self_stat(text: &str) -> Option<(u64, u64)> {
    // Fields from 3 (state) on follow the last `)` closing the command name.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?.checked_add(field(15)?)?, field(22)?))
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the Unix epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Every counter of the probes' statistics array of the given kind (zero when absent), then any
/// other name `values` holds, by name.
fn counters(values: &BTreeMap<String, u64>, drops: bool) -> Vec<(&str, u64)> {
    let known: Vec<&str> = Stat::ALL
        .into_iter()
        .filter(|stat| stat.is_drop() == drops)
        .map(Stat::name)
        .collect();
    let mut all: Vec<(&str, u64)> = known
        .iter()
        .map(|name| (*name, values.get(*name).copied().unwrap_or(0)))
        .collect();
    all.extend(
        values
            .iter()
            .filter(|(name, _)| !known.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str(), *value)),
    );
    all.sort_unstable_by_key(|(name, _)| *name);
    all
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

/// Text being written.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label_value(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            other => out.push(other),
        }
    }
    out
}

/// Escapes a HELP text: backslash and line feed.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::model::{Memory, ProbeHealth, StoreHealth};

    fn process(pid: u32, comm: &str) -> ProcessView {
        ProcessView {
            start_time_ticks: 1000,
            rss_bytes: 4096 * u64::from(pid),
            vsz_bytes: 8192,
            anon_bytes: 2048,
            threads: 2,
            open_fds: 5,
            ..crate::testing::process_view(pid, comm)
        }
    }

    fn snapshot() -> Snapshot {
        let mut leaky = process(10, "leaky");
        leaky.unit = Some("leaky.service".to_owned());
        leaky.suspected = true;
        leaky.reasons = vec![Reason::Rss, Reason::Fds];
        leaky.rss_growth_bytes_per_second = 65536.5;
        leaky.fd_growth_per_second = 1.25;
        leaky.seconds_until_exhaustion = Some(3600.0);
        leaky.traced = true;
        leaky.trace_method = Some(Method::PageFaults);
        leaky.outstanding_bytes = Some(123_456);
        leaky.thread_growth_per_second = 2.5;
        leaky.memory = Some(Memory {
            heap: MemoryClass {
                resident_bytes: 40 << 20,
                growth_bytes_per_second: 60_000.0,
            },
            thread_stacks: MemoryClass {
                resident_bytes: 1 << 20,
                growth_bytes_per_second: -0.5,
            },
            ..Memory::default()
        });
        Snapshot {
            updated_unix_seconds: 1_700_000_000.5,
            processes: vec![leaky, process(11, "we\"ird\\na\nme"), process(12, "plain")],
            probes: ProbeHealth {
                loaded: true,
                error: None,
                events: BTreeMap::from([("allocs".to_owned(), 42)]),
                dropped: BTreeMap::from([("ringbuf_full".to_owned(), 3)]),
                map_entries: BTreeMap::from([("allocs".to_owned(), 17)]),
                traced_pids: vec![10],
            },
            oom_kills_total: 3,
            report_store: StoreHealth {
                errors_total: 5,
                unstored: 2,
                last_error: None,
            },
            ..Snapshot::default()
        }
    }

    /// The value of the sample line starting with `prefix` (name and labels).
    fn value(text: &str, prefix: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn required_names_present() {
        let text = render(&snapshot(), 100);
        for name in [
            "leakmon_process_rss_bytes",
            "leakmon_process_vsz_bytes",
            "leakmon_process_open_fds",
            "leakmon_process_rss_growth_bytes_per_second",
            "leakmon_process_vsz_growth_bytes_per_second",
            "leakmon_process_open_fds_growth_per_second",
            "leakmon_process_threads",
            "leakmon_process_threads_growth_per_second",
            "leakmon_process_memory_bytes",
            "leakmon_process_memory_growth_bytes_per_second",
            "leakmon_process_leak_suspected",
            "leakmon_process_leak_reason",
            "leakmon_process_seconds_until_exhaustion",
            "leakmon_process_traced",
            "leakmon_process_outstanding_bytes",
            "leakmon_probe_events_total",
            "leakmon_probe_events_dropped_total",
            "leakmon_bpf_map_entries",
            "leakmon_oom_kills_total",
            "leakmon_report_store_errors_total",
            "leakmon_reports_unstored",
            "leakmon_process_threads_growth_per_second",
            "leakmon_processes_watched",
            "leakmon_processes_suspected",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{'])),
                "no sample of {name}"
            );
        }
        let leaky = r#"{pid="10",comm="leaky",unit="leaky.service"}"#;
        let plain = r#"{pid="12",comm="plain",unit=""}"#;
        assert_eq!(
            value(
                &text,
                &format!("leakmon_process_rss_growth_bytes_per_second{leaky}")
            ),
            Some("65536.5".to_owned())
        );
        assert_eq!(
            value(&text, &format!("leakmon_process_leak_suspected{plain}")),
            Some("0".to_owned())
        );
        let reason = |r: &str| {
            let labels = format!(r#"pid="10",comm="leaky",unit="leaky.service",reason="{r}""#);
            value(&text, &format!("leakmon_process_leak_reason{{{labels}}}"))
        };
        assert_eq!(reason("rss"), Some("1".to_owned()));
        assert_eq!(reason("vsz"), Some("0".to_owned()));
        assert_eq!(reason("fds"), Some("1".to_owned()));
        assert_eq!(reason("threads"), Some("0".to_owned()));
        assert_eq!(
            value(
                &text,
                &format!("leakmon_process_threads_growth_per_second{leaky}")
            ),
            Some("2.5".to_owned())
        );
        // Memory classes only for the process that has them: every class, once each.
        let class = |name: &str, c: &str| {
            let labels = format!(r#"pid="10",comm="leaky",unit="leaky.service",class="{c}""#);
            value(&text, &format!("{name}{{{labels}}}"))
        };
        assert_eq!(
            class("leakmon_process_memory_bytes", "heap"),
            Some("41943040".to_owned())
        );
        assert_eq!(
            class(
                "leakmon_process_memory_growth_bytes_per_second",
                "thread_stacks"
            ),
            Some("-0.5".to_owned())
        );
        assert_eq!(
            class("leakmon_process_memory_bytes", "swap"),
            Some("0".to_owned())
        );
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("leakmon_process_memory_bytes{"))
                .count(),
            6
        );
        // Forecast and outstanding bytes only where known.
        assert_eq!(
            value(
                &text,
                &format!("leakmon_process_seconds_until_exhaustion{leaky}")
            ),
            Some("3600".to_owned())
        );
        assert_eq!(
            value(&text, &format!("leakmon_process_outstanding_bytes{leaky}")),
            Some("123456".to_owned())
        );
        assert!(!text.contains(&format!("leakmon_process_seconds_until_exhaustion{plain}")));
        assert!(!text.contains(&format!("leakmon_process_outstanding_bytes{plain}")));
        assert_eq!(
            value(&text, "leakmon_processes_watched"),
            Some("3".to_owned())
        );
        assert_eq!(
            value(&text, "leakmon_processes_suspected"),
            Some("1".to_owned())
        );
        assert_eq!(
            value(&text, "leakmon_processes_traced"),
            Some("1".to_owned())
        );
        assert_eq!(
            value(
                &text,
                r#"leakmon_processes_traced_by_method{method="page_faults"}"#
            ),
            Some("1".to_owned())
        );
        assert_eq!(
            value(
                &text,
                r#"leakmon_processes_traced_by_method{method="allocations"}"#
            ),
            Some("0".to_owned())
        );
        assert_eq!(
            value(&text, r#"leakmon_bpf_map_entries{map="allocs"}"#),
            Some("17".to_owned())
        );
        assert_eq!(
            value(&text, "leakmon_oom_kills_total"),
            Some("3".to_owned())
        );
        assert_eq!(
            value(&text, "leakmon_report_store_errors_total"),
            Some("5".to_owned())
        );
        assert_eq!(
            value(&text, "leakmon_reports_unstored"),
            Some("2".to_owned())
        );
        let rss: f64 = value(&text, "process_resident_memory_bytes")
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 0.0);
    }

    #[test]
    fn probe_counters_even_when_zero() {
        let text = render(&Snapshot::default(), 100);
        for stat in Stat::ALL {
            let line = if stat.is_drop() {
                format!(
                    "leakmon_probe_events_dropped_total{{reason=\"{}\"}} 0",
                    stat.name()
                )
            } else {
                format!("leakmon_probe_events_total{{event=\"{}\"}} 0", stat.name())
            };
            assert!(text.lines().any(|l| l == line), "{line} missing");
        }
        let text = render(&snapshot(), 100);
        assert_eq!(
            value(&text, r#"leakmon_probe_events_total{event="allocs"}"#),
            Some("42".to_owned())
        );
        assert_eq!(
            value(
                &text,
                r#"leakmon_probe_events_dropped_total{reason="ringbuf_full"}"#
            ),
            Some("3".to_owned())
        );
        assert_eq!(
            value(&text, r#"leakmon_probe_events_total{event="frees"}"#),
            Some("0".to_owned())
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&snapshot(), 100);
        let expected =
            r#"leakmon_process_rss_bytes{pid="11",comm="we\"ird\\na\nme",unit=""} 45056"#;
        assert!(text.lines().any(|l| l == expected), "{text}");
        assert_eq!(escape_label_value("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
        assert_eq!(escape_help("x\\y\nz"), r"x\\y\nz");
        // No raw line feed inside a sample: every line is a comment or a sample.
        assert!(
            text.lines().all(|l| l.starts_with('#')
                || l.starts_with("leakmon_")
                || l.starts_with("process_"))
        );
    }

    #[test]
    fn series_cap() {
        let text = render(&snapshot(), 1);
        let series = |pid: &str| {
            text.lines()
                .filter(|l| l.contains(&format!("{{pid=\"{pid}\"")))
                .count()
        };
        assert!(series("10") >= 13);
        assert_eq!(series("11"), 0);
        assert_eq!(series("12"), 0);
        assert_eq!(
            value(&text, "leakmon_processes_watched"),
            Some("3".to_owned())
        );
        assert_eq!(
            value(&text, "leakmon_processes_without_series"),
            Some("2".to_owned())
        );
        let none = render(&snapshot(), 0);
        assert!(!none.contains("pid=\""));
        assert!(none.contains("# TYPE leakmon_process_rss_bytes gauge"));
    }

    #[test]
    fn values_use_prometheus_spellings() {
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(2.0), "2");
        assert_eq!(format_value(-0.25), "-0.25");
        let mut odd = snapshot();
        odd.processes[0].seconds_until_exhaustion = Some(f64::INFINITY);
        odd.processes[1].rss_growth_bytes_per_second = f64::NAN;
        promtool_accepts(&render(&odd, 100));
    }

    #[test]
    fn parses_proc_files() {
        let stat = "77 (a b) c) S 1 77 77 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 4 0 12345 1 1";
        assert_eq!(parse_self_stat(stat), Some((300, 12345)));
        assert_eq!(parse_self_stat("77 (x) S 1"), None);
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1 2\n"), None);
    }

    fn promtool_accepts(text: &str) {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool must be installed (CI installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool rejected the exposition:\n{}{}\n---\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn promtool_check_metrics_passes() {
        promtool_accepts(&render(&snapshot(), 100));
        promtool_accepts(&render(&Snapshot::default(), 100));
    }
}
