//! The end-to-end test harness: where the scenario programs and the `leakmon` binary are, how to
//! run `leakmon trace` on a scenario (or on a running one, by pid) under a hard timeout, and
//! assertions over the report it writes; and, for the daemon, a [`Daemon`] guard that runs
//! `leakmon run` on a free loopback port with a throw-away state directory, and a minimal
//! blocking HTTP client ([`http_request`]) to talk to it.
//!
//! Traces run one at a time (a process-wide lock): they share two CPUs, and the tests measure
//! rates. Every run's stderr is echoed to the test's own output, which the test runner shows
//! when the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use monitor_daemon::report::{Frame, Method, Report, StackReport};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tempfile::TempDir;

/// A leakmon run (and the scenario it traces) is killed after this long.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// The default tolerance of [`assert_leak`] on the leaked bytes, as a fraction.
pub const LEAK_TOLERANCE: f64 = 0.10;

/// The path of a Python scenario script in `scenarios/`.
pub fn python_script(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    assert!(
        path.is_file(),
        "Python scenario {} is missing",
        path.display()
    );
    path
}

/// The distribution's CPython (Debian 12's python3.11: the interpreter and libpython linked
/// into one executable, built with LTO, stripped).
pub const DISTRIBUTION_PYTHON: &str = "/usr/bin/python3.11";

/// The CPython interpreters of this machine's pyenv tree (pyenv builds: the executable linked
/// to a shared libpython, as in an embedding program), as (version, path), when present.
pub fn pyenv_pythons() -> Vec<(String, PathBuf)> {
    let root = Path::new("/root/.pyenv/versions");
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().into_owned();
            let (major, rest) = version.split_once('.')?;
            let minor = rest.split('.').next()?;
            let binary = entry.path().join(format!("bin/python{major}.{minor}"));
            binary.is_file().then_some((version, binary))
        })
        .collect();
    found.sort();
    found
}

/// The path of a program built from `scenarios/` by the build script.
pub fn scenario_path(name: &str) -> PathBuf {
    let path = Path::new(env!("SCENARIO_DIR")).join(name);
    assert!(
        path.is_file(),
        "scenario program {} is missing: the build script of leakmon-tests builds it",
        path.display()
    );
    path
}

/// The `leakmon` binary under test: `$LEAKMON_BIN`, else `<workspace>/target/release/leakmon`.
pub fn leakmon_bin() -> PathBuf {
    let path = match std::env::var_os("LEAKMON_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests package is inside the workspace")
            .join("target/release/leakmon"),
    };
    assert!(
        path.is_file(),
        "the leakmon binary {} is missing: build it with cargo xtask build (or point LEAKMON_BIN \
         at one)",
        path.display()
    );
    path
}

/// The host leakmon runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// This machine as it is.
    AsIs,
    /// A fresh host: a private mount namespace (`unshare --mount --propagation private`, gone
    /// with the process) in which every tracefs and debugfs mount is undone before leakmon
    /// starts, whatever an earlier run or a person left mounted.
    NoTracefs,
    /// A fresh host on which mount(2) is refused too (by a seccomp filter, as in a container).
    NoTracefsNoMount,
    /// This machine, with the daemon's state directory on a tmpfs of [`STATE_TMPFS_SIZE`]
    /// mounted in a private mount namespace (`unshare --mount --propagation private`, gone with
    /// the process), where a test can fill it or make it read-only
    /// ([`Daemon::in_its_mounts`]).
    StateOnTmpfs,
}

/// The size of the state directory's file system on [`Host::StateOnTmpfs`].
pub const STATE_TMPFS_SIZE: &str = "1m";

/// A shell script that mounts a tmpfs on `$LEAKMON_STATE_MOUNT`, then runs its arguments.
const STATE_ON_TMPFS: &str = "mount -t tmpfs -o size=\"$LEAKMON_STATE_SIZE\" leakmon-state \
     \"$LEAKMON_STATE_MOUNT\" || exit 125; exec \"$@\"";

/// A shell script that unmounts every tracefs and debugfs, deepest first, then runs its
/// arguments (`sh -c WITHOUT_TRACEFS sh COMMAND ARGS...`). It uses only grep, cut and sort,
/// which a container sharing this host's /usr has without /etc/alternatives.
pub const WITHOUT_TRACEFS: &str = "for mount_point in $(grep -E '^[^ ]+ [^ ]+ (tracefs|debugfs) ' \
     /proc/self/mounts | cut -d ' ' -f 2 | sort -r); do umount -l \"$mount_point\" || exit 125; \
     done; exec \"$@\"";

impl Host {
    /// A command that runs `leakmon` on this host.
    pub fn leakmon(self) -> Command {
        if self == Host::AsIs {
            return Command::new(leakmon_bin());
        }
        let mut command = Command::new("unshare");
        command.args(["--mount", "--propagation", "private", "--", "sh", "-c"]);
        if self == Host::StateOnTmpfs {
            command
                .args([STATE_ON_TMPFS, "sh"])
                .env("LEAKMON_STATE_SIZE", STATE_TMPFS_SIZE)
                .arg(leakmon_bin());
            return command;
        }
        command.args([WITHOUT_TRACEFS, "sh"]);
        if self == Host::NoTracefsNoMount {
            command.arg(scenario_path("deny_mount"));
        }
        command.arg(leakmon_bin());
        command
    }
}

/// The line a scenario prints on stdout when its run is over.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSummary {
    /// The scenario's name.
    pub scenario: String,
    /// The function that leaks (the allocator's direct caller), or `None` for a non-leak.
    pub leak_function: Option<String>,
    /// Exactly how many bytes it leaked through that function, as requested from the allocator.
    pub leaked_bytes: u64,
}

/// What one run of `leakmon` printed, and how it ended.
#[derive(Debug)]
pub struct LeakmonRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout, which a traced scenario shares.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// A run of `leakmon trace` with `--output`: the run and the file it wrote.
#[derive(Debug)]
pub struct TraceOutput {
    /// The run.
    pub run: LeakmonRun,
    /// The contents of the `--output` file; empty when leakmon wrote none.
    pub output: Vec<u8>,
}

/// A successful JSON trace of a scenario.
#[derive(Debug)]
pub struct TraceRun {
    /// The report leakmon wrote.
    pub report: Report,
    /// What the scenario says it did.
    pub summary: ScenarioSummary,
    /// leakmon's exit status.
    pub status: ExitStatus,
    /// leakmon's stderr.
    pub stderr: String,
}

/// Runs `leakmon ARGS...` to the end (at most [`TIMEOUT`]).
pub fn run_leakmon<I, S>(args: I) -> LeakmonRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_leakmon_on(Host::AsIs, args)
}

/// `leakmon status --daemon ADDR`, as on-call runs it, for a test that holds [`serial`] (it
/// takes no lock); panics unless it succeeds, and gives what it printed.
pub fn oncall_status(addr: SocketAddr) -> String {
    let output = Command::new(leakmon_bin())
        .args(["status", "--daemon", &addr.to_string()])
        .output()
        .unwrap_or_else(|error| panic!("running leakmon status: {error}"));
    assert!(
        output.status.success(),
        "leakmon status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `leakmon ARGS...` on `host` to the end (at most [`TIMEOUT`]).
pub fn run_leakmon_on<I, S>(host: Host, args: I) -> LeakmonRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let _serial = serial();
    run_leakmon_unserialized(
        host,
        args.into_iter()
            .map(|arg| arg.as_ref().to_owned())
            .collect(),
    )
}

/// Runs `leakmon trace --format FORMAT --output FILE ARGS... -- SCENARIO SCENARIO_ARGS...` and
/// returns what it printed and the file it wrote.
pub fn trace_output(
    format: &str,
    args: &[&str],
    scenario: &str,
    scenario_args: &[&str],
) -> TraceOutput {
    trace_output_on(Host::AsIs, format, args, scenario, scenario_args)
}

/// [`trace_output`] on `host`.
pub fn trace_output_on(
    host: Host,
    format: &str,
    args: &[&str],
    scenario: &str,
    scenario_args: &[&str],
) -> TraceOutput {
    let _serial = serial();
    let mut target: Vec<OsString> = vec!["--".into(), scenario_path(scenario).into()];
    target.extend(scenario_args.iter().map(OsString::from));
    trace_unserialized(host, format, args, target)
}

/// Traces a scenario from its start with `leakmon trace --format json ... ARGS -- SCENARIO
/// SCENARIO_ARGS...`; panics unless leakmon succeeds and the report and the scenario's summary
/// both parse.
pub fn trace_command(args: &[&str], scenario: &str, scenario_args: &[&str]) -> TraceRun {
    trace_command_on(Host::AsIs, args, scenario, scenario_args)
}

/// [`trace_command`] on `host`.
pub fn trace_command_on(
    host: Host,
    args: &[&str],
    scenario: &str,
    scenario_args: &[&str],
) -> TraceRun {
    let traced = trace_output_on(host, "json", args, scenario, scenario_args);
    let summary = parse_summary(&traced.run.stdout, scenario, &traced.run.stderr);
    finish_trace(traced, summary)
}

/// Starts a scenario, lets it run for `warmup`, then traces it with `leakmon trace --format json
/// ... --pid PID ARGS...`; waits for the scenario to end and panics unless leakmon succeeds and
/// the report (which must be about that pid) and the scenario's summary both parse.
pub fn trace_pid(
    args: &[&str],
    scenario: &str,
    scenario_args: &[&str],
    warmup: Duration,
) -> TraceRun {
    let mut command = Command::new(scenario_path(scenario));
    command.args(scenario_args);
    trace_spawned(command, scenario, scenario, args, warmup, |pid| pid).0
}

/// Asserts a failed run whose stderr is one line mentioning `needle` (case-insensitively).
pub fn assert_one_line_error(run: &LeakmonRun, needle: &str) {
    assert!(
        !run.status.success(),
        "leakmon succeeded; stderr:\n{}",
        run.stderr
    );
    let message = run.stderr.trim();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "expected a one-line error, got:\n{}",
        run.stderr
    );
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "the error does not mention {needle:?}: {message}"
    );
}

/// `steady_leak` leaks this many bytes a second.
pub const STEADY_RATE: f64 = 409_600.0;

/// Asserts that the top leaking stack of a report on `steady_leak` (traced from any point of its
/// run: only its rate is known) goes through `leak_steady`, named, at [`STEADY_RATE`].
pub fn assert_steady_leak(report: &Report) {
    assert_top_leak(report, "leak_steady", STEADY_RATE);
}

/// Asserts that the top leaking stack of `report` goes through `function`, named, and grows at
/// `rate` bytes a second within 25%.
pub fn assert_top_leak(report: &Report, function: &str, rate: f64) {
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| panic!("no leaking stack\n{}", describe_report(report)));
    assert!(
        has_frame(top, function),
        "the top leaking stack does not name {function}\n{}",
        describe_report(report)
    );
    assert!(
        (top.growth_bytes_per_second - rate).abs() <= 0.25 * rate,
        "{function} leaks {rate} B/s; the report says {:.0} B/s\n{}",
        top.growth_bytes_per_second,
        describe_report(report)
    );
}

/// The stacks with a frame whose symbol contains `function`, in the report's order.
pub fn stacks_with<'r>(report: &'r Report, function: &str) -> Vec<&'r StackReport> {
    report
        .stacks
        .iter()
        .filter(|stack| has_frame(stack, function))
        .collect()
}

/// Whether one of the stack's frames has a symbol containing `function`.
pub fn has_frame(stack: &StackReport, function: &str) -> bool {
    stack.frames.iter().any(|frame| {
        frame
            .symbol
            .as_deref()
            .is_some_and(|symbol| symbol.contains(function))
    })
}

/// Asserts that the report found the scenario's leak: the largest leaking stack goes through
/// the leak function, and the leaking stacks through it hold the leaked bytes within 10%.
pub fn assert_leak(report: &Report, summary: &ScenarioSummary) {
    assert_leak_within(report, summary, LEAK_TOLERANCE);
}

/// [`assert_leak`] with a tolerance on the bytes, as a fraction of the leaked bytes.
pub fn assert_leak_within(report: &Report, summary: &ScenarioSummary, tolerance: f64) {
    let function = summary
        .leak_function
        .as_deref()
        .unwrap_or_else(|| panic!("scenario {} reports no leak function", summary.scenario));
    assert!(
        summary.leaked_bytes > 0,
        "scenario {} leaked nothing: {summary:?}",
        summary.scenario
    );
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| {
            panic!(
                "no stack is leaking; {function} leaked {} bytes\n{}",
                summary.leaked_bytes,
                describe_report(report)
            )
        });
    assert!(
        has_frame(top, function),
        "the largest leaking stack does not go through {function}: {}\n{}",
        describe_stack(top),
        describe_report(report)
    );
    let found: u64 = stacks_with(report, function)
        .iter()
        .filter(|stack| stack.leaking)
        .map(|stack| stack.bytes)
        .sum();
    let expected = summary.leaked_bytes as f64;
    let error = (found as f64 - expected).abs() / expected;
    assert!(
        error <= tolerance,
        "leaking stacks through {function} hold {found} bytes; the scenario leaked {} ({:.1}% \
         off, {:.0}% allowed)\n{}",
        summary.leaked_bytes,
        error * 100.0,
        tolerance * 100.0,
        describe_report(report)
    );
}

/// Asserts that no stack of the report is flagged as leaking.
pub fn assert_no_leak(report: &Report) {
    let leaking: Vec<String> = report
        .stacks
        .iter()
        .filter(|stack| stack.leaking)
        .map(describe_stack)
        .collect();
    assert!(
        leaking.is_empty(),
        "{} stack(s) flagged as leaking in a program that does not leak:\n{}\n{}",
        leaking.len(),
        leaking.join("\n"),
        describe_report(report)
    );
}

/// One line about a stack: its figures, then its frames, innermost first.
pub fn describe_stack(stack: &StackReport) -> String {
    let frames: Vec<String> = stack.frames.iter().map(describe_frame).collect();
    format!(
        "{} B in {} allocations, {:.0} B/s, oldest {:.1} s, leaking {}: {}",
        stack.bytes,
        stack.allocations,
        stack.growth_bytes_per_second,
        stack.oldest_age_seconds,
        stack.leaking,
        frames.join(" <- ")
    )
}

/// The report's figures, notes and stacks, for a failure message.
pub fn describe_report(report: &Report) -> String {
    let mut text = format!(
        "report on pid {} ({}) over {:.2} s: {} B in {} allocations outstanding, partial {}, \
         dropped {:?}, notes {:?}\nstacks:\n",
        report.pid,
        report.comm,
        report.duration_seconds,
        report.totals.outstanding_bytes,
        report.totals.outstanding_allocations,
        report.partial,
        report.dropped,
        report.notes
    );
    for stack in &report.stacks {
        let _ = writeln!(text, "  {}", describe_stack(stack));
    }
    text
}

fn describe_frame(frame: &Frame) -> String {
    match &frame.symbol {
        Some(symbol) => symbol.clone(),
        None => format!(
            "{:#x} in {}",
            frame.address,
            frame.module.as_deref().unwrap_or("?")
        ),
    }
}

/// Traces run one at a time; a test that panicked while holding the lock does not poison it
/// for the others. Tests that start leakmon themselves hold it too.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn trace_unserialized(
    host: Host,
    format: &str,
    args: &[&str],
    target: Vec<OsString>,
) -> TraceOutput {
    let dir = tempfile::Builder::new()
        .prefix("leakmon-e2e-")
        .tempdir()
        .expect("creating a temporary directory");
    let output_path = dir.path().join(format!("report.{format}"));
    let mut argv: Vec<OsString> = vec![
        "trace".into(),
        "--format".into(),
        format.into(),
        "--output".into(),
        output_path.clone().into(),
    ];
    argv.extend(args.iter().map(OsString::from));
    argv.extend(target);
    let run = run_leakmon_unserialized(host, argv);
    let output = std::fs::read(&output_path).unwrap_or_default();
    TraceOutput { run, output }
}

fn run_leakmon_unserialized(host: Host, args: Vec<OsString>) -> LeakmonRun {
    let mut command = host.leakmon();
    command.args(&args);
    let finished = Running::spawn(command, "leakmon").finish();
    eprintln!(
        "leakmon {} -> {}; stderr:\n{}",
        args.iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        finished.status,
        finished.stderr
    );
    LeakmonRun {
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
    }
}

fn finish_trace(traced: TraceOutput, summary: ScenarioSummary) -> TraceRun {
    let TraceOutput { run, output } = traced;
    assert!(
        run.status.success(),
        "leakmon trace failed ({}):\n{}",
        run.status,
        run.stderr
    );
    let report: Report = serde_json::from_slice(&output).unwrap_or_else(|error| {
        panic!(
            "the JSON report does not parse ({error}); it starts {:?}\nleakmon stderr:\n{}",
            String::from_utf8_lossy(&output[..output.len().min(200)]),
            run.stderr
        )
    });
    TraceRun {
        report,
        summary,
        status: run.status,
        stderr: run.stderr,
    }
}

/// The one summary line of `scenario` among the lines of `stdout`.
fn parse_summary(stdout: &str, scenario: &str, leakmon_stderr: &str) -> ScenarioSummary {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("{\"scenario\""))
        .collect();
    let [line] = lines[..] else {
        panic!(
            "expected one summary line from {scenario}, found {}; stdout:\n{stdout}\nleakmon \
             stderr:\n{leakmon_stderr}",
            lines.len()
        );
    };
    let summary: ScenarioSummary = serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("bad summary line {line:?} from {scenario}: {error}"));
    // A scenario built without frame pointers (`NAME_nofp`) is the same program as `NAME`.
    assert_eq!(
        summary.scenario,
        scenario.strip_suffix("_nofp").unwrap_or(scenario),
        "summary line of another scenario"
    );
    summary
}

/// A `leakmon` started in the background (see [`start_leakmon`]).
pub struct BackgroundLeakmon(Running);

impl std::fmt::Debug for BackgroundLeakmon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundLeakmon")
            .field("pid", &self.pid())
            .finish()
    }
}

impl BackgroundLeakmon {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.child.id()
    }

    /// Sends `signal` to leakmon alone (not to the processes it started).
    pub fn signal(&self, signal: i32) {
        // SAFETY: signals a child we have not reaped yet.
        let sent = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(sent, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Waits for it to end (at most [`TIMEOUT`]).
    pub fn finish(self) -> LeakmonRun {
        self.0.finish().into()
    }

    /// Waits for it to end, at most `limit` from now.
    pub fn finish_within(mut self, limit: Duration) -> LeakmonRun {
        self.0.set_limit(limit);
        self.0.finish().into()
    }
}

/// Starts `leakmon ARGS...` in the background; the caller holds [`serial`] for as long as it
/// runs.
pub fn start_leakmon<I, S>(args: I) -> BackgroundLeakmon
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(leakmon_bin());
    command.args(args);
    BackgroundLeakmon(Running::spawn(command, "leakmon"))
}

/// How long the kernel may take to release the programs of a leakmon that is gone: the links
/// of BTF tracepoints are released after RCU grace periods.
pub const RELEASE_LIMIT: Duration = Duration::from_secs(10);

/// Waits (at most [`RELEASE_LIMIT`]) until none of `programs` (ids) is loaded; panics naming
/// those that stay, and `what` held them.
pub fn assert_released(programs: &BTreeSet<u32>, what: &str) {
    let started = Instant::now();
    loop {
        let left: Vec<u32> = programs
            .intersection(&loaded_program_ids())
            .copied()
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < RELEASE_LIMIT,
            "programs {left:?} of {what} are still loaded {} s after it is gone",
            RELEASE_LIMIT.as_secs()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (at most [`RELEASE_LIMIT`]) until the kernel lists no program of leakmon's; panics
/// naming those that stay.
pub fn assert_no_leakmon_program_loaded() {
    let started = Instant::now();
    loop {
        let left = loaded_leakmon_programs();
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < RELEASE_LIMIT,
            "leakmon's programs {left:?} are still loaded {} s after it exited",
            RELEASE_LIMIT.as_secs()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Names of the loaded BPF programs that are leakmon's, from the kernel's own list: after
/// leakmon exits there must be none.
pub fn loaded_leakmon_programs() -> Vec<String> {
    // The kernel keeps the first 15 bytes of a program's name.
    const OURS: [&str; 14] = [
        "alloc_enter",
        "alloc_exit",
        "free_enter",
        "empty_enter",
        "empty_exit",
        "sys_enter_mmap",
        "sys_exit_mmap",
        "sys_enter_munma",
        "sys_exit_munmap",
        "sys_enter_mrema",
        "sys_exit_mremap",
        "sys_enter_brk",
        "sys_exit_brk",
        "sched_process_e",
    ];
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|program| program.name_as_str().map(str::to_owned))
        .filter(|name| OURS.contains(&name.as_str()))
        .collect()
}

/// A process started in the background in a process group of its own (a scenario, a Prometheus
/// server, ...); the whole group is killed when this is dropped.
pub struct BackgroundProcess(Running);

impl std::fmt::Debug for BackgroundProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundProcess")
            .field("what", &self.0.what)
            .field("pid", &self.pid())
            .finish()
    }
}

impl BackgroundProcess {
    /// Starts `command`, named `what` in messages. It is never killed for running long: only
    /// when this is dropped.
    pub fn spawn(command: Command, what: &str) -> Self {
        BackgroundProcess(Running::spawn(command, what))
    }

    /// Starts the scenario program `name` with `args`.
    pub fn scenario(name: &str, args: &[&str]) -> Self {
        let mut command = Command::new(scenario_path(name));
        command.args(args);
        Self::spawn(command, name)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.child.id()
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        self.0.has_exited()
    }

    /// How it ended, once it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.0
            .child
            .try_wait()
            .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.0.what))
    }

    /// Panics, with what it printed on stderr, if it has exited.
    pub fn assert_running(&mut self) {
        if self.0.has_exited() {
            let status = self.0.child.try_wait().ok().flatten();
            self.0.kill_group();
            let stderr = join_output(self.0.stderr.take());
            panic!(
                "{} (pid {}) exited early ({status:?}); its stderr:\n{stderr}",
                self.0.what,
                self.pid()
            );
        }
    }
}

/// A loopback address with a port that was free a moment ago (the kernel picked it for a
/// listener that is closed again), for a server the test starts.
pub fn free_local_addr() -> SocketAddr {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a free loopback port");
    listener
        .local_addr()
        .expect("the address of a bound listener")
}

/// Debian's `redis-server` (a program nobody on the team wrote, built as the distribution
/// builds it: -O2, no frame pointers, jemalloc) on a free loopback port with persistence off;
/// killed when dropped.
pub struct RedisServer {
    process: BackgroundProcess,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("pid", &self.pid())
            .field("addr", &self.addr)
            .finish()
    }
}

impl RedisServer {
    /// Starts it and waits until it answers `PING`.
    pub fn start() -> Self {
        let addr = free_local_addr();
        let mut command = Command::new("redis-server");
        command.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]);
        let mut server = RedisServer {
            process: BackgroundProcess::spawn(command, "redis-server"),
            addr,
        };
        wait_for(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || {
                server.process.assert_running();
                let mut stream = TcpStream::connect(addr).ok()?;
                stream.write_all(b"PING\r\n").ok()?;
                let mut reply = [0; 7];
                stream.read_exact(&mut reply).ok()?;
                (&reply == b"+PONG\r\n").then_some(())
            },
        );
        server
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stores `per_second` new keys a second, each with a value of `value_len` bytes, for
    /// `duration`, from a thread (pipelined `SET`s every 10 ms); the thread returns how many
    /// keys it stored.
    pub fn grow(&self, per_second: u32, value_len: usize, duration: Duration) -> JoinHandle<u64> {
        let addr = self.addr;
        thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connecting to redis-server");
            let value = vec![b'v'; value_len];
            let per_tick = (per_second / 100).max(1);
            let started = Instant::now();
            let mut stored = 0u64;
            let mut tick = 0u32;
            while started.elapsed() < duration {
                let mut batch = Vec::new();
                for _ in 0..per_tick {
                    let key = format!("leakmon:key:{stored}");
                    stored += 1;
                    batch.extend_from_slice(
                        format!(
                            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${value_len}\r\n",
                            key.len()
                        )
                        .as_bytes(),
                    );
                    batch.extend_from_slice(&value);
                    batch.extend_from_slice(b"\r\n");
                }
                stream
                    .write_all(&batch)
                    .expect("sending SETs to redis-server");
                let mut replies = vec![0; 5 * per_tick as usize];
                stream
                    .read_exact(&mut replies)
                    .expect("reading redis-server's replies");
                assert!(
                    replies.chunks(5).all(|reply| reply == b"+OK\r\n"),
                    "redis-server refused a SET: {}",
                    String::from_utf8_lossy(&replies)
                );
                tick += 1;
                let next = started + Duration::from_millis(10) * tick;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            stored
        })
    }
}

/// An HTTP response: the status code, the headers (names lowercased) and the body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text (lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`; panics, showing the body, when it does not parse.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "the body of an HTTP {} response is not the expected JSON ({error}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// How long one HTTP exchange may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one HTTP/1.1 request (`Connection: close`, no body) to `addr` and reads the whole
/// response; `Err` with a description when the connection or the response fails.
pub fn http_request(addr: SocketAddr, method: &str, target: &str) -> Result<HttpResponse, String> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .map_err(|error| format!("connecting to {addr}: {error}"))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|error| format!("setting timeouts: {error}"))?;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: \
         0\r\nAccept: */*\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("sending {method} {target} to {addr}: {error}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|error| format!("reading the response to {method} {target}: {error}"))?;
    parse_response(&raw).map_err(|error| format!("{method} {target}: {error}"))
}

/// Parses a whole HTTP/1.x response as read until the connection closed.
fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {:?}", String::from_utf8_lossy(raw)))?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|error| format!("headers are not UTF-8: {error}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .filter(|_| status_line.starts_with("HTTP/1."))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .map(|line| match line.split_once(':') {
            Some((name, value)) => Ok((name.trim().to_lowercase(), value.trim().to_owned())),
            None => Err(format!("bad header line {line:?}")),
        })
        .collect::<Result<_, _>>()?;
    let body = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(name, value)| {
        name == "transfer-encoding" && value.to_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked transfer encoding (trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk size line without an end")?;
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|error| format!("bad chunk size {size_line:?}: {error}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| format!("a chunk of {size} bytes is cut short"))?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk without its line end")?;
    }
}

/// How long the daemon may take to answer `/healthz` after it starts.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the daemon may take to exit after SIGTERM.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `leakmon run` in the background on a free loopback port, with a temporary state directory
/// and config file; dropping it sends SIGTERM, waits (at most [`DAEMON_STOP_TIMEOUT`], then
/// kills it) and echoes its stderr to the test's output. Hold [`serial`] while it runs.
pub struct Daemon {
    /// `None` once it was stopped.
    process: Option<Running>,
    addr: SocketAddr,
    dir: TempDir,
    /// `--state-dir`: `<dir>/state` unless [`Daemon::start_with_state_dir`] chose another.
    state_dir: PathBuf,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field(
                "pid",
                &self.process.as_ref().map(|process| process.child.id()),
            )
            .field("addr", &self.addr)
            .field("dir", &self.dir.path())
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl Daemon {
    /// Starts `leakmon run --config FILE --listen ADDR --state-dir DIR` with `config` as the
    /// file, and waits until `GET /healthz` answers 200 (at most [`DAEMON_START_TIMEOUT`]).
    pub fn start(config: &str) -> Self {
        Self::start_at(Host::AsIs, config, None)
    }

    /// Like [`Daemon::start`], on `host`.
    pub fn start_on(host: Host, config: &str) -> Self {
        Self::start_at(host, config, None)
    }

    /// Like [`Daemon::start`], with `state_dir` as `--state-dir` (say, a previous daemon's, to
    /// see what a restart keeps); it is not removed when this is dropped.
    pub fn start_with_state_dir(config: &str, state_dir: &Path) -> Self {
        Self::start_at(Host::AsIs, config, Some(state_dir))
    }

    fn start_at(host: Host, config: &str, state_dir: Option<&Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("leakmon-daemon-")
            .tempdir()
            .expect("creating a temporary directory");
        let config_path = dir.path().join("leakmon.toml");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|error| panic!("writing {}: {error}", config_path.display()));
        let state_dir = state_dir.map_or_else(|| dir.path().join("state"), Path::to_path_buf);
        let addr = free_local_addr();
        let mut command = host.leakmon();
        if host == Host::StateOnTmpfs {
            std::fs::create_dir_all(&state_dir).expect("creating the state directory");
            command.env("LEAKMON_STATE_MOUNT", &state_dir);
        }
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(&state_dir);
        let mut daemon = Daemon {
            process: Some(Running::spawn(command, "leakmon run")),
            addr,
            dir,
            state_dir,
        };
        daemon.wait_healthy();
        daemon
    }

    fn wait_healthy(&mut self) {
        let started = Instant::now();
        loop {
            let process = self.process.as_mut().expect("the daemon runs");
            if process.has_exited() {
                let finished = self.process.take().expect("the daemon runs").stop();
                panic!(
                    "leakmon run exited at start ({}); its stderr:\n{}",
                    finished.status, finished.stderr
                );
            }
            let last = match http_request(self.addr, "GET", "/healthz") {
                Ok(response) if response.status == 200 => return,
                Ok(response) => format!("HTTP {}: {}", response.status, response.text()),
                Err(error) => error,
            };
            assert!(
                started.elapsed() < DAEMON_START_TIMEOUT,
                "leakmon run did not answer GET /healthz with 200 within {} s; last: {last}",
                DAEMON_START_TIMEOUT.as_secs()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the shell script `script` in the daemon's mount namespace (see
    /// [`Host::StateOnTmpfs`]) with `$STATE` its state directory; gives its exit status and
    /// what it printed.
    pub fn in_its_mounts(&self, script: &str) -> (ExitStatus, String) {
        let pid = self.process.as_ref().expect("the daemon runs").child.id();
        let output = Command::new("nsenter")
            .args([
                "--target",
                &pid.to_string(),
                "--mount",
                "--",
                "sh",
                "-c",
                script,
            ])
            .env("STATE", &self.state_dir)
            .output()
            .unwrap_or_else(|error| panic!("running nsenter: {error}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status, text)
    }

    /// Its state directory (`--state-dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    /// Sends a request without a body; panics when the exchange fails.
    pub fn request(&self, method: &str, target: &str) -> HttpResponse {
        http_request(self.addr, method, target)
            .unwrap_or_else(|error| panic!("the daemon did not answer: {error}"))
    }

    /// `GET target`: panics unless the answer is 200 with JSON that parses into `T`.
    pub fn get_json<T: DeserializeOwned>(&self, target: &str) -> T {
        self.get_ok(target).json()
    }

    /// `GET target`: panics unless the answer is 200; returns its body as text.
    pub fn get_text(&self, target: &str) -> String {
        self.get_ok(target).text()
    }

    /// `GET target`: panics unless the answer is 200.
    pub fn get_ok(&self, target: &str) -> HttpResponse {
        let response = self.request("GET", target);
        assert_eq!(
            response.status,
            200,
            "GET {target} answered {}: {}",
            response.status,
            response.text()
        );
        response
    }

    /// `POST target` without a body, whatever the answer.
    pub fn post(&self, target: &str) -> HttpResponse {
        self.request("POST", target)
    }

    /// Sends SIGTERM and waits for the daemon to exit (at most [`DAEMON_STOP_TIMEOUT`], then it
    /// is killed); panics, with its stderr, unless it exited 0. Returns how long that took.
    pub fn terminate(mut self) -> Duration {
        let process = self.process.take().expect("the daemon runs");
        let started = Instant::now();
        let run: LeakmonRun = terminate(process).into();
        let took = started.elapsed();
        assert!(
            run.status.success(),
            "leakmon run did not exit 0 after SIGTERM ({}, {:.1} s); stderr:\n{}",
            run.status,
            took.as_secs_f64(),
            run.stderr
        );
        took
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let finished = terminate(process);
            eprintln!(
                "leakmon run -> {}; stderr:\n{}",
                finished.status, finished.stderr
            );
        }
    }
}

/// SIGTERM, then [`Running::stop`] within [`DAEMON_STOP_TIMEOUT`].
fn terminate(mut process: Running) -> Finished {
    let pid = libc::pid_t::try_from(process.child.id()).expect("a pid fits in pid_t");
    if !process.has_exited() {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    process.set_limit(DAEMON_STOP_TIMEOUT);
    process.stop()
}

/// A child process in a process group of its own, with its output collected by two threads;
/// the whole group is killed at the deadline or when this is dropped before it ended.
struct Running {
    what: String,
    child: Child,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// How long it may run, from its start or from the last [`Running::set_limit`].
    limit: Duration,
    deadline: Instant,
    reaped: bool,
}

/// How a child process ended and what it printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Running {
    fn spawn(mut command: Command, what: &str) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {what}: {error}"));
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        Running {
            what: what.to_owned(),
            child,
            stdout,
            stderr,
            limit: TIMEOUT,
            deadline: Instant::now() + TIMEOUT,
            reaped: false,
        }
    }

    /// Moves the deadline to `limit` from now.
    fn set_limit(&mut self, limit: Duration) {
        self.limit = limit;
        self.deadline = Instant::now() + limit;
    }

    /// Whether the process has exited (and is reaped).
    fn has_exited(&mut self) -> bool {
        let exited = self
            .child
            .try_wait()
            .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.what))
            .is_some();
        self.reaped |= exited;
        exited
    }

    /// Waits until the process has exited and every holder of its output (the processes it
    /// started) has closed it; `None` once the deadline is reached first.
    fn wait_for_end(&mut self) -> Option<ExitStatus> {
        loop {
            if self.has_exited()
                && self.stdout.as_ref().is_none_or(JoinHandle::is_finished)
                && self.stderr.as_ref().is_none_or(JoinHandle::is_finished)
            {
                return self.child.try_wait().ok().flatten();
            }
            if Instant::now() >= self.deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process has exited and every holder of its output (the processes it
    /// started) has closed it, killing the group and panicking at the deadline.
    fn finish(mut self) -> Finished {
        let Some(status) = self.wait_for_end() else {
            self.kill_group();
            let stderr = join_output(self.stderr.take());
            panic!(
                "{} was still running (or a process it started was) after {} s and was \
                 killed; its stderr:\n{stderr}",
                self.what,
                self.limit.as_secs()
            );
        };
        self.collect(status)
    }

    /// Like [`Running::finish`], but kills the group at the deadline instead of panicking (for
    /// use in `Drop`); the status then says it was killed.
    fn stop(mut self) -> Finished {
        let status = match self.wait_for_end() {
            Some(status) => status,
            None => {
                self.kill_group();
                self.child
                    .wait()
                    .unwrap_or_else(|error| panic!("waiting for {}: {error}", self.what))
            }
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Finished {
        Finished {
            status,
            stdout: join_output(self.stdout.take()),
            stderr: join_output(self.stderr.take()),
        }
    }

    fn kill_group(&mut self) {
        let pgid = libc::pid_t::try_from(self.child.id()).expect("a pid fits in pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions. The group is the one this child
        // leads, which still exists: the child is not reaped, or a process of its group still
        // holds its output open.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        if !self.reaped {
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let output_open = [&self.stdout, &self.stderr]
            .iter()
            .any(|reader| reader.as_ref().is_some_and(|reader| !reader.is_finished()));
        if !self.reaped || output_open {
            self.kill_group();
        }
    }
}

impl From<Finished> for LeakmonRun {
    fn from(finished: Finished) -> Self {
        LeakmonRun {
            status: finished.status,
            stdout: finished.stdout,
            stderr: finished.stderr,
        }
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn join_output(reader: Option<JoinHandle<Vec<u8>>>) -> String {
    reader
        .map(|reader| String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Reliability helpers: the daemon's own process (pid, RSS, CPU, SIGKILL), the kernel's view of
// its BPF objects (programs, maps and their entries), breakpoints left in a process, processes
// with a chosen pid, and traces of processes started some other way than from a scenario path.
// ---------------------------------------------------------------------------------------------

impl Daemon {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("the daemon runs").child.id()
    }

    /// Sends SIGKILL and waits for it to die (at most [`DAEMON_STOP_TIMEOUT`]): a crash, with no
    /// chance to detach anything itself.
    pub fn kill(mut self) -> LeakmonRun {
        let mut process = self.process.take().expect("the daemon runs");
        if !process.has_exited() {
            let pid = libc::pid_t::try_from(process.child.id()).expect("a pid fits in pid_t");
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        process.set_limit(DAEMON_STOP_TIMEOUT);
        process.stop().into()
    }

    /// `GET /api/v1/processes/{pid}`: the daemon's view of `pid`, `None` while it is not watched
    /// (404); panics on any other answer.
    pub fn process_view(&self, pid: u32) -> Option<monitor_daemon::model::ProcessView> {
        let response = self.request("GET", &format!("/api/v1/processes/{pid}"));
        match response.status {
            200 => Some(response.json()),
            404 => None,
            status => panic!(
                "GET /api/v1/processes/{pid} answered {status}: {}",
                response.text()
            ),
        }
    }

    /// `GET /api/v1/status`.
    pub fn status(&self) -> monitor_daemon::serve::api::Status {
        self.get_json("/api/v1/status")
    }

    /// Waits (at most `limit`) until the daemon watches `pid`, and returns its view.
    pub fn wait_watched(&self, pid: u32, limit: Duration) -> monitor_daemon::model::ProcessView {
        wait_for(limit, &format!("the daemon to watch pid {pid}"), || {
            self.process_view(pid)
        })
    }

    /// `POST /api/v1/processes/{pid}/trace?duration=SECONDS`, retried while the daemon answers
    /// 409 because its trace slots are full (or its main loop has not seen the process yet) or 429 because requests come too fast (at most
    /// `limit`); panics unless it ends in 202.
    pub fn request_trace(&self, pid: u32, seconds: f64, limit: Duration) {
        let target = format!("/api/v1/processes/{pid}/trace?duration={seconds}");
        let started = Instant::now();
        loop {
            let response = self.post(&target);
            match response.status {
                202 => return,
                409 if started.elapsed() < limit
                    && ["max_concurrent", "is not watched"]
                        .iter()
                        .any(|why| response.text().contains(why)) =>
                {
                    thread::sleep(Duration::from_millis(100));
                }
                // The API admits a trace request a second.
                429 if started.elapsed() < limit => thread::sleep(Duration::from_millis(500)),
                status => panic!("POST {target} answered {status}: {}", response.text()),
            }
        }
    }
}

/// A memory cgroup the test creates, limited to some bytes, in whichever hierarchy has the memory
/// controller: cgroup v1's (`memory.limit_in_bytes`), else cgroup v2's (`memory.max`, the
/// controller enabled in the root's `cgroup.subtree_control`). Removed when dropped (once its
/// processes are gone).
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    /// The path from its hierarchy's root, as `/proc/PID/cgroup` names it.
    pub path: String,
    /// Whether it is a cgroup v2 one.
    pub unified: bool,
}

impl MemoryCgroup {
    /// Creates `/<name>` limited to `limit` bytes.
    pub fn create(name: &str, limit: u64) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
        let mounts = monitor_daemon::watch::limits::parse_mountinfo(&mountinfo);
        let (root, unified) = match (mounts.memory_v1, mounts.unified) {
            (Some(v1), _) => (v1, false),
            (None, Some(v2)) => {
                let control = v2.join("cgroup.subtree_control");
                std::fs::write(&control, "+memory")
                    .unwrap_or_else(|error| panic!("enabling memory in {control:?}: {error}"));
                (v2, true)
            }
            (None, None) => panic!("this host has no memory cgroup controller"),
        };
        let dir = root.join(name);
        if dir.exists() {
            // Left over by an earlier run that was killed.
            let _ = std::fs::remove_dir(&dir);
        }
        std::fs::create_dir(&dir).unwrap_or_else(|error| panic!("creating {dir:?}: {error}"));
        let file = if unified {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(dir.join(file), limit.to_string())
            .unwrap_or_else(|error| panic!("limiting {dir:?}: {error}"));
        MemoryCgroup {
            dir,
            path: format!("/{name}"),
            unified,
        }
    }

    /// A command that runs `program args...` in this cgroup (a shell moves itself in, then
    /// execs it).
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
            .arg(self.dir.join("cgroup.procs"))
            .arg(program)
            .args(args);
        command
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes may take a moment to be gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Polls `probe` every 100 ms until it returns `Some` (which is returned); panics, naming
/// `what`, once `limit` has passed.
pub fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "waited {:.1} s for {what}",
            limit.as_secs_f64()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The resident set of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/status: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The CPU time (user + system) of a process in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/stat: {error}"));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, the 12th and 13th after the comm.
    let field = |index: usize| -> u64 {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("bad /proc/{pid}/stat: {stat}"))
    };
    field(11) + field(12)
}

/// The ids of the BPF programs and maps a process holds descriptors to (from the
/// `prog_id:`/`map_id:` lines of `/proc/PID/fdinfo/*`; a link's descriptor names its program).
pub fn bpf_ids_held_by(pid: u32) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let mut programs = BTreeSet::new();
    let mut maps = BTreeSet::new();
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("reading {dir}: {error}"));
    for entry in entries.filter_map(Result::ok) {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines() {
            let parse = |value: &str| value.trim().parse::<u32>().ok();
            if let Some(id) = line.strip_prefix("prog_id:").and_then(parse) {
                programs.insert(id);
            } else if let Some(id) = line.strip_prefix("map_id:").and_then(parse) {
                maps.insert(id);
            }
        }
    }
    (programs, maps)
}

/// The ids of every BPF program loaded in the kernel.
pub fn loaded_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|program| program.id())
        .collect()
}

/// The kernel's own view of some BPF maps, read with `bpftool`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelMaps {
    /// Entries per map name.
    pub entries: BTreeMap<String, usize>,
    /// The pids registered in `TARGETS` (its keys).
    pub targets: Vec<u32>,
    /// The bits set in `TARGET_WORDS`, the filter in front of `TARGETS`.
    pub target_bits: u32,
}

/// The maps leakmon keeps per-process state in (the kernel keeps 15 bytes of a name). The
/// unwind rows are shared by every process that maps an object, and kept a while after the last
/// one, and the Python thread states are remembered per thread in a bounded least-recently-used
/// map (checked at each use): they are not per-process state.
pub const STATE_MAPS: [&str; 11] = [
    "ALLOCS",
    "STACKS",
    "STACK_STATS",
    "INFLIGHT",
    "SYSCALLS",
    "RELEASES",
    "TARGETS",
    "PROC_MAPPINGS",
    "UNWIND_WANTED",
    "WALK_CACHE",
    "PYTHON_PROCS",
];

fn bpftool_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running bpftool (Debian: bpftool): {error}"));
    assert!(
        output.status.success(),
        "bpftool -j {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("bpftool -j {} printed bad JSON: {error}", args.join(" ")))
}

/// A map key or value as bytes: bpftool prints `["0x2a","0x00",...]` for maps without BTF.
fn hex_bytes(key: &serde_json::Value) -> Vec<u8> {
    key.as_array()
        .map(|bytes| {
            bytes
                .iter()
                .filter_map(|byte| byte.as_str())
                .filter_map(|byte| u8::from_str_radix(byte.trim_start_matches("0x"), 16).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The entries of the [`STATE_MAPS`] that the process `pid` (a leakmon) holds, as the kernel
/// sees them (`bpftool map dump id N`).
pub fn kernel_maps_of(pid: u32) -> KernelMaps {
    let (_, map_ids) = bpf_ids_held_by(pid);
    let mut maps = KernelMaps::default();
    for id in map_ids {
        let id = id.to_string();
        let show = bpftool_json(&["map", "show", "id", &id]);
        let Some(name) = show["name"].as_str() else {
            continue;
        };
        if name == "TARGET_WORDS" {
            let dump = bpftool_json(&["map", "dump", "id", &id]);
            maps.target_bits += dump
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    let value = &entry["value"];
                    value.as_u64().unwrap_or_else(|| {
                        hex_bytes(value)
                            .iter()
                            .rev()
                            .fold(0, |word, &byte| (word << 8) | u64::from(byte))
                    })
                })
                .map(u64::count_ones)
                .sum::<u32>();
            continue;
        }
        if !STATE_MAPS.contains(&name) {
            continue;
        }
        let dump = bpftool_json(&["map", "dump", "id", &id]);
        let entries = dump.as_array().cloned().unwrap_or_default();
        if name == "TARGETS" {
            for entry in &entries {
                let key = &entry["key"];
                let pid = key.as_u64().map(|pid| pid as u32).or_else(|| {
                    let bytes = hex_bytes(key);
                    bytes
                        .get(..4)
                        .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
                });
                maps.targets.extend(pid);
            }
        }
        *maps.entries.entry(name.to_owned()).or_default() += entries.len();
    }
    maps
}

/// Breakpoints (`int3`) that are in a process's executable file mappings but not in the files:
/// the uprobes installed in it. Reads the code through `/proc/PID/mem` and the files through
/// `/proc/PID/map_files`.
pub fn breakpoints_in(pid: u32) -> usize {
    use std::os::unix::fs::FileExt as _;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_else(|error| panic!("reading /proc/{pid}/maps: {error}"));
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap_or_else(|error| panic!("opening /proc/{pid}/mem: {error}"));
    let mut found = 0;
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, offset, _, inode, path, ..] = fields[..] else {
            continue;
        };
        if !perms.contains('x') || inode == "0" || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).expect("a hex address");
        let end = u64::from_str_radix(end, 16).expect("a hex address");
        let offset = u64::from_str_radix(offset, 16).expect("a hex offset");
        let len = usize::try_from(end - start).expect("a mapping fits in memory");
        let mut code = vec![0; len];
        let mut file = vec![0; len];
        if mem.read_exact_at(&mut code, start).is_err() {
            continue;
        }
        let map_file = format!("/proc/{pid}/map_files/{range}");
        let Ok(backing) = std::fs::File::open(&map_file) else {
            continue;
        };
        // A mapping may run past the end of its file: those bytes stay 0.
        let mut read = 0;
        while read < len {
            match backing.read_at(&mut file[read..], offset + read as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        found += code
            .iter()
            .zip(&file)
            .filter(|(code, file)| **code == 0xcc && **file != 0xcc)
            .count();
    }
    found
}

/// The lines of the kernel's tracefs `uprobe_events` (probes created by name rather than
/// through the perf PMU) that look like leakmon's (aya names them after the program).
pub fn leakmon_uprobe_events() -> Vec<String> {
    [
        "/sys/kernel/tracing/uprobe_events",
        "/sys/kernel/debug/tracing/uprobe_events",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .unwrap_or_default()
    .lines()
    .filter(|line| {
        ["aya", "leakmon", "alloc_", "free_enter"]
            .iter()
            .any(|needle| line.contains(needle))
    })
    .map(str::to_owned)
    .collect()
}

/// The pid of the first process below `root` (itself included) whose comm is `comm`, waiting
/// for it at most `limit`.
pub fn find_descendant(root: u32, comm: &str, limit: Duration) -> u32 {
    fn children(pid: u32) -> Vec<u32> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }
    wait_for(limit, &format!("a process {comm} below pid {root}"), || {
        let mut queue = vec![root];
        while let Some(pid) = queue.pop() {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if name.trim_end() == comm {
                return Some(pid);
            }
            queue.extend(children(pid));
        }
        None
    })
}

/// Starts the command `make` builds so that it gets the pid `pid` (which must be free), by
/// writing `pid - 1` to `/proc/sys/kernel/ns_last_pid` just before; another process forking in
/// between takes the pid, so this tries up to `attempts` times. `None` when every attempt missed.
pub fn spawn_with_pid(
    mut make: impl FnMut() -> Command,
    what: &str,
    pid: u32,
    attempts: usize,
) -> Option<BackgroundProcess> {
    for _ in 0..attempts {
        let command = make();
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .unwrap_or_else(|error| panic!("writing /proc/sys/kernel/ns_last_pid: {error}"));
        let process = BackgroundProcess::spawn(command, what);
        if process.pid() == pid {
            return Some(process);
        }
    }
    None
}

/// Traces the running process `pid` (not a scenario: say, a server) after `warmup` with
/// `leakmon trace --format json ... --pid PID ARGS...`; panics unless leakmon succeeds with a
/// report about that pid. The caller holds [`serial`] from before it starts what the trace is
/// to see (a server and its load), so that no other trace delays this one.
pub fn trace_running(pid: u32, args: &[&str], warmup: Duration) -> Report {
    thread::sleep(warmup);
    let traced = trace_unserialized(
        Host::AsIs,
        "json",
        args,
        vec!["--pid".into(), pid.to_string().into()],
    );
    assert!(
        traced.run.status.success(),
        "leakmon trace --pid {pid} failed ({}):\n{}",
        traced.run.status,
        traced.run.stderr
    );
    let report: Report = serde_json::from_slice(&traced.output).unwrap_or_else(|error| {
        panic!(
            "the JSON report does not parse ({error})\nleakmon stderr:\n{}",
            traced.run.stderr
        )
    });
    assert_eq!(report.pid, pid, "the report is about another process");
    report
}

/// [`trace_pid`] for a process started by `command` rather than from a scenario's path (in
/// another namespace, from a copy, ...): starts it, lets it run for `warmup`, traces the pid
/// `resolve` gives for the started one with `leakmon trace --format json ... --pid PID ARGS...`,
/// waits for it to end, and parses the report and the summary line of `scenario` (the program
/// that prints it, which may not be the one started).
pub fn trace_spawned(
    command: Command,
    what: &str,
    scenario: &str,
    args: &[&str],
    warmup: Duration,
    resolve: impl FnOnce(u32) -> u32,
) -> (TraceRun, u32) {
    let _serial = serial();
    let running = Running::spawn(command, what);
    let pid = resolve(running.child.id());
    thread::sleep(warmup);
    let traced = trace_unserialized(
        Host::AsIs,
        "json",
        args,
        vec!["--pid".into(), pid.to_string().into()],
    );
    let finished = running.finish();
    assert!(
        finished.status.success(),
        "{what} failed ({}): {}\nleakmon stderr:\n{}",
        finished.status,
        finished.stderr,
        traced.run.stderr
    );
    let summary = parse_summary(&finished.stdout, scenario, &traced.run.stderr);
    let run = finish_trace(traced, summary);
    assert_eq!(
        run.report.pid, pid,
        "the report is about another process\nleakmon stderr:\n{}",
        run.stderr
    );
    (run, pid)
}

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    use monitor_daemon::report::Totals;

    use super::*;

    fn stack(bytes: u64, leaking: bool, symbols: &[&str]) -> StackReport {
        StackReport {
            bytes,
            allocations: 1,
            growth_bytes_per_second: 0.0,
            oldest_age_seconds: 0.0,
            leaking,
            frames: symbols
                .iter()
                .map(|symbol| Frame {
                    address: 0x1000,
                    symbol: Some((*symbol).to_owned()),
                    module: None,
                    file: None,
                    line: None,
                    inlined: false,
                    ..Default::default()
                })
                .collect(),
            ..StackReport::default()
        }
    }

    fn report(stacks: Vec<StackReport>) -> Report {
        Report {
            pid: 1,
            start_time_ticks: None,
            comm: "test".to_owned(),
            duration_seconds: 6.0,
            interval_seconds: 0.5,
            sample_rate: 0,
            min_age_seconds: 0.0,
            partial: false,
            notes: Vec::new(),
            probes: Vec::new(),
            totals: Totals::default(),
            dropped: Default::default(),
            events: Default::default(),
            stacks,
            ..Default::default()
        }
    }

    fn summary(leaked_bytes: u64) -> ScenarioSummary {
        ScenarioSummary {
            scenario: "steady_leak".to_owned(),
            leak_function: Some("leak_steady".to_owned()),
            leaked_bytes,
        }
    }

    #[test]
    fn http_responses_parse_plain_and_chunked() {
        let plain = parse_response(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"error\":\"x\"}",
        )
        .expect("a plain response");
        assert_eq!(plain.status, 404);
        assert_eq!(
            plain.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(plain.json::<serde_json::Value>()["error"], "x");
        let chunked = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\n\r\n",
        )
        .expect("a chunked response");
        assert_eq!(chunked.status, 200);
        assert_eq!(chunked.text(), "hello, world");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhello")
                .is_err()
        );
    }

    #[test]
    fn summary_line_is_found_among_other_output() {
        let stdout = "starting\n{\"scenario\":\"steady_leak\",\"leak_function\":\"leak_steady\",\
                      \"leaked_bytes\":4096}\n";
        assert_eq!(parse_summary(stdout, "steady_leak", ""), summary(4096));
        let null = "{\"scenario\":\"churn\",\"leak_function\":null,\"leaked_bytes\":0}\n";
        assert_eq!(parse_summary(null, "churn", "").leak_function, None);
        assert!(catch_unwind(|| parse_summary("", "churn", "")).is_err());
    }

    #[test]
    fn leak_is_the_top_leaking_stack_and_sums_its_stacks() {
        let found = report(vec![
            stack(50_000, false, &["cache_insert", "main"]),
            stack(6_000, true, &["leak_steady", "main"]),
            stack(4_000, true, &["leak_steady", "worker", "main"]),
        ]);
        assert_leak(&found, &summary(10_500));
        assert!(catch_unwind(|| assert_leak(&found, &summary(12_000))).is_err());
        assert_leak_within(&found, &summary(12_000), 0.25);
    }

    #[test]
    fn leak_elsewhere_fails() {
        let elsewhere = report(vec![
            stack(9_000, true, &["other", "main"]),
            stack(8_000, true, &["leak_steady", "main"]),
        ]);
        assert!(catch_unwind(|| assert_leak(&elsewhere, &summary(8_000))).is_err());
        assert!(catch_unwind(|| assert_leak(&report(Vec::new()), &summary(8_000))).is_err());
    }

    #[test]
    fn no_leak_fails_on_any_leaking_stack() {
        assert_no_leak(&report(vec![stack(4096, false, &["cache_insert"])]));
        let leaking = report(vec![stack(4096, true, &["cache_insert"])]);
        let message = *catch_unwind(|| assert_no_leak(&leaking))
            .expect_err("a leaking stack must fail")
            .downcast::<String>()
            .expect("a formatted message");
        assert!(message.contains("4096 B in 1 allocations"), "{message}");
        assert!(message.contains("cache_insert"), "{message}");
    }
}
