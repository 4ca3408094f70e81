//! One process being traced: what user space keeps beside the kernel maps while the window
//! runs (the per-stack series of outstanding bytes, the releases of memory allocated before the
//! window, what the process's memory is made of, the memory-mapping regions, the history of
//! mapped code), and the [`Report`] built from it all at the end. `leakmon trace` runs one
//! session; the daemon runs several on one shared [`Tracer`].
//!
//! Stacks are merged by their normalized frames (object and file offset, not raw address), so a
//! library loaded at a new address after each `dlopen` still adds up to one stack.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    num::NonZeroU32,
    time::{Duration, Instant},
};

use log::debug;
use monitor_common::{
    AllocInfo, BRK_NESTED, EXEC_STOPPED, Event, EventKind, ReleaseStats, STAT_COUNT, StackEnd,
    StackStats, Stat, WEIGHT_ONE, python_frame_parts,
};

use crate::{
    model::{HeapLive, Memory},
    report::{Frame, Language, Method, ProbeSite, ReleaseSite, Report, StackReport, Totals},
    symbolize::{
        python::PythonFrames,
        symbolizer::{ModuleHistory, Symbolizer},
    },
    trace::{
        allocators::AllocatorObject,
        pages::PageLedger,
        python::{self, Interpreter},
        regions::Regions,
        tracer::{Detached, Tracer, TracerError},
    },
    watch::{
        memory::{self, MemoryHistory},
        procfs::{self, MapEntry, ProcError},
        trend::{self, Growth, LeakRule, Release, TurnoverRule},
    },
};

/// `MAP_ANONYMOUS` from `<sys/mman.h>`.
const MAP_ANONYMOUS: u64 = 0x20;
/// Most samples of the memory classes kept (the oldest are dropped).
const MAX_MEMORY_SAMPLES: usize = 4096;

/// The parameters of a session that shape its report.
#[derive(Debug, Clone, Copy)]
pub struct SessionParams {
    /// Time between samples of the per-stack totals.
    pub interval: Duration,
    /// Only allocations at least this old count as outstanding in the report.
    pub min_age: Duration,
    /// Stacks kept in the report.
    pub top: usize,
    /// Mean bytes between samples; 0 records every allocation.
    pub sample_rate: u64,
    /// How the process is looked at.
    pub method: Method,
}

/// The clock the kernel programs stamp allocations with (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
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

/// The frees of memory allocated before the window (addresses the trace never saw allocated),
/// by freeing site: the kernel's running totals at the first and at the latest sample, and the
/// bytes released since the first sample at each sample.
#[derive(Debug, Default)]
struct Releases {
    first: Option<HashMap<u64, ReleaseStats>>,
    latest: HashMap<u64, ReleaseStats>,
    bytes: Vec<f64>,
}

impl Releases {
    fn push(&mut self, totals: &HashMap<u64, ReleaseStats>) {
        let first = self.first.get_or_insert_with(|| totals.clone());
        let before: u64 = first.values().map(|stats| stats.bytes).sum();
        let now: u64 = totals.values().map(|stats| stats.bytes).sum();
        self.bytes.push(now.saturating_sub(before) as f64);
        self.latest.clone_from(totals);
    }

    /// The frees per site between the first and the latest sample (the span of the series).
    fn released(&self) -> HashMap<u64, ReleaseStats> {
        self.latest
            .iter()
            .filter_map(|(&site, last)| {
                let before = self
                    .first
                    .as_ref()
                    .and_then(|first| first.get(&site))
                    .copied()
                    .unwrap_or_default();
                let frees = last.frees.saturating_sub(before.frees);
                (frees > 0).then(|| {
                    let bytes = last.bytes.saturating_sub(before.bytes);
                    (site, ReleaseStats { frees, bytes })
                })
            })
            .collect()
    }

    fn clear(&mut self) {
        *self = Self::default();
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
    fn add(&mut self, bytes: u64, weight: u64, timestamp_ns: Option<u64>) {
        self.bytes += bytes;
        self.weight += weight;
        self.oldest_ns = match (self.oldest_ns, timestamp_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Normalized identity of a frame: object and file offset when known, else the raw address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FrameKey {
    Module(String, u64),
    /// A faulting instruction by the page-fault method: any instruction of one function (its
    /// object and the names of the function and of those inlined in it) is the same frame.
    Function(String, Vec<String>),
    Address(u64),
}

/// A group of kernel stacks in a report: their normalized frames, and whether their walk was
/// cut short.
type GroupKey = (Vec<FrameKey>, bool);

/// Folds each stack cut short into the one complete stack that starts with the same frames:
/// the same allocation site, walked before the rest of its callers' code was published (the
/// first allocations of a library just loaded). Where several complete stacks share those
/// frames, which one it was is unknown: it stays apart, marked truncated.
fn merge_truncated_prefixes(groups: &mut BTreeMap<GroupKey, (Vec<u64>, Vec<u64>)>) {
    let truncated: Vec<Vec<FrameKey>> = groups
        .keys()
        .filter(|(frames, truncated)| *truncated && !frames.is_empty())
        .map(|(frames, _)| frames.clone())
        .collect();
    for prefix in truncated {
        let mut complete = groups
            .keys()
            .filter(|(frames, truncated)| !*truncated && frames.starts_with(&prefix));
        let (Some(into), None) = (complete.next().cloned(), complete.next()) else {
            continue;
        };
        if let Some((_, members)) = groups.remove(&(prefix, true))
            && let Some((_, into_members)) = groups.get_mut(&into)
        {
            into_members.extend(members);
        }
    }
}

/// One traced process.
#[derive(Debug)]
pub struct Session {
    pid: NonZeroU32,
    start_time_ticks: Option<u64>,
    params: SessionParams,
    probes: Vec<ProbeSite>,
    regions: Regions,
    /// The pages the process holds, by the page-fault method.
    pages: PageLedger,
    /// The frames of the process's CPython interpreter, when it runs one leakmon can walk.
    python: Option<PythonFrames>,
    /// The stacks whose Python frames were read already.
    python_learned: HashSet<u64>,
    /// The process replaced its image: look for an interpreter at the next look at its maps.
    python_due: bool,
    history: ModuleHistory,
    series: Series,
    releases: Releases,
    /// What the process's memory is made of, at each sample.
    memory: MemoryHistory,
    /// (seconds into the window, live allocations): the traced allocations' outstanding bytes
    /// less the bytes released of memory allocated before the window, at each sample (at most
    /// [`MAX_MEMORY_SAMPLES`], the oldest dropped).
    live: VecDeque<(f64, f64)>,
    /// The traced allocations' outstanding bytes at the latest sample.
    allocated: u64,
    started: Instant,
    counters_at_start: [u64; STAT_COUNT as usize],
    notes: Vec<String>,
    exited: bool,
    execs: u32,
    launched: bool,
    outstanding_bytes: u64,
    cut_short: bool,
}

impl Session {
    /// Attaches the allocator probes to `pid` (or, by [`Method::PageFaults`], registers it for
    /// its page faults; `objects` are then unused) and starts the window. `launched` says the
    /// process is a command held before `execve` (its first exec is then expected).
    pub fn start(
        tracer: &mut Tracer,
        pid: NonZeroU32,
        objects: &[AllocatorObject],
        params: SessionParams,
        launched: bool,
    ) -> Result<Self, TracerError> {
        let counters_at_start = tracer.counters()?;
        // A running process's mappings are published before its probes attach, so that its
        // first recorded allocations already unwind; a launched command's are published when it
        // has replaced its image (its first exec).
        let maps = if launched {
            None
        } else {
            let maps = procfs::read_maps(pid.get())
                .map_err(|_| TracerError::ProcessGone { pid: pid.get() })?;
            tracer.publish_mappings(pid, &maps);
            Some(maps)
        };
        let attached = match params.method {
            Method::Allocations => tracer.attach(pid, objects, params.sample_rate),
            Method::PageFaults => tracer.attach_page_faults(pid).map(|()| Vec::new()),
        };
        let probes = attached.inspect_err(|_| tracer.forget_mappings(pid))?;
        if launched && let Err(err) = tracer.stop_at_next_exec(pid) {
            // The command then starts without its mappings published: its first allocations
            // are recorded without their stacks.
            log::warn!("pid {pid}: {err}");
        }
        let mut session = Self {
            pid,
            start_time_ticks: procfs::read_stat(pid.get())
                .ok()
                .map(|stat| stat.start_time_ticks),
            params,
            probes,
            regions: Regions::default(),
            pages: PageLedger::default(),
            python: None,
            python_learned: HashSet::new(),
            python_due: false,
            history: ModuleHistory::default(),
            series: Series::default(),
            releases: Releases::default(),
            memory: MemoryHistory::default(),
            live: VecDeque::new(),
            allocated: 0,
            started: Instant::now(),
            counters_at_start,
            notes: Vec::new(),
            exited: false,
            execs: 0,
            launched,
            outstanding_bytes: 0,
            cut_short: false,
        };
        if let Some(maps) = maps {
            session.history.record(pid.get(), &maps);
            session.pages.set_maps(&maps);
            session.detect_python(tracer, &maps);
        }
        Ok(session)
    }

    /// The traced process.
    pub fn pid(&self) -> NonZeroU32 {
        self.pid
    }

    /// Time since the window started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the process has exited.
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// Outstanding bytes at the latest sample, over all stacks.
    pub fn outstanding_bytes(&self) -> u64 {
        self.outstanding_bytes
    }

    /// Adds a sentence to the report's notes.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Marks the report partial because the window was cut short, saying why.
    pub fn cut_short(&mut self, why: String) {
        self.cut_short = true;
        self.notes.push(why);
    }

    /// Records the mapped code of the process (so frames stay symbolizable after it is gone)
    /// and publishes it for the kernel programs' stack walks.
    pub fn refresh_modules(&mut self, tracer: &mut Tracer) {
        match procfs::read_maps(self.pid.get()) {
            Ok(maps) => {
                self.history.record(self.pid.get(), &maps);
                self.pages.set_maps(&maps);
                tracer.publish_mappings(self.pid, &maps);
                if std::mem::take(&mut self.python_due) {
                    self.detect_python(tracer, &maps);
                }
                self.learn_python(tracer);
            }
            Err(ProcError::Gone { .. }) => self.exited = true,
            Err(err) => debug!("reading the mappings of pid {}: {err}", self.pid),
        }
    }

    /// Registers the process's CPython interpreter with the kernel programs, so that its stacks
    /// get Python frames; notes an interpreter leakmon cannot walk.
    fn detect_python(&mut self, tracer: &mut Tracer, maps: &[MapEntry]) {
        match python::detect(self.pid.get(), maps) {
            Some(Interpreter::Known {
                layout,
                process,
                object,
            }) => match PythonFrames::open(self.pid.get(), layout) {
                Ok(frames) => {
                    debug!(
                        "pid {}: CPython {}.{} in {object}",
                        self.pid, layout.version.0, layout.version.1
                    );
                    tracer.publish_python(self.pid, &process);
                    self.python = Some(frames);
                }
                Err(err) => debug!("pid {}: reading its memory: {err}", self.pid),
            },
            Some(unknown) => {
                if let Some(note) = unknown.note() {
                    log::info!("pid {}: {note}", self.pid);
                    if !self.notes.contains(&note) {
                        self.notes.push(note);
                    }
                }
            }
            None => {}
        }
    }

    /// Reads the code objects of the Python frames of stacks not read yet, while the process
    /// runs (its frames are then decoded even after it exits).
    fn learn_python(&mut self, tracer: &Tracer) {
        let Some(python) = self.python.as_mut() else {
            return;
        };
        let new: Vec<u64> = self
            .series
            .bytes
            .keys()
            .copied()
            .filter(|stack| !self.python_learned.contains(stack))
            .collect();
        for stack_id in new {
            if let Some((frames, _)) = tracer.stack_frames(self.pid, stack_id) {
                for code in frames
                    .iter()
                    .filter_map(|&frame| python_frame_parts(frame).map(|(code, _)| code))
                {
                    python.learn(code);
                }
            }
            self.python_learned.insert(stack_id);
        }
    }

    /// Takes a sample of every stack's outstanding bytes and of the releases of older memory;
    /// `totals` are this process's per-stack totals and `releases` its frees of unknown
    /// addresses by site, read from the kernel (see [`Tracer::stack_totals`] and
    /// [`Tracer::releases`]).
    pub fn sample(
        &mut self,
        totals: &HashMap<u64, StackStats>,
        releases: &HashMap<u64, ReleaseStats>,
    ) {
        let time = self.started.elapsed().as_secs_f64();
        self.releases.push(releases);
        self.allocated = totals.values().map(|stats| stats.bytes).sum();
        // In a sampled trace, most frees of unknown addresses are of unsampled allocations, not
        // of older memory: nothing is subtracted.
        let released = match self.params.sample_rate {
            0 => self.releases.bytes.last().copied().unwrap_or(0.0),
            _ => 0.0,
        };
        if self.live.len() >= MAX_MEMORY_SAMPLES {
            self.live.pop_front();
        }
        self.live
            .push_back((time, self.allocated as f64 - released));
        match memory::sample(self.pid.get()) {
            Ok(bytes) => self.memory.push(time, bytes, MAX_MEMORY_SAMPLES),
            Err(err) => debug!("the memory classes of pid {}: {err}", self.pid),
        }
        let mut bytes: HashMap<u64, f64> = totals
            .iter()
            .map(|(&stack, stats)| (stack, stats.bytes as f64))
            .collect();
        for (stack, usage) in self.regions.per_stack() {
            *bytes.entry(stack).or_default() += usage.bytes as f64;
        }
        for (stack, pages) in self.pages.per_stack() {
            *bytes.entry(stack).or_default() += pages.bytes as f64;
        }
        self.outstanding_bytes = bytes.values().sum::<f64>() as u64;
        self.series.push(time, &bytes);
    }

    /// What the process's memory is made of, over the window so far, with its heap's live
    /// allocations when the allocator is traced (the daemon shows it for a traced process; the
    /// report ends with it).
    pub fn memory(&self) -> Option<Memory> {
        let mut memory = self.memory.memory()?;
        if self.params.method != Method::Allocations {
            return Some(memory);
        }
        let live: Vec<(f64, f64)> = self.live.iter().copied().collect();
        let live_growth = trend::theil_sen_thinned(&live, memory::SLOPE_POINTS).unwrap_or(0.0);
        let from_start = self.launched && self.execs <= 1;
        memory.heap_live = Some(HeapLive {
            live_bytes: self.allocated,
            live_growth_bytes_per_second: live_growth,
            retained_growth_bytes_per_second: memory.heap.growth_bytes_per_second - live_growth,
            retained_bytes: from_start
                .then(|| memory.heap.resident_bytes.saturating_sub(self.allocated)),
        });
        Some(memory)
    }

    /// Applies one event of this process from the kernel.
    pub fn handle(&mut self, tracer: &mut Tracer, event: &Event) -> Result<(), TracerError> {
        log::trace!("event {event:?}");
        let kind = EventKind::from_raw(event.kind);
        if self.params.method == Method::PageFaults && self.handle_page_event(kind, event) {
            return Ok(());
        }
        match kind {
            Some(EventKind::Mmap) if event.flags & MAP_ANONYMOUS != 0 => {
                self.regions
                    .map(event.addr, event.len, event.stack_id, event.timestamp_ns);
            }
            Some(EventKind::Mmap) => self.refresh_modules(tracer),
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
            // Page faults and released pages matter only to the page-fault method.
            Some(EventKind::PageFault | EventKind::Madvise) => {}
            Some(EventKind::Exit) => self.exited = true,
            // How it ended is for whoever records ends (the daemon).
            Some(EventKind::End) => {}
            Some(EventKind::UnwindTableWanted) => tracer.unwind_requested(self.pid),
            Some(EventKind::Exec) => {
                self.execs += 1;
                // Stopped by the kernel programs until its new image is published (below).
                let stopped = event.flags & EXEC_STOPPED != 0;
                // The kernel programs dropped the old image's mappings.
                tracer.forget_mappings(self.pid);
                self.python = None;
                self.python_learned.clear();
                self.python_due = true;
                if self.launched && self.execs == 1 {
                    self.refresh_modules(tracer);
                } else {
                    // The old image and everything it allocated are gone.
                    tracer.purge(self.pid)?;
                    self.regions.clear();
                    self.pages.clear();
                    self.series.clear();
                    self.releases.clear();
                    self.memory = MemoryHistory::default();
                    self.live.clear();
                    self.refresh_modules(tracer);
                    self.notes.push(format!(
                        "the process called execve after {:.1} s; data from before was discarded",
                        self.started.elapsed().as_secs_f64()
                    ));
                }
                if stopped {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    if unsafe { libc::kill(self.pid.get() as libc::pid_t, libc::SIGCONT) } != 0 {
                        log::warn!(
                            "pid {}: resuming it after its exec: {}",
                            self.pid,
                            std::io::Error::last_os_error()
                        );
                    }
                }
            }
            None => debug!("unknown event kind {}", event.kind),
        }
        Ok(())
    }

    /// Applies a memory event to the pages of the page-fault method; false for the events it
    /// leaves to [`Session::handle`] (code mapped, exit, exec, unwind requests).
    fn handle_page_event(&mut self, kind: Option<EventKind>, event: &Event) -> bool {
        match kind {
            Some(EventKind::PageFault) => {
                self.pages
                    .fault(event.addr, event.stack_id, event.timestamp_ns);
            }
            Some(EventKind::Munmap | EventKind::Madvise) => {
                self.pages.release(event.addr, event.len);
            }
            Some(EventKind::Mremap) => {
                self.pages
                    .remap(event.addr, event.len, event.new_addr, event.new_len);
            }
            Some(EventKind::Brk) => self.pages.set_break(event.new_addr),
            // New anonymous memory counts when it is written, not when it is mapped.
            Some(EventKind::Mmap) if event.flags & MAP_ANONYMOUS != 0 => {}
            _ => return false,
        }
        true
    }

    /// Ends the window: takes the probes off, takes a last sample, builds the report with the
    /// process's command name `comm`, and releases the process's kernel state. The probes are
    /// handed back undetached (dropping them detaches them, see [`Tracer::detach_later`]).
    pub fn finish(
        mut self,
        tracer: &mut Tracer,
        symbolizer: &mut Symbolizer,
        comm: &str,
    ) -> (Result<Report, TracerError>, Detached) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let end_ns = monotonic_ns();
        let detached = tracer.detach_later(self.pid);
        let report = tracer.stack_totals(self.pid).and_then(|totals| {
            self.sample(&totals, &tracer.releases(self.pid)?);
            self.build_report(tracer, symbolizer, comm, elapsed, end_ns)
        });
        if let Err(err) = tracer.purge(self.pid) {
            log::warn!("releasing the kernel state of pid {}: {err}", self.pid);
        }
        symbolizer.forget(&self.history);
        (report, detached)
    }

    /// By the page-fault method, the function names of the faulting instruction (the first
    /// frame) of each of `stack_ids`, by address: the same function faulting at another
    /// instruction (a copy loop's every store) is the same place in a report. Empty by the
    /// allocation method, whose first frames are return addresses.
    fn faulting_functions(
        &self,
        tracer: &Tracer,
        symbolizer: &mut Symbolizer,
        stack_ids: &[u64],
    ) -> HashMap<u64, Vec<String>> {
        if self.params.method != Method::PageFaults {
            return HashMap::new();
        }
        let mut addresses: Vec<u64> = stack_ids
            .iter()
            .filter(|&&stack_id| stack_id != 0)
            .filter_map(|&stack_id| tracer.stack_frames(self.pid, stack_id)?.0.first().copied())
            .collect();
        addresses.sort_unstable();
        addresses.dedup();
        let symbolized = symbolizer.symbolize(&self.history, &addresses);
        addresses
            .into_iter()
            .zip(symbolized)
            .filter_map(|(address, frames)| {
                let names: Vec<String> = frames
                    .into_iter()
                    .filter_map(|frame| frame.symbol)
                    .collect();
                (!names.is_empty()).then_some((address, names))
            })
            .collect()
    }

    /// An interim report of the window so far (the probes stay attached; the window goes on),
    /// with the process's command name `comm`.
    pub fn interim_report(
        &mut self,
        tracer: &Tracer,
        symbolizer: &mut Symbolizer,
        comm: &str,
    ) -> Result<Report, TracerError> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut report = self.build_report(tracer, symbolizer, comm, elapsed, monotonic_ns())?;
        report.interim = true;
        report.notes.push(format!(
            "an interim report, {elapsed:.0} s into the window: the trace goes on, and its final \
             report replaces this one"
        ));
        Ok(report)
    }

    fn build_report(
        &mut self,
        tracer: &Tracer,
        symbolizer: &mut Symbolizer,
        comm: &str,
        elapsed: f64,
        now_ns: u64,
    ) -> Result<Report, TracerError> {
        let pid = self.pid;
        let min_age_ns = u64::try_from(self.params.min_age.as_nanos()).unwrap_or(u64::MAX);
        let old_enough = |timestamp_ns: u64| now_ns.saturating_sub(timestamp_ns) >= min_age_ns;

        let mut outstanding: HashMap<u64, Outstanding> = HashMap::new();
        for (_, info) in tracer.allocations(pid)? {
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
                    Some(timestamp_ns),
                );
            }
        }
        for (stack_id, pages) in self.pages.per_stack() {
            if let Some(oldest) = pages.oldest_ns {
                // A page counts as one object, in units of the allocations' weight.
                outstanding.entry(stack_id).or_default().add(
                    pages.bytes,
                    pages.pages * u64::from(WEIGHT_ONE),
                    Some(oldest),
                );
            }
        }
        for region in self.regions.iter() {
            if old_enough(region.timestamp_ns) {
                outstanding.entry(region.stack_id).or_default().add(
                    region.len,
                    u64::from(WEIGHT_ONE),
                    Some(region.timestamp_ns),
                );
            }
        }

        // Group kernel stacks by their normalized frames (and whether their walk was cut short).
        let mut groups: BTreeMap<GroupKey, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        let stack_ids: Vec<u64> = outstanding
            .keys()
            .chain(self.series.bytes.keys())
            .copied()
            .collect();
        let functions = self.faulting_functions(tracer, symbolizer, &stack_ids);
        for stack_id in stack_ids {
            // Without a stack (none captured, or no longer in the kernel's map), nothing of
            // the allocations' callers is known: a stack cut short at once.
            let (frames, end) = match stack_id {
                0 => (Vec::new(), StackEnd::NoMapping),
                _ => tracer
                    .stack_frames(pid, stack_id)
                    .unwrap_or((Vec::new(), StackEnd::NoMapping)),
            };
            let truncated = end != StackEnd::Complete;
            let key: Vec<FrameKey> = frames
                .iter()
                .enumerate()
                .map(|(index, &address)| match self.history.normalize(address) {
                    Some(normalized) => match functions.get(&address) {
                        Some(names) if index == 0 => {
                            FrameKey::Function(normalized.module, names.clone())
                        }
                        _ => FrameKey::Module(normalized.module, normalized.file_offset),
                    },
                    None => FrameKey::Address(address),
                })
                .collect();
            let group = groups
                .entry((key, truncated))
                .or_insert_with(|| (frames, Vec::new()));
            if !group.1.contains(&stack_id) {
                group.1.push(stack_id);
            }
        }
        merge_truncated_prefixes(&mut groups);

        let rule = LeakRule::default();
        let mapped: HashSet<u64> = self.regions.iter().map(|region| region.stack_id).collect();
        let mut stacks = Vec::new();
        let mut totals = Totals::default();
        for ((_, truncated), (frames, members)) in &groups {
            let mut sum = Outstanding::default();
            let mut series = vec![0.0; self.series.times.len()];
            for member in members {
                if let Some(part) = outstanding.get(member) {
                    sum.add(part.bytes, part.weight, part.oldest_ns);
                }
                if let Some(values) = self.series.bytes.get(member) {
                    for (total, value) in series.iter_mut().zip(values) {
                        *total += value;
                    }
                }
            }
            let points: Vec<(f64, f64)> = self.series.times.iter().copied().zip(series).collect();
            let assessment = trend::assess(&points, &rule);
            let allocations = (sum.weight + u64::from(WEIGHT_ONE) / 2) / u64::from(WEIGHT_ONE);
            totals.outstanding_bytes += sum.bytes;
            totals.outstanding_allocations += allocations;
            if sum.bytes == 0 && !assessment.leaking {
                continue;
            }
            let growth =
                (assessment.leaking && !members.iter().any(|m| mapped.contains(m))).then(|| {
                    Growth {
                        rise: assessment.rise,
                        block: if allocations > 0 {
                            sum.bytes as f64 / allocations as f64
                        } else {
                            0.0
                        },
                    }
                });
            stacks.push((
                frames.clone(),
                growth,
                StackReport {
                    bytes: sum.bytes,
                    allocations,
                    growth_bytes_per_second: assessment.slope_per_second,
                    oldest_age_seconds: sum
                        .oldest_ns
                        .map_or(0.0, |oldest| now_ns.saturating_sub(oldest) as f64 / 1e9),
                    leaking: assessment.leaking,
                    frames: Vec::new(),
                    truncated: *truncated,
                    ..StackReport::default()
                },
            ));
        }
        let releases = self.judge_turnover(symbolizer, &mut stacks);
        let mut stacks: Vec<(Vec<u64>, StackReport)> = stacks
            .into_iter()
            .map(|(frames, _, report)| (frames, report))
            .collect();
        stacks.sort_by(|a, b| {
            b.1.bytes.cmp(&a.1.bytes).then(
                b.1.growth_bytes_per_second
                    .total_cmp(&a.1.growth_bytes_per_second),
            )
        });
        stacks.truncate(self.params.top);

        // Native frames through the symbolizer, Python frames from the interpreter's code objects.
        let addresses: Vec<u64> = stacks
            .iter()
            .flat_map(|(frames, _)| frames.iter().copied())
            .filter(|&frame| python_frame_parts(frame).is_none())
            .collect();
        let mut symbolized = symbolizer.symbolize(&self.history, &addresses).into_iter();
        let python = &mut self.python;
        let stacks: Vec<StackReport> = stacks
            .into_iter()
            .map(|(frames, mut report)| {
                report.frames = frames
                    .iter()
                    .flat_map(
                        |&frame| match (python_frame_parts(frame), python.as_mut()) {
                            (Some((code, lasti)), Some(python)) => vec![python.frame(code, lasti)],
                            (Some((code, _)), None) => vec![Frame {
                                address: code,
                                language: Language::Python,
                                ..Frame::default()
                            }],
                            (None, _) => symbolized.next().unwrap_or_default(),
                        },
                    )
                    .collect::<Vec<Frame>>();
                report
            })
            .collect();

        let memory = self.memory();
        // The process's own memory as evidence: turnover reuses the memory it releases, so the
        // heap does not grow with the stacks judged turnover. When it does, say so.
        let turnover: f64 = stacks
            .iter()
            .filter(|stack| stack.turnover)
            .map(|stack| stack.growth_bytes_per_second)
            .sum();
        if let Some(heap) = memory.as_ref().map(|memory| memory.heap)
            && turnover > 0.0
            && heap.growth_bytes_per_second >= 0.5 * turnover
        {
            self.notes.push(format!(
                "the heap grew {:.0} B/s beside the stacks judged turnover ({turnover:.0} B/s): \
                 the memory released before the window was not reused (retained by the \
                 allocator), or the turnover verdict is wrong",
                heap.growth_bytes_per_second
            ));
        }

        let counters = tracer.counters()?;
        let mut dropped = BTreeMap::new();
        let mut events = BTreeMap::new();
        for stat in Stat::ALL {
            let value =
                counters[stat as usize].saturating_sub(self.counters_at_start[stat as usize]);
            if stat.is_drop() {
                dropped.insert(stat.name().to_owned(), value);
            } else {
                events.insert(stat.name().to_owned(), value);
            }
        }
        let lost = dropped.values().any(|&count| count > 0);
        let partial = lost || self.cut_short;
        let mut notes = self.notes.clone();
        if lost {
            notes.push("data was lost (see `dropped`): figures are lower bounds".to_owned());
        }
        for probe in &self.probes {
            if !probe.emulated {
                notes.push(format!(
                    "{} in {} is probed at +{:#x} on `{}`, which the kernel single-steps (slower)",
                    probe.function, probe.module, probe.offset, probe.instruction
                ));
            }
        }
        Ok(Report {
            pid: pid.get(),
            start_time_ticks: self.start_time_ticks,
            comm: comm.to_owned(),
            duration_seconds: elapsed,
            interval_seconds: self.params.interval.as_secs_f64(),
            sample_rate: self.params.sample_rate,
            min_age_seconds: self.params.min_age.as_secs_f64(),
            partial,
            notes,
            probes: self.probes.clone(),
            totals,
            dropped,
            events,
            stacks,
            method: self.params.method,
            interim: false,
            end: None,
            releases,
            memory,
        })
    }

    /// Applies the turnover rule (`trend::match_turnover`) to the growing `stacks` (frames, the
    /// growth of a leaking stack of allocations, report): the stacks whose growth the release of
    /// memory allocated before the window offsets are turnover, not leaking. Gives the sites of
    /// those releases for the report, the matched ones and the largest others, at most `top`
    /// unmatched.
    fn judge_turnover(
        &mut self,
        symbolizer: &mut Symbolizer,
        stacks: &mut [(Vec<u64>, Option<Growth>, StackReport)],
    ) -> Vec<ReleaseSite> {
        let mut sites: Vec<(u64, ReleaseStats)> = self.releases.released().into_iter().collect();
        sites.sort_by(|a, b| (b.1.bytes, b.1.frees, a.0).cmp(&(a.1.bytes, a.1.frees, b.0)));
        let growing: Vec<usize> = (0..stacks.len())
            .filter(|&i| stacks[i].1.is_some())
            .collect();
        let mut matched_sites: Vec<bool> = vec![false; sites.len()];
        let mut site_frames: Vec<Vec<Frame>> = Vec::new();
        if !sites.is_empty() {
            let addresses: Vec<u64> = sites.iter().map(|(site, _)| *site).collect();
            site_frames = symbolizer.symbolize(&self.history, &addresses);
            for (frames, (site, _)) in site_frames.iter_mut().zip(&sites) {
                if *site == 0 {
                    frames.clear();
                }
            }
        }
        if !growing.is_empty() && !sites.is_empty() {
            if self.params.sample_rate != 0 {
                self.notes.push(
                    "sampled trace: frees of unsampled allocations cannot be told from releases \
                     of memory allocated before the window, so no growth was judged turnover"
                        .to_owned(),
                );
            } else {
                let functions = |frames: &[Frame]| -> HashSet<(Option<String>, String)> {
                    frames
                        .iter()
                        .filter_map(|frame| {
                            frame
                                .symbol
                                .clone()
                                .map(|symbol| (frame.module.clone(), symbol))
                        })
                        .collect()
                };
                let stack_addresses: Vec<u64> = growing
                    .iter()
                    .flat_map(|&i| stacks[i].0.iter().copied())
                    .collect();
                let mut symbolized = symbolizer
                    .symbolize(&self.history, &stack_addresses)
                    .into_iter();
                let site_functions: Vec<_> = site_frames.iter().map(|f| functions(f)).collect();
                let mut same_code = Vec::new();
                let mut growths = Vec::new();
                for (g, &i) in growing.iter().enumerate() {
                    let frames: Vec<Frame> = symbolized
                        .by_ref()
                        .take(stacks[i].0.len())
                        .flatten()
                        .collect();
                    let own = functions(&frames);
                    for (r, site) in site_functions.iter().enumerate() {
                        if !own.is_disjoint(site) {
                            same_code.push((g, r));
                        }
                    }
                    growths.extend(stacks[i].1);
                }
                let releases: Vec<Release> = sites
                    .iter()
                    .map(|(_, stats)| Release {
                        frees: stats.frees as f64,
                        bytes: (stats.bytes > 0).then_some(stats.bytes as f64),
                    })
                    .collect();
                let found = trend::match_turnover(
                    &growths,
                    &releases,
                    &same_code,
                    &TurnoverRule::default(),
                );
                for (&i, found) in growing.iter().zip(found) {
                    let report = &mut stacks[i].2;
                    report.released_bytes = found.released.round() as u64;
                    if found.turnover {
                        report.leaking = false;
                        report.turnover = true;
                    }
                    for &site in &found.sites {
                        matched_sites[site] = true;
                    }
                    report.release_sites = found.sites;
                }
            }
        }
        // Keep the matched sites and the largest others; renumber the stacks' references.
        let mut kept = Vec::new();
        let mut index = vec![None; sites.len()];
        let mut unmatched = 0;
        for (r, ((_, stats), frames)) in sites.iter().zip(site_frames).enumerate() {
            if !matched_sites[r] {
                if unmatched == self.params.top {
                    continue;
                }
                unmatched += 1;
            }
            index[r] = Some(kept.len());
            kept.push(ReleaseSite {
                frames,
                frees: stats.frees,
                bytes: (stats.bytes > 0).then_some(stats.bytes),
            });
        }
        for (_, _, report) in stacks.iter_mut() {
            report.release_sites = report
                .release_sites
                .iter()
                .filter_map(|&r| index[r])
                .collect();
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(offsets: &[u64]) -> Vec<FrameKey> {
        offsets
            .iter()
            .map(|&offset| FrameKey::Module("/usr/bin/app".to_owned(), offset))
            .collect()
    }

    #[test]
    fn a_truncated_stack_joins_the_one_complete_stack_it_starts() {
        let mut groups: BTreeMap<GroupKey, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        groups.insert((key(&[1, 2, 3, 4]), false), (vec![1, 2, 3, 4], vec![10]));
        groups.insert((key(&[1, 2]), true), (vec![1, 2], vec![11]));
        // Two complete stacks start with [5, 6]: which one it was is unknown.
        groups.insert((key(&[5, 6, 7]), false), (vec![5, 6, 7], vec![20]));
        groups.insert((key(&[5, 6, 8]), false), (vec![5, 6, 8], vec![21]));
        groups.insert((key(&[5, 6]), true), (vec![5, 6], vec![22]));
        // No complete stack starts with [9].
        groups.insert((key(&[9]), true), (vec![9], vec![30]));
        merge_truncated_prefixes(&mut groups);
        assert_eq!(groups[&(key(&[1, 2, 3, 4]), false)].1, [10, 11]);
        assert!(!groups.contains_key(&(key(&[1, 2]), true)));
        assert_eq!(groups[&(key(&[5, 6]), true)].1, [22]);
        assert_eq!(groups[&(key(&[9]), true)].1, [30]);
        assert_eq!(groups.len(), 5);
    }
}
