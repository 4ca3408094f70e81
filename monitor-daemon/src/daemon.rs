//! `leakmon run`: the always-on daemon. Its main loop owns the [`Tracer`] and the [`Watcher`]:
//! every watch interval it samples every process and publishes a [`Snapshot`] for the HTTP API
//! and metrics; suspected processes (and configured targets) are escalated to allocation
//! tracing within the configured limits (concurrent traces, per-process cool-down, an overhead
//! budget); finished traces become reports in the state directory. SIGHUP reloads the
//! configuration, SIGTERM and SIGINT detach every probe and stop.
//!
//! Methods (`trace.method`): under `auto`, a process is first traced by its page faults (the
//! resident memory each stack brought in: cheap, any allocator or runtime); when that window
//! ends and the process is still suspected, an allocation trace follows
//! (`trace.follow_with_allocations`, when the process has an allocator to probe), whose report
//! names the page-fault report it follows. Each method has its own overhead budget
//! (`trace.max_events_per_second` for the allocator probes, `trace.max_faults_per_second` for
//! the page faults): a budget overrun ends the traces of that method only.
//!
//! Urgency: a process whose exhaustion is imminent (`exhaustion_imminent`) is traced first, and
//! when every trace slot is taken it takes the slot of the longest-running automatic trace of a
//! process that is not urgent (that trace ends early, its report stored). A fast leak is traced
//! with allocation sampling, so that the kernel's map of outstanding allocations holds the
//! window ([`sample_rate_for`]). While its exhaustion is imminent, a trace's report is stored
//! early and refreshed every `trace.report_refresh_seconds` (an interim report), so the latest
//! evidence is on disk when the OOM killer strikes.
//!
//! Ends: when a watched process ends, the daemon records how (the kernel's `End` events: the
//! OOM killer's victims, deaths by signal; else an exit) on its latest report (`end`); an OOM
//! kill is also counted, logged on one line with the culprit stack, and listed in the snapshot.
//! Reports that cannot be written (a full or read-only state directory) are held in memory,
//! served, counted and written again every [`SWEEP_INTERVAL`].

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    num::NonZeroU32,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use log::{error, info, warn};
use monitor_common::Stat;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    time::{Interval, MissedTickBehavior},
};

use crate::{
    config::{self, Config, ConfigError, TargetSelector, TraceConfig, TraceMethod},
    model::{Method, OomKill, ProbeHealth, ProcessView, Reason, Snapshot},
    report::{EndReason, Frame, ProcessEnd, Report, text::human_bytes},
    serve::{
        api::{self, ApiState, Command, TraceAccepted},
        store::{ReportStore, StoreError},
    },
    symbolize::symbolizer::Symbolizer,
    trace::{
        allocators,
        ends::Ended,
        session::{Session, SessionParams, monotonic_ns},
        tracer::{self, MapLimits, SWEEP_INTERVAL, SWEEP_MIN_AGE, Tracer, TracerError},
    },
    watch::{procfs, watcher::Watcher},
};

/// The command name of the process `pid` that started at `start_time_ticks`, as it is now: a
/// process takes its new program's name on execve, which the watcher sees a sample later.
/// `None` once the pid is gone or reused.
fn current_comm(pid: u32, start_time_ticks: u64) -> Option<String> {
    let stat = procfs::read_stat(pid).ok()?;
    (stat.start_time_ticks == start_time_ticks).then_some(stat.comm)
}

/// Stacks kept in a daemon report.
const REPORT_TOP: usize = 50;
/// How long a process that could not be traced (no allocator, vanished) is left alone.
const FAILED_ATTACH_BACKOFF: Duration = Duration::from_secs(600);
/// OOM kills listed in the snapshot.
const RECENT_OOM_KILLS: usize = 20;
/// How long the kernel's word on how a process ended waits for the watcher to miss it.
const END_EVENT_TTL: Duration = Duration::from_secs(60);
/// A fast leak is sampled so that its allocations fill at most this fraction of the kernel's
/// map over one window...
const SAMPLED_MAP_FRACTION: f64 = 0.25;
/// ... but only once that takes a sampling rate of more than this many bytes (every allocation
/// of a slower leak is recorded).
const MIN_AUTO_SAMPLE_RATE: f64 = 256.0;

/// What the command line gives `leakmon run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The configuration file (defaults apply without one).
    pub config_path: Option<PathBuf>,
    /// Overrides `daemon.listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides `daemon.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Sets `daemon.allow_unauthenticated`.
    pub allow_unauthenticated: bool,
}

/// Why the daemon could not start (once running, it logs failures and carries on).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel side could not be set up.
    #[error(transparent)]
    Tracer(#[from] TracerError),
    /// The report store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API's token file was refused, or it would serve off-host unauthenticated.
    #[error(transparent)]
    Access(#[from] api::AccessError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A signal handler could not be installed, or the events ring buffer polled.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads the configuration and applies the command-line overrides.
pub fn load_config(options: &RunOptions) -> Result<Config, ConfigError> {
    let mut config = match &options.config_path {
        Some(path) => config::read(path)?,
        None => Config::default(),
    };
    if let Some(listen) = options.listen {
        config.daemon.listen = listen;
    }
    if let Some(state_dir) = &options.state_dir {
        config.daemon.state_dir = state_dir.clone();
    }
    if options.allow_unauthenticated {
        config.daemon.allow_unauthenticated = true;
    }
    let origin = options.config_path.as_ref().map_or_else(
        || "command line".to_owned(),
        |path| path.display().to_string(),
    );
    config.validate().map_err(|err| err.with_origin(&origin))?;
    Ok(config)
}

/// Why a process is being traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Suspected,
    Requested,
    Target,
}

/// A report on its way to the report writer, under the id its trace was given.
#[derive(Debug)]
struct Outgoing {
    pid: u32,
    start_time_ticks: u64,
    comm: String,
    id: String,
    /// The report, or why there is none.
    report: Result<Report, String>,
}

/// What the report writer does, in order.
#[derive(Debug)]
enum Job {
    /// A finished trace: detach its probes, then save its report.
    Finished {
        outgoing: Outgoing,
        detached: tracer::Detached,
        detaching: Arc<AtomicUsize>,
    },
    /// An interim report of a trace under way.
    Interim(Outgoing),
    /// A process ended: record how on its latest report, `id`.
    End {
        pid: u32,
        start_time_ticks: u64,
        comm: String,
        id: String,
        end: ProcessEnd,
    },
    /// Write the reports held in memory only.
    Retry,
}

/// What a saved report was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SavedKind {
    Finished,
    Interim,
    End,
}

/// The report writer: one thread that detaches finished traces' probes and saves reports, in
/// order, telling the main loop through `saved`. One thread rather than a pool keeps the
/// daemon's memory flat under churn (every thread gets its own malloc arena).
fn report_writer(
    store: Arc<ReportStore>,
    jobs: std::sync::mpsc::Receiver<Job>,
    saved: mpsc::UnboundedSender<Saved>,
) {
    for job in jobs {
        let message = match job {
            Job::Finished {
                outgoing,
                detached,
                detaching,
            } => {
                detached.detach_in_parallel();
                detaching.fetch_sub(1, Ordering::Relaxed);
                save(&store, outgoing, SavedKind::Finished)
            }
            Job::Interim(outgoing) => save(&store, outgoing, SavedKind::Interim),
            Job::End {
                pid,
                start_time_ticks,
                comm,
                id,
                end,
            } => {
                let report = store
                    .read(&id)
                    .map(|report| Report {
                        end: Some(end),
                        ..report
                    })
                    .map_err(|err| format!("recording how it ended: {err}"));
                let outgoing = Outgoing {
                    pid,
                    start_time_ticks,
                    comm,
                    id,
                    report,
                };
                save(&store, outgoing, SavedKind::End)
            }
            Job::Retry => {
                for (id, written) in store.retry() {
                    match written {
                        Ok(()) => info!("report {id}, held in memory, is now written"),
                        Err(err) => log::debug!("report {id} still cannot be written: {err}"),
                    }
                }
                continue;
            }
        };
        if saved.send(message).is_err() {
            return;
        }
    }
}

/// Saves one report in the writer; the message for the main loop.
fn save(store: &ReportStore, outgoing: Outgoing, kind: SavedKind) -> Saved {
    let Outgoing {
        pid,
        start_time_ticks,
        comm,
        id,
        report,
    } = outgoing;
    let outcome = match report {
        Ok(report) => {
            let leaking = report.stacks.iter().filter(|stack| stack.leaking).count();
            let culprit = culprit(&report);
            let (id, written) = store.save(report, Some(&id));
            Ok(SavedReport {
                id,
                leaking,
                culprit,
                store_error: written.err().map(|err| err.to_string()),
            })
        }
        Err(err) => Err(format!("the report of pid {pid}: {err}")),
    };
    Saved {
        pid,
        start_time_ticks,
        comm,
        kind,
        outcome,
    }
}

/// Libraries whose frames are not a culprit: the C library and loader, the C++ runtime and the
/// allocators (by file name prefix).
const RUNTIME_LIBRARIES: [&str; 7] = [
    "libc.so",
    "libc-",
    "ld-linux",
    "libstdc++",
    "libjemalloc",
    "libtcmalloc",
    "libmimalloc",
];

/// Whether `frame` is an allocator's entry point (`malloc`, glibc's `__GI___libc_malloc`,
/// `operator new`, ...).
fn is_allocator_entry(frame: &Frame) -> bool {
    frame.symbol.as_deref().is_some_and(|symbol| {
        let name = ["__GI___libc_", "__libc_"]
            .iter()
            .find_map(|prefix| symbol.strip_prefix(prefix))
            .unwrap_or(symbol);
        name.starts_with("operator new")
            || allocators::ALLOCATOR_SYMBOLS
                .iter()
                .any(|(entry, _)| *entry == name)
    })
}

/// Whether `frame` is in one of the [`RUNTIME_LIBRARIES`].
fn in_runtime_library(frame: &Frame) -> bool {
    frame.module.as_deref().is_some_and(|module| {
        let name = module.rsplit('/').next().unwrap_or(module);
        RUNTIME_LIBRARIES
            .iter()
            .any(|prefix| name.starts_with(prefix))
    })
}

/// The frames of the report's top leaking stack from the culprit out (by symbol, else module
/// and address): a page-fault stack's innermost frames in the allocator (up to its entry point)
/// and in the C library (a `memset`) are skipped, unless nothing else is left.
fn culprit(report: &Report) -> Vec<String> {
    report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .map(|stack| {
            let frames = &stack.frames;
            let past_allocator = frames
                .iter()
                .rposition(is_allocator_entry)
                .map_or(0, |entry| entry + 1);
            let start = past_allocator
                + frames[past_allocator..]
                    .iter()
                    .take_while(|frame| in_runtime_library(frame))
                    .count();
            let frames = if start < frames.len() {
                &frames[start..]
            } else {
                &frames[..]
            };
            frames
                .iter()
                .map(|frame| match (&frame.symbol, &frame.module) {
                    (Some(symbol), _) => symbol.clone(),
                    (None, Some(module)) => format!("{module}+{:#x}", frame.address),
                    (None, None) => format!("{:#x}", frame.address),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A report saved (or not) off the main loop.
#[derive(Debug)]
struct Saved {
    pid: u32,
    start_time_ticks: u64,
    comm: String,
    kind: SavedKind,
    /// The report, or why there is none.
    outcome: Result<SavedReport, String>,
}

/// A report the writer saved: held in memory, and written unless `store_error` says why not.
#[derive(Debug)]
struct SavedReport {
    id: String,
    leaking: usize,
    culprit: Vec<String>,
    store_error: Option<String>,
}

/// A trace under way.
#[derive(Debug)]
struct Running {
    session: Session,
    start_time_ticks: u64,
    /// Its command name, read again every tick: it changes on execve.
    comm: String,
    until: Instant,
    why: Why,
    /// How it is traced.
    method: Method,
    /// The id its reports are saved under.
    report_id: String,
    /// The process's exhaustion is imminent: its report is stored during the window.
    urgent: bool,
    /// When its next interim report is due (while urgent).
    next_report: Option<Instant>,
}

/// Everything the main loop owns.
struct Daemon {
    config: Config,
    config_path: Option<PathBuf>,
    tracer: Tracer,
    watcher: Watcher,
    store: Arc<ReportStore>,
    symbolizer: Symbolizer,
    running: HashMap<u32, Running>,
    /// (pid, start time) → when it may be traced automatically again.
    cooldown: HashMap<(u32, u64), Instant>,
    /// (pid, start time) → the page-fault report an allocation trace is to follow.
    follow_ups: HashMap<(u32, u64), String>,
    /// pid → (start time of the process it is about, when known; report id).
    latest_reports: HashMap<u32, (Option<u64>, String)>,
    /// The report writer's queue (see [`report_writer`]).
    writer: std::sync::mpsc::Sender<Job>,
    /// How processes ended, as the kernel told, by pid, with when it told.
    ended: HashMap<u32, (Ended, Instant)>,
    /// The processes whose end is recorded (or being recorded), with when.
    recorded_ends: HashMap<(u32, u64), Instant>,
    /// The last view of traced processes the watcher no longer sees, for their end.
    vanished: HashMap<u32, ProcessView>,
    oom_kills_total: u64,
    /// Newest first.
    oom_kills: Vec<OomKill>,
    /// Finished traces whose probes the writer has not detached yet. Detaching costs the kernel
    /// a grace period per probe (a second or two per process), so no new trace starts while
    /// `trace.max_concurrent` of them wait: the probes (and their descriptors) stay bounded
    /// however fast processes come and go.
    detaching: Arc<AtomicUsize>,
    views: Vec<ProcessView>,
    health: ProbeHealth,
    /// The probe counters at the previous trace tick: when, allocator probe hits, page faults.
    last_counters: Option<(Instant, u64, u64)>,
    own_pid: u32,
}

fn session_params(trace: &TraceConfig, sample_rate: u64, method: Method) -> SessionParams {
    SessionParams {
        interval: Duration::from_secs_f64(trace.interval_seconds),
        min_age: Duration::ZERO,
        top: REPORT_TOP,
        sample_rate,
        method,
    }
}

/// The sampling rate for a trace of `window_seconds` of a process whose memory grows by
/// `growth` bytes a second: `configured`, or a coarser power of two when recording every
/// allocation would fill more than [`SAMPLED_MAP_FRACTION`] of the kernel's map of
/// `capacity` outstanding allocations (one record per `rate` bytes leaked).
fn sample_rate_for(configured: u64, growth: f64, window_seconds: f64, capacity: u32) -> u64 {
    let needed = growth * window_seconds / (SAMPLED_MAP_FRACTION * f64::from(capacity));
    if !needed.is_finite() || needed <= MIN_AUTO_SAMPLE_RATE {
        return configured;
    }
    configured
        .max((needed.ceil() as u64).next_power_of_two())
        .min(config::MAX_SAMPLE_RATE)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

fn ticker(seconds: f64) -> Interval {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(seconds));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

fn matches(selector: &TargetSelector, view: &ProcessView) -> bool {
    let field = |want: &Option<String>, have: Option<&str>, prefix: bool| match want {
        None => true,
        Some(want) => have.is_some_and(|have| {
            if prefix {
                have.starts_with(want.as_str())
            } else {
                have == want
            }
        }),
    };
    field(&selector.unit, view.unit.as_deref(), false)
        && field(&selector.comm, Some(view.comm.as_str()), false)
        && field(&selector.cgroup, view.cgroup.as_deref(), true)
}

impl Daemon {
    /// Samples every process, records the ends of those gone, and escalates.
    fn watch_tick(&mut self) {
        let previous = std::mem::replace(&mut self.views, self.watcher.sample());
        let alive: HashSet<(u32, u64)> = self
            .views
            .iter()
            .map(|view| (view.pid, view.start_time_ticks))
            .collect();
        self.cooldown
            .retain(|key, until| alive.contains(key) && *until > Instant::now());
        self.follow_ups.retain(|key, _| alive.contains(key));
        let now = Instant::now();
        self.ended
            .retain(|_, (_, told)| now.duration_since(*told) < END_EVENT_TTL);
        self.recorded_ends
            .retain(|_, when| now.duration_since(*when) < END_EVENT_TTL * 10);
        self.vanished
            .retain(|pid, _| self.running.contains_key(pid));
        for view in previous {
            if !alive.contains(&(view.pid, view.start_time_ticks)) {
                self.process_ended(view);
            }
        }
        let refresh = self.refresh_interval();
        for (pid, running) in &mut self.running {
            let urgent = self.views.iter().any(|view| {
                view.pid == *pid
                    && view.start_time_ticks == running.start_time_ticks
                    && view.reasons.contains(&Reason::ExhaustionImminent)
            });
            if urgent && !running.urgent {
                running.next_report = Some(now + refresh / 2);
            }
            running.urgent |= urgent;
        }
        self.escalate();
    }

    fn refresh_interval(&self) -> Duration {
        Duration::from_secs_f64(self.config.trace.report_refresh_seconds)
    }

    /// Starts traces for the processes that want one, within the limits: those whose
    /// exhaustion is imminent first (taking the slot of a trace that is not urgent when none is
    /// free), then the others, most relevant first.
    fn escalate(&mut self) {
        let trace = self.config.trace.clone();
        if self.detaching.load(Ordering::Relaxed) >= trace.max_concurrent {
            return;
        }
        let now = Instant::now();
        let mut candidates = Vec::new();
        for view in &self.views {
            if view.pid == self.own_pid || self.running.contains_key(&view.pid) {
                continue;
            }
            let why = if trace.targets.iter().any(|selector| matches(selector, view)) {
                Why::Target
            } else if (trace.auto && view.suspected) || trace.all_processes {
                Why::Suspected
            } else {
                continue;
            };
            let key = (view.pid, view.start_time_ticks);
            if why != Why::Target
                && self.cooldown.contains_key(&key)
                && !self.follow_ups.contains_key(&key)
            {
                continue;
            }
            let urgent = view.reasons.contains(&Reason::ExhaustionImminent);
            candidates.push((urgent, why, view.clone()));
        }
        // Stable: the urgent first, each group in the views' order.
        candidates.sort_by_key(|(urgent, _, _)| !urgent);
        for (urgent, why, view) in candidates {
            if self.running.len() >= trace.max_concurrent && !(urgent && self.make_room_for(&view))
            {
                break;
            }
            let window = Duration::from_secs_f64(trace.window_seconds);
            let (pid, start_time_ticks) = (view.pid, view.start_time_ticks);
            if let Err(reason) = self.start_trace(&view, window, why, urgent, None) {
                info!("not tracing pid {pid}: {reason}");
                self.follow_ups.remove(&(pid, start_time_ticks));
                self.cooldown
                    .insert((pid, start_time_ticks), now + FAILED_ATTACH_BACKOFF);
            }
        }
    }

    /// Ends the automatic trace that has run longest among those of processes that are not
    /// urgent, to trace `view` instead; false when there is none.
    fn make_room_for(&mut self, view: &ProcessView) -> bool {
        let Some(pid) = self
            .running
            .iter()
            .filter(|(_, running)| !running.urgent && running.why != Why::Requested)
            .max_by_key(|(_, running)| running.session.elapsed())
            .map(|(pid, _)| *pid)
        else {
            return false;
        };
        if let Some(running) = self.running.get_mut(&pid) {
            let forecast = view
                .seconds_until_exhaustion
                .map_or_else(String::new, |s| format!(" in {s:.0} s"));
            running.session.cut_short(format!(
                "ended early to trace pid {} ({}), whose memory, descriptors or threads run out{forecast}",
                view.pid, view.comm
            ));
        }
        self.finish(pid);
        true
    }

    /// How the process of `view` is traced next, as `trace.method` says: under `auto`, by its
    /// allocations when an allocation trace is to follow its page-fault trace, else by its page
    /// faults.
    fn method_for(&self, view: &ProcessView) -> Method {
        match self.config.trace.method {
            TraceMethod::Allocations => Method::Allocations,
            TraceMethod::PageFaults => Method::PageFaults,
            TraceMethod::Auto
                if self
                    .follow_ups
                    .contains_key(&(view.pid, view.start_time_ticks)) =>
            {
                Method::Allocations
            }
            TraceMethod::Auto => Method::PageFaults,
        }
    }

    /// Attaches to the process of `view` and traces it for `window`, counted from when its
    /// probes are in place (attaching takes a while on a busy host), by `method` or else as
    /// [`Daemon::method_for`] says; `urgent` when its exhaustion is imminent.
    fn start_trace(
        &mut self,
        view: &ProcessView,
        window: Duration,
        why: Why,
        urgent: bool,
        method: Option<Method>,
    ) -> Result<Method, String> {
        let (pid, start_time_ticks) = (view.pid, view.start_time_ticks);
        let comm = current_comm(pid, start_time_ticks).unwrap_or_else(|| view.comm.clone());
        let nonzero = NonZeroU32::new(pid).ok_or("pid 0 is not a process")?;
        let method = method.unwrap_or_else(|| self.method_for(view));
        let objects = match method {
            Method::Allocations => {
                allocators::allocator_objects(pid).map_err(|err| err.to_string())?
            }
            Method::PageFaults => Vec::new(),
        };
        let trace = &self.config.trace;
        let growth = view.rss_growth_bytes_per_second.max(0.0);
        let sample_rate = match method {
            Method::Allocations => sample_rate_for(
                trace.sample_rate,
                growth,
                window.as_secs_f64(),
                trace.max_allocations,
            ),
            Method::PageFaults => trace.sample_rate,
        };
        let mut session = Session::start(
            &mut self.tracer,
            nonzero,
            &objects,
            session_params(trace, sample_rate, method),
            false,
        )
        .map_err(|err| err.to_string())?;
        let key = (pid, start_time_ticks);
        if method == Method::Allocations
            && let Some(faults_report) = self.follow_ups.remove(&key)
        {
            session.note(format!(
                "follows the page-fault trace of report {faults_report}: the process was still \
                 suspected when it ended; this report's stacks are its outstanding allocations"
            ));
        }
        if sample_rate != trace.sample_rate {
            session.note(format!(
                "one allocation recorded per {} allocated on average: the process grew by {}/s, \
                 and recording every allocation would fill the kernel's map (trace.max_allocations)",
                human_bytes(sample_rate),
                human_bytes(growth as u64)
            ));
        }
        let until = Instant::now() + window;
        let urgency = if urgent { ", exhaustion imminent" } else { "" };
        info!(
            "tracing pid {pid} ({comm}) by its {} for {:.0} s ({why:?}{urgency})",
            method.looks_at(),
            window.as_secs_f64()
        );
        let report_id = self.store.new_id(pid, &comm);
        let next_report = urgent.then(|| Instant::now() + self.refresh_interval() / 2);
        self.running.insert(
            pid,
            Running {
                session,
                start_time_ticks,
                comm,
                until,
                why,
                method,
                report_id,
                urgent,
                next_report,
            },
        );
        Ok(method)
    }

    /// Samples the traces under way, enforces the overhead budget, and ends the traces whose
    /// window is over or whose process exited.
    fn trace_tick(&mut self) {
        self.tracer.maintain_unwind();
        if self.running.is_empty() {
            self.last_counters = None;
            return;
        }
        match self
            .tracer
            .stack_totals_by_process()
            .and_then(|totals| Ok((totals, self.tracer.releases_by_process()?)))
        {
            Ok(((totals, entries), releases)) => {
                self.health
                    .map_entries
                    .insert("STACK_STATS".to_owned(), entries as u64);
                for (pid, running) in &mut self.running {
                    running.session.sample(
                        totals.get(pid).unwrap_or(&HashMap::new()),
                        releases.get(pid).unwrap_or(&HashMap::new()),
                    );
                    running.session.refresh_modules(&mut self.tracer);
                    if let Some(comm) = current_comm(*pid, running.start_time_ticks) {
                        running.comm = comm;
                    }
                }
            }
            Err(err) => warn!("reading stack totals: {err}"),
        }
        let rates = self.probe_rates();
        let trace = &self.config.trace;
        // The budget a method is over, if any: (rate, budget, what fired, its setting).
        let over_budget = |method: Method| {
            let (rate, budget, what, key) = match method {
                Method::Allocations => (
                    rates.map(|(probes, _)| probes),
                    trace.max_events_per_second,
                    "the probes fired",
                    "trace.max_events_per_second",
                ),
                Method::PageFaults => (
                    rates.map(|(_, faults)| faults),
                    trace.max_faults_per_second,
                    "the traced processes took write faults",
                    "trace.max_faults_per_second",
                ),
            };
            rate.filter(|rate| *rate > budget)
                .map(|rate| (rate, budget, what, key))
        };
        let now = Instant::now();
        let mut due = Vec::new();
        for (pid, running) in &mut self.running {
            if let Some((rate, budget, what, key)) = over_budget(running.method) {
                running.session.cut_short(format!(
                    "stopped early: {what} {rate:.0} times a second, over the budget of {budget:.0} ({key})"
                ));
                due.push(*pid);
            } else if running.until <= now || running.session.exited() {
                due.push(*pid);
            }
        }
        for pid in due {
            self.finish(pid);
        }
        self.interim_reports(now);
    }

    /// Stores an interim report of each urgent trace whose report is due.
    fn interim_reports(&mut self, now: Instant) {
        let refresh = self.refresh_interval();
        for (pid, running) in &mut self.running {
            if running.next_report.is_none_or(|due| due > now) {
                continue;
            }
            running.next_report = Some(now + refresh);
            let report = running
                .session
                .interim_report(&self.tracer, &mut self.symbolizer, &running.comm)
                .map_err(|err| err.to_string());
            let job = Job::Interim(Outgoing {
                pid: *pid,
                start_time_ticks: running.start_time_ticks,
                comm: running.comm.clone(),
                id: running.report_id.clone(),
                report,
            });
            if self.writer.send(job).is_err() {
                error!("the report writer has stopped; the interim report of pid {pid} is lost");
            }
        }
    }

    /// Records how a process ended, when `event` says, and hands the event to the trace of its
    /// process.
    fn dispatch(&mut self, event: &monitor_common::Event) {
        if let Some(end) = Ended::from_event(event) {
            self.ended.insert(end.pid, (end, Instant::now()));
        }
        if let Some(running) = self.running.get_mut(&event.tgid)
            && let Err(err) = running.session.handle(&mut self.tracer, event)
        {
            warn!("pid {}: {err}", event.tgid);
        }
    }

    /// Allocator probe hits and page faults per second since the previous call, over every
    /// traced process.
    fn probe_rates(&mut self) -> Option<(f64, f64)> {
        let counters = self.tracer.counters().ok()?;
        let hits: u64 = [
            Stat::Allocs,
            Stat::Frees,
            Stat::FreesUnknown,
            Stat::Unsampled,
            Stat::Nested,
        ]
        .iter()
        .map(|stat| counters[*stat as usize])
        .sum();
        let faults = counters[Stat::PageFaults as usize];
        let now = Instant::now();
        let (then, hits_then, faults_then) = self.last_counters.replace((now, hits, faults))?;
        let seconds = now.duration_since(then).as_secs_f64();
        (seconds > 0.0).then(|| {
            (
                hits.saturating_sub(hits_then) as f64 / seconds,
                faults.saturating_sub(faults_then) as f64 / seconds,
            )
        })
    }

    /// Ends one trace. Detaching its probes (a kernel grace period per probe) and writing its
    /// report (fsyncs) happen on the report writer's thread, which answers through `saved`, so
    /// the main loop never waits for them.
    fn finish(&mut self, pid: u32) {
        let Some(mut running) = self.running.remove(&pid) else {
            return;
        };
        let mut end = None;
        if running.session.exited() {
            let view = self
                .views
                .iter()
                .find(|view| view.pid == pid && view.start_time_ticks == running.start_time_ticks)
                .cloned()
                .or_else(|| self.vanished.remove(&pid));
            end = view.map(|view| self.record_end(&view));
            let how = match end.as_ref().map(|end| (end.reason, end.signal)) {
                Some((EndReason::OomKill, _)) => "the OOM killer killed the process".to_owned(),
                Some((EndReason::Signal, Some(signal))) => {
                    format!("signal {signal} killed the process")
                }
                _ => "the process exited".to_owned(),
            };
            running.session.note(format!(
                "{how} after {:.1} s",
                running.session.elapsed().as_secs_f64()
            ));
        }
        if running.why != Why::Target {
            let cooldown = Duration::from_secs_f64(self.config.trace.cooldown_seconds);
            self.cooldown
                .insert((pid, running.start_time_ticks), Instant::now() + cooldown);
        }
        if self.follows_with_allocations(pid, &running) {
            running.session.note(
                "the process was still suspected when this window ended: an allocation trace \
                 follows (trace.follow_with_allocations)"
                    .to_owned(),
            );
            self.follow_ups
                .insert((pid, running.start_time_ticks), running.report_id.clone());
        }
        let (report, detached) =
            running
                .session
                .finish(&mut self.tracer, &mut self.symbolizer, &running.comm);
        let report = report
            .map(|report| Report { end, ..report })
            .map_err(|err| format!("finishing the trace: {err}"));
        let job = Job::Finished {
            outgoing: Outgoing {
                pid,
                start_time_ticks: running.start_time_ticks,
                comm: running.comm,
                id: running.report_id,
                report,
            },
            detached,
            detaching: Arc::clone(&self.detaching),
        };
        self.detaching.fetch_add(1, Ordering::Relaxed);
        if self.writer.send(job).is_err() {
            error!("the report writer has stopped; the report of pid {pid} is lost");
        }
    }

    /// Whether an allocation trace is to follow the trace `running` of `pid`, which ends now:
    /// under `trace.method = auto` with `trace.follow_with_allocations`, a page-fault trace
    /// whose window ran out (not cut short, not exited) of a process still suspected that has
    /// an allocator to probe.
    fn follows_with_allocations(&self, pid: u32, running: &Running) -> bool {
        let trace = &self.config.trace;
        trace.method == TraceMethod::Auto
            && trace.follow_with_allocations
            && running.method == Method::PageFaults
            && running.until <= Instant::now()
            && !running.session.exited()
            && self.views.iter().any(|view| {
                view.pid == pid
                    && view.start_time_ticks == running.start_time_ticks
                    && view.suspected
            })
            && allocators::allocator_objects(pid).is_ok_and(|objects| !objects.is_empty())
    }

    /// A watched process is gone: records how it ended, on its latest report when it has one
    /// (a traced one's is recorded when its trace finishes).
    fn process_ended(&mut self, view: ProcessView) {
        if self.running.contains_key(&view.pid) {
            self.vanished.insert(view.pid, view);
            return;
        }
        let key = (view.pid, view.start_time_ticks);
        if self.recorded_ends.contains_key(&key) {
            return;
        }
        let report = self
            .latest_reports
            .get(&view.pid)
            .filter(|(start, _)| start.is_none_or(|start| start == view.start_time_ticks))
            .map(|(_, id)| id.clone());
        let told = self.ended.contains_key(&view.pid);
        if report.is_none() && !told {
            // An exit of a process nobody asked about.
            return;
        }
        let end = self.record_end(&view);
        match report {
            Some(id) => {
                let job = Job::End {
                    pid: view.pid,
                    start_time_ticks: view.start_time_ticks,
                    comm: view.comm.clone(),
                    id,
                    end,
                };
                if self.writer.send(job).is_err() {
                    error!(
                        "the report writer has stopped; the end of pid {} is lost",
                        view.pid
                    );
                }
            }
            None if end.reason == EndReason::OomKill => {
                self.oom_killed(view.pid, view.start_time_ticks, &view.comm, &end, None, &[]);
            }
            None => {}
        }
    }

    /// How the process of `view` (its last sample) ended, as the kernel told or else an exit;
    /// counts an OOM kill and marks the end recorded.
    fn record_end(&mut self, view: &ProcessView) -> ProcessEnd {
        self.recorded_ends
            .insert((view.pid, view.start_time_ticks), Instant::now());
        let told = self.ended.remove(&view.pid).map(|(ended, _)| ended);
        let reason = match told {
            Some(ended) if ended.oom_victim => EndReason::OomKill,
            Some(ended) if ended.signal.is_some() => EndReason::Signal,
            _ => EndReason::Exit,
        };
        if reason == EndReason::OomKill {
            self.oom_kills_total += 1;
        }
        ProcessEnd {
            reason,
            unix_seconds: unix_now(),
            signal: told.and_then(|ended| ended.signal),
            exit_code: told.and_then(|ended| ended.exit_code),
            rss_bytes: view.rss_bytes,
            limit_bytes: view.memory_limit.as_ref().map(|limit| limit.limit),
            limit: view.memory_limit.as_ref().map(ToString::to_string),
        }
    }

    /// Logs an OOM kill on one line and lists it.
    fn oom_killed(
        &mut self,
        pid: u32,
        start_time_ticks: u64,
        comm: &str,
        end: &ProcessEnd,
        report: Option<&str>,
        culprit: &[String],
    ) {
        let limit = match (end.limit_bytes, &end.limit) {
            (Some(bytes), Some(name)) => format!(" of a {} limit ({name})", human_bytes(bytes)),
            _ => String::new(),
        };
        let evidence = match (report, culprit.is_empty()) {
            (Some(id), false) => format!("report {id}, leaking in {}", culprit.join(" <- ")),
            (Some(id), true) => format!("report {id}, no leaking stack found"),
            (None, _) => "no report (it was not traced)".to_owned(),
        };
        error!(
            "OOM kill: pid {pid} ({comm}) was killed by the OOM killer at RSS {}{limit}; {evidence}",
            human_bytes(end.rss_bytes)
        );
        self.oom_kills.insert(
            0,
            OomKill {
                pid,
                start_time_ticks,
                comm: comm.to_owned(),
                unix_seconds: end.unix_seconds,
                rss_bytes: end.rss_bytes,
                limit_bytes: end.limit_bytes,
                limit: end.limit.clone(),
                report: report.map(str::to_owned),
                culprit: culprit.to_vec(),
            },
        );
        self.oom_kills.truncate(RECENT_OOM_KILLS);
    }

    /// Takes note of a report the writer saved.
    fn saved(&mut self, saved: Saved) {
        let report = match saved.outcome {
            Ok(report) => report,
            Err(err) => {
                error!("{err}");
                return;
            }
        };
        let SavedReport {
            id,
            leaking,
            culprit,
            store_error,
        } = report;
        if let Some(err) = &store_error {
            error!(
                "storing report {id} of pid {} ({}): {err}; it is kept in memory, served, and \
                 written again every {} s",
                saved.pid,
                saved.comm,
                SWEEP_INTERVAL.as_secs()
            );
        }
        match saved.kind {
            SavedKind::Finished => info!(
                "report {id}: pid {} ({}), {leaking} leaking stack(s)",
                saved.pid, saved.comm
            ),
            SavedKind::Interim => info!(
                "interim report {id}: pid {} ({}), {leaking} leaking stack(s)",
                saved.pid, saved.comm
            ),
            SavedKind::End => info!("report {id}: pid {} ({}) ended", saved.pid, saved.comm),
        }
        let end = match self.store.read(&id) {
            Ok(report) => report.end,
            Err(err) => {
                warn!("reading report {id}: {err}");
                None
            }
        };
        if saved.kind != SavedKind::Interim
            && let Some(end) = end.filter(|end| end.reason == EndReason::OomKill)
        {
            self.oom_killed(
                saved.pid,
                saved.start_time_ticks,
                &saved.comm,
                &end,
                Some(&id),
                &culprit,
            );
        }
        self.latest_reports
            .insert(saved.pid, (Some(saved.start_time_ticks), id));
        self.prune_latest_reports();
    }

    /// Forgets report ids that retention removed.
    fn prune_latest_reports(&mut self) {
        match self.store.ids() {
            Ok(kept) => self.latest_reports.retain(|_, (_, id)| kept.contains(id)),
            Err(err) => warn!("listing reports: {err}"),
        }
    }

    /// Sweeps the kernel's entries of freed allocations, counts the maps' entries, drops what
    /// the symbolizer keeps of files no report needed lately and gives the freed heap back.
    fn sweep(&mut self) {
        self.symbolizer.trim(Instant::now());
        tracer::release_free_heap();
        let before = monotonic_ns().saturating_sub(SWEEP_MIN_AGE.as_nanos() as u64);
        let running = &self.running;
        match self
            .tracer
            .sweep_tombstones(before, |tgid| running.contains_key(&tgid))
        {
            Ok(sweep) => {
                log::debug!("swept {} freed allocations", sweep.swept);
                if sweep.strays > 0 {
                    warn!(
                        "swept {} allocation entries of processes no longer traced",
                        sweep.strays
                    );
                }
                let entries = (sweep.live + sweep.kept_tombstones) as u64;
                self.health.map_entries.insert("ALLOCS".to_owned(), entries);
            }
            Err(err) => warn!("sweeping freed allocations: {err}"),
        }
        for (name, entries) in self.tracer.map_entries() {
            self.health.map_entries.insert(name.to_owned(), entries);
        }
        match self.tracer.stack_totals_by_process() {
            Ok((_, entries)) => {
                self.health
                    .map_entries
                    .insert("STACK_STATS".to_owned(), entries as u64);
            }
            Err(err) => warn!("counting stack totals: {err}"),
        }
        if self.store.health().unstored > 0 && self.writer.send(Job::Retry).is_err() {
            error!("the report writer has stopped; reports held in memory are not written");
        }
    }

    /// Answers a request from the API.
    fn command(&mut self, command: Command) {
        match command {
            Command::Trace {
                pid,
                duration,
                method,
                reply,
            } => {
                let answer = self.requested_trace(pid, duration, method);
                if reply.send(answer).is_err() {
                    warn!("the API gave up waiting for the trace of pid {pid}");
                }
            }
        }
    }

    fn requested_trace(
        &mut self,
        pid: u32,
        duration: Duration,
        method: Option<Method>,
    ) -> Result<TraceAccepted, String> {
        if pid == self.own_pid {
            return Err("leakmon does not trace itself".to_owned());
        }
        if self.running.contains_key(&pid) {
            return Err(format!("pid {pid} is already being traced"));
        }
        if self.detaching.load(Ordering::Relaxed) >= self.config.trace.max_concurrent {
            return Err(
                "finished traces are still being detached; try again in a few seconds".to_owned(),
            );
        }
        if self.running.len() >= self.config.trace.max_concurrent {
            return Err(format!(
                "{} traces are running already (trace.max_concurrent); try again when one ends",
                self.running.len()
            ));
        }
        let view = self
            .views
            .iter()
            .find(|view| view.pid == pid)
            .ok_or_else(|| format!("pid {pid} is not watched"))?;
        let view = view.clone();
        let urgent = view.reasons.contains(&Reason::ExhaustionImminent);
        let method = self.start_trace(&view, duration, Why::Requested, urgent, method)?;
        Ok(TraceAccepted {
            pid,
            duration_seconds: duration.as_secs_f64(),
            method,
        })
    }

    /// Re-reads the configuration file (SIGHUP); a bad file keeps the running configuration.
    fn reload(&mut self) -> bool {
        let Some(path) = &self.config_path else {
            info!("SIGHUP: no configuration file to reload");
            return false;
        };
        let options = RunOptions {
            config_path: Some(path.clone()),
            listen: Some(self.config.daemon.listen),
            state_dir: Some(self.config.daemon.state_dir.clone()),
            allow_unauthenticated: self.config.daemon.allow_unauthenticated,
        };
        match load_config(&options) {
            Ok(mut new) => {
                if let Some(settings) = self.config.requires_restart(&new) {
                    warn!(
                        "SIGHUP: {settings} change(s) only at restart; keeping the running values"
                    );
                    new.trace.max_allocations = self.config.trace.max_allocations;
                    new.trace.max_stacks = self.config.trace.max_stacks;
                    new.trace.max_unwind_rows = self.config.trace.max_unwind_rows;
                    new.daemon = self.config.daemon.clone();
                }
                for change in self.config.reload_changes(&new) {
                    info!("SIGHUP: {change}");
                }
                self.watcher.set_config(new.watch.clone());
                self.config = new;
                true
            }
            Err(err) => {
                error!("SIGHUP: keeping the running configuration: {err}");
                false
            }
        }
    }

    /// The snapshot the API serves.
    fn snapshot(&mut self) -> Snapshot {
        if let Ok(counters) = self.tracer.counters() {
            for stat in Stat::ALL {
                let map = if stat.is_drop() {
                    &mut self.health.dropped
                } else {
                    &mut self.health.events
                };
                map.insert(stat.name().to_owned(), counters[stat as usize]);
            }
        }
        self.health.traced_pids = self.running.keys().copied().collect();
        self.health.traced_pids.sort_unstable();
        let mut processes = self.views.clone();
        for view in &mut processes {
            if let Some(running) = self.running.get(&view.pid) {
                view.traced = true;
                view.trace_method = Some(running.method);
                view.outstanding_bytes = Some(running.session.outstanding_bytes());
                // The trace's sample of the memory classes knows the live allocations too.
                if let Some(memory) = running.session.memory() {
                    view.memory = Some(memory);
                }
            }
            view.latest_report = self
                .latest_reports
                .get(&view.pid)
                .filter(|(start, _)| start.is_none_or(|start| start == view.start_time_ticks))
                .map(|(_, id)| id.clone());
        }
        Snapshot {
            updated_unix_seconds: unix_now(),
            processes,
            probes: self.health.clone(),
            oom_kills_total: self.oom_kills_total,
            oom_kills: self.oom_kills.clone(),
            report_store: self.store.health(),
        }
    }

    /// Ends every trace (their reports are stored) before the daemon exits.
    fn stop(&mut self) {
        let pids: Vec<u32> = self.running.keys().copied().collect();
        for pid in pids {
            if let Some(running) = self.running.get_mut(&pid) {
                running
                    .session
                    .cut_short("the daemon stopped before the end of the window".to_owned());
            }
            self.finish(pid);
        }
    }
}

/// Raises the soft open-files limit to the hard one: the watcher keeps one file open per
/// process of the host.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && limit.rlim_cur < limit.rlim_max
    {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            warn!(
                "cannot raise the open-files limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(options: RunOptions) -> Result<(), DaemonError> {
    let config = load_config(&options)?;
    let access = api::Access::from_config(&config.daemon)?;
    tracer::preflight()?;
    raise_open_files_limit();
    let store = Arc::new(ReportStore::open(
        &config.daemon.state_dir,
        config.reports.clone(),
    )?);
    let mut tracer = Tracer::load(MapLimits {
        allocations: config.trace.max_allocations,
        stacks: config.trace.max_stacks,
        unwind_rows: config.trace.max_unwind_rows,
    })?;
    let ring = tracer.take_events().ok_or(DaemonError::Io {
        what: "taking the events ring buffer",
        source: std::io::Error::other("already taken"),
    })?;
    // SAFETY: the ring buffer owns its map's descriptor and keeps it open until it is dropped.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|err| {
            DaemonError::Io {
                what: "polling the events ring buffer",
                source: err.into(),
            }
        })?;
    let listener = tokio::net::TcpListener::bind(config.daemon.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.daemon.listen,
            source,
        })?;
    let signal_error = |source| DaemonError::Io {
        what: "installing signal handlers",
        source,
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;

    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (commands_tx, mut commands) = mpsc::channel(16);
    let (saved_tx, mut saved_rx) = mpsc::unbounded_channel();
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel();
    let writer = {
        let store = Arc::clone(&store);
        std::thread::Builder::new()
            .name("leakmon-reports".into())
            .spawn(move || report_writer(store, jobs_rx, saved_tx))
            .map_err(|source| DaemonError::Io {
                what: "starting the report writer",
                source,
            })?
    };
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_state = ApiState {
        snapshot: snapshot_rx,
        store: Arc::clone(&store),
        commands: commands_tx,
        max_process_series: config.metrics.max_process_series,
        access,
    };
    let server = tokio::spawn(api::serve(listener, api_state, async {
        let _ = api_stopped.await;
    }));
    info!(
        "leakmon {} listening on http://{}, reports in {}",
        env!("CARGO_PKG_VERSION"),
        config.daemon.listen,
        store.dir().display()
    );

    let mut daemon = Daemon {
        watcher: Watcher::new(config.watch.clone()),
        config_path: options.config_path.clone(),
        tracer,
        store,
        symbolizer: Symbolizer::new(),
        running: HashMap::new(),
        cooldown: HashMap::new(),
        follow_ups: HashMap::new(),
        latest_reports: HashMap::new(),
        writer: jobs_tx,
        ended: HashMap::new(),
        recorded_ends: HashMap::new(),
        vanished: HashMap::new(),
        oom_kills_total: 0,
        oom_kills: Vec::new(),
        detaching: Arc::new(AtomicUsize::new(0)),
        views: Vec::new(),
        health: ProbeHealth {
            loaded: true,
            ..ProbeHealth::default()
        },
        last_counters: None,
        own_pid: std::process::id(),
        config,
    };
    if let Ok(list) = daemon.store.list() {
        // Newest first: keep the first id seen per pid, with the process it is about.
        for meta in list {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                daemon.latest_reports.entry(meta.pid)
            {
                let start = daemon
                    .store
                    .read(&meta.id)
                    .ok()
                    .and_then(|report| report.start_time_ticks);
                entry.insert((start, meta.id));
            }
        }
    }
    let mut watch_ticks = ticker(daemon.config.watch.interval_seconds);
    let mut trace_ticks = ticker(daemon.config.trace.interval_seconds);
    let mut sweeps = ticker(SWEEP_INTERVAL.as_secs_f64());
    // Page faults come without a wakeup (one each would cost more than the fault): drained here.
    let mut drains = ticker(tracer::QUIET_EVENTS_DRAIN.as_secs_f64());
    loop {
        tokio::select! {
            _ = watch_ticks.tick() => {
                daemon.watch_tick();
                snapshot_tx.send_replace(Arc::new(daemon.snapshot()));
            }
            _ = trace_ticks.tick() => daemon.trace_tick(),
            _ = sweeps.tick() => daemon.sweep(),
            _ = drains.tick() => {
                tracer::drain_events(ring.get_mut(), |event| daemon.dispatch(&event));
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| DaemonError::Io { what: "polling the events ring buffer", source })?;
                tracer::drain_events(guard.get_inner_mut(), |event| daemon.dispatch(&event));
                guard.clear_ready();
            }
            Some(saved) = saved_rx.recv() => {
                daemon.saved(saved);
                snapshot_tx.send_replace(Arc::new(daemon.snapshot()));
            }
            Some(command) = commands.recv() => {
                daemon.command(command);
                snapshot_tx.send_replace(Arc::new(daemon.snapshot()));
            }
            _ = hangup.recv() => {
                if daemon.reload() {
                    watch_ticks = ticker(daemon.config.watch.interval_seconds);
                    trace_ticks = ticker(daemon.config.trace.interval_seconds);
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    info!("stopping: ending {} trace(s)", daemon.running.len());
    daemon.stop();
    // Closing the queue lets the writer finish what is queued and stop.
    let (closed, _) = std::sync::mpsc::channel();
    drop(std::mem::replace(&mut daemon.writer, closed));
    if tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_or(true, |joined| joined.is_err())
    {
        warn!("the report writer failed");
    }
    while let Ok(saved) = saved_rx.try_recv() {
        daemon.saved(saved);
    }
    let _ = stop_api.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => warn!("the HTTP server stopped with an error: {err}"),
        Ok(Err(err)) => warn!("the HTTP server task failed: {err}"),
        Err(_) => warn!("the HTTP server did not stop within 5 s"),
    }
    drop(daemon);
    info!("stopped; every probe detached");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{frame, report};

    #[test]
    fn the_command_name_is_read_as_it_is_now_and_only_for_the_same_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawning sleep");
        let pid = child.id();
        let started = procfs::start_time_ticks(pid).expect("the child's start time");
        // Until the child has called execve it carries the test's name.
        let mut comm = None;
        for _ in 0..500 {
            comm = current_comm(pid, started);
            if comm.as_deref() == Some("sleep") {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(comm.as_deref(), Some("sleep"));
        assert_eq!(
            current_comm(pid, started + 1),
            None,
            "another process at the same pid"
        );
        child.kill().expect("killing sleep");
        child.wait().expect("reaping sleep");
        assert_eq!(current_comm(pid, started), None, "a reaped process");
    }

    #[test]
    fn fast_leaks_are_sampled_to_fit_the_map() {
        const CAPACITY: u32 = 262_144;
        // 256 KiB/s for a minute: every allocation recorded.
        assert_eq!(sample_rate_for(0, 256.0 * 1024.0, 60.0, CAPACITY), 0);
        // 20 MB/s for a minute: one record per 32 KiB, some 37,000 records, a seventh of the map.
        let rate = sample_rate_for(0, 20e6, 60.0, CAPACITY);
        assert_eq!(rate, 32 * 1024);
        assert!(20e6 * 60.0 / rate as f64 <= SAMPLED_MAP_FRACTION * f64::from(CAPACITY));
        // A coarser configured rate is kept; the rate is capped.
        assert_eq!(sample_rate_for(1 << 20, 20e6, 60.0, CAPACITY), 1 << 20);
        assert_eq!(
            sample_rate_for(0, 1e18, 60.0, CAPACITY),
            config::MAX_SAMPLE_RATE
        );
        assert_eq!(sample_rate_for(0, f64::NAN, 60.0, CAPACITY), 0);
    }

    #[test]
    fn the_culprit_is_the_top_leaking_stack() {
        let stack = |leaking, symbols: &[Option<&str>]| crate::report::StackReport {
            leaking,
            frames: symbols
                .iter()
                .map(|symbol| frame(0x1234, *symbol, Some("/usr/bin/app")))
                .collect(),
            ..crate::report::StackReport::default()
        };
        let found = report(
            1,
            "app",
            vec![
                stack(false, &[Some("cache_fill")]),
                stack(true, &[Some("leak_on_error"), None, Some("main")]),
                stack(true, &[Some("smaller_leak")]),
            ],
        );
        assert_eq!(
            culprit(&found),
            ["leak_on_error", "/usr/bin/app+0x1234", "main"]
        );
        let none = report(1, "app", vec![stack(false, &[Some("cache_fill")])]);
        assert!(culprit(&none).is_empty());
    }

    #[test]
    fn a_page_fault_stack_is_blamed_past_the_allocator_and_the_c_library() {
        const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let stack = |frames: &[(&str, &str)]| crate::report::StackReport {
            leaking: true,
            frames: frames
                .iter()
                .map(|(symbol, module)| frame(0x1234, Some(symbol), Some(module)))
                .collect(),
            ..crate::report::StackReport::default()
        };
        let culprit_of = |frames: &[(&str, &str)]| culprit(&report(1, "app", vec![stack(frames)]));
        // A fault in the allocator's own writes, under malloc (glibc's internal name).
        assert_eq!(
            culprit_of(&[
                ("_int_malloc", LIBC),
                ("__GI___libc_malloc", LIBC),
                ("record_rejection", "/usr/bin/app"),
                ("main", "/usr/bin/app"),
            ]),
            ["record_rejection", "main"]
        );
        // A fault in memset, called by the program; a C++ operator new.
        assert_eq!(
            culprit_of(&[
                ("__memset_avx2_unaligned_erms", LIBC),
                ("fill", "/usr/bin/app"),
            ]),
            ["fill"]
        );
        assert_eq!(
            culprit_of(&[
                ("operator new(unsigned long)", "/usr/lib/libstdc++.so.6"),
                ("Cache::add", "/usr/bin/app"),
            ]),
            ["Cache::add"]
        );
        // An allocator linked into the program: past its entry point.
        assert_eq!(
            culprit_of(&[
                ("je_arena_malloc_hard", "/usr/bin/app"),
                ("malloc", "/usr/bin/app"),
                ("store_key", "/usr/bin/app"),
            ]),
            ["store_key"]
        );
        // Nothing but the C library: kept as it is.
        assert_eq!(
            culprit_of(&[("memset", LIBC), ("start_thread", LIBC)]),
            ["memset", "start_thread"]
        );
    }
}
