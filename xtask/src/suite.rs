//! `cargo xtask test`: the whole check a change must pass, as a sequence of named steps (set-up,
//! formatting, lints on the host and BPF targets, unit tests, release build, end-to-end suite)
//! that stops at the first failure and ends with the wall time of every step it ran.
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::process::{cargo, run, target_dir};
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
        steps.run("unit tests", || {
            let args = "test --workspace --exclude leakmon-tests --exclude monitor-ebpf";
            run(&mut cargo_with(args)?)
        })?;
    }
    if parts != Parts::NoE2e {
        let leakmon = steps.run("release build", daemon::build_release)?;
        steps.run("end-to-end tests", || {
            run(cargo_with("test --release -p leakmon-tests")?.env("LEAKMON_BIN", &leakmon))
        })?;
    }
    Ok(())
}

/// Cargo with `args`, a space-separated list.
fn cargo_with(args: &str) -> Result<Command> {
    let mut cargo = cargo()?;
    cargo.args(args.split_whitespace());
    Ok(cargo)
}

/// The steps run so far and how long each took.
#[derive(Debug, Default)]
struct Steps {
    times: Vec<(&'static str, Duration)>,
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
