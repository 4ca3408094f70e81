//! The always-on process watcher (no eBPF): it samples every process on the host each
//! interval, keeps a bounded history per process identity (pid and start time), fits robust
//! trends to each process's RSS, VSZ, open descriptors and threads with
//! [`crate::watch::trend`], decides which processes are suspected of leaking, forecasts when the
//! growing resource runs out, and follows what the memory of a suspect is made of
//! ([`crate::watch::memory`]).
//!
//! # The rule
//!
//! Each sample appends (time, RSS, VSZ, descriptors, threads) to the process's history: a ring of at most
//! `window_seconds / interval_seconds + 1` samples, none older than `window_seconds`. Only the
//! samples taken once the process was `min_process_age_seconds` old count towards a trend, so
//! start-up growth never does. A resource *trends* when, over the whole mature window or over
//! its most recent `min_trend_seconds` (so that a leak starting in a long-running process is
//! found in about `min_trend_seconds`, not after the window has filled with it):
//!
//! 1. the samples span at least `min_trend_seconds`;
//! 2. [`trend::assess`] finds the series leaking (it keeps growing to the end, tops its
//!    earlier peak, and rises well above its noise), and each third of the window grows at
//!    `min_recent_fraction` of the whole slope at least (Theil-Sen), so a rise confined to part
//!    of the window (a cache filling fast) is not growth across it;
//! 3. the Theil-Sen slope is at least the resource's absolute threshold
//!    (`min_rss_growth_bytes_per_second`, `min_vsz_...`, `min_fd_growth_per_second`,
//!    `min_thread_growth_per_second`);
//! 4. slope × span is at least `min_relative_growth` × the current value;
//! 5. for the recent part only: the last value also tops every earlier value of the window, so
//!    the rising half of a sawtooth whose earlier teeth are in view never counts.
//!
//! A process becomes *suspected* once a resource has trended for `persistence` consecutive
//! samples and the process is older than `min_process_age_seconds`; it stays suspected while
//! any resource trends, and the suspicion clears at the first sample in which none does. Its
//! reasons are the resources trending now.
//!
//! # Urgency
//!
//! Those rules take a minute or more, which is right for a slow leak and too slow for one that
//! exhausts its limit within minutes. So the time to suspect a process also scales with how
//! soon its resource runs out: RSS, descriptors and threads are each checked for *imminent
//! exhaustion* at every sample. The *run* of a series is the end of its longest suffix of mature
//! samples in which no sample falls below the one before by more than [`RUN_TOLERANCE`] of it,
//! from the last of its lowest samples on; a resource is imminent when
//!
//! 1. its run holds [`IMMINENT_MIN_SAMPLES`] samples at least, the Theil-Sen slope of its last
//!    [`IMMINENT_RECENT_SAMPLES`] is at least the resource's absolute threshold, and either the
//!    run began after the first mature sample of the window and ends [`EARLIER_PEAK_MARGIN`] of
//!    its growth above every earlier value (the rising edge of a sawtooth whose earlier teeth are
//!    in view never counts), or it began at the first mature sample and spans
//!    `min_trend_seconds` (a leak already under way when the watcher first saw the process);
//! 2. at that slope the room left below its tightest limit runs out within `imminent_seconds`
//!    (memory: see [`crate::watch::limits`]; descriptors: the soft open-files limit; threads:
//!    `pids.max` up the cgroup tree and `kernel.threads-max`);
//! 3. the run has already used `imminent_min_fraction` of the room it started with (grown ≥
//!    fraction × (grown + room left)): growth confined to a small part of the room, such as a
//!    cache filling fast to a size well below the limit, is never imminent, and the time to
//!    flag scales with the forecast (the run must last that fraction of the time to exhaustion
//!    it started with).
//!
//! An imminent resource makes the process suspected at once (still only past
//! `min_process_age_seconds`), with the reason `exhaustion_imminent` beside the resource's; the
//! suspicion lasts while the resource is imminent or trends. Only the series that grew over the
//! last [`IMMINENT_MIN_SAMPLES`] samples have their run and limits read, so the check costs
//! nothing for the processes that do not grow.
//!
//! The reported growth is the Theil-Sen slope of the trending fit, or else of an imminent run
//! (see below), or else of the whole window
//! (over at most [`SLOPE_POINTS`] evenly spaced samples, which keeps a sample of a thousand
//! processes cheap); the full [`trend::assess`] only runs for a series whose thinned slope comes
//! within a factor of two of the thresholds and whose last value tops the window's first half.
//!
//! A resource's growth that cannot be told from a leak while it lasts is still flagged while
//! it lasts: a cache or a batch that keeps filling for longer than about `min_trend_seconds`
//! plus `persistence` intervals with no earlier, higher peak in the window.
//!
//! # Forecasts
//!
//! Memory runs out at the tightest of the cgroups' memory limits and the host's memory,
//! descriptors at the open-files limit, threads at the tightest of the cgroups' `pids.max`,
//! `kernel.threads-max` and the process's RLIMIT_NPROC (see [`crate::watch::limits`]); the
//! forecast of a suspect is the soonest of its trending or imminent resources'.
//!
//! # Memory classes
//!
//! While a process is suspected, each sample also reads what its memory is made of (heap,
//! anonymous mappings, thread stacks, files, shared memory, swap: [`crate::watch::memory`]), for
//! at most [`MAX_MEMORY_SUSPECTS`] suspects a sample (in pid order), and its view carries each
//! class with its growth since the suspicion began; the history is dropped when the suspicion
//! clears.

use std::collections::{HashMap, VecDeque, hash_map::Entry};

use thiserror::Error;

use crate::config::WatchConfig;
use crate::model::{Limit, ProcessView, Reason};
use crate::watch::limits::{self, CgroupMounts, Cgroups};
use crate::watch::memory::{self, ClassBytes, MemoryHistory};
use crate::watch::procfs::{self, Pid, ProcError, Stat, Status};
use crate::watch::trend::{self, LeakRule};

/// Largest number of samples kept per process, whatever the configuration says.
const MAX_HISTORY: usize = 1024;
/// Samples of a series the reported slope is fitted over at most.
pub const SLOPE_POINTS: usize = 48;
/// The thinned slope must reach this fraction of what a trend needs before the full rule runs.
const GATE_MARGIN: f64 = 0.5;
/// `/proc/PID/status` (anonymous and swapped memory) is re-read at least this often, in
/// samples, and whenever the RSS changed since it was last read.
const STATUS_REFRESH_SAMPLES: u32 = 15;
/// The resources watched, in the order of the per-resource arrays.
const RESOURCES: [Reason; 4] = [Reason::Rss, Reason::Vsz, Reason::Fds, Reason::Threads];
/// Most suspects whose memory classes are read in one sample.
pub const MAX_MEMORY_SUSPECTS: usize = 32;
/// Samples a run of growth must hold before its resource can be imminent.
pub const IMMINENT_MIN_SAMPLES: usize = 4;
/// Samples the slope of a run is fitted over (the latest).
pub const IMMINENT_RECENT_SAMPLES: usize = 5;
/// How far a sample may fall below the one before it, as a fraction, and still continue a run.
pub const RUN_TOLERANCE: f64 = 0.002;
/// A run must end this fraction of its growth above every value before it.
pub const EARLIER_PEAK_MARGIN: f64 = 0.5;

/// Why the watcher could not sample the host or read a cgroup.
#[derive(Debug, Error)]
pub enum WatchError {
    /// The list of processes or the clock could not be read.
    #[error("cannot sample the host: {0}")]
    Host(#[from] ProcError),
}

/// Where the watcher reads processes from: `/proc` in the daemon ([`ProcFs`]), a script in
/// tests. Process readers give [`ProcError::Gone`] for a process that no longer exists.
pub trait ProcSource {
    /// Seconds since boot, the clock of process start times.
    fn uptime_seconds(&mut self) -> Result<f64, ProcError>;
    /// Clock ticks per second, the unit of [`Stat::start_time_ticks`].
    fn clock_ticks_per_second(&self) -> f64;
    /// Bytes per page, the unit of [`Stat::rss_pages`].
    fn page_size(&self) -> u64;
    /// Every process of the host.
    fn pids(&mut self) -> Result<Vec<Pid>, ProcError>;
    /// `/proc/PID/stat`.
    fn stat(&mut self, pid: Pid) -> Result<Stat, ProcError>;
    /// `/proc/PID/status`.
    fn status(&mut self, pid: Pid) -> Result<Status, ProcError>;
    /// Open file descriptors.
    fn open_fds(&mut self, pid: Pid) -> Result<u64, ProcError>;
    /// The cgroups of the process, in each hierarchy.
    fn cgroups(&mut self, pid: Pid) -> Result<Cgroups, ProcError>;
    /// Soft open-files limit; `None` when unlimited.
    fn open_files_limit(&mut self, pid: Pid) -> Result<Option<u64>, ProcError>;
    /// The tightest memory limit of a process in `cgroups` (its cgroups' and their ancestors',
    /// or the host's) with the room left below it; `None` when none can be read.
    fn memory_room(&mut self, cgroups: &Cgroups) -> Option<Limit>;
    /// The tightest limit on the threads of process `pid`, which has `threads` and is in
    /// `cgroups`, with the room left.
    fn thread_room(&mut self, pid: Pid, threads: u64, cgroups: &Cgroups) -> Option<Limit>;
    /// What the process's memory is made of now (see [`crate::watch::memory`]).
    fn memory(&mut self, pid: Pid) -> Result<ClassBytes, ProcError>;
}

/// The host's `/proc` and its cgroup hierarchies.
#[derive(Debug)]
pub struct ProcFs {
    mounts: CgroupMounts,
    page_size: u64,
    ticks_per_second: f64,
    stats: procfs::StatReader,
}

impl ProcFs {
    /// Reads the page size and clock tick once.
    pub fn new() -> Self {
        ProcFs {
            mounts: CgroupMounts::read(),
            page_size: procfs::page_size(),
            ticks_per_second: procfs::clock_ticks_per_second() as f64,
            stats: procfs::StatReader::default(),
        }
    }
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcSource for ProcFs {
    fn uptime_seconds(&mut self) -> Result<f64, ProcError> {
        procfs::read_uptime()
    }

    fn clock_ticks_per_second(&self) -> f64 {
        self.ticks_per_second
    }

    fn page_size(&self) -> u64 {
        self.page_size
    }

    fn pids(&mut self) -> Result<Vec<Pid>, ProcError> {
        let pids = procfs::list_pids()?;
        // list_pids is sorted.
        self.stats.retain(|pid| pids.binary_search(&pid).is_ok());
        Ok(pids)
    }

    fn stat(&mut self, pid: Pid) -> Result<Stat, ProcError> {
        self.stats.read(pid)
    }

    fn status(&mut self, pid: Pid) -> Result<Status, ProcError> {
        procfs::read_status(pid)
    }

    fn open_fds(&mut self, pid: Pid) -> Result<u64, ProcError> {
        procfs::open_fds(pid)
    }

    fn cgroups(&mut self, pid: Pid) -> Result<Cgroups, ProcError> {
        limits::read_cgroups(pid)
    }

    fn open_files_limit(&mut self, pid: Pid) -> Result<Option<u64>, ProcError> {
        procfs::read_open_files_limit(pid)
    }

    fn memory_room(&mut self, cgroups: &Cgroups) -> Option<Limit> {
        let host = limits::read_host_memory()
            .map_err(|err| log::debug!("process watcher: {err}"))
            .ok();
        limits::memory_room(&self.mounts, cgroups, host)
    }

    fn memory(&mut self, pid: Pid) -> Result<ClassBytes, ProcError> {
        memory::sample(pid)
    }

    fn thread_room(&mut self, pid: Pid, threads: u64, cgroups: &Cgroups) -> Option<Limit> {
        limits::tighter(
            limits::thread_room(&self.mounts, cgroups, limits::read_host_threads()),
            limits::nproc_room(pid, threads),
        )
    }
}

/// Seconds until `headroom` is used up at `rate` per second; `None` unless `rate` is positive.
fn seconds_until(headroom: u64, rate: f64) -> Option<f64> {
    (rate > 0.0 && rate.is_finite()).then(|| headroom as f64 / rate)
}

/// One sample of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Seconds since boot.
    time: f64,
    rss: u64,
    vsz: u64,
    /// `None` when the descriptors could not be counted (not permitted).
    fds: Option<u64>,
    threads: u64,
}

/// How one resource's series fares against the rule.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fit {
    /// Growth per second (Theil-Sen).
    slope: f64,
    /// Whether the resource trends in this sample.
    trends: bool,
}

impl Fit {
    const FLAT: Fit = Fit {
        slope: 0.0,
        trends: false,
    };
}

/// Reusable buffers for the evaluation, so a sample does not allocate per process.
#[derive(Debug, Default)]
struct Scratch {
    series: Vec<(f64, f64)>,
    thin: Vec<(f64, f64)>,
}

/// The Theil-Sen slope of `points`, fitted over at most [`SLOPE_POINTS`] evenly spaced ones
/// (the first and last included); 0 when it cannot be computed.
fn thinned_slope(points: &[(f64, f64)], thin: &mut Vec<(f64, f64)>) -> f64 {
    let n = points.len();
    let fitted: &[(f64, f64)] = if n <= SLOPE_POINTS {
        points
    } else {
        thin.clear();
        thin.extend((0..SLOPE_POINTS).map(|k| points[k * (n - 1) / (SLOPE_POINTS - 1)]));
        thin
    };
    trend::theil_sen(fitted).unwrap_or(0.0)
}

/// Fits one resource's series, (seconds since boot, value) in time order, of which the points
/// from `mature_from` on were taken once the process was old enough to count. `min_growth` is
/// the resource's absolute threshold. See the module documentation for the rule.
fn fit_series(
    points: &[(f64, f64)],
    mature_from: usize,
    min_growth: f64,
    config: &WatchConfig,
    rule: &LeakRule,
    thin: &mut Vec<(f64, f64)>,
) -> Fit {
    let Some(&(_, first)) = points.first() else {
        return Fit::FLAT;
    };
    if points.iter().all(|&(_, v)| v == first) {
        return Fit::FLAT;
    }
    let slope = thinned_slope(points, thin);
    let mature = &points[mature_from.min(points.len())..];
    let (Some(&(first_t, _)), Some(&(last_t, current))) = (mature.first(), mature.last()) else {
        return Fit {
            slope,
            trends: false,
        };
    };
    if last_t - first_t < config.min_trend_seconds {
        return Fit {
            slope,
            trends: false,
        };
    }
    // The whole mature window, then its shortest suffix spanning min_trend_seconds.
    let recent = mature
        .partition_point(|&(t, _)| t <= last_t - config.min_trend_seconds)
        .saturating_sub(1);
    for start in std::iter::once(0).chain((recent > 0).then_some(recent)) {
        let window = &mature[start..];
        // Necessary for trend::assess (its earlier-peak criterion), here extended to the
        // samples before the window.
        let earlier_peak = mature[..start + window.len() / 2]
            .iter()
            .fold(f64::NEG_INFINITY, |peak, &(_, v)| peak.max(v));
        if current <= earlier_peak {
            continue;
        }
        let span = last_t - window[0].0;
        let needed = min_growth.max(config.min_relative_growth * current / span);
        let cheap = if start == 0 && mature_from == 0 {
            slope
        } else {
            thinned_slope(window, thin)
        };
        if cheap < GATE_MARGIN * needed {
            continue;
        }
        let assessment = trend::assess(window, rule);
        if assessment.leaking
            && assessment.slope_per_second >= needed
            && grows_throughout(window, assessment.slope_per_second, rule)
        {
            return Fit {
                slope: assessment.slope_per_second,
                trends: true,
            };
        }
    }
    Fit {
        slope,
        trends: false,
    }
}

/// Whether each third of `window` grows at `min_recent_fraction` of the window's `slope` at
/// least (Theil-Sen): growth throughout the window, not a rise confined to part of it (a cache
/// filling fast, which [`trend::assess`] alone takes for a leak while it fills).
fn grows_throughout(window: &[(f64, f64)], slope: f64, rule: &LeakRule) -> bool {
    let third = window.len().div_ceil(3).max(1);
    window.chunks(third).all(|part| {
        let growth = trend::theil_sen(part).unwrap_or(0.0);
        growth > 0.0 && growth >= rule.min_recent_fraction * slope
    })
}

/// A run of growth at the end of a series (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    /// Growth from the run's first sample to its last.
    grown: f64,
    /// Theil-Sen slope of its latest [`IMMINENT_RECENT_SAMPLES`] samples, per second.
    slope: f64,
}

/// The run of growth ending `points` (the mature samples, in time order) when it qualifies
/// (condition 1 of the module documentation): it holds [`IMMINENT_MIN_SAMPLES`] samples, grows
/// at `min_growth` per second at least, and either began after the first sample (the level it
/// grew from was seen) and rose well past every value before it, or began at the first sample
/// and spans `min_span` seconds.
fn growth_run(points: &[(f64, f64)], min_growth: f64, min_span: f64) -> Option<Run> {
    let n = points.len();
    if n < IMMINENT_MIN_SAMPLES || points[n - 1].1 <= points[n - IMMINENT_MIN_SAMPLES].1 {
        return None;
    }
    let after_fall = points
        .windows(2)
        .rposition(|pair| pair[1].1 < pair[0].1 - RUN_TOLERANCE * pair[0].1.abs())
        .map_or(0, |i| i + 1);
    // The run starts at its lowest sample (the last of them): a flat stretch before it is not
    // growth.
    let lowest = points[after_fall..]
        .iter()
        .fold(f64::INFINITY, |low, &(_, v)| low.min(v));
    let start = after_fall
        + points[after_fall..]
            .iter()
            .rposition(|&(_, v)| v == lowest)?;
    let run = &points[start..];
    if run.len() < IMMINENT_MIN_SAMPLES {
        return None;
    }
    let (first_t, last_t, last) = (run[0].0, run[run.len() - 1].0, run[run.len() - 1].1);
    let grown = last - lowest;
    let earlier_peak = points[..start]
        .iter()
        .fold(f64::NEG_INFINITY, |peak, &(_, v)| peak.max(v));
    let qualifies = if start == 0 {
        last_t - first_t >= min_span
    } else {
        last - earlier_peak >= EARLIER_PEAK_MARGIN * grown
    };
    if !qualifies {
        return None;
    }
    let slope = trend::theil_sen(&run[run.len().saturating_sub(IMMINENT_RECENT_SAMPLES)..])?;
    (slope > 0.0 && slope >= min_growth).then_some(Run { grown, slope })
}

/// Whether a resource whose run is `run` and which has `remaining` room below its limit runs
/// out imminently (conditions 2 and 3 of the module documentation); gives the forecast.
fn imminent(run: Run, remaining: u64, config: &WatchConfig) -> Option<f64> {
    let remaining = remaining as f64;
    let forecast = remaining / run.slope;
    (forecast <= config.imminent_seconds
        && run.grown >= config.imminent_min_fraction * (run.grown + remaining))
        .then_some(forecast)
}

/// The per-resource thresholds of `config`, in the order of [`RESOURCES`].
fn thresholds(config: &WatchConfig) -> [f64; 4] {
    [
        config.min_rss_growth_bytes_per_second,
        config.min_vsz_growth_bytes_per_second,
        config.min_fd_growth_per_second,
        config.min_thread_growth_per_second,
    ]
}

/// Fits RSS, VSZ, descriptors and threads of `history` (in time order) for a process that
/// started at `start_seconds` since boot; gives each fit and the run of growth each ends with.
fn evaluate(
    history: &VecDeque<Sample>,
    start_seconds: f64,
    config: &WatchConfig,
    rule: &LeakRule,
    scratch: &mut Scratch,
) -> ([Fit; 4], [Option<Run>; 4]) {
    let mature = |t: f64| t - start_seconds >= config.min_process_age_seconds;
    let thresholds = thresholds(config);
    let mut fits = [Fit::FLAT; 4];
    let mut runs = [None; 4];
    for (i, fit) in fits.iter_mut().enumerate() {
        scratch.series.clear();
        scratch
            .series
            .extend(history.iter().filter_map(|s| match i {
                0 => Some((s.time, s.rss as f64)),
                1 => Some((s.time, s.vsz as f64)),
                2 => s.fds.map(|f| (s.time, f as f64)),
                _ => Some((s.time, s.threads as f64)),
            }));
        let mature_from = scratch.series.partition_point(|&(t, _)| !mature(t));
        *fit = fit_series(
            &scratch.series,
            mature_from,
            thresholds[i],
            config,
            rule,
            &mut scratch.thin,
        );
        if RESOURCES[i] != Reason::Vsz {
            runs[i] = growth_run(
                &scratch.series[mature_from..],
                thresholds[i],
                config.min_trend_seconds,
            );
        }
    }
    (fits, runs)
}

/// What the watcher keeps about one process identity.
#[derive(Debug)]
struct Tracked {
    start_time_ticks: u64,
    /// Start time in seconds since boot.
    start_seconds: f64,
    comm: String,
    cgroups: Cgroups,
    unit: Option<String>,
    history: VecDeque<Sample>,
    /// The last `/proc/PID/status` read, the RSS at that time and the samples since.
    status: Option<Status>,
    status_rss: u64,
    samples_since_status: u32,
    /// Consecutive samples each resource has trended for.
    streaks: [u32; 4],
    suspected: bool,
    /// The tightest memory limit, as last read.
    memory_limit: Option<Limit>,
    /// What its memory is made of, sampled while it is suspected.
    memory: Option<MemoryHistory>,
    /// The sample that last saw it.
    seen: u64,
}

impl Tracked {
    fn needs_status(&self, rss: u64) -> bool {
        self.status.is_none()
            || self.status_rss != rss
            || self.samples_since_status >= STATUS_REFRESH_SAMPLES
    }

    /// Updates the streaks and the suspicion with this sample's fits and the resources running
    /// out imminently; gives the reasons.
    fn judge(
        &mut self,
        fits: &[Fit; 4],
        imminent: &[bool; 4],
        age: f64,
        config: &WatchConfig,
    ) -> Vec<Reason> {
        for (streak, fit) in self.streaks.iter_mut().zip(fits) {
            *streak = if fit.trends {
                streak.saturating_add(1)
            } else {
                0
            };
        }
        let mut reasons: Vec<Reason> = RESOURCES
            .iter()
            .zip(fits.iter().zip(imminent))
            .filter(|(_, (fit, imminent))| fit.trends || **imminent)
            .map(|(&reason, _)| reason)
            .collect();
        let urgent = imminent.contains(&true);
        if reasons.is_empty() {
            self.suspected = false;
        } else if !self.suspected
            && age >= config.min_process_age_seconds
            && (urgent || self.streaks.iter().any(|&s| s >= config.persistence))
        {
            self.suspected = true;
        }
        if urgent {
            reasons.push(Reason::ExhaustionImminent);
        }
        if self.suspected { reasons } else { Vec::new() }
    }
}

/// Samples every process and keeps its recent history; see the module documentation.
#[derive(Debug)]
pub struct Watcher<S = ProcFs> {
    config: WatchConfig,
    rule: LeakRule,
    source: S,
    processes: HashMap<Pid, Tracked>,
    generation: u64,
    scratch: Scratch,
}

impl Watcher<ProcFs> {
    /// A watcher of the host's processes.
    pub fn new(config: WatchConfig) -> Self {
        Self::with_source(config, ProcFs::new())
    }
}

impl<S: ProcSource> Watcher<S> {
    /// A watcher of the processes `source` gives.
    pub fn with_source(config: WatchConfig, source: S) -> Self {
        Watcher {
            config,
            rule: LeakRule::default(),
            source,
            processes: HashMap::new(),
            generation: 0,
            scratch: Scratch::default(),
        }
    }

    /// Applies a new configuration (on SIGHUP). Histories and suspicions are kept; the next
    /// sample trims the histories to the new window.
    pub fn set_config(&mut self, config: WatchConfig) {
        self.config = config;
    }

    /// Samples every process once and gives its view, most relevant first: suspected, then by
    /// RSS growth, then by RSS. A process that exits while it is read is left out; when the
    /// host itself cannot be read, the failure is logged and the result is empty, with the
    /// histories kept.
    pub fn sample(&mut self) -> Vec<ProcessView> {
        self.try_sample().unwrap_or_else(|err| {
            log::warn!("process watcher: {err}");
            Vec::new()
        })
    }

    fn try_sample(&mut self) -> Result<Vec<ProcessView>, WatchError> {
        let now = self.source.uptime_seconds()?;
        let pids = self.source.pids()?;
        self.generation += 1;
        let mut memory_budget = MAX_MEMORY_SUSPECTS;
        let mut views = Vec::with_capacity(pids.len());
        for pid in pids {
            if let Some(view) = self.observe(pid, now, &mut memory_budget) {
                views.push(view);
            }
        }
        let generation = self.generation;
        self.processes.retain(|_, t| t.seen == generation);
        if self.processes.capacity() > 64 && self.processes.len() * 4 < self.processes.capacity() {
            self.processes.shrink_to(self.processes.len() * 2);
        }
        views.sort_by(|a, b| {
            b.suspected
                .cmp(&a.suspected)
                .then(
                    b.rss_growth_bytes_per_second
                        .total_cmp(&a.rss_growth_bytes_per_second),
                )
                .then(b.rss_bytes.cmp(&a.rss_bytes))
                .then(a.pid.cmp(&b.pid))
        });
        Ok(views)
    }

    /// Most samples a history holds under the current configuration.
    fn history_capacity(&self) -> usize {
        let samples = self.config.window_seconds / self.config.interval_seconds;
        if samples.is_finite() && samples > 0.0 {
            (samples.ceil() as usize)
                .saturating_add(1)
                .clamp(2, MAX_HISTORY)
        } else {
            MAX_HISTORY
        }
    }

    /// Samples one process; `None` when it is gone, a kernel thread or a zombie, or cannot be
    /// read. `memory_budget` counts down the suspects whose memory classes may still be read.
    fn observe(&mut self, pid: Pid, now: f64, memory_budget: &mut usize) -> Option<ProcessView> {
        let stat = match self.source.stat(pid) {
            Ok(stat) => stat,
            Err(ProcError::Gone { .. }) => return None,
            Err(err) => {
                log::debug!("process watcher: {err}");
                if let Some(tracked) = self.processes.get_mut(&pid) {
                    tracked.seen = self.generation;
                }
                return None;
            }
        };
        if stat.rss_pages == 0 && stat.vsize_bytes == 0 {
            return None;
        }
        let rss = stat.rss_pages.saturating_mul(self.source.page_size());
        let known = self
            .processes
            .get(&pid)
            .filter(|t| t.start_time_ticks == stat.start_time_ticks);
        let status = if known.is_none_or(|t| t.needs_status(rss)) {
            match self.source.status(pid) {
                Ok(status) => Some(status),
                Err(ProcError::Gone { .. }) => return None,
                Err(err) => {
                    log::debug!("process watcher: {err}");
                    None
                }
            }
        } else {
            None
        };
        let fds = match self.source.open_fds(pid) {
            Ok(fds) => Some(fds),
            Err(ProcError::Gone { .. }) => return None,
            Err(_) => None,
        };
        let capacity = self.history_capacity();
        let tracked = match self.processes.entry(pid) {
            Entry::Occupied(entry) if entry.get().start_time_ticks == stat.start_time_ticks => {
                entry.into_mut()
            }
            entry => {
                let cgroups = match self.source.cgroups(pid) {
                    Ok(cgroups) => cgroups,
                    Err(ProcError::Gone { .. }) => return None,
                    Err(err) => {
                        log::debug!("process watcher: {err}");
                        Cgroups::default()
                    }
                };
                let tracked = Tracked {
                    start_time_ticks: stat.start_time_ticks,
                    start_seconds: stat.start_time_ticks as f64
                        / self.source.clock_ticks_per_second(),
                    comm: String::new(),
                    unit: cgroups.unified.as_deref().and_then(procfs::systemd_unit),
                    cgroups,
                    history: VecDeque::new(),
                    status: None,
                    status_rss: 0,
                    samples_since_status: 0,
                    streaks: [0; 4],
                    suspected: false,
                    memory_limit: None,
                    memory: None,
                    seen: 0,
                };
                match entry {
                    Entry::Occupied(mut entry) => {
                        entry.insert(tracked);
                        entry.into_mut()
                    }
                    Entry::Vacant(entry) => entry.insert(tracked),
                }
            }
        };
        tracked.seen = self.generation;
        tracked.comm = stat.comm;
        match status {
            Some(status) => {
                tracked.status = Some(status);
                tracked.status_rss = rss;
                tracked.samples_since_status = 0;
            }
            None => tracked.samples_since_status = tracked.samples_since_status.saturating_add(1),
        }

        let oldest = now - self.config.window_seconds;
        while tracked
            .history
            .front()
            .is_some_and(|s| s.time < oldest || tracked.history.len() >= capacity)
        {
            tracked.history.pop_front();
        }
        tracked.history.push_back(Sample {
            time: now,
            rss,
            vsz: stat.vsize_bytes,
            fds,
            threads: stat.num_threads,
        });

        let (fits, runs) = evaluate(
            &tracked.history,
            tracked.start_seconds,
            &self.config,
            &self.rule,
            &mut self.scratch,
        );
        // The room left below each resource's limit, read only for a resource that trends or
        // ends with a run of growth.
        let mut rooms: [Option<u64>; 4] = [None; 4];
        for (i, resource) in RESOURCES.iter().enumerate() {
            if !fits[i].trends && runs[i].is_none() {
                continue;
            }
            rooms[i] = match resource {
                Reason::Rss => {
                    tracked.memory_limit = self.source.memory_room(&tracked.cgroups);
                    tracked.memory_limit.as_ref().map(|limit| limit.remaining)
                }
                Reason::Fds => match (self.source.open_files_limit(pid), fds) {
                    (Ok(Some(limit)), Some(open)) => Some(limit.saturating_sub(open)),
                    _ => None,
                },
                Reason::Threads => self
                    .source
                    .thread_room(pid, stat.num_threads, &tracked.cgroups)
                    .map(|limit| limit.remaining),
                Reason::Vsz | Reason::ExhaustionImminent => None,
            };
        }
        let mut imminent_forecasts = [None; 4];
        for i in 0..RESOURCES.len() {
            if let (Some(run), Some(room)) = (runs[i], rooms[i]) {
                imminent_forecasts[i] = imminent(run, room, &self.config);
            }
        }
        let age = now - tracked.start_seconds;
        let reasons = tracked.judge(
            &fits,
            &imminent_forecasts.map(|f| f.is_some()),
            age,
            &self.config,
        );
        // The growth reported: the trending fit's, else the imminent run's, else the window's.
        let slopes: [f64; 4] = std::array::from_fn(|i| match runs[i] {
            Some(run) if !fits[i].trends && imminent_forecasts[i].is_some() => run.slope,
            _ => fits[i].slope,
        });

        let forecasts = (0..RESOURCES.len()).filter_map(|i| {
            if !reasons.contains(&RESOURCES[i]) {
                return None;
            }
            let trend = rooms[i].and_then(|room| seconds_until(room, fits[i].slope));
            match (trend, imminent_forecasts[i]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        let seconds_until_exhaustion = forecasts.reduce(f64::min);
        if !tracked.suspected {
            tracked.memory = None;
        } else if *memory_budget > 0 {
            *memory_budget -= 1;
            match self.source.memory(pid) {
                Ok(bytes) => tracked
                    .memory
                    .get_or_insert_with(MemoryHistory::default)
                    .push(now, bytes, capacity),
                Err(err) => log::debug!("process watcher: memory of {pid}: {err}"),
            }
        }
        let status = tracked.status.unwrap_or_default();
        Some(ProcessView {
            pid,
            start_time_ticks: tracked.start_time_ticks,
            comm: tracked.comm.clone(),
            unit: tracked.unit.clone(),
            cgroup: tracked.cgroups.unified.clone(),
            rss_bytes: rss,
            vsz_bytes: stat.vsize_bytes,
            anon_bytes: status.rss_anon,
            swap_bytes: status.vm_swap,
            threads: stat.num_threads,
            open_fds: fds.unwrap_or(0),
            rss_growth_bytes_per_second: slopes[0],
            vsz_growth_bytes_per_second: slopes[1],
            fd_growth_per_second: slopes[2],
            thread_growth_per_second: slopes[3],
            suspected: tracked.suspected,
            reasons,
            seconds_until_exhaustion,
            memory_limit: tracked.memory_limit.clone(),
            traced: false,
            trace_method: None,
            outstanding_bytes: None,
            latest_report: None,
            memory: tracked.memory.as_ref().and_then(MemoryHistory::memory),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::model::LimitKind;
    use crate::testing::Rng;

    const MIB: f64 = 1024.0 * 1024.0;
    /// Seconds since boot of the first simulated sample.
    const BOOT_OFFSET: f64 = 10_000.0;
    const TICKS: f64 = 100.0;
    const PAGE: u64 = 4096;

    #[derive(Debug, Clone)]
    struct FakeProc {
        start_ticks: u64,
        comm: String,
        cgroup: Option<String>,
        rss: u64,
        vsz: u64,
        /// `None`: counting them is not permitted.
        fds: Option<u64>,
        fd_limit: Option<u64>,
        threads: u64,
        /// Exits between the read of its stat and of its status.
        vanishes_mid_read: bool,
    }

    impl FakeProc {
        fn new(start_seconds: f64) -> Self {
            FakeProc {
                start_ticks: (start_seconds * TICKS) as u64,
                comm: "fake".into(),
                cgroup: Some("/system.slice/fake.service".into()),
                rss: 50 << 20,
                vsz: 1 << 30,
                fds: Some(20),
                fd_limit: Some(1024),
                threads: 2,
                vanishes_mid_read: false,
            }
        }
    }

    /// A scripted host.
    #[derive(Debug, Default)]
    struct Script {
        now: f64,
        procs: BTreeMap<Pid, FakeProc>,
        /// The host's room for memory.
        mem_available: u64,
        /// The room below the memory limit of a cgroup (by unified path).
        headroom: HashMap<String, u64>,
        /// The room for threads of every process.
        thread_room: Option<u64>,
        status_reads: usize,
        cgroup_reads: usize,
        room_reads: usize,
        memory_reads: usize,
    }

    impl Script {
        fn get(&self, pid: Pid) -> Result<&FakeProc, ProcError> {
            self.procs.get(&pid).ok_or(ProcError::Gone { pid })
        }
    }

    impl ProcSource for Script {
        fn uptime_seconds(&mut self) -> Result<f64, ProcError> {
            Ok(self.now)
        }

        fn clock_ticks_per_second(&self) -> f64 {
            TICKS
        }

        fn page_size(&self) -> u64 {
            PAGE
        }

        fn pids(&mut self) -> Result<Vec<Pid>, ProcError> {
            Ok(self.procs.keys().copied().collect())
        }

        fn stat(&mut self, pid: Pid) -> Result<Stat, ProcError> {
            let p = self.get(pid)?;
            Ok(Stat {
                comm: p.comm.clone(),
                state: 'S',
                num_threads: p.threads,
                start_time_ticks: p.start_ticks,
                vsize_bytes: p.vsz,
                rss_pages: p.rss / PAGE,
            })
        }

        fn status(&mut self, pid: Pid) -> Result<Status, ProcError> {
            self.status_reads += 1;
            let p = self.get(pid)?;
            if p.vanishes_mid_read {
                return Err(ProcError::Gone { pid });
            }
            Ok(Status {
                vm_rss: p.rss,
                vm_size: p.vsz,
                rss_anon: p.rss / 2,
                rss_file: p.rss / 2,
                vm_swap: 4096,
                threads: 2,
            })
        }

        fn open_fds(&mut self, pid: Pid) -> Result<u64, ProcError> {
            self.get(pid)?.fds.ok_or(ProcError::PermissionDenied {
                path: std::path::PathBuf::from(format!("/proc/{pid}/fd")),
            })
        }

        fn cgroups(&mut self, pid: Pid) -> Result<Cgroups, ProcError> {
            self.cgroup_reads += 1;
            Ok(Cgroups {
                unified: self.get(pid)?.cgroup.clone(),
                ..Cgroups::default()
            })
        }

        fn open_files_limit(&mut self, pid: Pid) -> Result<Option<u64>, ProcError> {
            Ok(self.get(pid)?.fd_limit)
        }

        fn memory_room(&mut self, cgroups: &Cgroups) -> Option<Limit> {
            self.room_reads += 1;
            let cgroup = cgroups.unified.as_ref();
            Some(match cgroup.and_then(|c| self.headroom.get(c)) {
                Some(&remaining) if remaining < self.mem_available => Limit {
                    kind: LimitKind::CgroupV2Max,
                    cgroup: cgroup.cloned(),
                    limit: 1 << 30,
                    remaining,
                },
                _ => Limit {
                    kind: LimitKind::HostMemory,
                    cgroup: None,
                    limit: 24 << 30,
                    remaining: self.mem_available,
                },
            })
        }

        fn thread_room(&mut self, _: Pid, _: u64, _: &Cgroups) -> Option<Limit> {
            self.thread_room.map(|remaining| Limit {
                kind: LimitKind::CgroupV2Pids,
                cgroup: None,
                limit: 1000,
                remaining,
            })
        }

        /// Up to 50 MiB of the RSS are thread stacks, the rest heap.
        fn memory(&mut self, pid: Pid) -> Result<ClassBytes, ProcError> {
            self.memory_reads += 1;
            let p = self.get(pid)?;
            let stacks = p.rss.min(50 << 20);
            Ok(ClassBytes {
                heap: p.rss - stacks,
                thread_stacks: stacks,
                ..ClassBytes::default()
            })
        }
    }

    fn scripted() -> Watcher<Script> {
        let script = Script {
            now: BOOT_OFFSET,
            mem_available: 8 << 30,
            thread_room: Some(10_000),
            ..Script::default()
        };
        Watcher::with_source(WatchConfig::default(), script)
    }

    /// (rss, vsz, fds) at a time in seconds after the first sample.
    type Series = Box<dyn FnMut(f64) -> (f64, f64, f64)>;

    /// Sets a process's figures at a time in seconds after the first sample.
    type Driver = Box<dyn FnMut(f64, &mut FakeProc)>;

    /// Observes processes (pid 100, 101, ...), each started `age` seconds before the first
    /// sample, following their series, every 2 s for `seconds`; gives each process's views with
    /// the time (after the first sample) each was taken.
    fn simulate(processes: Vec<(f64, Series)>, seconds: f64) -> Vec<Vec<(f64, ProcessView)>> {
        let drivers = processes
            .into_iter()
            .map(|(age, mut f)| {
                let driver: Driver = Box::new(move |t, proc: &mut FakeProc| {
                    let (rss, vsz, fds) = f(t);
                    proc.rss = rss.max(0.0) as u64;
                    proc.vsz = vsz.max(0.0) as u64;
                    proc.fds = Some(fds.max(0.0).round() as u64);
                });
                (age, driver)
            })
            .collect();
        drive(drivers, seconds).0
    }

    /// [`simulate`] with drivers that set any figure; also gives the watcher.
    fn drive(
        processes: Vec<(f64, Driver)>,
        seconds: f64,
    ) -> (Vec<Vec<(f64, ProcessView)>>, Watcher<Script>) {
        let mut watcher = scripted();
        let count = processes.len();
        let mut drivers: Vec<Driver> = Vec::new();
        for (i, (age, f)) in processes.into_iter().enumerate() {
            let proc = FakeProc::new(BOOT_OFFSET - age);
            watcher.source.procs.insert(100 + i as Pid, proc);
            drivers.push(f);
        }
        let mut views = vec![Vec::new(); count];
        let mut t = 0.0;
        while t <= seconds {
            watcher.source.now = BOOT_OFFSET + t;
            for (i, f) in drivers.iter_mut().enumerate() {
                f(t, watcher.source.procs.get_mut(&(100 + i as Pid)).unwrap());
            }
            for view in watcher.sample() {
                views[(view.pid - 100) as usize].push((t, view));
            }
            t += 2.0;
        }
        (views, watcher)
    }

    fn first_suspicion(views: &[(f64, ProcessView)]) -> Option<&(f64, ProcessView)> {
        views.iter().find(|(_, v)| v.suspected)
    }

    fn old(f: impl FnMut(f64) -> (f64, f64, f64) + 'static) -> (f64, Series) {
        (3600.0, Box::new(f))
    }

    #[test]
    fn leaks_are_flagged_within_two_minutes() {
        const RSS_RATE: f64 = 256.0 * 1024.0;
        const VSZ_RATE: f64 = 5.0 * MIB;
        const FD_RATE: f64 = 20.0;
        for onset in [0.0, 600.0] {
            let mut processes = Vec::new();
            for seed in 0..10 {
                let mut rng = Rng(seed);
                processes.push(old(move |t| {
                    let leak = RSS_RATE * (t - onset).max(0.0);
                    (
                        100.0 * MIB + leak + 64.0 * 1024.0 * rng.normal(),
                        2048.0 * MIB,
                        40.0,
                    )
                }));
                let mut rng = Rng(seed + 100);
                processes.push(old(move |t| {
                    let leak = VSZ_RATE * (t - onset).max(0.0);
                    (80.0 * MIB, 2048.0 * MIB + leak + MIB * rng.normal(), 40.0)
                }));
                // VSZ in 64 MiB arenas at 5 MiB/s on average.
                processes.push(old(move |t| {
                    let arenas =
                        (VSZ_RATE * (t - onset + seed as f64).max(0.0) / (64.0 * MIB)).floor();
                    (80.0 * MIB, 2048.0 * MIB + 64.0 * MIB * arenas, 40.0)
                }));
                let mut rng = Rng(seed + 200);
                processes.push(old(move |t| {
                    let leak = FD_RATE * (t - onset).max(0.0);
                    (80.0 * MIB, 2048.0 * MIB, 50.0 + leak + 2.0 * rng.normal())
                }));
            }
            let views = simulate(processes, onset + 240.0);
            for (i, views) in views.iter().enumerate() {
                let (reason, rate) = [
                    (Reason::Rss, RSS_RATE),
                    (Reason::Vsz, VSZ_RATE),
                    (Reason::Vsz, VSZ_RATE),
                    (Reason::Fds, FD_RATE),
                ][i % 4];
                let Some((t, view)) = first_suspicion(views) else {
                    panic!("process {i} (onset {onset}) never suspected");
                };
                assert!(*t > onset && *t <= onset + 120.0, "process {i}: at {t}");
                // 20 descriptors a second run out of the 1024 allowed within minutes.
                let mut expected = vec![reason];
                if reason == Reason::Fds {
                    expected.push(Reason::ExhaustionImminent);
                }
                assert_eq!(view.reasons, expected, "process {i}");
                let slope = match reason {
                    Reason::Rss => view.rss_growth_bytes_per_second,
                    Reason::Vsz => view.vsz_growth_bytes_per_second,
                    Reason::Fds => view.fd_growth_per_second,
                    Reason::Threads | Reason::ExhaustionImminent => view.thread_growth_per_second,
                };
                assert!((slope - rate).abs() < 0.25 * rate, "process {i}: {slope}");
                // Once found, a smooth leak stays suspected while it leaks; a leak in 64 MiB
                // steps every 13 s drops out now and then (about a third of the samples) while
                // a third of the 60 s window holds a single step near its edge.
                let kept = views.iter().filter(|(s, v)| s >= t && v.suspected).count();
                let since = views.iter().filter(|(s, _)| s >= t).count();
                if i % 4 == 2 {
                    assert!(kept * 2 >= since, "process {i}: {kept} of {since}");
                } else {
                    assert_eq!(kept, since, "process {i}");
                }
                if reason == Reason::Vsz {
                    assert_eq!(view.seconds_until_exhaustion, None);
                } else {
                    assert!(view.seconds_until_exhaustion.is_some_and(|s| s >= 0.0));
                }
            }
        }
    }

    #[test]
    fn harmless_growth_is_never_flagged() {
        let mut processes: Vec<(f64, Series)> = Vec::new();
        for seed in 0..4 {
            // Start-up: a young process loads 250 MiB and opens 200 descriptors in 40 s.
            let mut rng = Rng(seed);
            processes.push((
                0.0,
                Box::new(move |t| {
                    let loaded = (t / 40.0).min(1.0);
                    let noise = 64.0 * 1024.0 * rng.normal();
                    (
                        5.0 * MIB + 250.0 * MIB * loaded + noise,
                        300.0 * MIB + 1024.0 * MIB * loaded,
                        3.0 + 200.0 * loaded,
                    )
                }),
            ));
            // A cache filling 200 MiB in 40 s at t = 300, then plateauing.
            let mut rng = Rng(seed + 10);
            processes.push(old(move |t| {
                let fill = ((t - 300.0) / 40.0).clamp(0.0, 1.0);
                (
                    100.0 * MIB + 200.0 * MIB * fill + 128.0 * 1024.0 * rng.normal(),
                    2048.0 * MIB,
                    30.0,
                )
            }));
            // A cache saturating exponentially (time constant 15 s) from t = 200.
            let mut rng = Rng(seed + 20);
            processes.push(old(move |t| {
                let fill = if t < 200.0 {
                    0.0
                } else {
                    1.0 - (-(t - 200.0) / 15.0).exp()
                };
                (
                    100.0 * MIB + 200.0 * MIB * fill + 128.0 * 1024.0 * rng.normal(),
                    2048.0 * MIB,
                    30.0,
                )
            }));
            // Pure noise.
            let mut rng = Rng(seed + 30);
            processes.push(old(move |_| {
                (
                    300.0 * MIB + MIB * rng.normal(),
                    2048.0 * MIB + 4.0 * MIB * rng.normal(),
                    100.0 + 3.0 * rng.normal(),
                )
            }));
        }
        // Sawtooth batches: memory and descriptors rise over up to 60 s and are released, at
        // every phase.
        for period in [10.0, 20.0, 30.0, 46.0, 60.0] {
            for phase in [0.0, 4.0, 8.0, 14.0, 22.0, 36.0, 52.0] {
                let mut rng = Rng(period as u64 * 100 + phase as u64);
                processes.push(old(move |t| {
                    let position = ((t + phase) % period) / period;
                    let noise = rng.normal();
                    (
                        100.0 * MIB + 200.0 * MIB * position + MIB * noise,
                        2048.0 * MIB + 512.0 * MIB * position,
                        30.0 + 300.0 * position + noise,
                    )
                }));
            }
        }
        // Longer batches, watched from the end of one (their earlier peak is in view).
        for period in [90.0, 120.0, 180.0, 240.0] {
            let mut rng = Rng(period as u64);
            processes.push(old(move |t| {
                let position = ((t + period - 2.0) % period) / period;
                let noise = rng.normal();
                (
                    100.0 * MIB + 200.0 * MIB * position + MIB * noise,
                    2048.0 * MIB + 512.0 * MIB * position,
                    30.0 + 300.0 * position + noise,
                )
            }));
        }
        let views = simulate(processes, 1200.0);
        for (i, views) in views.iter().enumerate() {
            assert_eq!(views.len(), 601, "process {i}");
            if let Some((t, view)) = first_suspicion(views) {
                panic!("process {i} suspected at {t}: {view:?}");
            }
            assert!(
                views
                    .iter()
                    .all(|(_, v)| v.reasons.is_empty() && v.seconds_until_exhaustion.is_none())
            );
        }
    }

    #[test]
    fn suspicion_clears_when_the_leak_stops() {
        let views = simulate(
            vec![old(|t| {
                (
                    100.0 * MIB + 512.0 * 1024.0 * t.min(300.0),
                    2048.0 * MIB,
                    40.0,
                )
            })],
            900.0,
        );
        let views = &views[0];
        let (found, _) = first_suspicion(views).unwrap();
        assert!(*found <= 120.0);
        let last_suspected = views
            .iter()
            .filter(|(_, v)| v.suspected)
            .map(|(t, _)| *t)
            .fold(0.0, f64::max);
        assert!(
            last_suspected > 300.0 && last_suspected < 420.0,
            "{last_suspected}"
        );
        let (_, last) = views.last().unwrap();
        assert!(!last.suspected && last.reasons.is_empty());
        assert!(last.rss_growth_bytes_per_second.abs() < 1.0, "{last:?}");
    }

    /// A process started an hour before the first sample whose threads follow `threads`.
    fn threads(mut threads: impl FnMut(f64) -> f64 + 'static) -> (f64, Driver) {
        let driver: Driver = Box::new(move |t, proc: &mut FakeProc| {
            proc.threads = threads(t).max(1.0).round() as u64;
        });
        (3600.0, driver)
    }

    #[test]
    fn thread_leaks_are_flagged_within_two_minutes() {
        for onset in [0.0, 600.0] {
            let mut processes = Vec::new();
            for rate in [1.0, 3.0, 5.0] {
                for seed in 0..4 {
                    let mut rng = Rng(seed + 10 * rate as u64);
                    // Threads that are never joined, beside a pool of 0 to 6 short-lived ones.
                    processes.push(threads(move |t| {
                        8.0 + rate * (t - onset).max(0.0) + (6.0 * rng.uniform()).floor()
                    }));
                }
            }
            let (views, _) = drive(processes, onset + 200.0);
            for (i, views) in views.iter().enumerate() {
                let rate = [1.0, 3.0, 5.0][i / 4];
                let Some((t, view)) = first_suspicion(views) else {
                    panic!("process {i} (onset {onset}) never suspected");
                };
                assert!(*t > onset && *t <= onset + 120.0, "process {i}: at {t}");
                assert_eq!(view.reasons, [Reason::Threads], "process {i}");
                let slope = view.thread_growth_per_second;
                assert!((slope - rate).abs() < 0.25 * rate, "process {i}: {slope}");
                // 10 000 more threads allowed, at the rate.
                let forecast = view.seconds_until_exhaustion.unwrap();
                assert!((forecast - 10_000.0 / slope).abs() < 1.0, "{forecast}");
            }
        }
    }

    #[test]
    fn thread_pools_are_never_flagged() {
        let mut processes = Vec::new();
        for seed in 0..4 {
            // A pool that starts and joins up to 16 short-lived workers at a time.
            let mut rng = Rng(seed);
            processes.push(threads(move |_| 1.0 + (17.0 * rng.uniform()).floor()));
            // A burst of 50 workers every 30 to 90 s, joined within 10 s.
            let period = 30.0 + 20.0 * seed as f64;
            processes.push(threads(move |t| {
                1.0 + if t % period < 10.0 { 50.0 } else { 0.0 }
            }));
            // A pool grown to 64 threads over 40 s at t = 300, then kept.
            let mut rng = Rng(seed + 100);
            processes.push(threads(move |t| {
                2.0 + 64.0 * ((t - 300.0) / 40.0).clamp(0.0, 1.0) + (3.0 * rng.uniform()).floor()
            }));
        }
        let (views, watcher) = drive(processes, 1200.0);
        for (i, views) in views.iter().enumerate() {
            if let Some((t, view)) = first_suspicion(views) {
                panic!("process {i} suspected at {t}: {view:?}");
            }
        }
        // Memory classes are read for suspects only.
        assert_eq!(watcher.source.memory_reads, 0);
    }

    #[test]
    fn suspects_carry_their_memory_classes() {
        // RSS grows 512 KiB/s for 300 s, then stops.
        let views = simulate(
            vec![old(|t| {
                (
                    100.0 * MIB + 512.0 * 1024.0 * t.min(300.0),
                    2048.0 * MIB,
                    40.0,
                )
            })],
            600.0,
        );
        let mut suspected = 0;
        for (t, view) in &views[0] {
            match (&view.memory, view.suspected) {
                (Some(memory), true) => {
                    suspected += 1;
                    // The scripted host's heap is the RSS but 50 MiB.
                    let heap = view.rss_bytes - (50 << 20);
                    assert_eq!(memory.heap.resident_bytes, heap, "at {t}");
                    if memory.window_seconds >= 10.0 && *t < 290.0 {
                        let growth = memory.heap.growth_bytes_per_second;
                        assert!((growth - 512.0 * 1024.0).abs() < 1024.0, "at {t}: {growth}");
                        assert_eq!(memory.fastest_growing().map(|(name, _)| name), Some("heap"));
                    }
                }
                (None, false) => {}
                (memory, suspected) => panic!("at {t}: suspected {suspected}, {memory:?}"),
            }
        }
        assert!(suspected > 50, "{suspected}");
    }

    #[test]
    fn persistence_and_age_gate_the_suspicion() {
        let config = WatchConfig {
            persistence: 10,
            ..WatchConfig::default()
        };
        let mut watcher = Watcher::with_source(config, scripted().source);
        let mut proc = FakeProc::new(BOOT_OFFSET - 3600.0);
        // Unlimited: the leak is never imminent.
        proc.fd_limit = None;
        watcher.source.procs.insert(7, proc);
        let mut trending_since = None;
        for i in 0..100 {
            let t = 2.0 * i as f64;
            watcher.source.now = BOOT_OFFSET + t;
            watcher.source.procs.get_mut(&7).unwrap().fds = Some(10 + 40 * i);
            let view = watcher.sample().remove(0);
            let (fits, _) = evaluate(
                &watcher.processes[&7].history,
                watcher.processes[&7].start_seconds,
                &watcher.config,
                &watcher.rule,
                &mut Scratch::default(),
            );
            if fits[2].trends && trending_since.is_none() {
                trending_since = Some(t);
            }
            if let Some(since) = trending_since {
                assert_eq!(view.suspected, t >= since + 18.0, "at {t}");
            } else {
                assert!(!view.suspected);
            }
        }
        assert_eq!(trending_since, Some(60.0));
        // A process leaking from its start is not judged on its first 30 s.
        let views = simulate(
            vec![(
                0.0,
                Box::new(|t| (10.0 * MIB + 512.0 * 1024.0 * t, 100.0 * MIB, 5.0)),
            )],
            200.0,
        );
        let (found, _) = first_suspicion(&views[0]).unwrap();
        assert_eq!(*found, 30.0 + 60.0 + 4.0);
    }

    #[test]
    fn a_restarted_process_starts_a_new_history() {
        let mut watcher = scripted();
        let mut proc = FakeProc::new(BOOT_OFFSET - 3600.0);
        for i in 0..80 {
            watcher.source.now = BOOT_OFFSET + 2.0 * i as f64;
            proc.rss = (100 << 20) + i * (1 << 20);
            watcher.source.procs.insert(42, proc.clone());
            watcher.sample();
        }
        let before = watcher.sample().remove(0);
        assert!(before.suspected);
        assert_eq!(watcher.processes[&42].history.len(), 81);
        let cgroup_reads = watcher.source.cgroup_reads;

        // Same pid, new start time, new program in another unit.
        watcher.source.now += 2.0;
        let mut restarted = FakeProc::new(watcher.source.now - 1.0);
        restarted.comm = "other".into();
        restarted.cgroup = Some("/system.slice/other.service".into());
        restarted.rss = 10 << 20;
        watcher.source.procs.insert(42, restarted);
        let after = watcher.sample().remove(0);
        assert_eq!(watcher.source.cgroup_reads, cgroup_reads + 1);
        assert_ne!(after.start_time_ticks, before.start_time_ticks);
        assert_eq!(after.comm, "other");
        assert_eq!(after.unit.as_deref(), Some("other.service"));
        assert!(!after.suspected && after.reasons.is_empty());
        assert_eq!(after.rss_growth_bytes_per_second, 0.0);
        assert_eq!(watcher.processes[&42].history.len(), 1);
        assert_eq!(watcher.processes[&42].streaks, [0; 4]);
    }

    #[test]
    fn labels_are_read_once_and_comm_follows_exec() {
        let mut watcher = scripted();
        watcher.source.procs.insert(5, FakeProc::new(100.0));
        for i in 0..40 {
            watcher.source.now = BOOT_OFFSET + 2.0 * i as f64;
            if i == 20 {
                watcher.source.procs.get_mut(&5).unwrap().comm = "execed".into();
            }
            let view = watcher.sample().remove(0);
            assert_eq!(view.comm, if i < 20 { "fake" } else { "execed" });
            assert_eq!(view.unit.as_deref(), Some("fake.service"));
            assert_eq!(view.cgroup.as_deref(), Some("/system.slice/fake.service"));
            assert_eq!(
                (view.anon_bytes, view.swap_bytes, view.threads),
                (25 << 20, 4096, 2)
            );
        }
        assert_eq!(watcher.source.cgroup_reads, 1);
        // Unchanged RSS: status is re-read only every STATUS_REFRESH_SAMPLES samples.
        assert_eq!(watcher.source.status_reads, 3);
        watcher.source.procs.get_mut(&5).unwrap().rss += 1 << 20;
        watcher.source.now += 2.0;
        let view = watcher.sample().remove(0);
        assert_eq!(watcher.source.status_reads, 4);
        assert_eq!(view.anon_bytes, (51 << 20) / 2);
    }

    #[test]
    fn memory_stays_bounded_as_processes_come_and_go() {
        let mut watcher = scripted();
        watcher.source.procs.insert(1, FakeProc::new(1.0));
        let mut next_pid = 1000;
        for round in 0..40u32 {
            watcher.source.now = BOOT_OFFSET + 2.0 * f64::from(round);
            // 250 new processes a round, each living three rounds: 10 000 in all.
            watcher.source.procs.retain(|&pid, p| {
                pid == 1 || p.start_ticks + 3 * 200 > (watcher.source.now * TICKS) as u64
            });
            for _ in 0..250 {
                watcher
                    .source
                    .procs
                    .insert(next_pid, FakeProc::new(watcher.source.now - 0.5));
                next_pid += 1;
            }
            let views = watcher.sample();
            assert_eq!(views.len(), watcher.source.procs.len());
            assert_eq!(watcher.processes.len(), watcher.source.procs.len());
        }
        assert_eq!(next_pid - 1000, 10_000);
        watcher.source.procs.retain(|&pid, _| pid == 1);
        watcher.source.now += 2.0;
        assert_eq!(watcher.sample().len(), 1);
        assert_eq!(watcher.processes.len(), 1);
        assert!(
            watcher.processes.capacity() <= 64,
            "{}",
            watcher.processes.capacity()
        );

        // A long-lived process keeps one window of samples.
        for i in 0..400 {
            watcher.source.now += 2.0;
            watcher.source.procs.get_mut(&1).unwrap().rss += i * 4096;
            watcher.sample();
        }
        assert_eq!(watcher.processes[&1].history.len(), 151);
        let history = &watcher.processes[&1].history;
        assert!(history.back().unwrap().time - history.front().unwrap().time <= 300.0);
        // A shorter window trims it at the next sample.
        let config = WatchConfig {
            window_seconds: 60.0,
            ..WatchConfig::default()
        };
        watcher.set_config(config);
        watcher.source.now += 2.0;
        watcher.sample();
        assert_eq!(watcher.processes[&1].history.len(), 31);
    }

    #[test]
    fn skips_kernel_threads_and_vanishing_processes() {
        let mut watcher = scripted();
        let mut kthread = FakeProc::new(1.0);
        (kthread.rss, kthread.vsz) = (0, 0);
        watcher.source.procs.insert(2, kthread);
        let mut vanishing = FakeProc::new(50.0);
        vanishing.vanishes_mid_read = true;
        watcher.source.procs.insert(3, vanishing);
        let mut private = FakeProc::new(60.0);
        private.fds = None;
        watcher.source.procs.insert(4, private);
        watcher.source.procs.insert(5, FakeProc::new(70.0));
        let views = watcher.sample();
        let pids: Vec<Pid> = views.iter().map(|v| v.pid).collect();
        assert_eq!(pids, [4, 5]);
        assert_eq!(views[0].open_fds, 0);
        assert_eq!(views[1].open_fds, 20);
        assert_eq!(watcher.processes.len(), 2);
        assert!(
            views
                .iter()
                .all(|v| !v.traced && v.outstanding_bytes.is_none() && v.latest_report.is_none())
        );
    }

    #[test]
    fn orders_suspected_then_by_growth_then_by_rss() {
        let mut watcher = scripted();
        // pid: (rss at start, rss growth per sample, fd growth per sample)
        let script: [(Pid, u64, u64, u64); 6] = [
            (100, 500 << 20, 0, 0),
            (101, 10 << 20, 8 << 10, 0),
            (102, 900 << 20, 0, 0),
            (103, 100 << 20, 4 << 20, 0),
            (104, 400 << 20, 0, 60),
            (105, 10 << 20, 8 << 10, 0),
        ];
        for &(pid, rss, _, _) in &script {
            let mut proc = FakeProc::new(100.0);
            proc.rss = rss;
            watcher.source.procs.insert(pid, proc);
        }
        let mut order = Vec::new();
        for i in 0..60 {
            watcher.source.now = BOOT_OFFSET + 2.0 * i as f64;
            for &(pid, rss, rss_step, fd_step) in &script {
                let proc = watcher.source.procs.get_mut(&pid).unwrap();
                proc.rss = rss + i * rss_step;
                proc.fds = Some(20 + i * fd_step);
            }
            let views = watcher.sample();
            order = views.iter().map(|v| (v.pid, v.suspected)).collect();
        }
        // Suspected first (the faster RSS growth first), then by RSS growth, then by RSS, and
        // equal processes by pid.
        assert_eq!(
            order,
            [
                (103, true),
                (104, true),
                (101, false),
                (105, false),
                (102, false),
                (100, false),
            ]
        );
    }

    #[test]
    fn forecasts_against_the_tightest_limit() {
        let mut watcher = scripted();
        watcher.source.mem_available = 1 << 30;
        watcher
            .source
            .headroom
            .insert("/system.slice/fake.service".into(), 100 << 20);
        let mut proc = FakeProc::new(1.0);
        proc.fd_limit = Some(10_000);
        watcher.source.procs.insert(9, proc);
        let mut view = None;
        for i in 0..60u64 {
            watcher.source.now = BOOT_OFFSET + 2.0 * i as f64;
            let p = watcher.source.procs.get_mut(&9).unwrap();
            p.rss = (200 << 20) + i * (1 << 20);
            p.fds = Some(100 + 2 * i);
            view = Some(watcher.sample().remove(0));
        }
        let view = view.unwrap();
        // 59 MiB grown with 100 MiB left, which runs out in under 5 minutes: imminent.
        assert_eq!(
            view.reasons,
            [Reason::Rss, Reason::Fds, Reason::ExhaustionImminent]
        );
        assert_eq!(
            view.memory_limit.as_ref().map(|l| (l.kind, l.remaining)),
            Some((LimitKind::CgroupV2Max, 100 << 20))
        );
        // RSS: 100 MiB of cgroup headroom at 512 KiB/s; fds: 9782 left at 1/s.
        assert!((view.rss_growth_bytes_per_second - 512.0 * 1024.0).abs() < 1.0);
        assert_eq!(view.seconds_until_exhaustion, Some(200.0));

        // Without a cgroup limit, MemAvailable; a tighter fd limit wins.
        watcher.source.headroom.clear();
        watcher.source.procs.get_mut(&9).unwrap().fd_limit = Some(300);
        watcher.source.now += 2.0;
        let p = watcher.source.procs.get_mut(&9).unwrap();
        p.rss += 1 << 20;
        p.fds = Some(220);
        let view = watcher.sample().remove(0);
        assert_eq!(view.seconds_until_exhaustion, Some(80.0));
        watcher.source.procs.get_mut(&9).unwrap().fd_limit = None;
        watcher.source.now += 2.0;
        let p = watcher.source.procs.get_mut(&9).unwrap();
        p.rss += 1 << 20;
        p.fds = Some(222);
        let view = watcher.sample().remove(0);
        assert_eq!(view.seconds_until_exhaustion, Some(2048.0));

        assert_eq!(seconds_until(1000, 10.0), Some(100.0));
        assert_eq!(seconds_until(1000, 0.0), None);
        assert_eq!(seconds_until(1000, -1.0), None);
        assert_eq!(seconds_until(0, 5.0), Some(0.0));
    }

    /// Samples one process in a cgroup limited to `limit` bytes (or only on a host with 20 GiB
    /// available when `None`) every 2 s for `seconds`, its RSS following `rss` (seconds after the
    /// first sample to bytes); gives the views with their times.
    fn in_a_cgroup(
        limit: Option<f64>,
        seconds: f64,
        mut rss: impl FnMut(f64) -> f64,
    ) -> Vec<(f64, ProcessView)> {
        let mut watcher = scripted();
        watcher.source.mem_available = 20 << 30;
        watcher
            .source
            .procs
            .insert(50, FakeProc::new(BOOT_OFFSET - 3600.0));
        let mut views = Vec::new();
        let mut t = 0.0;
        while t <= seconds {
            watcher.source.now = BOOT_OFFSET + t;
            let bytes = rss(t);
            watcher.source.procs.get_mut(&50).unwrap().rss = bytes as u64;
            if let Some(limit) = limit {
                watcher.source.headroom.insert(
                    "/system.slice/fake.service".into(),
                    (limit - bytes).max(0.0) as u64,
                );
            }
            views.push((t, watcher.sample().remove(0)));
            t += 2.0;
        }
        views
    }

    #[test]
    fn a_fast_leak_into_its_limit_is_flagged_within_a_few_samples() {
        const GIB: f64 = 1024.0 * MIB;
        // The flood of the issue: 20 MB/s from t = 60 s into a 1 GiB cgroup, exhausted 50 s later.
        let flood = |t: f64| 12.0 * MIB + 20e6 * (t - 60.0).max(0.0);
        let views = in_a_cgroup(Some(GIB), 110.0, flood);
        let (t, view) = first_suspicion(&views).expect("the flood is suspected");
        assert!(
            *t > 60.0 && *t <= 75.0,
            "suspected {} s into the flood",
            t - 60.0
        );
        assert_eq!(view.reasons, [Reason::Rss, Reason::ExhaustionImminent]);
        let forecast = view.seconds_until_exhaustion.unwrap();
        let left = (GIB - flood(*t)) / 20e6;
        assert!(
            (forecast - left).abs() < 2.0,
            "{forecast} s forecast, {left} s left"
        );
        assert!((view.rss_growth_bytes_per_second - 20e6).abs() < 0.05 * 20e6);
        assert_eq!(
            view.memory_limit.as_ref().map(|l| l.kind),
            Some(LimitKind::CgroupV2Max)
        );
        assert!(
            views
                .iter()
                .filter(|(s, _)| s >= t)
                .all(|(_, v)| v.suspected)
        );

        // The time to suspect grows with the time left: 4 MB/s runs out in 4 minutes.
        let slow = |t: f64| 12.0 * MIB + 4e6 * (t - 60.0).max(0.0);
        let views = in_a_cgroup(Some(GIB), 320.0, slow);
        let (t, view) = views
            .iter()
            .find(|(_, v)| v.reasons.contains(&Reason::ExhaustionImminent))
            .expect("the slower leak is imminent");
        assert!(*t > 90.0 && *t <= 120.0, "imminent {} s into it", t - 60.0);
        assert!(view.seconds_until_exhaustion.unwrap() > 150.0);

        // The same flood on a host with 20 GiB available is not imminent (it runs out in 17
        // minutes): the trend rules find it, in about a minute.
        let views = in_a_cgroup(None, 200.0, flood);
        let (t, view) = first_suspicion(&views).expect("the flood is suspected");
        assert!(
            *t > 100.0 && *t <= 140.0,
            "suspected {} s into the flood",
            t - 60.0
        );
        assert_eq!(view.reasons, [Reason::Rss]);
        assert_eq!(
            view.memory_limit.as_ref().map(|l| l.kind),
            Some(LimitKind::HostMemory)
        );
    }

    #[test]
    fn a_fast_bounded_burst_is_not_imminent() {
        const GIB: f64 = 1024.0 * MIB;
        // Caches filling fast to well below the limit, then kept: 128 MiB at 40 MB/s, 150 MiB at
        // 20 MB/s, 180 MiB at 100 MB/s, each from 12 MiB in a 1 GiB cgroup.
        for (size, rate) in [
            (128.0 * MIB, 40e6),
            (150.0 * MIB, 20e6),
            (180.0 * MIB, 100e6),
        ] {
            let views = in_a_cgroup(Some(GIB), 300.0, |t| {
                12.0 * MIB + (rate * (t - 60.0).max(0.0)).min(size)
            });
            assert_eq!(
                first_suspicion(&views).map(|(t, _)| *t),
                None,
                "{size} at {rate}"
            );
        }
        // A batch that rises fast and is released again, under the same limit.
        let views = in_a_cgroup(Some(GIB), 300.0, |t| {
            12.0 * MIB + 30e6 * (t % 40.0).min(6.0) * (t % 40.0 < 20.0) as u8 as f64
        });
        assert_eq!(first_suspicion(&views).map(|(t, _)| *t), None);
    }

    #[test]
    fn threads_trend_and_run_out() {
        let mut watcher = scripted();
        let mut proc = FakeProc::new(BOOT_OFFSET - 3600.0);
        proc.threads = 10;
        watcher.source.procs.insert(60, proc);
        watcher.source.thread_room = None;
        // One thread a second with no limit in reach: the trend rules, past a minute.
        let mut found = None;
        for i in 0..60u64 {
            watcher.source.now = BOOT_OFFSET + 2.0 * i as f64;
            watcher.source.procs.get_mut(&60).unwrap().threads = 10 + 2 * i;
            let view = watcher.sample().remove(0);
            if view.suspected && found.is_none() {
                found = Some((i, view));
            }
        }
        let (i, view) = found.expect("the thread leak is suspected");
        assert!((30..=40).contains(&i), "at sample {i}");
        assert_eq!(view.reasons, [Reason::Threads]);
        assert!((view.thread_growth_per_second - 1.0).abs() < 0.1);
        assert_eq!(view.seconds_until_exhaustion, None);

        // 20 threads a second with 300 left below pids.max: imminent within a few samples.
        let mut watcher = scripted();
        watcher
            .source
            .procs
            .insert(61, FakeProc::new(BOOT_OFFSET - 3600.0));
        let mut found = None;
        for i in 0..30u64 {
            watcher.source.now = BOOT_OFFSET + 2.0 * i as f64;
            let threads = if i < 10 { 2 } else { 2 + 40 * (i - 9) };
            watcher.source.procs.get_mut(&61).unwrap().threads = threads;
            watcher.source.thread_room = Some(400u64.saturating_sub(threads));
            let view = watcher.sample().remove(0);
            if view.suspected && found.is_none() {
                found = Some((i, view));
            }
        }
        let (i, view) = found.expect("the thread leak is suspected");
        assert!((12..=14).contains(&i), "at sample {i}");
        assert_eq!(view.reasons, [Reason::Threads, Reason::ExhaustionImminent]);
        assert!(view.seconds_until_exhaustion.unwrap() < 15.0);
    }

    #[test]
    fn runs_of_growth() {
        let line = |values: &[f64]| -> Vec<(f64, f64)> {
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| (2.0 * i as f64, v))
                .collect()
        };
        // Flat, then growing: the run starts at the last flat sample.
        let run = growth_run(&line(&[5.0, 5.0, 5.0, 7.0, 9.0, 11.0]), 0.5, 60.0).unwrap();
        assert_eq!(
            run,
            Run {
                grown: 6.0,
                slope: 1.0
            }
        );
        // Too short, too slow, or not growing lately.
        assert_eq!(growth_run(&line(&[5.0, 5.0, 7.0, 9.0]), 0.5, 60.0), None);
        assert_eq!(
            growth_run(&line(&[5.0, 5.0, 7.0, 9.0, 11.0]), 2.0, 60.0),
            None
        );
        assert_eq!(
            growth_run(&line(&[5.0, 7.0, 9.0, 11.0, 11.0, 11.0, 11.0]), 0.1, 60.0),
            None
        );
        // A fall ends a run; a small one within the tolerance does not.
        let run = growth_run(&line(&[9.0, 20.0, 3.0, 5.0, 7.0, 9.0]), 0.5, 60.0);
        assert_eq!(run, None, "the earlier peak is higher");
        let run = growth_run(
            &line(&[1.0, 1000.0, 999.0, 1100.0, 1200.0, 1300.0]),
            1.0,
            60.0,
        );
        assert_eq!(run, None, "growing from the first sample, for 10 s");
        let run = growth_run(
            &line(&[1.0, 1000.0, 999.0, 1100.0, 1200.0, 1300.0]),
            1.0,
            10.0,
        );
        assert_eq!(run.map(|r| r.grown), Some(1299.0));
        // The sawtooth's second tooth does not top the first by half its rise.
        let run = growth_run(&line(&[0.0, 10.0, 20.0, 0.0, 7.0, 14.0, 21.0]), 0.5, 60.0);
        assert_eq!(run, None);
        let run = growth_run(&line(&[0.0, 10.0, 20.0, 0.0, 14.0, 28.0, 42.0]), 0.5, 60.0);
        assert_eq!(run.map(|r| r.grown), Some(42.0));
    }

    #[test]
    fn thinned_slope_matches_on_lines() {
        let mut thin = Vec::new();
        let line: Vec<(f64, f64)> = (0..151)
            .map(|i| (2.0 * i as f64, 7.0 + 3.0 * i as f64))
            .collect();
        assert_eq!(thinned_slope(&line, &mut thin), 1.5);
        assert_eq!(thin.len(), SLOPE_POINTS);
        assert_eq!(thin.first(), line.first());
        assert_eq!(thin.last(), line.last());
        assert_eq!(thinned_slope(&line[..10], &mut thin), 1.5);
        assert_eq!(thinned_slope(&line[..1], &mut thin), 0.0);
    }

    #[test]
    fn sees_a_live_child() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 5"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut watcher = Watcher::new(WatchConfig::default());
        let views = watcher.sample();
        let _ = child.kill();
        child.wait().unwrap();
        let child = views.iter().find(|v| v.pid == pid).expect("child sampled");
        assert!(
            child.comm == "sh" || child.comm == "sleep",
            "{}",
            child.comm
        );
        assert!(
            child.rss_bytes > 0 && child.vsz_bytes >= child.rss_bytes,
            "{child:?}"
        );
        assert!(child.anon_bytes <= child.rss_bytes);
        assert_eq!(child.threads, 1);
        assert!(child.open_fds >= 3, "{child:?}");
        assert!(!child.suspected && child.reasons.is_empty());
        assert_eq!(child.seconds_until_exhaustion, None);
        let me = views
            .iter()
            .find(|v| v.pid == std::process::id())
            .expect("test process sampled");
        assert_eq!(
            me.start_time_ticks,
            procfs::start_time_ticks(me.pid).unwrap()
        );
        assert!(me.threads >= 1 && me.rss_bytes > 1 << 20);
        assert!(views.iter().all(|v| v.rss_bytes > 0 || v.vsz_bytes > 0));
        assert!(
            !views.iter().any(|v| v.pid == 2),
            "kthreadd is a kernel thread"
        );
    }
}
