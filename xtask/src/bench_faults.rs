//! The page-fault half of `cargo xtask bench`: what the page-fault method costs.
//!
//! 1. Nanoseconds per page fault of `tests/scenarios/bench_faults.c` (16 MiB mapped, each page
//!    written once, unmapped; repeated): untraced, traced by its page faults, and untraced while
//!    another process is traced that way (the tracepoint then runs on every user page fault of
//!    the host: what everything else pays).
//! 2. Debian's redis-server under `redis-benchmark -t set,get -n 200000 -r 100000 -c 10`:
//!    requests per second untraced, under `leakmon trace --method page-faults` and under
//!    `leakmon trace --method allocations`.
//!
//! Configurations run in interleaved rounds; medians are printed.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench::{bpf_stats, json_figure, median, program_stats, restoring_bpf_stats};
use crate::process::{command, output, run, target_dir, workspace_root};

/// The page-fault method's kernel program.
const PAGE_FAULT_PROGRAM: &str = "page_fault_user";

/// Rounds of each measurement.
const ROUNDS: usize = 5;
/// Rounds of the fault loop per run (16 MiB, 4096 faults each).
const FAULT_ITERATIONS: u32 = 40;
/// How long leakmon may take to attach before the load starts.
const ATTACH_WAIT: Duration = Duration::from_secs(3);

/// A child killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `leakmon trace --pid PID` in the background, ended with SIGINT.
fn start_trace(leakmon: &Path, pid: u32, method: &str) -> Result<Guard> {
    let child = command(leakmon)?
        .args(["trace", "--pid", &pid.to_string(), "--method", method])
        .args([
            "--duration",
            "600",
            "--format",
            "json",
            "--output",
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting leakmon trace")?;
    std::thread::sleep(ATTACH_WAIT);
    Ok(Guard(child))
}

/// Ends a background trace with SIGINT (it writes its report and detaches).
fn stop_trace(mut trace: Guard) -> Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
    unsafe { libc::kill(trace.0.id() as libc::pid_t, libc::SIGINT) };
    let status = trace.0.wait().context("waiting for leakmon trace")?;
    if !status.success() {
        bail!("leakmon trace failed: {status}");
    }
    Ok(())
}

/// Compiles the fault loop.
fn build_fault_loop() -> Result<PathBuf> {
    let scenarios = workspace_root().join("tests/scenarios");
    let binary = target_dir().join("xtask").join("bench_faults");
    std::fs::create_dir_all(target_dir().join("xtask")).context("creating target/xtask")?;
    run(command("gcc")?
        .args(["-O2", "-o"])
        .arg(&binary)
        .arg(scenarios.join("bench_faults.c")))?;
    Ok(binary)
}

/// The `ns_per_fault` of one run of the fault loop started by `cmd`.
fn ns_per_fault(cmd: &mut Command) -> Result<f64> {
    json_figure(
        &output(cmd.stdin(Stdio::null()))?,
        "ns_per_fault",
        "the fault loop",
    )
}

/// Measures and prints both parts.
pub fn bench(leakmon: &Path) -> Result<()> {
    restoring_bpf_stats(|| fault_rounds(leakmon))?;
    redis(leakmon)
}

fn fault_rounds(leakmon: &Path) -> Result<()> {
    let fault_loop = build_fault_loop()?;
    let mut program = Vec::new();
    let iterations = FAULT_ITERATIONS.to_string();
    let (mut untraced, mut traced, mut bystander) = (Vec::new(), Vec::new(), Vec::new());
    bpf_stats(false)?;
    for round in 1..=ROUNDS {
        untraced.push(ns_per_fault(command(&fault_loop)?.arg(&iterations))?);
        traced.push(ns_per_fault(
            command(leakmon)?
                .args(["trace", "--method", "page-faults", "--format", "json"])
                .args(["--output", "/dev/null", "--"])
                .arg(&fault_loop)
                .arg(&iterations),
        )?);
        // Another process traced by its page faults: the loop pays the tracepoint only.
        let idle = Guard(
            command("sleep")?
                .arg("600")
                .spawn()
                .context("starting sleep")?,
        );
        let trace = start_trace(leakmon, idle.0.id(), "page-faults")?;
        bystander.push(ns_per_fault(command(&fault_loop)?.arg(&iterations))?);
        // Once more with the statistics on, for the program's own run time.
        bpf_stats(true)?;
        let before = program_stats(&[PAGE_FAULT_PROGRAM])?;
        ns_per_fault(command(&fault_loop)?.arg(&iterations))?;
        let after = program_stats(&[PAGE_FAULT_PROGRAM])?;
        bpf_stats(false)?;
        if let (Some((t0, c0)), Some((t1, c1))) = (
            before.get(PAGE_FAULT_PROGRAM),
            after.get(PAGE_FAULT_PROGRAM),
        ) && c1 > c0
        {
            program.push((t1 - t0) as f64 / (c1 - c0) as f64);
        }
        stop_trace(trace)?;
        println!("page faults: round {round}/{ROUNDS} done");
    }
    let (untraced, traced, bystander) = (median(untraced), median(traced), median(bystander));
    println!();
    println!("page faults: {FAULT_ITERATIONS} x 4096 write faults on fresh anonymous pages");
    println!("| configuration | ns per fault (median) |");
    println!("|---|---:|");
    println!("| untraced | {untraced:.0} |");
    println!("| traced by its page faults | {traced:.0} |");
    println!("| untraced, another process traced by its page faults | {bystander:.0} |");
    println!();
    println!(
        "added per fault of the traced process: {:.0} ns; per fault of every other process: \
         {:.0} ns ({:.2}% of a core at 100,000 faults/s)",
        traced - untraced,
        bystander - untraced,
        (bystander - untraced).max(0.0) * 100_000.0 / 1e9 * 100.0
    );
    if !program.is_empty() {
        println!(
            "the page-fault program's own run time per fault of another process (bpf_stats, \
             median, in separate runs: the timings above are taken with bpf_stats off): {:.0} ns",
            median(program)
        );
    }
    println!("medians over {ROUNDS} interleaved rounds; command: cargo xtask bench");
    println!();
    Ok(())
}

/// A free loopback port.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("binding a loopback port")?
        .local_addr()?
        .port())
}

/// SET and GET requests per second of one `redis-benchmark` run against `port`.
fn redis_benchmark(port: u16) -> Result<(f64, f64)> {
    let stdout = output(
        command("redis-benchmark")?
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "set,get", "-n", "200000", "-r", "100000", "-c", "10"])
            .args(["-q", "--csv"]),
    )?;
    let rate = |test: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(&format!("\"{test}\"")))
            .and_then(|line| line.split(',').nth(1))
            .and_then(|value| value.trim_matches('"').parse::<f64>().ok())
            .with_context(|| format!("redis-benchmark printed no {test} rate:\n{stdout}"))
    };
    Ok((rate("SET")?, rate("GET")?))
}

fn redis(leakmon: &Path) -> Result<()> {
    let port = free_port()?;
    let server = Guard(
        command("redis-server")?
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server (cargo xtask setup installs it)")?,
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = server.0.id();
    let methods = [None, Some("page-faults"), Some("allocations")];
    let mut rates = vec![(Vec::new(), Vec::new()); methods.len()];
    for round in 1..=ROUNDS {
        for (method, (sets, gets)) in methods.iter().zip(&mut rates) {
            let trace = method
                .map(|method| start_trace(leakmon, pid, method))
                .transpose()?;
            let (set, get) = redis_benchmark(port)?;
            if let Some(trace) = trace {
                stop_trace(trace)?;
            }
            sets.push(set);
            gets.push(get);
        }
        println!("redis-benchmark: round {round}/{ROUNDS} done");
    }
    let medians: Vec<(f64, f64)> = rates
        .into_iter()
        .map(|(sets, gets)| (median(sets), median(gets)))
        .collect();
    let (set_untraced, get_untraced) = medians[0];
    println!();
    println!(
        "redis-server (Debian, jemalloc) under redis-benchmark -t set,get -n 200000 -r 100000 -c 10"
    );
    println!("| configuration | SET/s (median) | GET/s (median) | vs untraced |");
    println!("|---|---:|---:|---|");
    for (method, (set, get)) in methods.iter().zip(&medians) {
        println!(
            "| {} | {set:.0} | {get:.0} | SET {:+.1}%, GET {:+.1}% |",
            method.map_or("untraced".to_owned(), |method| format!(
                "leakmon trace --method {method}"
            )),
            (set / set_untraced - 1.0) * 100.0,
            (get / get_untraced - 1.0) * 100.0
        );
    }
    println!("medians over {ROUNDS} interleaved rounds; command: cargo xtask bench");
    println!();
    Ok(())
}
