//! `cargo xtask bench`: what tracing costs the traced program. Two allocation-heavy loops, each
//! timed in nanoseconds per `malloc`+`free` pair: `tests/scenarios/bench_loop.c` (`malloc(64)`,
//! built with frame pointers) and `tests/scenarios/bench_deep.c` (built `-O2
//! -fomit-frame-pointer` as distributions build, each malloc five calls deep, sizes 64 to 320
//! bytes). Each runs untraced, with empty probes at the allocator symbols' entries, with empty
//! probes at the offsets leakmon chooses, and under `leakmon trace`, in interleaved rounds; the
//! medians and the ratios are printed, with the kernel's own run time of each of leakmon's
//! programs (`kernel.bpf_stats_enabled`) under `leakmon trace`. Then the page-fault method's
//! cost (see `bench_faults`) and the daemon's own cost (see `bench_daemon`).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::daemon;
use crate::process::{command, display, output, run, target_dir, workspace_root};

/// Rounds of runs; medians are reported.
const RUNS: usize = 7;
/// Loop iterations untraced (fast) and probed (each pair hits three probes).
const ITERATIONS_UNTRACED: u64 = 20_000_000;
const ITERATIONS_PROBED: u64 = 400_000;
/// The programs whose kernel run time is reported.
const PROGRAMS: [&str; 3] = ["alloc_enter", "alloc_exit", "free_enter"];
/// Where the kernel's per-program statistics are switched on.
pub(crate) const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One benchmark loop: its source and how it is compiled.
struct Loop {
    name: &'static str,
    source: &'static str,
    flags: &'static [&'static str],
}

const LOOPS: [Loop; 2] = [
    Loop {
        name: "malloc(64)+free, frame pointers",
        source: "bench_loop",
        flags: &["-O2", "-g", "-fno-omit-frame-pointer"],
    },
    Loop {
        name: "5 calls deep, 64-320 B, -O2 without frame pointers",
        source: "bench_deep",
        flags: &["-O2", "-g", "-fomit-frame-pointer"],
    },
];

/// Compiles a benchmark loop into the target directory.
fn build_loop(bench: &Loop) -> Result<PathBuf> {
    let scenarios = workspace_root().join("tests/scenarios");
    let out_dir = target_dir().join("xtask");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let binary = out_dir.join(bench.source);
    run(command("gcc")?
        .args(bench.flags)
        .arg("-I")
        .arg(&scenarios)
        .arg("-o")
        .arg(&binary)
        .arg(scenarios.join(format!("{}.c", bench.source))))?;
    Ok(binary)
}

/// Builds the frame-pointer loop (the daemon's benchmark uses it too).
fn build_fp_loop() -> Result<PathBuf> {
    build_loop(&LOOPS[0])
}

/// One configuration: how the loop is started.
struct Mode {
    name: &'static str,
    prefix: Vec<String>,
    iterations: u64,
}

/// The number `what` printed under `key` on one of its JSON lines (`{"key": 12.5, ...}`).
pub(crate) fn json_figure(stdout: &str, key: &str, what: &str) -> Result<f64> {
    let quoted = format!("\"{key}\"");
    stdout
        .lines()
        .find_map(|line| {
            let rest = line.split(&quoted).nth(1)?.trim_start().strip_prefix(':')?;
            let rest = rest.trim_start();
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                .unwrap_or(rest.len());
            rest[..end].parse::<f64>().ok()
        })
        .with_context(|| format!("`{what}` printed no {key}"))
}

/// Kernel run time and run count of leakmon's programs, by name.
pub(crate) type ProgramStats = BTreeMap<String, (u64, u64)>;

/// The statistics `bpftool prog show` prints for the programs named in `programs`.
pub(crate) fn program_stats(programs: &[&str]) -> Result<ProgramStats> {
    let listing = output(command("bpftool")?.args(["prog", "show"]))?;
    let mut stats = ProgramStats::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| {
            words
                .iter()
                .position(|word| *word == name)
                .and_then(|index| words.get(index + 1))
                .and_then(|value| value.parse::<u64>().ok())
        };
        let Some(name) = words
            .iter()
            .position(|word| *word == "name")
            .and_then(|index| words.get(index + 1))
        else {
            continue;
        };
        if let (true, Some(time), Some(count)) = (
            programs.contains(name),
            field("run_time_ns"),
            field("run_cnt"),
        ) {
            stats.insert((*name).to_owned(), (time, count));
        }
    }
    Ok(stats)
}

/// Runs the loop once under `mode`; returns its ns per pair and, for `leakmon trace`, the
/// kernel's statistics of leakmon's programs read just before it ended.
fn measure(leakmon: &Path, mode: &Mode, bench_loop: &Path) -> Result<(f64, ProgramStats)> {
    let mut cmd = if mode.prefix.is_empty() {
        command(bench_loop)?
    } else {
        let mut cmd = command(leakmon)?;
        cmd.args(&mode.prefix).arg("--").arg(bench_loop);
        cmd
    };
    cmd.arg(mode.iterations.to_string()).stdin(Stdio::null());
    if mode.name != "leakmon trace" {
        let stdout = output(&mut cmd)?;
        return Ok((
            json_figure(&stdout, "ns_per_pair", &display(&cmd))?,
            ProgramStats::new(),
        ));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", display(&cmd)))?;
    // The programs go with leakmon: keep the last reading taken while it ran.
    let mut stats = ProgramStats::new();
    while child.try_wait()?.is_none() {
        let now = program_stats(&PROGRAMS)?;
        if now.len() == PROGRAMS.len() {
            stats = now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = child.wait_with_output()?;
    if !result.status.success() {
        bail!("`{}` failed: {}", display(&cmd), result.status);
    }
    let stdout = String::from_utf8_lossy(&result.stdout);
    Ok((json_figure(&stdout, "ns_per_pair", &display(&cmd))?, stats))
}

/// Turns the kernel's per-program statistics on or off: on, every program run also reads the
/// clock twice, which the loops' timings must not include.
pub(crate) fn bpf_stats(on: bool) -> Result<()> {
    std::fs::write(BPF_STATS, if on { "1" } else { "0" })
        .with_context(|| format!("writing {BPF_STATS}"))
}

/// Runs `measure`, which switches [`bpf_stats`], and then puts the setting back as it was.
pub(crate) fn restoring_bpf_stats(measure: impl FnOnce() -> Result<()>) -> Result<()> {
    let previous = std::fs::read_to_string(BPF_STATS).unwrap_or_default();
    let result = measure();
    if let Err(err) = std::fs::write(BPF_STATS, previous.trim()) {
        eprintln!("restoring {BPF_STATS}: {err}");
    }
    result
}

/// The middle value of `values` (the upper one of an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The parts of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The allocation method on the two loops.
    Allocations,
    /// The page-fault method: fault cost and redis throughput.
    PageFaults,
    /// A Python allocation loop.
    Python,
    /// The daemon's own cost.
    Daemon,
}

/// The parts `cargo xtask bench PART...` names; every part when none is.
pub fn parse_parts(args: &[String]) -> Result<Vec<Part>> {
    if args.is_empty() {
        return Ok(vec![
            Part::Allocations,
            Part::PageFaults,
            Part::Python,
            Part::Daemon,
        ]);
    }
    args.iter()
        .map(|arg| match arg.as_str() {
            "allocations" => Ok(Part::Allocations),
            "page-faults" => Ok(Part::PageFaults),
            "python" => Ok(Part::Python),
            "daemon" => Ok(Part::Daemon),
            other => {
                bail!("unknown bench part `{other}` (allocations, page-faults, python, daemon)")
            }
        })
        .collect()
}

/// Builds everything and prints the tables of `parts`.
pub fn bench(parts: &[Part]) -> Result<()> {
    let leakmon = daemon::build_release()?;
    if parts.contains(&Part::Allocations) {
        restoring_bpf_stats(|| {
            LOOPS
                .iter()
                .try_for_each(|bench| bench_loop(&leakmon, bench))
        })?;
    }
    if parts.contains(&Part::PageFaults) {
        crate::bench_faults::bench(&leakmon)?;
    }
    if parts.contains(&Part::Python) {
        crate::bench_python::bench(&leakmon)?;
    }
    if parts.contains(&Part::Daemon) {
        crate::bench_daemon::bench(&leakmon, &build_fp_loop()?)?;
    }
    Ok(())
}

/// Benchmarks one loop under every configuration and prints its table.
fn bench_loop(leakmon: &Path, bench: &Loop) -> Result<()> {
    let binary = build_loop(bench)?;
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
    let mut per_program: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 1..=RUNS {
        bpf_stats(false)?;
        for (mode, mode_samples) in modes.iter().zip(&mut samples) {
            mode_samples.push(measure(leakmon, mode, &binary)?.0);
        }
        // Once more under leakmon trace with the statistics on, for the programs' run time.
        bpf_stats(true)?;
        let (_, stats) = measure(leakmon, &modes[3], &binary)?;
        bpf_stats(false)?;
        for (name, (time, count)) in stats {
            if count > 0 {
                per_program
                    .entry(name)
                    .or_default()
                    .push(time as f64 / count as f64);
            }
        }
        println!("{}: round {round}/{RUNS} done", bench.name);
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
    println!("loop: {} ({})", bench.name, bench.flags.join(" "));
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
    let programs: Vec<String> = per_program
        .into_iter()
        .map(|(name, values)| format!("{name} {:.0} ns", median(values)))
        .collect();
    println!(
        "kernel run time per call under leakmon trace (bpf_stats, median, in separate runs: \
         the timings above are taken with bpf_stats off): {}",
        programs.join(", ")
    );
    println!(
        "medians over {RUNS} interleaved rounds; {ITERATIONS_UNTRACED} pairs untraced, \
         {ITERATIONS_PROBED} pairs probed; command: cargo xtask bench"
    );
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_figure_from_the_json_line_of_a_c_loop_or_of_python() {
        let c = "warming up\n{\"iterations\":200000,\"ns_per_pair\":1702.25}\n";
        assert_eq!(json_figure(c, "ns_per_pair", "loop").unwrap(), 1702.25);
        let python = "{\"iterations\": 2000000, \"ns_per_allocation\": 5.4e1}";
        assert_eq!(
            json_figure(python, "ns_per_allocation", "python").unwrap(),
            54.0
        );
        let err = json_figure(c, "ns_per_fault", "the fault loop").unwrap_err();
        assert_eq!(err.to_string(), "`the fault loop` printed no ns_per_fault");
        assert!(json_figure("{\"ns_per_pair\": null}", "ns_per_pair", "loop").is_err());
    }
}
