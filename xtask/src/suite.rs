//! `cargo xtask test`: the whole check a change must pass, as a sequence of named steps (set-up,
//! formatting, lints on the host and BPF targets, unit tests, release build, end-to-end suite)
//! that stops at the first failure and ends with the wall time of every step it ran and one
//! `tests: N passed, M failed` line over every test run.
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::process::{cargo, display, run, target_dir};
use crate::{daemon, setup};

/// Which parts of the suite to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// Everything.
    All,
    /// Set-up, formatting, lints and unit tests (`--no-e2e`).
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
    use super::parse_result_line;

    #[test]
    fn reads_the_harness_summary() {
        let line = "test result: ok. 23 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; \
                    finished in 177.97s";
        assert_eq!(parse_result_line(line), Some((23, 1)));
        assert_eq!(parse_result_line("running 3 tests"), None);
    }
}
