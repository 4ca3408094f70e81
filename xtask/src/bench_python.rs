//! The Python part of `cargo xtask bench`: nanoseconds per allocation of a Python loop
//! (`tests/scenarios/bench_python.py`: a 600-byte `bytearray` made and dropped, one `malloc` and
//! one `free` each) run by the distribution's python3.11, untraced, under `leakmon trace`
//! (allocator probes, Python frames walked at every allocation) and under `leakmon trace
//! --method page-faults`, in interleaved rounds; medians printed.
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::bench::{json_figure, median};
use crate::process::{command, output, workspace_root};

/// Rounds of each configuration.
const ROUNDS: usize = 5;
/// Loop iterations untraced and traced.
const ITERATIONS_UNTRACED: &str = "2000000";
const ITERATIONS_TRACED: &str = "200000";
/// The distribution's interpreter.
const PYTHON: &str = "/usr/bin/python3.11";

fn ns_per_allocation(cmd: &mut Command) -> Result<f64> {
    json_figure(
        &output(cmd.stdin(Stdio::null()))?,
        "ns_per_allocation",
        "the Python loop",
    )
}

/// Measures and prints the table.
pub fn bench(leakmon: &Path) -> Result<()> {
    let script = workspace_root().join("tests/scenarios/bench_python.py");
    let traced = |method: &str| -> Result<Command> {
        let mut cmd = command(leakmon)?;
        cmd.args(["trace", "--method", method, "--format", "json"])
            .args(["--output", "/dev/null", "--", PYTHON])
            .arg(&script)
            .arg(ITERATIONS_TRACED);
        Ok(cmd)
    };
    let (mut untraced, mut allocations, mut page_faults) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        untraced.push(ns_per_allocation(
            command(PYTHON)?.arg(&script).arg(ITERATIONS_UNTRACED),
        )?);
        allocations.push(ns_per_allocation(&mut traced("allocations")?)?);
        page_faults.push(ns_per_allocation(&mut traced("page-faults")?)?);
        println!("python: round {round}/{ROUNDS} done");
    }
    println!();
    println!("python: a 600-byte bytearray made and dropped per iteration ({PYTHON})");
    println!("| configuration | ns per allocation (median) |");
    println!("|---|---:|");
    println!("| untraced | {:.0} |", median(untraced));
    println!(
        "| leakmon trace (allocations, Python frames) | {:.0} |",
        median(allocations)
    );
    println!(
        "| leakmon trace --method page-faults | {:.0} |",
        median(page_faults)
    );
    println!("medians over {ROUNDS} interleaved rounds; command: cargo xtask bench python");
    println!();
    Ok(())
}
