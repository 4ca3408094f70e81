//! The `leakmon` command line: parses arguments, runs the library, and turns every failure into
//! one line on stderr and a non-zero exit code.

use std::{
    fs::File, io::Write as _, net::SocketAddr, num::NonZeroU32, path::PathBuf, process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use monitor_daemon::{
    cli::{
        client::{Client, ReportFormat},
        oncall, top,
        trace::{self, Target, TraceOptions},
    },
    daemon::{self, RunOptions},
    report::{self, Method, OutputFormat},
    trace::{
        launch::ExitStatus,
        session::SessionParams,
        tracer::{EmptyPlacement, MAX_SAMPLE_RATE, MapLimits},
    },
};

/// An eBPF memory-leak monitor for Linux hosts.
#[derive(Debug, Parser)]
#[command(name = "leakmon", version, about)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); default info for `run`, warn otherwise;
    /// RUST_LOG overrides.
    #[arg(long, global = true)]
    log_level: Option<log::LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground: watch every process, trace suspects, serve the HTTP
    /// API and Prometheus metrics (SIGHUP reloads the configuration, SIGTERM stops).
    Run(RunArgs),
    /// Show the daemon's suspects, traced processes and probe health.
    Status(DaemonArgs),
    /// Print the latest report the daemon keeps for a process.
    Report(ReportArgs),
    /// A live view of the daemon's processes, sorted by growth.
    Top(TopArgs),
    /// Trace one process's allocations and report the stacks whose outstanding memory keeps
    /// growing.
    Trace(TraceArgs),
    /// Run a command with empty probes where the allocator probes would go (what the
    /// breakpoints alone cost; used by `cargo xtask bench`).
    ProbeCost(ProbeCostArgs),
    /// Write the man pages or the shell completions into DIR (used by `cargo xtask deb`).
    #[command(hide = true)]
    Generate {
        /// What to write.
        #[arg(value_enum)]
        what: Generated,
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (TOML); every key has a default (see deploy/config.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address of the HTTP API and metrics (overrides daemon.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where reports are kept (overrides daemon.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Serve the API without a token on a non-loopback address (sets
    /// daemon.allow_unauthenticated; stack reports reveal code).
    #[arg(long)]
    allow_unauthenticated: bool,
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// Address of the daemon's HTTP API [default: daemon.listen of the configuration, else
    /// 127.0.0.1:9464].
    #[arg(long)]
    daemon: Option<SocketAddr>,
    /// The daemon's configuration, for its address and token file [default:
    /// /etc/leakmon/config.toml when it exists].
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// File holding the API token [default: daemon.token_file of the configuration].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

impl DaemonArgs {
    /// A client of the daemon these arguments point at.
    fn client(self) -> anyhow::Result<Client> {
        Ok(oncall::connect(&oncall::Connect {
            daemon: self.daemon,
            config: self.config,
            token_file: self.token_file,
        })?)
    }
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// The process.
    pid: NonZeroU32,
    /// Report format (text, json, folded, pprof, svg).
    #[arg(long, default_value = "text", value_parser = str::parse::<ReportFormat>)]
    format: ReportFormat,
    /// The latest report made by this method [default: the latest report].
    #[arg(long, value_enum)]
    method: Option<TraceMethod>,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TopArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Seconds between refreshes.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    interval: Duration,
}

#[derive(Debug, Args)]
struct ProbeCostArgs {
    /// Where to put the empty probes.
    #[arg(long, value_enum)]
    at: ProbeCostPlacement,
    /// Command to run.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl From<TraceMethod> for Method {
    fn from(method: TraceMethod) -> Self {
        match method {
            TraceMethod::Allocations => Self::Allocations,
            TraceMethod::PageFaults => Self::PageFaults,
        }
    }
}

/// How `leakmon trace` looks at the process.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TraceMethod {
    /// Probes on the allocator: every outstanding allocation with its stack (a trap on every
    /// allocator call).
    Allocations,
    /// The process's page faults: the resident memory each stack brought in and still holds,
    /// for any allocator or runtime, at a cost proportional to the growth.
    PageFaults,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProbeCostPlacement {
    /// Each function's first instruction.
    Entry,
    /// The offsets leakmon chooses.
    Chosen,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["pid", "command"]))]
struct TraceArgs {
    /// Trace this running process.
    #[arg(long, short)]
    pid: Option<NonZeroU32>,
    /// How to look at the process.
    #[arg(long, value_enum, default_value = "allocations")]
    method: TraceMethod,
    /// Longest observation window, in seconds (it also ends when the process exits or on
    /// Ctrl-C).
    #[arg(long, default_value = "60", value_parser = parse_seconds)]
    duration: Duration,
    /// Seconds between samples of each stack's outstanding bytes.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    interval: Duration,
    /// Only allocations at least this many seconds old count as outstanding.
    #[arg(long, default_value = "0", value_parser = parse_non_negative_seconds)]
    min_age: Duration,
    /// Number of stacks in the report.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Record allocations with probability 1-exp(-size/BYTES) and scale them up (0 records
    /// every allocation).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_SAMPLE_RATE))]
    sample_rate: u64,
    /// Report format.
    #[arg(long, default_value = "text")]
    format: OutputFormat,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Capacity of the outstanding-allocations map.
    #[arg(long, default_value_t = MapLimits::default().allocations)]
    max_allocations: u32,
    /// Capacity of the stacks map.
    #[arg(long, default_value_t = MapLimits::default().stacks)]
    max_stacks: u32,
    /// Capacity of the unwind rows map (8 bytes a row; a C library needs about 25,000).
    #[arg(long, default_value_t = MapLimits::default().unwind_rows)]
    max_unwind_rows: u32,
    /// Command to start and trace from its first allocation.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_non_negative_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("`{text}` is not a non-negative number of seconds"))
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let duration = parse_non_negative_seconds(text)?;
    if duration.is_zero() {
        return Err("must be more than 0 seconds".to_owned());
    }
    Ok(duration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run(_) => log::LevelFilter::Info,
        _ => log::LevelFilter::Warn,
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level.unwrap_or(default_level))
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("leakmon: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_daemon(args),
        Command::Status(args) => {
            print!("{}", oncall::status(&args.client()?)?);
            Ok(())
        }
        Command::Report(args) => {
            let method = args.method.map(Method::from);
            let bytes =
                oncall::report(&args.daemon.client()?, args.pid.get(), args.format, method)?;
            write_output(args.output.as_deref(), &bytes)
        }
        Command::Top(args) => Ok(top::run(&args.daemon.client()?, args.interval)?),
        Command::Trace(args) => run_trace(args),
        Command::ProbeCost(args) => run_probe_cost(args),
        Command::Generate { what, dir } => generate(what, &dir),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    let options = RunOptions {
        config_path: args.config,
        listen: args.listen,
        state_dir: args.state_dir,
        allow_unauthenticated: args.allow_unauthenticated,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon::run(options))?;
    Ok(())
}

fn write_output(path: Option<&std::path::Path>, bytes: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|()| stdout.flush())
                .context("writing to standard output")
        }
    }
}

fn run_probe_cost(args: ProbeCostArgs) -> anyhow::Result<()> {
    let placement = match args.at {
        ProbeCostPlacement::Entry => EmptyPlacement::Entry,
        ProbeCostPlacement::Chosen => EmptyPlacement::Chosen,
    };
    let status = runtime()?.block_on(trace::run_with_empty_probes(&args.command, placement))?;
    if status != ExitStatus::Code(0) {
        bail!("the command failed ({status})");
    }
    Ok(())
}

fn run_trace(args: TraceArgs) -> anyhow::Result<()> {
    let target = match (args.pid, args.command.is_empty()) {
        (Some(pid), true) => Target::Pid(pid),
        (None, false) => Target::Command(args.command),
        _ => bail!("give either --pid PID or -- COMMAND, not both"),
    };
    if args.interval > args.duration {
        bail!("--interval must not exceed --duration");
    }
    if args.duration.as_secs_f64() / args.interval.as_secs_f64() > 100_000.0 {
        bail!("--duration / --interval must be at most 100000 samples");
    }
    // Open the output first: an unwritable path fails before anything is traced.
    let mut output: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(
            File::create(path)
                .with_context(|| format!("cannot write the report to {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let options = TraceOptions {
        target,
        duration: args.duration,
        params: SessionParams {
            interval: args.interval,
            min_age: args.min_age,
            top: args.top,
            sample_rate: args.sample_rate,
            method: args.method.into(),
        },
        limits: MapLimits {
            allocations: args.max_allocations,
            stacks: args.max_stacks,
            unwind_rows: args.max_unwind_rows,
        },
    };
    let report = runtime()?.block_on(async {
        let interrupted = async {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|err| log::warn!("cannot watch SIGTERM: {err}"))
                .ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match terminate.as_mut() { Some(signal) => { signal.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        trace::trace(options, interrupted).await
    })?;
    let bytes = report::encode(&report, args.format, args.top).context("encoding the report")?;
    output
        .write_all(&bytes)
        .and_then(|()| output.flush())
        .context("writing the report")?;
    Ok(())
}

/// What `leakmon generate` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Generated {
    /// `leakmon.1` and `leakmon-SUBCOMMAND.1` for each visible subcommand.
    Man,
    /// `leakmon.bash`, `_leakmon` (zsh) and `leakmon.fish`.
    Completions,
}

/// Writes the man pages or the shell completions of the command line into `dir`.
fn generate(what: Generated, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    match what {
        Generated::Man => clap_mangen::generate_to(command, dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display())),
        Generated::Completions => {
            use clap_complete::Shell;
            // clap_complete offers hidden subcommands too: complete a copy without them.
            let mut command = clap::Command::new("leakmon")
                .version(env!("CARGO_PKG_VERSION"))
                .args(command.get_arguments().cloned())
                .subcommands(
                    command
                        .get_subcommands()
                        .filter(|sub| !sub.is_hide_set())
                        .cloned(),
                );
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut command, "leakmon", dir).with_context(
                    || {
                        format!(
                            "cannot write the {shell} completions into {}",
                            dir.display()
                        )
                    },
                )?;
            }
            Ok(())
        }
    }
}

/// The error and its causes on one line. The library's errors already name their cause in
/// their own message, so a cause whose text is already there is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
