//! Checks of the daemon's Prometheus exposition (`GET /metrics`): every required metric is
//! there, the suspected process has its series, and `promtool check metrics` accepts the text.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// The metric families the daemon must export.
const REQUIRED: [&str; 15] = [
    "leakmon_process_rss_bytes",
    "leakmon_process_threads",
    "leakmon_process_threads_growth_per_second",
    "leakmon_process_memory_bytes",
    "leakmon_process_memory_growth_bytes_per_second",
    "leakmon_process_vsz_bytes",
    "leakmon_process_open_fds",
    "leakmon_process_rss_growth_bytes_per_second",
    "leakmon_process_leak_suspected",
    "leakmon_process_seconds_until_exhaustion",
    "leakmon_process_traced",
    "leakmon_process_outstanding_bytes",
    "leakmon_probe_events_total",
    "leakmon_probe_events_dropped_total",
    "leakmon_bpf_map_entries",
];

/// One sample line: the metric name, its labels as written between the braces, and the value.
#[derive(Debug)]
struct Sample<'t> {
    name: &'t str,
    labels: &'t str,
    value: f64,
}

/// The sample lines of an exposition (comments and blank lines skipped); panics on a line that
/// does not parse.
fn samples(text: &str) -> Vec<Sample<'_>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, rest) = match line.find('{') {
                Some(open) => {
                    let close = line
                        .rfind('}')
                        .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                    ((&line[..open], &line[open + 1..close]), &line[close + 1..])
                }
                None => {
                    let (name, rest) = line
                        .split_once(' ')
                        .unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
                    ((name, ""), rest)
                }
            };
            let value = rest
                .split_whitespace()
                .next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("a sample without a numeric value: {line:?}"));
            Sample {
                name: series.0,
                labels: series.1,
                value,
            }
        })
        .collect()
}

/// The metric families of an exposition: the names of its `# TYPE` lines and of its samples.
fn families(text: &str) -> BTreeSet<&str> {
    let typed = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next());
    typed
        .chain(samples(text).into_iter().map(|sample| sample.name))
        .collect()
}

/// Asserts that the exposition has every required family, some `process_*` family (the
/// daemon's own process metrics), and a `leakmon_process_leak_suspected` series at 1 for
/// `suspected_pid`.
pub fn assert_exposition(text: &str, suspected_pid: u32) {
    let families = families(text);
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|name| !families.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "/metrics lacks {missing:?}; it has {families:?}"
    );
    assert!(
        families.iter().any(|name| name.starts_with("process_")),
        "/metrics has no process_* family; it has {families:?}"
    );
    let pid_label = format!("pid=\"{suspected_pid}\"");
    let suspected: Vec<Sample<'_>> = samples(text)
        .into_iter()
        .filter(|sample| {
            sample.name == "leakmon_process_leak_suspected"
                && sample
                    .labels
                    .split(',')
                    .any(|label| label.trim() == pid_label)
        })
        .collect();
    assert!(
        matches!(suspected[..], [Sample { value: 1.0, .. }]),
        "expected one leakmon_process_leak_suspected series at 1 for pid {suspected_pid}, \
         found {suspected:?}"
    );
}

/// Pipes the exposition into `promtool check metrics` and asserts that it passes.
pub fn assert_promtool_accepts(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running promtool (Debian: prometheus): {error}"));
    promtool
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("writing the exposition to promtool");
    let output = promtool.wait_with_output().expect("waiting for promtool");
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    use super::*;

    /// Every required family with a sample, plus `extra`.
    fn exposition(extra: &str) -> String {
        let mut text = String::new();
        for name in REQUIRED {
            text.push_str(&format!("# TYPE {name} gauge\n{name}{{pid=\"7\"}} 0\n"));
        }
        text.push_str("process_open_fds 9\n");
        text.push_str(extra);
        text
    }

    #[test]
    fn parses_samples_with_and_without_labels() {
        let parsed = samples("# HELP a b\na 1\nb{x=\"1\",y=\"{}\"} 2.5 1700000000\n\n");
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            (parsed[0].name, parsed[0].labels, parsed[0].value),
            ("a", "", 1.0)
        );
        assert_eq!(parsed[1].name, "b");
        assert_eq!(parsed[1].labels, "x=\"1\",y=\"{}\"");
        assert_eq!(parsed[1].value, 2.5);
    }

    #[test]
    fn suspected_series_is_required() {
        let suspected = "leakmon_process_leak_suspected{pid=\"42\",comm=\"rss_leak\"} 1\n";
        assert_exposition(&exposition(suspected), 42);
        let clear = "leakmon_process_leak_suspected{pid=\"42\",comm=\"rss_leak\"} 0\n";
        assert!(catch_unwind(|| assert_exposition(&exposition(clear), 42)).is_err());
        assert!(catch_unwind(|| assert_exposition(&exposition(suspected), 4)).is_err());
    }

    #[test]
    fn a_missing_family_fails() {
        let text = exposition("leakmon_process_leak_suspected{pid=\"42\"} 1\n")
            .replace("leakmon_bpf_map_entries", "leakmon_bpf_maps");
        assert!(catch_unwind(|| assert_exposition(&text, 42)).is_err());
    }
}
