//! The daemon's view of the host, shared by the process watcher, the tracing manager, the HTTP
//! API, the Prometheus metrics and the on-call CLI (which reads it back from the API as JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a process is suspected of leaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Resident memory keeps growing.
    Rss,
    /// Virtual memory keeps growing.
    Vsz,
    /// Open file descriptors keep growing.
    Fds,
    /// Threads keep growing.
    Threads,
}

impl Reason {
    /// The lowercase name used in JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rss => "rss",
            Self::Vsz => "vsz",
            Self::Fds => "fds",
            Self::Threads => "threads",
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
    /// Robust growth of the threads over the watch window.
    #[serde(default)]
    pub thread_growth_per_second: f64,
    /// Whether the process is suspected of leaking.
    pub suspected: bool,
    /// Why (empty unless suspected).
    pub reasons: Vec<Reason>,
    /// Seconds until the growing resource runs out (the cgroup memory limit, MemAvailable when
    /// unlimited, the open-files limit, or for threads the tightest of the cgroup's `pids.max`,
    /// `kernel.threads-max` and RLIMIT_NPROC), when it is growing.
    pub seconds_until_exhaustion: Option<f64>,
    /// Whether the allocation tracer is attached to it now.
    pub traced: bool,
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

/// Everything the daemon publishes, refreshed at each watch interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken, in seconds since the Unix epoch.
    pub updated_unix_seconds: f64,
    /// Every watched process, most relevant first: suspected, then by RSS growth, then by RSS.
    pub processes: Vec<ProcessView>,
    /// The kernel side.
    pub probes: ProbeHealth,
}
