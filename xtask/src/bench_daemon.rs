//! The daemon half of `cargo xtask bench`: what `leakmon run` costs a host when nothing leaks.
//! Its CPU (share of one core) and resident memory while it watches 1000 idle processes at the
//! default interval, and the always-on overhead on an allocation-heavy loop (the loop timed with
//! the daemon running against the loop timed without it, in interleaved rounds).
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench::{json_figure, median};

/// Idle processes the daemon watches during the measurement.
const IDLE_PROCESSES: usize = 1000;
/// How long the daemon settles, then how long its CPU time is measured.
const WARM_UP: Duration = Duration::from_secs(10);
const MEASURE: Duration = Duration::from_secs(60);
/// Rounds of the always-on overhead comparison, and loop iterations per run.
const OVERHEAD_ROUNDS: usize = 7;
const OVERHEAD_ITERATIONS: u64 = 20_000_000;

/// Children killed when dropped, so a failed bench leaves nothing running.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// utime + stime of a process, in clock ticks, and its resident set in KiB.
fn cpu_ticks_and_rss(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("reading the daemon's stat")?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the comm.
    let ticks = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .context("short stat")?
            .parse()
            .context("bad stat field")
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the daemon's status")?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok((ticks(11)? + ticks(12)?, rss_kib))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("finding a free port")?
        .local_addr()?
        .port())
}

/// Starts `leakmon run` on loopback with a temporary state directory.
fn start_daemon(leakmon: &Path, state_dir: &Path) -> Result<Children> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new(leakmon)
        .args(["run", "--listen", &listen, "--state-dir"])
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting leakmon run")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        if Instant::now() > deadline {
            bail!("leakmon run did not start listening on {listen}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Children(vec![child]))
}

fn loop_ns_per_pair(bench_loop: &Path) -> Result<f64> {
    let output = Command::new(bench_loop)
        .arg(OVERHEAD_ITERATIONS.to_string())
        .output()
        .context("running bench_loop")?;
    json_figure(
        &String::from_utf8_lossy(&output.stdout),
        "ns_per_pair",
        "bench_loop",
    )
}

/// Runs both measurements and prints their figures.
pub fn bench(leakmon: &Path, bench_loop: &Path) -> Result<()> {
    let state = std::env::temp_dir().join(format!("leakmon-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;

    let mut idle = Children(Vec::new());
    for _ in 0..IDLE_PROCESSES {
        idle.0.push(
            Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()
                .context("starting an idle process")?,
        );
    }
    let daemon = start_daemon(leakmon, &state)?;
    let pid = daemon.0[0].id();
    std::thread::sleep(WARM_UP);
    let (ticks_before, _) = cpu_ticks_and_rss(pid)?;
    let started = Instant::now();
    std::thread::sleep(MEASURE);
    let (ticks_after, rss_kib) = cpu_ticks_and_rss(pid)?;
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_seconds = (ticks_after - ticks_before) as f64 / ticks_per_second;
    let share = 100.0 * cpu_seconds / started.elapsed().as_secs_f64();
    drop(daemon);
    drop(idle);
    println!();
    println!(
        "leakmon run watching {IDLE_PROCESSES} idle processes (default 2 s interval), over {} s: \
         {share:.2}% of one core (target < 1%), resident {:.1} MiB (target < 50 MiB)",
        MEASURE.as_secs(),
        rss_kib as f64 / 1024.0
    );

    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..OVERHEAD_ROUNDS {
        without.push(loop_ns_per_pair(bench_loop)?);
        let daemon = start_daemon(leakmon, &state)?;
        with.push(loop_ns_per_pair(bench_loop)?);
        drop(daemon);
    }
    let ratios: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a / b).collect();
    println!(
        "always-on overhead on the allocation loop: {:.1} ns per malloc+free without the daemon, \
         {:.1} with it running: {:+.1}% (median of {OVERHEAD_ROUNDS} interleaved rounds; target < 1%)",
        median(without),
        median(with),
        (median(ratios) - 1.0) * 100.0
    );
    std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    Ok(())
}
