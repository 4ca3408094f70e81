//! `cargo xtask soak --minutes N`: runs `leakmon run` for N minutes under a churning, leaking
//! workload and fails if its resident memory grows.
//!
//! The workload, all at once and all the time: process churn (`churn_spawner` runs batches of
//! 500 short-lived `churn_child` processes, 4 at a time; every 100th lingers 1.5 s and, matching
//! a `trace.targets` selector, is traced until it exits), two leaks (`rss_leak`, `steady_leak`,
//! restarted every 90 s, so they are suspected and traced automatically again and again) and two
//! controls (`cache_plateau`, `sawtooth`). Every 10 s the daemon's RSS (`VmRSS`, and its
//! anonymous part `RssAnon`) and CPU share are sampled and printed; at the end a summary gives
//! anonymous RSS at start, end and max and the slope of a least-squares fit.
//!
//! Once the load stops, every kernel map must drain to empty (`leakmon_bpf_map_entries`) within
//! two minutes: nothing of a finished trace may stay in the kernel.
//!
//! The verdict compares the end (median of the last 3 samples) with the baseline (median of the
//! samples of the second minute, once the daemon has traced each kind of process and its caches
//! reached their working size): it fails if anonymous RSS — the daemon's own allocations — grew
//! by more than `max(4 MiB, 10%)`. The file-backed rest is the traced programs' ELF and DWARF
//! that the symbolizer maps (page cache shared with those programs, bounded and released by
//! `Symbolizer::trim`): it follows what is traced (a 150 MiB compiler binary while one is
//! suspected) and is printed, not judged. Measured, the daemon settles around 25-30 MiB and
//! moves by a few hundred KiB as the heap fragments; a leak of 64 bytes per churned process
//! (about 60 a second) or per trace sample would exceed 4 MiB within a 30-minute run, a leak
//! per report (one every few seconds) of a few KiB as well.
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::bench::{json_figure, median};
use crate::daemon::build_release;
use crate::process::{command, run, target_dir, workspace_root};

/// Seconds between samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Leaking scenarios are restarted this often (their run time).
const LEAK_SECONDS: u64 = 90;
/// The growth allowed, see the module documentation.
const MIN_GROWTH_KIB: f64 = 4096.0;
const MAX_GROWTH_FRACTION: f64 = 0.10;

/// The scenario programs the soak runs.
const PROGRAMS: [&str; 6] = [
    "churn_spawner",
    "churn_child",
    "rss_leak",
    "steady_leak",
    "cache_plateau",
    "sawtooth",
];

const CONFIG: &str = "\
[watch]
interval_seconds = 1
window_seconds = 60
min_trend_seconds = 20
min_process_age_seconds = 10
persistence = 2

[trace]
auto = true
window_seconds = 20
interval_seconds = 1
max_concurrent = 3
cooldown_seconds = 30
targets = [{ comm = \"churn_child\" }]

[reports]
max_count = 50
";

/// Processes killed when dropped.
struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Parses `--minutes N`.
pub fn parse_minutes(args: &[String]) -> Result<f64> {
    match args {
        [flag, value] if flag == "--minutes" => {
            let minutes: f64 = value
                .parse()
                .with_context(|| format!("--minutes takes a number, got `{value}`"))?;
            // NaN is refused too.
            if minutes.is_nan() || minutes < 2.0 {
                bail!("--minutes must be at least 2 (the baseline is the second minute)");
            }
            Ok(minutes)
        }
        [] => bail!("usage: cargo xtask soak --minutes N"),
        _ => bail!("usage: cargo xtask soak --minutes N (got {args:?})"),
    }
}

/// Compiles the scenarios the soak runs into `target/soak/`.
fn build_scenarios() -> Result<PathBuf> {
    let sources = workspace_root().join("tests/scenarios");
    let out = target_dir().join("soak");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for program in PROGRAMS {
        run(command("gcc")?
            .args([
                "-O1",
                "-g",
                "-fno-omit-frame-pointer",
                "-fno-inline",
                "-pthread",
                "-I",
            ])
            .arg(&sources)
            .arg("-o")
            .arg(out.join(program))
            .arg(sources.join(format!("{program}.c"))))?;
    }
    Ok(out)
}

fn spawn(what: &'static str, program: &Path, args: &[&str]) -> Result<(&'static str, Child)> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok((what, child))
}

/// utime + stime in clock ticks, and VmRSS in KiB.
/// The daemon's CPU time (ticks), and its `VmRSS` and `RssAnon` (KiB).
fn cpu_and_rss(pid: u32) -> Result<(u64, u64, u64)> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("the daemon is gone")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .context("bad stat")
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    Ok((field(11)? + field(12)?, kib("VmRSS:")?, kib("RssAnon:")?))
}

/// `GET target` on the daemon; the body.
fn get(addr: &str, target: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {target}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// How long the daemon gets, once the load has stopped, to end its traces and empty its maps.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Waits until every kernel map of the daemon at `addr` is empty (`leakmon_bpf_map_entries`,
/// counted at each sweep), as it must be once no trace runs. `Err` holds the last counts.
fn wait_for_empty_maps(addr: &str) -> Result<std::result::Result<(), String>> {
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let metrics = get(addr, "/metrics")?;
        let entries: Vec<(String, u64)> = metrics
            .lines()
            .filter_map(|line| line.strip_prefix("leakmon_bpf_map_entries{map=\""))
            .filter_map(|rest| {
                let (map, value) = rest.split_once("\"} ")?;
                Some((map.to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        if entries.is_empty() {
            bail!("the daemon exports no leakmon_bpf_map_entries");
        }
        let left: Vec<String> = entries
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(map, count)| format!("{map} {count}"))
            .collect();
        if left.is_empty() {
            println!("soak: every kernel map is empty once the load stopped");
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            return Ok(Err(left.join(", ")));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Least-squares slope of (t, y).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_y)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var > 0.0 { cov / var } else { 0.0 }
}

/// Runs the soak.
pub fn soak(minutes: f64) -> Result<()> {
    let leakmon = build_release()?;
    let scenarios = build_scenarios()?;
    let path = |name: &str| scenarios.join(name);
    let dir = std::env::temp_dir().join(format!("leakmon-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("leakmon.toml");
    std::fs::write(&config, CONFIG)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("leakmon.log"))?;
    let mut daemon = Children(vec![(
        "leakmon",
        Command::new(&leakmon)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &addr, "--state-dir"])
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting leakmon run")?,
    )]);
    let pid = daemon.0[0].1.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&addr, "/healthz").is_err() {
        if Instant::now() > deadline {
            bail!(
                "leakmon run did not answer on {addr}; see {}/leakmon.log",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "soak: leakmon run (pid {pid}) on {addr} for {minutes} min; its log: {}/leakmon.log",
        dir.display()
    );

    let churn_args = [path("churn_child").display().to_string()];
    let churn = |_: ()| -> Result<(&'static str, Child)> {
        spawn(
            "churn",
            &path("churn_spawner"),
            &[&churn_args[0], "500", "4", "100", "1500"],
        )
    };
    let leak_seconds = LEAK_SECONDS.to_string();
    let control_seconds = format!("{}", (minutes * 60.0) as u64 + 60);
    let mut load = Children(vec![
        churn(())?,
        spawn("rss_leak", &path("rss_leak"), &[&leak_seconds])?,
        spawn("steady_leak", &path("steady_leak"), &[&leak_seconds])?,
        spawn("cache_plateau", &path("cache_plateau"), &[&control_seconds])?,
        spawn("sawtooth", &path("sawtooth"), &[&control_seconds])?,
    ]);

    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(minutes * 60.0);
    let (mut last_ticks, _, _) = cpu_and_rss(pid)?;
    let mut last_sample = started;
    let mut next_sample = started + SAMPLE_EVERY;
    // (t, anonymous RSS); the total is only printed.
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut max_total = 0u64;
    let mut churned = 0u64;
    println!(
        "{:>6} {:>10} {:>11} {:>7} {:>8} {:>7} {:>8} {:>8}",
        "t (s)", "RSS (KiB)", "anon (KiB)", "CPU %", "watched", "traced", "reports", "churned"
    );
    while Instant::now() < end {
        // Keep the load going: a finished batch or leak is started again.
        for (what, child) in &mut load.0 {
            if child.try_wait()?.is_some() {
                *child = match *what {
                    "churn" => {
                        churned += 500;
                        churn(())?.1
                    }
                    "rss_leak" => spawn(what, &path("rss_leak"), &[&leak_seconds])?.1,
                    "steady_leak" => spawn(what, &path("steady_leak"), &[&leak_seconds])?.1,
                    other => spawn(what, &path(other), &[&control_seconds])?.1,
                };
            }
        }
        if daemon.0[0].1.try_wait()?.is_some() {
            bail!("leakmon run died; see {}/leakmon.log", dir.display());
        }
        if Instant::now() >= next_sample {
            next_sample += SAMPLE_EVERY;
            let now = Instant::now();
            let (ticks, rss, anon) = cpu_and_rss(pid)?;
            max_total = max_total.max(rss);
            let cpu = 100.0 * (ticks - last_ticks) as f64
                / ticks_per_second
                / now.duration_since(last_sample).as_secs_f64();
            (last_ticks, last_sample) = (ticks, now);
            let status = get(&addr, "/api/v1/status").unwrap_or_default();
            let reports = std::fs::read_dir(dir.join("state/reports"))
                .map(|dir| {
                    dir.filter_map(Result::ok)
                        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                        .count()
                })
                .unwrap_or(0);
            let t = now.duration_since(started).as_secs_f64();
            println!(
                "{t:>6.0} {rss:>10} {anon:>11} {cpu:>7.2} {:>8} {:>7} {reports:>8} {churned:>8}",
                json_figure(&status, "processes_watched", "/api/v1/status").unwrap_or(f64::NAN),
                json_figure(&status, "processes_traced", "/api/v1/status").unwrap_or(f64::NAN),
            );
            samples.push((t, anon as f64));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(load);
    let (total_ticks, _, _) = cpu_and_rss(pid)?;
    let maps = wait_for_empty_maps(&addr)?;
    drop(daemon);

    let baseline: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| (60.0..120.0).contains(t))
        .map(|(_, rss)| *rss)
        .collect();
    if baseline.is_empty() || samples.len() < 3 {
        bail!("too few samples");
    }
    let baseline = median(baseline);
    let end_rss = median(samples[samples.len() - 3..].iter().map(|s| s.1).collect());
    let first = samples[0].1;
    let max = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let after_warm_up: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= 60.0)
        .collect();
    let per_minute = slope(&after_warm_up) * 60.0;
    let growth = end_rss - baseline;
    let allowed = MIN_GROWTH_KIB.max(MAX_GROWTH_FRACTION * baseline);
    let cpu_share = 100.0 * total_ticks as f64 / ticks_per_second / started.elapsed().as_secs_f64();
    println!(
        "soak summary: {minutes} min, {churned}+ processes churned; anonymous RSS start \
         {first:.0} KiB, baseline (minute 2) {baseline:.0} KiB, end {end_rss:.0} KiB, max \
         {max:.0} KiB, slope {per_minute:+.1} KiB/min after the first minute; growth \
         {growth:+.0} KiB (allowed {allowed:.0}); max total RSS {max_total} KiB; mean CPU \
         {cpu_share:.2}% of one core"
    );
    // Which processes were traced, from the daemon's log: on a shared host, automatic tracing
    // also picks other suspected processes (compilers...), whose traces weigh on the daemon.
    let log = std::fs::read_to_string(dir.join("leakmon.log")).unwrap_or_default();
    let mut traced: std::collections::BTreeMap<String, usize> = Default::default();
    for line in log.lines().filter(|line| line.contains("] tracing pid ")) {
        if let Some(comm) = line
            .split(" (")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
        {
            *traced.entry(comm.to_owned()).or_default() += 1;
        }
    }
    println!("traces by command: {traced:?}");
    // Allocation entries the sweep found of processes no longer traced: each is an allocator
    // call that outlived its trace's purge (the maps are cleaned either way).
    let strays: usize = log
        .lines()
        .filter_map(|line| line.split("] swept ").nth(1))
        .filter(|rest| rest.contains("allocation entries of processes no longer traced"))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    println!("stray allocation entries swept: {strays}");
    if let Err(entries) = maps {
        bail!(
            "kernel map entries left once the load stopped and no trace ran: {entries}; its log \
             and state are kept in {}",
            dir.display()
        );
    }
    if growth > allowed {
        bail!(
            "the daemon's anonymous RSS grew by {growth:.0} KiB (allowed {allowed:.0} KiB); its log and \
             state are kept in {}",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
