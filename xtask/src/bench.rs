//! `cargo xtask bench`: what tracing costs the traced program. One run prints nanoseconds per
//! `malloc`+`free` pair of an allocation-heavy loop (`tests/scenarios/bench_loop.c`) untraced,
//! with empty probes at the allocator symbols' entries, with empty probes at the offsets leakmon
//! chooses, and under `leakmon trace`, each the median of several runs, and the ratios; then
//! the daemon's own cost (see `bench_daemon`).
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::daemon;
use crate::process::{command, display, output, run, target_dir, workspace_root};

/// Rounds of runs; medians are reported.
const RUNS: usize = 7;
/// Loop iterations untraced (fast) and probed (each pair hits three probes).
const ITERATIONS_UNTRACED: u64 = 20_000_000;
const ITERATIONS_PROBED: u64 = 400_000;

/// Compiles the benchmark loop with frame pointers, as a traced service would be.
fn build_loop() -> Result<PathBuf> {
    let source = workspace_root().join("tests/scenarios/bench_loop.c");
    let out_dir = target_dir().join("xtask");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binary = out_dir.join("bench_loop");
    run(command("gcc")?
        .args(["-O2", "-g", "-fno-omit-frame-pointer", "-I"])
        .arg(workspace_root().join("tests/scenarios"))
        .arg("-o")
        .arg(&binary)
        .arg(&source))?;
    Ok(binary)
}

/// One configuration: how the loop is started.
struct Mode {
    name: &'static str,
    prefix: Vec<String>,
    iterations: u64,
}

/// Runs the loop once and returns its ns per pair (from its JSON line).
fn measure(leakmon: &Path, mode: &Mode, bench_loop: &Path) -> Result<f64> {
    let mut cmd = if mode.prefix.is_empty() {
        command(bench_loop)?
    } else {
        let mut cmd = command(leakmon)?;
        cmd.args(&mode.prefix).arg("--").arg(bench_loop);
        cmd
    };
    cmd.arg(mode.iterations.to_string()).stdin(Stdio::null());
    let stdout = output(&mut cmd)?;
    let line = stdout
        .lines()
        .find(|line| line.contains("ns_per_pair"))
        .with_context(|| format!("`{}` printed no ns_per_pair line", display(&cmd)))?;
    let value = line
        .split("\"ns_per_pair\":")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(['}', ' ']).trim().parse::<f64>().ok())
        .with_context(|| format!("cannot read ns_per_pair from `{line}`"))?;
    Ok(value)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Builds everything and prints the table.
pub fn bench() -> Result<()> {
    let leakmon = daemon::build_release()?;
    let bench_loop = build_loop()?;
    let leakmon_args = |args: &[&str]| args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>();
    let modes = [
        Mode {
            name: "untraced",
            prefix: Vec::new(),
            iterations: ITERATIONS_UNTRACED,
        },
        Mode {
            name: "empty probes at symbol entries",
            prefix: leakmon_args(&["probe-cost", "--at", "entry"]),
            iterations: ITERATIONS_PROBED,
        },
        Mode {
            name: "empty probes at chosen offsets",
            prefix: leakmon_args(&["probe-cost", "--at", "chosen"]),
            iterations: ITERATIONS_PROBED,
        },
        Mode {
            name: "leakmon trace",
            prefix: leakmon_args(&["trace", "--format", "json", "--output", "/dev/null"]),
            iterations: ITERATIONS_PROBED,
        },
    ];
    // Runs are interleaved (each round runs every configuration once) and ratios are taken
    // within a round, so a slow spell of a shared host weighs on all configurations alike.
    let mut samples = vec![Vec::new(); modes.len()];
    for round in 1..=RUNS {
        for (mode, mode_samples) in modes.iter().zip(&mut samples) {
            mode_samples.push(measure(&leakmon, mode, &bench_loop)?);
        }
        println!("round {round}/{RUNS} done");
    }
    let results: Vec<f64> = samples
        .iter()
        .map(|values| median(values.clone()))
        .collect();
    let ratio = |a: usize, b: usize| {
        median(
            samples[a]
                .iter()
                .zip(&samples[b])
                .map(|(x, y)| x / y)
                .collect(),
        )
    };
    let [untraced, ..] = results[..] else {
        bail!("no results");
    };
    println!();
    println!("| configuration | ns per malloc+free (median) | runs |");
    println!("|---|---:|---|");
    for ((mode, value), runs) in modes.iter().zip(&results).zip(&samples) {
        println!("| {} | {value:.1} | {runs:.0?} |", mode.name);
    }
    println!();
    println!(
        "empty probes at chosen offsets / untraced:           {:.0}x",
        results[2] / untraced
    );
    println!(
        "empty probes at entries / at chosen offsets:         {:.2}x",
        ratio(1, 2)
    );
    println!(
        "leakmon trace / empty probes at chosen offsets:      {:.2}x (target <= 1.3x)",
        ratio(3, 2)
    );
    println!(
        "leakmon trace / empty probes at entries:             {:.2}x",
        ratio(3, 1)
    );
    println!(
        "medians over {RUNS} interleaved rounds; {ITERATIONS_UNTRACED} pairs untraced, \
         {ITERATIONS_PROBED} pairs probed; command: cargo xtask bench"
    );
    crate::bench_daemon::bench(&leakmon, &bench_loop)?;
    Ok(())
}
