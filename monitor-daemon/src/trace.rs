//! One tracing session, as run by `leakmon trace`: attach to a process (or start a command held
//! before its first instruction), sample every stack's outstanding bytes at each interval while
//! following its memory-mapping calls, then build the [`Report`]: per stack the outstanding
//! memory at the end, its growth over the window and whether it is leaking, symbolized.
//!
//! Stacks are merged by their normalized frames (object and file offset, not raw address), so a
//! library loaded at a new address after each `dlopen` still adds up to one stack.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    num::NonZeroU32,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use log::{debug, info, warn};
use monitor_common::{AllocInfo, BRK_NESTED, Event, EventKind, STAT_COUNT, Stat, WEIGHT_ONE};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    allocators::{self, AllocatorError, AllocatorObject},
    launch::{self, ExitStatus, HeldChild, LaunchError, RunningChild},
    procfs::{self, ProcError},
    regions::Regions,
    report::{Frame, Report, StackReport, Totals},
    symbolize::{ModuleHistory, Symbolizer},
    tracer::{EmptyPlacement, MapLimits, Tracer, TracerError},
    trend::{self, LeakRule},
};

/// `MAP_ANONYMOUS` from `<sys/mman.h>`.
const MAP_ANONYMOUS: u64 = 0x20;
/// How often the kernel's entries of freed allocations are swept, and how old they must be.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
const SWEEP_MIN_AGE: Duration = Duration::from_secs(30);
/// How long a command gets to exit after SIGTERM at the end of the window.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process.
    Pid(NonZeroU32),
    /// A command to start (program and arguments).
    Command(Vec<String>),
}

/// The parameters of a session.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// What to trace.
    pub target: Target,
    /// Longest window.
    pub duration: Duration,
    /// Time between samples of the per-stack totals.
    pub interval: Duration,
    /// Only allocations at least this old count as outstanding in the report.
    pub min_age: Duration,
    /// Stacks kept in the report.
    pub top: usize,
    /// Mean bytes between samples; 0 records every allocation.
    pub sample_rate: u64,
    /// Kernel map capacities.
    pub limits: MapLimits,
}

/// Why a session failed before it could produce a report.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The kernel side failed.
    #[error(transparent)]
    Tracer(#[from] TracerError),
    /// The allocator could not be found or planned.
    #[error(transparent)]
    Allocators(#[from] AllocatorError),
    /// The command could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The target process could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// There is no such process.
    #[error("no process with pid {0}")]
    NoSuchProcess(NonZeroU32),
    /// The events ring buffer could not be polled.
    #[error("polling the events ring buffer: {0}")]
    Events(std::io::Error),
}

/// How the window ended.
enum End {
    Duration,
    Cancelled,
    Exited(Option<ExitStatus>),
}

/// Outstanding bytes per stack at each sample time.
#[derive(Debug, Default)]
struct Series {
    times: Vec<f64>,
    bytes: HashMap<u64, Vec<f64>>,
}

impl Series {
    fn push(&mut self, time: f64, totals: &HashMap<u64, f64>) {
        let ticks = self.times.len();
        self.times.push(time);
        for (stack, &bytes) in totals {
            let series = self.bytes.entry(*stack).or_insert_with(|| vec![0.0; ticks]);
            series.push(bytes);
        }
        for series in self.bytes.values_mut() {
            if series.len() == ticks {
                series.push(0.0);
            }
        }
    }

    fn clear(&mut self) {
        self.times.clear();
        self.bytes.clear();
    }
}

/// Per-stack outstanding memory at the end of the window.
#[derive(Debug, Default, Clone, Copy)]
struct Outstanding {
    bytes: u64,
    weight: u64,
    oldest_ns: Option<u64>,
}

impl Outstanding {
    fn add(&mut self, bytes: u64, weight: u64, timestamp_ns: u64) {
        self.bytes += bytes;
        self.weight += weight;
        self.oldest_ns = Some(
            self.oldest_ns
                .map_or(timestamp_ns, |oldest| oldest.min(timestamp_ns)),
        );
    }
}

fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live local; CLOCK_MONOTONIC is what bpf_ktime_get_ns reads.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The state of a running session.
struct Session {
    pid: NonZeroU32,
    tracer: Tracer,
    regions: Regions,
    history: ModuleHistory,
    series: Series,
    started: Instant,
    notes: Vec<String>,
    exited: bool,
    execs: u32,
    initial_exec: bool,
    last_sweep: Instant,
}

impl Session {
    /// Sweeps the kernel's tombstones now and then (see [`Tracer::sweep_tombstones`]).
    fn sweep(&mut self) -> Result<(), TraceError> {
        if self.last_sweep.elapsed() < SWEEP_INTERVAL {
            return Ok(());
        }
        self.last_sweep = Instant::now();
        let before = monotonic_ns().saturating_sub(SWEEP_MIN_AGE.as_nanos() as u64);
        let swept = self.tracer.sweep_tombstones(before)?;
        debug!("swept {swept} freed allocations");
        Ok(())
    }

    fn sample(&mut self) -> Result<(), TraceError> {
        let mut totals: HashMap<u64, f64> = self
            .tracer
            .stack_totals(self.pid)?
            .into_iter()
            .map(|(stack, stats)| (stack, stats.bytes as f64))
            .collect();
        for (stack, usage) in self.regions.per_stack() {
            *totals.entry(stack).or_default() += usage.bytes as f64;
        }
        self.series
            .push(self.started.elapsed().as_secs_f64(), &totals);
        Ok(())
    }

    fn refresh_modules(&mut self) {
        match self.history.refresh(self.pid.get()) {
            Ok(()) => {}
            Err(ProcError::Gone { .. }) => self.exited = true,
            Err(err) => debug!("reading the mappings of pid {}: {err}", self.pid),
        }
    }

    fn handle(&mut self, event: &Event) -> Result<(), TraceError> {
        log::trace!("event {event:?}");
        if event.tgid != self.pid.get() {
            return Ok(());
        }
        match EventKind::from_raw(event.kind) {
            Some(EventKind::Mmap) if event.flags & MAP_ANONYMOUS != 0 => {
                self.regions
                    .map(event.addr, event.len, event.stack_id, event.timestamp_ns);
            }
            Some(EventKind::Mmap) => self.refresh_modules(),
            Some(EventKind::Munmap) => self.regions.unmap(event.addr, event.len),
            Some(EventKind::Mremap) => {
                self.regions
                    .remap(event.addr, event.len, event.new_addr, event.new_len);
            }
            Some(EventKind::Brk) if event.flags & BRK_NESTED != 0 => {
                self.regions.set_break(event.new_addr);
            }
            Some(EventKind::Brk) => {
                self.regions
                    .brk(event.new_addr, event.stack_id, event.timestamp_ns);
            }
            Some(EventKind::Exit) => self.exited = true,
            Some(EventKind::Exec) => {
                self.execs += 1;
                if self.initial_exec && self.execs == 1 {
                    self.refresh_modules();
                } else {
                    // The old image and everything it allocated are gone.
                    self.tracer.purge(self.pid)?;
                    self.regions.clear();
                    self.series.clear();
                    self.refresh_modules();
                    self.notes.push(format!(
                        "the process called execve after {:.1} s; data from before was discarded",
                        self.started.elapsed().as_secs_f64()
                    ));
                }
            }
            None => debug!("unknown event kind {}", event.kind),
        }
        Ok(())
    }

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Result<(), TraceError> {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole `Event`; read_unaligned copes with alignment.
            let event = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
            drop(item);
            self.handle(&event)?;
        }
        Ok(())
    }
}

/// Plans the allocator objects of a command before it runs.
fn plan_command(exe: &std::path::Path) -> Result<Vec<AllocatorObject>, TraceError> {
    let mut objects = Vec::new();
    for path in allocators::resolve_command_libraries(exe)? {
        let sites = allocators::plan_object(&path)?;
        if !sites.is_empty() {
            objects.push(AllocatorObject {
                display_path: path.display().to_string(),
                path,
                sites,
            });
        }
    }
    if objects.is_empty() {
        return Err(AllocatorError::StaticWithoutAllocator {
            path: exe.to_path_buf(),
        }
        .into());
    }
    Ok(objects)
}

/// Runs a session until its window ends, `cancel` completes or the process exits.
pub async fn trace(
    options: TraceOptions,
    cancel: impl Future<Output = ()>,
) -> Result<Report, TraceError> {
    let mut tracer = Tracer::load(options.limits)?;
    let (pid, objects, held, mut comm) = match &options.target {
        Target::Pid(pid) => {
            let comm = procfs::read_comm(pid.get()).map_err(|err| match err {
                ProcError::Gone { .. } => TraceError::NoSuchProcess(*pid),
                other => other.into(),
            })?;
            (*pid, allocators::allocator_objects(pid.get())?, None, comm)
        }
        Target::Command(argv) => {
            let program = argv
                .first()
                .ok_or_else(|| LaunchError::NotFound(String::new()))?;
            let exe: PathBuf = launch::resolve_program(program)?;
            let objects = plan_command(&exe)?;
            let held = HeldChild::spawn(&exe, argv)?;
            let comm = exe
                .file_name()
                .map(|name| name.to_string_lossy().chars().take(15).collect())
                .unwrap_or_default();
            (held.pid(), objects, Some(held), comm)
        }
    };
    let probes = tracer.attach(pid, &objects, options.sample_rate)?;
    let ring = tracer
        .take_events()
        .ok_or(TraceError::Events(std::io::Error::other(
            "ring buffer taken",
        )))?;
    // SAFETY: the ring buffer owns its map's descriptor and keeps it open until it is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| TraceError::Events(err.into()))?;
    let mut session = Session {
        pid,
        tracer,
        regions: Regions::default(),
        history: ModuleHistory::default(),
        series: Series::default(),
        started: Instant::now(),
        notes: Vec::new(),
        exited: false,
        execs: 0,
        initial_exec: held.is_some(),
        last_sweep: Instant::now(),
    };
    let mut child: Option<RunningChild> = match held {
        Some(held) => Some(held.release()?),
        None => {
            session.refresh_modules();
            None
        }
    };
    info!(
        "tracing pid {pid} for up to {:.1} s",
        options.duration.as_secs_f64()
    );

    let mut ticker = tokio::time::interval(options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(options.duration);
    tokio::pin!(deadline);
    tokio::pin!(cancel);
    let end = loop {
        tokio::select! {
            _ = ticker.tick() => {
                session.sample()?;
                session.sweep()?;
                session.refresh_modules();
                if session.exited && child.is_none() {
                    break End::Exited(None);
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(TraceError::Events)?;
                session.drain(guard.get_inner_mut())?;
                guard.clear_ready();
                if session.exited && child.is_none() {
                    break End::Exited(None);
                }
            }
            status = async { match child.as_mut() { Some(child) => child.wait().await, None => std::future::pending().await } } => {
                break End::Exited(Some(status));
            }
            () = &mut deadline => break End::Duration,
            () = &mut cancel => break End::Cancelled,
        }
    };
    let elapsed = session.started.elapsed().as_secs_f64();
    let end_ns = monotonic_ns();
    if let Ok(name) = procfs::read_comm(pid.get()) {
        comm = name;
    }
    session.drain(ring.get_mut())?;
    session.tracer.detach(pid);
    match end {
        End::Duration => {}
        End::Cancelled => session
            .notes
            .push(format!("interrupted after {elapsed:.1} s")),
        End::Exited(Some(status)) => session.notes.push(format!(
            "the command exited after {elapsed:.1} s ({status})"
        )),
        End::Exited(None) => session
            .notes
            .push(format!("the process exited after {elapsed:.1} s")),
    }
    if let (Some(child), End::Duration | End::Cancelled) = (child.as_mut(), &end) {
        let status = child.terminate(TERMINATE_GRACE).await;
        session.notes.push(format!(
            "the command was stopped at the end of the window ({status})"
        ));
    }
    session.sample()?;
    let report = build_report(&mut session, &options, &comm, (elapsed, end_ns), probes);
    if let Err(err) = session.tracer.purge(pid) {
        warn!("releasing the kernel state of pid {pid}: {err}");
    }
    report
}

/// Normalized identity of a frame: object and file offset when known, else the raw address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FrameKey {
    Module(String, u64),
    Address(u64),
}

fn build_report(
    session: &mut Session,
    options: &TraceOptions,
    comm: &str,
    (elapsed, now_ns): (f64, u64),
    probes: Vec<crate::report::ProbeSite>,
) -> Result<Report, TraceError> {
    let pid = session.pid;
    let min_age_ns = u64::try_from(options.min_age.as_nanos()).unwrap_or(u64::MAX);
    let old_enough = |timestamp_ns: u64| now_ns.saturating_sub(timestamp_ns) >= min_age_ns;

    let mut outstanding: HashMap<u64, Outstanding> = HashMap::new();
    for (_, info) in session.tracer.allocations(pid)? {
        let AllocInfo {
            weighted_bytes,
            weight,
            timestamp_ns,
            stack_id,
            ..
        } = info;
        if old_enough(timestamp_ns) {
            outstanding.entry(stack_id).or_default().add(
                weighted_bytes,
                u64::from(weight),
                timestamp_ns,
            );
        }
    }
    for region in session.regions.iter() {
        if old_enough(region.timestamp_ns) {
            outstanding.entry(region.stack_id).or_default().add(
                region.len,
                u64::from(WEIGHT_ONE),
                region.timestamp_ns,
            );
        }
    }

    // Group kernel stacks by their normalized frames.
    let mut groups: BTreeMap<Vec<FrameKey>, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    let stack_ids: Vec<u64> = outstanding
        .keys()
        .chain(session.series.bytes.keys())
        .copied()
        .collect();
    for stack_id in stack_ids {
        let frames = if stack_id == 0 {
            Vec::new()
        } else {
            session
                .tracer
                .stack_frames(pid, stack_id)
                .unwrap_or_default()
        };
        let key: Vec<FrameKey> = frames
            .iter()
            .map(|&address| match session.history.normalize(address) {
                Some(normalized) => FrameKey::Module(normalized.module, normalized.file_offset),
                None => FrameKey::Address(address),
            })
            .collect();
        let group = groups.entry(key).or_insert_with(|| (frames, Vec::new()));
        if !group.1.contains(&stack_id) {
            group.1.push(stack_id);
        }
    }

    let rule = LeakRule::default();
    let mut stacks = Vec::new();
    let mut totals = Totals::default();
    for (frames, members) in groups.values() {
        let mut sum = Outstanding::default();
        for member in members {
            if let Some(part) = outstanding.get(member) {
                sum.bytes += part.bytes;
                sum.weight += part.weight;
                sum.oldest_ns = match (sum.oldest_ns, part.oldest_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let mut series = vec![0.0; session.series.times.len()];
        for member in members {
            if let Some(values) = session.series.bytes.get(member) {
                for (total, value) in series.iter_mut().zip(values) {
                    *total += value;
                }
            }
        }
        let points: Vec<(f64, f64)> = session.series.times.iter().copied().zip(series).collect();
        let assessment = trend::assess(&points, &rule);
        let allocations = (sum.weight + u64::from(WEIGHT_ONE) / 2) / u64::from(WEIGHT_ONE);
        totals.outstanding_bytes += sum.bytes;
        totals.outstanding_allocations += allocations;
        if sum.bytes == 0 && !assessment.leaking {
            continue;
        }
        stacks.push((
            frames.clone(),
            StackReport {
                bytes: sum.bytes,
                allocations,
                growth_bytes_per_second: assessment.slope_per_second,
                oldest_age_seconds: sum
                    .oldest_ns
                    .map_or(0.0, |oldest| now_ns.saturating_sub(oldest) as f64 / 1e9),
                leaking: assessment.leaking,
                frames: Vec::new(),
            },
        ));
    }
    stacks.sort_by(|a, b| {
        b.1.bytes.cmp(&a.1.bytes).then(
            b.1.growth_bytes_per_second
                .total_cmp(&a.1.growth_bytes_per_second),
        )
    });
    stacks.truncate(options.top);

    let addresses: Vec<u64> = stacks
        .iter()
        .flat_map(|(frames, _)| frames.iter().copied())
        .collect();
    let mut symbolizer = Symbolizer::new();
    let symbolized = symbolizer.symbolize(&session.history, &addresses);
    let mut symbolized = symbolized.into_iter();
    let stacks = stacks
        .into_iter()
        .map(|(frames, mut report)| {
            report.frames = frames
                .iter()
                .zip(symbolized.by_ref())
                .flat_map(|(_, frames)| frames)
                .collect::<Vec<Frame>>();
            report
        })
        .collect();

    let counters = session.tracer.counters()?;
    let mut dropped = BTreeMap::new();
    let mut events = BTreeMap::new();
    for stat in Stat::ALL {
        let value = counters[stat as usize];
        if stat.is_drop() {
            dropped.insert(stat.name().to_owned(), value);
        } else {
            events.insert(stat.name().to_owned(), value);
        }
    }
    debug_assert_eq!(counters.len(), STAT_COUNT as usize);
    let partial = dropped.values().any(|&count| count > 0);
    if partial {
        session
            .notes
            .push("data was lost (see `dropped`): figures are lower bounds".to_owned());
    }
    for probe in &probes {
        if !probe.emulated {
            session.notes.push(format!(
                "{} in {} is probed at +{:#x} on `{}`, which the kernel single-steps (slower)",
                probe.function, probe.module, probe.offset, probe.instruction
            ));
        }
    }
    Ok(Report {
        pid: pid.get(),
        comm: comm.to_owned(),
        duration_seconds: elapsed,
        interval_seconds: options.interval.as_secs_f64(),
        sample_rate: options.sample_rate,
        min_age_seconds: options.min_age.as_secs_f64(),
        partial,
        notes: std::mem::take(&mut session.notes),
        probes,
        totals,
        dropped,
        events,
        stacks,
    })
}

/// Runs a command with programs that do nothing attached where the allocator probes would go,
/// and returns how it exited: the probe-cost benchmark compares this with the command untraced
/// and traced.
pub async fn run_with_empty_probes(
    argv: &[String],
    placement: EmptyPlacement,
) -> Result<ExitStatus, TraceError> {
    let mut tracer = Tracer::load(MapLimits::default())?;
    let program = argv
        .first()
        .ok_or_else(|| LaunchError::NotFound(String::new()))?;
    let exe = launch::resolve_program(program)?;
    let objects = plan_command(&exe)?;
    let held = HeldChild::spawn(&exe, argv)?;
    let pid = held.pid();
    tracer.attach_empty(pid, &objects, placement)?;
    let mut child = held.release()?;
    let status = child.wait().await;
    tracer.detach(pid);
    Ok(status)
}
