//! `cargo xtask test`: the whole check a change must pass, as a sequence of named steps (set-up,
//! formatting, lints on the host, fuzz and BPF targets, the Prometheus alert rules' tests, unit tests,
//! release build, end-to-end suite)
//! that stops at the first failure and ends with the wall time of every step it ran and one
//! `tests: N passed, M failed` line over every test run.
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::process::{cargo, command, display, run, target_dir};
use crate::{daemon, setup};

/// Which parts of the suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Everything.
    All,
    /// Set-up, formatting, lints, alert rules and unit tests (`--no-e2e`).
    NoE2e,
    /// Set-up, release build and the end-to-end suite (`--only-e2e`).
    OnlyE2e,
}

/// Runs the steps `parts` selects, then prints how long each took.
pub fn test(parts: Parts) -> Result<()> {
    let mut steps = Steps::default();
    let result = run_steps(&mut steps, parts);
    steps.print_times();
    println!("tests: {} passed, {} failed", steps.passed, steps.failed);
    result
}

fn run_steps(steps: &mut Steps, parts: Parts) -> Result<()> {
    steps.run("setup", setup::setup)?;
    if parts != Parts::OnlyE2e {
        steps.run("rustfmt", || run(&mut cargo_with("fmt --all -- --check")?))?;
        steps.run("clippy (host)", || {
            // monitor-ebpf only builds for the BPF target; the next step lints it there.
            let args = "clippy --workspace --exclude monitor-ebpf --all-targets -- -D warnings";
            run(&mut cargo_with(args)?)
        })?;
        steps.run("clippy (fuzz targets)", || {
            // fuzz/ is a workspace of its own that `cargo xtask fuzz` alone would build: lint it
            // here so that a change to the library cannot leave it broken.
            let args = "clippy --manifest-path fuzz/Cargo.toml --bins --target-dir";
            run(cargo_with(args)?
                .arg(target_dir())
                .args(["--", "-D", "warnings"]))
        })?;
        steps.run("clippy (monitor-ebpf, BPF target)", || {
            // A target directory of its own: RUSTC_BOOTSTRAP and build-std would otherwise
            // invalidate the host build.
            let args = "clippy -p monitor-ebpf --target bpfel-unknown-none -Z build-std=core";
            run(cargo_with(args)?
                .env("RUSTC_BOOTSTRAP", "1")
                .arg("--target-dir")
                .arg(target_dir().join("ebpf-clippy"))
                .args(["--", "-D", "warnings"]))
        })?;
        steps.run("promtool test rules", || {
            run(command("promtool")?.args(["check", "rules", ALERT_RULES]))?;
            run(command("promtool")?.args(["test", "rules", ALERT_RULES_TESTS]))
        })?;
        let args =
            "test --workspace --exclude leakmon-tests --exclude monitor-ebpf --lib --bins --tests";
        let mut unit = cargo_with(args)?;
        steps.run_tests("unit tests", &mut unit)?;
    }
    if parts != Parts::NoE2e {
        let leakmon = steps.run("release build", daemon::build_release)?;
        let mut e2e = cargo_with("test --release -p leakmon-tests")?;
        e2e.env("LEAKMON_BIN", &leakmon);
        steps.run_tests("end-to-end tests", &mut e2e)?;
    }
    Ok(())
}

/// The Prometheus alert rules and their unit tests, from the workspace root.
const ALERT_RULES: &str = "deploy/prometheus/alerts.yml";
const ALERT_RULES_TESTS: &str = "deploy/prometheus/alerts_test.yml";

/// Cargo with `args`, a space-separated list.
fn cargo_with(args: &str) -> Result<Command> {
    let mut cargo = cargo()?;
    cargo.args(args.split_whitespace());
    Ok(cargo)
}

/// The steps run so far, how long each took, and the tests they ran.
#[derive(Debug, Default)]
struct Steps {
    times: Vec<(&'static str, Duration)>,
    passed: u64,
    failed: u64,
}

/// The counts of one `test result: ok. N passed; M failed; ...` line of the test harness.
fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            part.trim()
                .strip_suffix(word)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
    };
    Some((count(" passed")?, count(" failed")?))
}

impl Steps {
    /// Runs one step, timing it; a failure names the step.
    fn run<T>(&mut self, name: &'static str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        println!("\n==> {name}");
        let start = Instant::now();
        let result = step();
        self.times.push((name, start.elapsed()));
        result.with_context(|| format!("step `{name}` failed"))
    }

    /// Runs a `cargo test` step, echoing its output and adding up its test counts.
    fn run_tests(&mut self, name: &'static str, command: &mut Command) -> Result<()> {
        let line = display(command);
        let mut counts = (0, 0);
        let result = self.run(name, || {
            println!("$ {line}");
            let mut child = command
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot start `{line}`"))?;
            let stdout = child.stdout.take().context("no stdout")?;
            for output in BufReader::new(stdout).lines() {
                let output = output.context("reading the test output")?;
                println!("{output}");
                if let Some((passed, failed)) = parse_result_line(&output) {
                    counts.0 += passed;
                    counts.1 += failed;
                }
            }
            let status = child.wait().context("waiting for the tests")?;
            if !status.success() {
                bail!("`{line}` failed ({status})");
            }
            Ok(())
        });
        self.passed += counts.0;
        self.failed += counts.1;
        result
    }

    fn print_times(&self) {
        let Some(width) = self.times.iter().map(|(name, _)| name.len()).max() else {
            return;
        };
        println!("\nstep times:");
        for (name, time) in &self.times {
            println!("  {name:<width$}  {:>7.1} s", time.as_secs_f64());
        }
        let total: Duration = self.times.iter().map(|(_, time)| *time).sum();
        println!("  {:<width$}  {:>7.1} s", "total", total.as_secs_f64());
    }
}

/// Reads `--no-e2e` / `--only-e2e`.
pub fn parse_parts(args: &[String]) -> Result<Parts> {
    let mut parts = Parts::All;
    for arg in args {
        let chosen = match arg.as_str() {
            "--no-e2e" => Parts::NoE2e,
            "--only-e2e" => Parts::OnlyE2e,
            other => bail!("`cargo xtask test` does not take `{other}`; see `cargo xtask help`"),
        };
        if parts != Parts::All && parts != chosen {
            bail!("--no-e2e and --only-e2e exclude each other");
        }
        parts = chosen;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::parse_result_line;
    use crate::process::workspace_root;

    #[test]
    fn reads_the_harness_summary() {
        let line = "test result: ok. 23 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; \
                    finished in 177.97s";
        assert_eq!(parse_result_line(line), Some((23, 1)));
        assert_eq!(parse_result_line("running 3 tests"), None);
    }

    /// A file of the workspace, as text.
    fn read(path: &str) -> String {
        let path = workspace_root().join(path);
        fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    /// Names PromQL reads that are neither functions, aggregations nor keywords: the metric
    /// names of a query. Skips strings, label matchers, ranges, grouping lists, numbers and
    /// Grafana variables (`$job`, `${datasource}`).
    fn metric_names(expr: &str) -> Vec<String> {
        const NOT_METRICS: [&str; 21] = [
            "sum",
            "min",
            "max",
            "avg",
            "group",
            "stddev",
            "stdvar",
            "count",
            "count_values",
            "bottomk",
            "topk",
            "quantile",
            "and",
            "or",
            "unless",
            "bool",
            "offset",
            "inf",
            "nan",
            "atan2",
            "limitk",
        ];
        const LISTS: [&str; 6] = [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ];
        let chars: Vec<char> = expr.chars().collect();
        let mut names = Vec::new();
        let mut i = 0;
        // Skips from an opening `open` to just after its matching `close`, past strings.
        let skip_to = |mut i: usize, close: char| {
            while i < chars.len() && chars[i] != close {
                if matches!(chars[i], '"' | '\'' | '`') {
                    let quote = chars[i];
                    i += 1;
                    while i < chars.len() && chars[i] != quote {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i + 1
        };
        while i < chars.len() {
            let c = chars[i];
            let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
            if matches!(c, '"' | '\'' | '`') {
                i = skip_to(i + 1, c);
            } else if c == '{' {
                i = skip_to(i + 1, '}');
            } else if c == '[' {
                i = skip_to(i + 1, ']');
            } else if c == '$' || c.is_ascii_digit() || c == '.' {
                i += 1;
                while i < chars.len() && (word(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                    i += 1;
                }
            } else if word(c) {
                let start = i;
                while i < chars.len() && word(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LISTS.contains(&name.as_str()) {
                    if call {
                        i = skip_to(next + 1, ')');
                    }
                } else if !call && !NOT_METRICS.contains(&name.to_lowercase().as_str()) {
                    names.push(name);
                }
            } else {
                i += 1;
            }
        }
        names
    }

    /// The value of every `"expr": "..."` member of a JSON text, unescaped.
    fn json_exprs(json: &str) -> Vec<String> {
        let mut exprs = Vec::new();
        let mut rest = json;
        while let Some(at) = rest.find("\"expr\"") {
            rest = rest[at + "\"expr\"".len()..].trim_start();
            rest = rest
                .strip_prefix(':')
                .expect("`\"expr\"` is a key")
                .trim_start();
            let mut chars = rest
                .strip_prefix('"')
                .expect("a string value")
                .char_indices();
            let mut value = String::new();
            let end = loop {
                let (at, c) = chars.next().expect("an unterminated string");
                match c {
                    '"' => break at,
                    '\\' => match chars.next().expect("an escape").1 {
                        'n' => value.push('\n'),
                        't' => value.push('\t'),
                        'u' => {
                            let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                            let code = u32::from_str_radix(&hex, 16).expect("\\u escape");
                            value.push(char::from_u32(code).expect("a character"));
                        }
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            rest = &rest[1 + end..];
            exprs.push(value);
        }
        exprs
    }

    /// A Markdown heading's anchor as GitHub makes it.
    fn anchor(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    #[test]
    fn finds_metric_names() {
        let expr = concat!(
            r#"sum by (instance, reason) (rate(leakmon_probe_events_dropped_total{job=~"$job","#,
            r#"reason!="a{b}"}[$__rate_interval])) > 0 and on (pid) time() - "#,
            "process_start_time_seconds offset 5m",
        );
        assert_eq!(
            metric_names(expr),
            [
                "leakmon_probe_events_dropped_total",
                "process_start_time_seconds"
            ]
        );
        assert_eq!(
            metric_names("up{job=\"leakmon\"} == 0 or absent(up{job=\"leakmon\"})"),
            ["up", "up"]
        );
        assert_eq!(
            json_exprs(r#"{"expr": "a{x=\"1\"}", "b": 1, "expr" : "c\\d\u0041"}"#),
            [r#"a{x="1"}"#, r"c\dA"]
        );
        assert_eq!(
            anchor("Memory exhaustion soon (LeakmonMemoryExhaustionSoon)"),
            "memory-exhaustion-soon-leakmonmemoryexhaustionsoon"
        );
    }

    /// Every query of the Grafana dashboard and of the alert rules reads only metrics the
    /// daemon exports (monitor-daemon/src/serve/metrics.rs), and every alert's runbook link
    /// points at a heading of docs/runbook.md.
    #[test]
    fn dashboard_and_alerts_use_exported_metrics() {
        let exported = read("monitor-daemon/src/serve/metrics.rs");
        // Series Prometheus itself makes: the scrape's health and the alerts' state.
        let prometheus = ["up", "ALERTS"];
        let dashboard = read("deploy/grafana/leakmon.json");
        let alerts = read("deploy/prometheus/alerts.yml");
        let dashboard_exprs = json_exprs(&dashboard);
        assert!(dashboard_exprs.len() >= 20, "{dashboard_exprs:?}");
        let alert_exprs: Vec<String> = alerts
            .lines()
            .filter_map(|line| line.trim().strip_prefix("expr:"))
            .map(|expr| expr.trim().to_owned())
            .collect();
        assert_eq!(alert_exprs.len(), 9, "{alert_exprs:?}");
        for expr in dashboard_exprs.iter().chain(&alert_exprs) {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "no metric in `{expr}`");
            for name in names {
                assert!(
                    prometheus.contains(&name.as_str())
                        || exported.contains(&format!("\"{name}\"")),
                    "`{expr}` reads `{name}`, which monitor-daemon/src/serve/metrics.rs does not export"
                );
            }
        }

        let runbook = read("docs/runbook.md");
        let anchors: Vec<String> = runbook
            .lines()
            .filter_map(|line| line.strip_prefix("## "))
            .map(anchor)
            .collect();
        let links: Vec<&str> = alerts
            .lines()
            .filter_map(|line| line.trim().strip_prefix("runbook_url: "))
            .collect();
        assert_eq!(links.len(), 9);
        for link in links {
            let link = link.trim_matches('"');
            let (page, fragment) = link.split_once('#').expect("a link to a section");
            assert!(page.ends_with("/docs/runbook.md"), "{link}");
            assert!(
                anchors.iter().any(|anchor| anchor == fragment),
                "{link}: docs/runbook.md has no heading with that anchor ({anchors:?})"
            );
        }
    }
}
