//! The daemon's view of the host, shared by the process watcher, the tracing manager, the HTTP
//! API, the Prometheus metrics and the on-call CLI (which reads it back from the API as JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a process is suspected of leaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Resident memory keeps growing.
    Rss,
    /// Virtual memory keeps growing.
    Vsz,
    /// Open file descriptors keep growing.
    Fds,
    /// Threads keep growing.
    Threads,
    /// A resource (named by the other reasons) grows fast enough to run out within
    /// `watch.imminent_seconds`: suspected within a few samples, without the persistence rules.
    ExhaustionImminent,
}

impl Reason {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Reason; 5] = [
        Reason::Rss,
        Reason::Vsz,
        Reason::Fds,
        Reason::Threads,
        Reason::ExhaustionImminent,
    ];

    /// The snake_case name used in JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rss => "rss",
            Self::Vsz => "vsz",
            Self::Fds => "fds",
            Self::Threads => "threads",
            Self::ExhaustionImminent => "exhaustion_imminent",
        }
    }
}

/// Which limit a resource runs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// cgroup v2 `memory.max`.
    CgroupV2Max,
    /// cgroup v2 `memory.high` (the kernel throttles and reclaims hard above it).
    CgroupV2High,
    /// cgroup v1 `memory.limit_in_bytes`.
    CgroupV1,
    /// cgroup v1 `memory.memsw.limit_in_bytes` (memory and swap together).
    CgroupV1Memsw,
    /// The host's available memory and free swap.
    HostMemory,
    /// cgroup v2 `pids.max`.
    CgroupV2Pids,
    /// cgroup v1 `pids.max`.
    CgroupV1Pids,
    /// The host's `kernel.threads-max`.
    HostThreads,
    /// The process's RLIMIT_NPROC (it counts every thread of its real user: the room is an upper
    /// bound when the user runs other processes; root is not held to it).
    Nproc,
}

impl LimitKind {
    /// The limit's name for people and logs.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::CgroupV2Max => "memory.max",
            Self::CgroupV2High => "memory.high",
            Self::CgroupV1 => "memory.limit_in_bytes",
            Self::CgroupV1Memsw => "memory.memsw.limit_in_bytes",
            Self::HostMemory => "the host's memory and swap",
            Self::CgroupV2Pids | Self::CgroupV1Pids => "pids.max",
            Self::HostThreads => "kernel.threads-max",
            Self::Nproc => "RLIMIT_NPROC",
        }
    }
}

/// A limit a resource runs into, and the room left below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// Which limit.
    pub kind: LimitKind,
    /// The cgroup that sets it (a path from its hierarchy's root), for a cgroup limit.
    pub cgroup: Option<String>,
    /// The limit: bytes for memory, threads for threads.
    pub limit: u64,
    /// What is left below it (with what the kernel can reclaim or swap out).
    pub remaining: u64,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind.describe())?;
        match &self.cgroup {
            Some(cgroup) => write!(f, " of {cgroup}"),
            None => Ok(()),
        }
    }
}

/// What the daemon knows about one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessView {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): with the pid, the
    /// identity of the process, so a reused pid never continues another's history.
    pub start_time_ticks: u64,
    /// Command name.
    pub comm: String,
    /// systemd unit, when the process is in one.
    pub unit: Option<String>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Virtual memory size.
    pub vsz_bytes: u64,
    /// Resident anonymous memory.
    pub anon_bytes: u64,
    /// Swapped-out memory.
    pub swap_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Robust RSS growth over the watch window.
    pub rss_growth_bytes_per_second: f64,
    /// Robust VSZ growth over the watch window.
    pub vsz_growth_bytes_per_second: f64,
    /// Robust growth of open file descriptors over the watch window.
    pub fd_growth_per_second: f64,
    /// Threads' growth over the watch window, per second.
    #[serde(default)]
    pub thread_growth_per_second: f64,
    /// Whether the process is suspected of leaking.
    pub suspected: bool,
    /// Why (empty unless suspected).
    pub reasons: Vec<Reason>,
    /// Seconds until the growing resource runs out (the tightest memory limit, the open-files
    /// limit or the thread limit), when it is growing.
    pub seconds_until_exhaustion: Option<f64>,
    /// The tightest memory limit, as last read (it is read while the process's memory grows).
    #[serde(default)]
    pub memory_limit: Option<Limit>,
    /// Whether a tracer is attached to it now.
    pub traced: bool,
    /// How it is traced now, while traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_method: Option<Method>,
    /// Outstanding bytes the tracer sees, while traced.
    pub outstanding_bytes: Option<u64>,
    /// Id of its latest stored report.
    pub latest_report: Option<String>,
    /// What its resident memory is made of, for a suspected or traced process (absent
    /// otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// One class of a process's memory: its resident bytes at the latest sample and their growth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryClass {
    /// Bytes (for `swap`, bytes in swap).
    pub resident_bytes: u64,
    /// Robust growth (Theil-Sen) over the samples of the window.
    pub growth_bytes_per_second: f64,
}

/// What a process's memory is made of, from `/proc/PID/smaps` with each mapping given to one
/// class (see `watch::memory`). The resident classes add up to the RSS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// The allocator's memory: the program break (`[heap]`), glibc's other arenas and the
    /// blocks it mapped on their own.
    pub heap: MemoryClass,
    /// Other private anonymous memory: mappings the program made itself (or an allocator
    /// leakmon does not recognize), and the written pages of private file mappings.
    pub anon_mappings: MemoryClass,
    /// The threads' stacks.
    pub thread_stacks: MemoryClass,
    /// Pages of mapped files.
    pub file: MemoryClass,
    /// Shared memory: shared anonymous mappings, `memfd`, `/dev/shm`, System V segments.
    pub shmem: MemoryClass,
    /// Swapped-out memory of every class.
    pub swap: MemoryClass,
    /// Seconds of samples the growth rates are fitted over.
    pub window_seconds: f64,
    /// When traced: how much of the heap is live allocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_live: Option<HeapLive>,
}

impl Memory {
    /// The classes by name, in the order of the JSON.
    pub fn classes(&self) -> [(&'static str, &MemoryClass); 6] {
        [
            ("heap", &self.heap),
            ("anon_mappings", &self.anon_mappings),
            ("thread_stacks", &self.thread_stacks),
            ("file", &self.file),
            ("shmem", &self.shmem),
            ("swap", &self.swap),
        ]
    }

    /// The class growing fastest, if any grows.
    pub fn fastest_growing(&self) -> Option<(&'static str, &MemoryClass)> {
        self.classes()
            .into_iter()
            .filter(|(_, class)| class.growth_bytes_per_second > 0.0)
            .max_by(|a, b| {
                a.1.growth_bytes_per_second
                    .total_cmp(&b.1.growth_bytes_per_second)
            })
    }
}

/// The heap seen by a trace: its live allocations against its resident bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapLive {
    /// Bytes of the allocations made during the window and still live at its end.
    pub live_bytes: u64,
    /// Growth of the live allocations: those made during the window, less the memory allocated
    /// before it that was freed (where the allocator tells the bytes, and unless the trace was
    /// sampled: then the frees of unsampled allocations cannot be told from those).
    pub live_growth_bytes_per_second: f64,
    /// The heap's growth that is not live allocations: freed memory the allocator keeps
    /// (fragmentation, arenas not trimmed), not leaked.
    pub retained_growth_bytes_per_second: f64,
    /// Resident heap bytes that are not live allocations, when the trace saw the process from
    /// its start (otherwise the allocations made before the window are not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_bytes: Option<u64>,
}

/// Health of the kernel side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeHealth {
    /// Whether the eBPF programs are loaded.
    pub loaded: bool,
    /// Why they are not (not root, no BTF, ...).
    pub error: Option<String>,
    /// Counters of ordinary activity since the daemon started, by name.
    pub events: BTreeMap<String, u64>,
    /// Counters of lost data since the daemon started, by name.
    pub dropped: BTreeMap<String, u64>,
    /// Entries in each kernel map, by map name.
    pub map_entries: BTreeMap<String, u64>,
    /// Processes the tracer is attached to.
    pub traced_pids: Vec<u32>,
}

/// A process the OOM killer killed, as the daemon recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    /// The process.
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub start_time_ticks: u64,
    /// Its command name.
    pub comm: String,
    /// When it was killed, in seconds since the Unix epoch.
    pub unix_seconds: f64,
    /// Its RSS at the last sample before the kill.
    pub rss_bytes: u64,
    /// Its tightest memory limit then, bytes, when known.
    pub limit_bytes: Option<u64>,
    /// Which limit that is, e.g. `memory.limit_in_bytes of /leakmon`.
    pub limit: Option<String>,
    /// Its latest report, which records the kill, when it had one.
    pub report: Option<String>,
    /// The culprit: the frames of that report's top leaking stack (innermost first, as
    /// `symbol` or `module+0xoffset`); empty without a report or a leaking stack.
    pub culprit: Vec<String>,
}

/// How writing reports to the state directory has fared since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// Failed attempts to write a report (a full or read-only file system, ...).
    pub errors_total: u64,
    /// Reports held in memory only, served from there and retried.
    pub unstored: u64,
    /// The latest write error, on one line.
    pub last_error: Option<String>,
}

/// Everything the daemon publishes, refreshed at each watch interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken, in seconds since the Unix epoch.
    pub updated_unix_seconds: f64,
    /// Every watched process, most relevant first: suspected, then by RSS growth, then by RSS.
    pub processes: Vec<ProcessView>,
    /// The kernel side.
    pub probes: ProbeHealth,
    /// OOM kills of watched processes since the daemon started.
    #[serde(default)]
    pub oom_kills_total: u64,
    /// The latest of them, newest first (a bounded number).
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
    /// Writing reports.
    #[serde(default)]
    pub report_store: StoreHealth,
}

/// How a trace looked at a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Probes on the allocator: every outstanding allocation with its stack (precise, leak
    /// versus cache, outstanding objects; a kernel trap on every allocator call).
    #[default]
    Allocations,
    /// The process's page faults: the resident memory each stack brought in and the process
    /// still holds (any allocator or runtime; a cost proportional to the growth, not to the
    /// allocation rate).
    PageFaults,
}

impl Method {
    /// Every method, in the order the daemon tries them.
    pub const ALL: [Self; 2] = [Self::PageFaults, Self::Allocations];

    /// The name in reports, configuration and metrics (`allocations`, `page_faults`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allocations => "allocations",
            Self::PageFaults => "page_faults",
        }
    }

    /// What the method looks at, for people: `page faults`, `allocations`.
    pub const fn looks_at(self) -> &'static str {
        match self {
            Self::Allocations => "allocations",
            Self::PageFaults => "page faults",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
