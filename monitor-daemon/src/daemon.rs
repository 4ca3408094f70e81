//! `leakmon run`: the always-on daemon. Its main loop owns the [`Tracer`] and the [`Watcher`]:
//! every watch interval it samples every process and publishes a [`Snapshot`] for the HTTP API
//! and metrics; suspected processes (and configured targets) are escalated to allocation
//! tracing within the configured limits (concurrent traces, per-process cool-down, an overhead
//! budget); finished traces become reports in the state directory. SIGHUP reloads the
//! configuration, SIGTERM and SIGINT detach every probe and stop.

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
    config::{self, Config, ConfigError, TargetSelector, TraceConfig},
    model::{ProbeHealth, ProcessView, Snapshot},
    report::Method,
    serve::{
        api::{self, ApiState, Command, TraceAccepted},
        store::{ReportStore, StoreError},
    },
    symbolize::symbolizer::Symbolizer,
    trace::{
        allocators,
        session::{Session, SessionParams, monotonic_ns},
        tracer::{self, MapLimits, SWEEP_INTERVAL, SWEEP_MIN_AGE, Tracer, TracerError},
    },
    watch::watcher::Watcher,
};

/// Stacks kept in a daemon report.
const REPORT_TOP: usize = 50;
/// How long a process that could not be traced (no allocator, vanished) is left alone.
const FAILED_ATTACH_BACKOFF: Duration = Duration::from_secs(600);

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

/// A finished trace on its way to the report writer.
#[derive(Debug)]
struct WriteJob {
    pid: u32,
    start_time_ticks: u64,
    comm: String,
    report: Result<crate::report::Report, TracerError>,
    detached: tracer::Detached,
    detaching: Arc<AtomicUsize>,
}

/// The report writer: one thread that detaches finished traces' probes and stores their
/// reports, in order, telling the main loop through `saved`. One thread rather than a pool
/// keeps the daemon's memory flat under churn (every thread gets its own malloc arena).
fn report_writer(
    store: Arc<ReportStore>,
    jobs: std::sync::mpsc::Receiver<WriteJob>,
    saved: mpsc::UnboundedSender<Saved>,
) {
    for job in jobs {
        let WriteJob {
            pid,
            start_time_ticks,
            comm,
            report,
            detached,
            detaching,
        } = job;
        detached.detach_in_parallel();
        detaching.fetch_sub(1, Ordering::Relaxed);
        let outcome = match report {
            Ok(report) => {
                let leaking = report.stacks.iter().filter(|stack| stack.leaking).count();
                store
                    .save(&report)
                    .map(|id| (id, leaking))
                    .map_err(|err| format!("storing the report of pid {pid}: {err}"))
            }
            Err(err) => Err(format!("finishing the trace of pid {pid}: {err}")),
        };
        if saved
            .send(Saved {
                pid,
                start_time_ticks,
                comm,
                outcome,
            })
            .is_err()
        {
            return;
        }
    }
}

/// A finished trace's report, written (or not) off the main loop.
#[derive(Debug)]
struct Saved {
    pid: u32,
    start_time_ticks: u64,
    comm: String,
    /// The report id and its number of leaking stacks, or why there is none.
    outcome: Result<(String, usize), String>,
}

/// A trace under way.
#[derive(Debug)]
struct Running {
    session: Session,
    start_time_ticks: u64,
    comm: String,
    until: Instant,
    why: Why,
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
    /// pid → (start time of the process it is about, when known; report id).
    latest_reports: HashMap<u32, (Option<u64>, String)>,
    /// The report writer's queue (see [`report_writer`]).
    writer: std::sync::mpsc::Sender<WriteJob>,
    /// Finished traces whose probes the writer has not detached yet. Detaching costs the kernel
    /// a grace period per probe (a second or two per process), so no new trace starts while
    /// `trace.max_concurrent` of them wait: the probes (and their descriptors) stay bounded
    /// however fast processes come and go.
    detaching: Arc<AtomicUsize>,
    views: Vec<ProcessView>,
    health: ProbeHealth,
    last_counters: Option<(Instant, u64)>,
    own_pid: u32,
}

fn session_params(trace: &TraceConfig) -> SessionParams {
    SessionParams {
        interval: Duration::from_secs_f64(trace.interval_seconds),
        min_age: Duration::ZERO,
        top: REPORT_TOP,
        sample_rate: trace.sample_rate,
        method: Method::Allocations,
    }
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
    /// Samples every process, escalates, and publishes the snapshot.
    fn watch_tick(&mut self) {
        self.views = self.watcher.sample();
        let alive: HashSet<(u32, u64)> = self
            .views
            .iter()
            .map(|view| (view.pid, view.start_time_ticks))
            .collect();
        self.cooldown
            .retain(|key, until| alive.contains(key) && *until > Instant::now());
        self.escalate();
    }

    /// Starts traces for the processes that want one, most relevant first, within the limits.
    fn escalate(&mut self) {
        let trace = self.config.trace.clone();
        if self.detaching.load(Ordering::Relaxed) >= trace.max_concurrent {
            return;
        }
        let now = Instant::now();
        let mut starts = Vec::new();
        for view in &self.views {
            if self.running.len() + starts.len() >= trace.max_concurrent {
                break;
            }
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
            if why != Why::Target
                && self
                    .cooldown
                    .contains_key(&(view.pid, view.start_time_ticks))
            {
                continue;
            }
            starts.push((view.pid, view.start_time_ticks, view.comm.clone(), why));
        }
        for (pid, start_time_ticks, comm, why) in starts {
            let window = Duration::from_secs_f64(trace.window_seconds);
            if let Err(reason) = self.start_trace(pid, start_time_ticks, comm, window, why) {
                info!("not tracing pid {pid}: {reason}");
                self.cooldown
                    .insert((pid, start_time_ticks), now + FAILED_ATTACH_BACKOFF);
            }
        }
    }

    /// Attaches to `pid` and traces it for `window`, counted from when its probes are in place
    /// (attaching takes a while on a busy host).
    fn start_trace(
        &mut self,
        pid: u32,
        start_time_ticks: u64,
        comm: String,
        window: Duration,
        why: Why,
    ) -> Result<(), String> {
        let nonzero = NonZeroU32::new(pid).ok_or("pid 0 is not a process")?;
        let objects = allocators::allocator_objects(pid).map_err(|err| err.to_string())?;
        let session = Session::start(
            &mut self.tracer,
            nonzero,
            &objects,
            session_params(&self.config.trace),
            false,
        )
        .map_err(|err| err.to_string())?;
        let until = Instant::now() + window;
        info!(
            "tracing pid {pid} ({comm}) for {:.0} s ({why:?})",
            window.as_secs_f64()
        );
        self.running.insert(
            pid,
            Running {
                session,
                start_time_ticks,
                comm,
                until,
                why,
            },
        );
        Ok(())
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
                }
            }
            Err(err) => warn!("reading stack totals: {err}"),
        }
        let over_budget = self
            .probe_rate()
            .filter(|rate| *rate > self.config.trace.max_events_per_second);
        let now = Instant::now();
        let due: Vec<u32> = self
            .running
            .iter()
            .filter(|(_, running)| {
                over_budget.is_some() || running.until <= now || running.session.exited()
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            if let Some(rate) = over_budget
                && let Some(running) = self.running.get_mut(&pid)
            {
                running.session.cut_short(format!(
                    "stopped early: the probes fired {rate:.0} times a second, over the budget of {:.0} (trace.max_events_per_second)",
                    self.config.trace.max_events_per_second
                ));
            }
            self.finish(pid);
        }
    }

    /// Probe hits per second since the previous call, over every traced process.
    fn probe_rate(&mut self) -> Option<f64> {
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
        let now = Instant::now();
        let previous = self.last_counters.replace((now, hits))?;
        let seconds = now.duration_since(previous.0).as_secs_f64();
        (seconds > 0.0).then(|| hits.saturating_sub(previous.1) as f64 / seconds)
    }

    /// Ends one trace. Detaching its probes (a kernel grace period per probe) and writing its
    /// report (fsyncs) happen on the report writer's thread, which answers through `saved`, so
    /// the main loop never waits for them.
    fn finish(&mut self, pid: u32) {
        let Some(mut running) = self.running.remove(&pid) else {
            return;
        };
        if running.session.exited() {
            running.session.note(format!(
                "the process exited after {:.1} s",
                running.session.elapsed().as_secs_f64()
            ));
        }
        if running.why != Why::Target {
            let cooldown = Duration::from_secs_f64(self.config.trace.cooldown_seconds);
            self.cooldown
                .insert((pid, running.start_time_ticks), Instant::now() + cooldown);
        }
        let (report, detached) =
            running
                .session
                .finish(&mut self.tracer, &mut self.symbolizer, &running.comm);
        let job = WriteJob {
            pid,
            start_time_ticks: running.start_time_ticks,
            comm: running.comm,
            report,
            detached,
            detaching: Arc::clone(&self.detaching),
        };
        self.detaching.fetch_add(1, Ordering::Relaxed);
        if self.writer.send(job).is_err() {
            error!("the report writer has stopped; the report of pid {pid} is lost");
        }
    }

    /// Takes note of a report written by [`Daemon::finish`].
    fn saved(&mut self, saved: Saved) {
        match saved.outcome {
            Ok((id, leaking)) => {
                info!(
                    "report {id}: pid {} ({}), {leaking} leaking stack(s)",
                    saved.pid, saved.comm
                );
                self.latest_reports
                    .insert(saved.pid, (Some(saved.start_time_ticks), id));
                self.prune_latest_reports();
            }
            Err(err) => error!("{err}"),
        }
    }

    /// Forgets report ids that retention removed.
    fn prune_latest_reports(&mut self) {
        match self.store.list() {
            Ok(list) => {
                let kept: HashSet<String> = list.into_iter().map(|meta| meta.id).collect();
                self.latest_reports.retain(|_, (_, id)| kept.contains(id));
            }
            Err(err) => warn!("listing reports: {err}"),
        }
    }

    /// Sweeps the kernel's entries of freed allocations, counts the maps' entries, and drops
    /// what the symbolizer keeps of files no report needed lately.
    fn sweep(&mut self) {
        self.symbolizer.trim(Instant::now());
        let before = monotonic_ns().saturating_sub(SWEEP_MIN_AGE.as_nanos() as u64);
        match self.tracer.sweep_tombstones(before) {
            Ok(sweep) => {
                log::debug!("swept {} freed allocations", sweep.swept);
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
    }

    /// Answers a request from the API.
    fn command(&mut self, command: Command) {
        match command {
            Command::Trace {
                pid,
                duration,
                reply,
            } => {
                let answer = self.requested_trace(pid, duration);
                if reply.send(answer).is_err() {
                    warn!("the API gave up waiting for the trace of pid {pid}");
                }
            }
        }
    }

    fn requested_trace(&mut self, pid: u32, duration: Duration) -> Result<TraceAccepted, String> {
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
        let (start_time_ticks, comm) = (view.start_time_ticks, view.comm.clone());
        self.start_trace(pid, start_time_ticks, comm, duration, Why::Requested)?;
        Ok(TraceAccepted {
            pid,
            duration_seconds: duration.as_secs_f64(),
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
            updated_unix_seconds: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            processes,
            probes: self.health.clone(),
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
        latest_reports: HashMap::new(),
        writer: jobs_tx,
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
                let Daemon { running, tracer, .. } = &mut daemon;
                tracer::drain_events(ring.get_mut(), |event| {
                    if let Some(running) = running.get_mut(&event.tgid)
                        && let Err(err) = running.session.handle(tracer, &event)
                    {
                        warn!("pid {}: {err}", event.tgid);
                    }
                });
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|source| DaemonError::Io { what: "polling the events ring buffer", source })?;
                let Daemon { running, tracer, .. } = &mut daemon;
                tracer::drain_events(guard.get_inner_mut(), |event| {
                    if let Some(running) = running.get_mut(&event.tgid)
                        && let Err(err) = running.session.handle(tracer, &event)
                    {
                        warn!("pid {}: {err}", event.tgid);
                    }
                });
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
