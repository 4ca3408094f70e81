//! The kernel side of tracing, seen from user space: loads the embedded eBPF object, attaches
//! the process-lifecycle tracepoints once, attaches and
//! detaches the allocator probes of one process at a time, and reads and clears that process's
//! state in the kernel maps.
//!
//! Uprobes are attached per process (`UProbeScope::OneProcess`), so processes that are not
//! traced never hit a breakpoint. The memory-mapping system calls are followed through the
//! `syscalls:` tracepoints (found through tracefs, mounted if need be: see `tracefs`), attached
//! only while some process is traced, and the process lifecycle through BTF tracepoints (no
//! tracefs needed). These fire for every process but return after one array read (the
//! `TARGET_WORDS` bitmap of registered tgids) unless the process may be in the `TARGETS` map,
//! looked up then. (`fentry`/`fexit` programs, which would spare other system
//! calls the tracing path, are refused by some kernels, this development VM's among them.)

use std::os::fd::{AsFd as _, OwnedFd};
use std::{
    collections::{HashMap as StdHashMap, HashSet},
    num::NonZeroU32,
    path::Path,
    time::Duration,
};

use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, ProgramError, TracePoint, UProbe,
        tp_btf::{BtfTracePointLink, BtfTracePointLinkId},
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeLinkId, UProbeScope},
    },
    sys::SyscallError,
};
use log::{debug, info, warn};
use monitor_common::{
    AllocFn, AllocInfo, AllocKey, CachedWalk, Event, InFlight, PythonProcess, ReleaseKey,
    ReleaseStats, SAMPLE_BUCKET_SCALE, SAMPLE_BUCKETS, STAT_COUNT, SampleBucket, StackEnd,
    StackKey, StackStats, StackTrace, Stat, SyscallArgs, TARGET_ALLOCATIONS, TARGET_PAGE_FAULTS,
    TARGET_STOP_AT_EXEC, WEIGHT_ONE, WalkKey, target_bit,
};

use crate::report::ProbeSite;
use crate::trace::allocators::AllocatorObject;
use crate::trace::unwind::tables::{TablesError, TablesUsage, UnwindTables, is_missing};
use crate::trace::{ends, tracefs};
use crate::watch::procfs::MapEntry;

/// The kernel programs, built by `build.rs` from the `monitor-ebpf` crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// Largest accepted `--sample-rate`: keeps `rate * 16` far from overflowing in the kernel.
pub const MAX_SAMPLE_RATE: u64 = 1 << 40;

/// How often the kernel's entries of freed allocations are swept, and how old they must be.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// See [`SWEEP_INTERVAL`].
pub const SWEEP_MIN_AGE: Duration = Duration::from_secs(30);

/// The memory-mapping system-call tracepoints (programs named as their events in the
/// `syscalls` category).
const SYSCALL_TRACEPOINTS: [&str; 10] = [
    "sys_enter_mmap",
    "sys_exit_mmap",
    "sys_enter_munmap",
    "sys_exit_munmap",
    "sys_enter_mremap",
    "sys_exit_mremap",
    "sys_enter_brk",
    "sys_exit_brk",
    "sys_enter_madvise",
    "sys_exit_madvise",
];

/// The BTF tracepoint program (and tracepoint) of the page-fault method.
const PAGE_FAULT_PROGRAM: &str = "page_fault_user";

/// The process-lifecycle BTF tracepoints (program and tracepoint of the same name).
const LIFECYCLE_TRACEPOINTS: [&str; 2] = ["sched_process_exit", "sched_process_exec"];
/// The programs that record how processes end (see [`ends`]), with their BTF tracepoints;
/// always attached, and optional: a kernel without them still traces.
const END_TRACEPOINTS: [(&str, &str); 2] = [
    ("oom_mark_victim", "mark_victim"),
    ("process_end", "sched_process_exit"),
];

/// Why the kernel side could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// Not running as root.
    #[error(
        "leakmon needs root (uid 0 with CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH) to \
         load eBPF programs and read other processes"
    )]
    NotRoot,
    /// Root, but without the capability that loading the programs and attaching uprobes needs.
    #[error(
        "leakmon runs as root without CAP_SYS_ADMIN, which loading eBPF programs and attaching \
         uprobes need (the systemd unit keeps CAP_SYS_ADMIN, CAP_SYS_PTRACE and \
         CAP_DAC_READ_SEARCH)"
    )]
    NoSysAdmin,
    /// A kernel older than the programs need.
    #[error(
        "kernel {release} is too old: leakmon needs Linux {}.{} or later (BPF cookies on uprobes, \
         bpf_task_pt_regs)",
        MIN_KERNEL.0,
        MIN_KERNEL.1
    )]
    UnsupportedKernel {
        /// The running kernel's release.
        release: String,
    },
    /// The kernel exposes no BTF, which the programs need.
    #[error(
        "this kernel has no BTF ({path} is missing); leakmon needs a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf {
        /// The path that was checked.
        path: &'static str,
    },
    /// The object could not be loaded.
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] EbpfError),
    /// A program is missing from the object or has the wrong type.
    #[error("the eBPF object has no usable program `{0}`")]
    MissingProgram(&'static str),
    /// A map is missing from the object or has the wrong type.
    #[error("the eBPF object has no usable map `{name}`: {source}")]
    MissingMap {
        /// Map name.
        name: &'static str,
        /// What aya said.
        source: MapError,
    },
    /// The kernel's verifier rejected a program (its log is written at debug level).
    #[error(
        "the kernel rejected {program}: {reason} (run with --log-level debug for the verifier log)"
    )]
    Verifier {
        /// The program.
        program: &'static str,
        /// The load error, without the log.
        reason: std::io::Error,
    },
    /// The process exited while its probes were being attached.
    #[error("process {pid} is gone")]
    ProcessGone {
        /// The process.
        pid: u32,
    },
    /// A program failed to load or attach.
    #[error("{what} failed: {}", describe_program_error(.source))]
    Program {
        /// What was being done.
        what: String,
        /// What aya said.
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("{what} failed: {source}")]
    Map {
        /// What was being done.
        what: &'static str,
        /// What aya said.
        source: MapError,
    },
    /// Return probes would kill the process: see [`uretprobe_uses_syscall`].
    #[error(
        "not tracing pid {pid}: on kernel {kernel} return probes go through the uretprobe system \
         call, which this process's seccomp filter may kill it for (fixed in Linux 6.14)"
    )]
    SeccompUretprobe {
        /// The process.
        pid: u32,
        /// The running kernel's release.
        kernel: String,
    },
    /// The process lives in a PID namespace below leakmon's, whose threads the kernel programs
    /// cannot number as leakmon does.
    #[error(
        "not tracing pid {pid}: it is in a PID namespace nested in leakmon's, which is not the \
         host's; run leakmon in the host's PID namespace to trace it"
    )]
    NestedPidNamespace {
        /// The process.
        pid: u32,
    },
    /// leakmon's own PID namespace could not be read.
    #[error("cannot read leakmon's PID namespace (/proc/self/ns/pid): {0}")]
    OwnPidNamespace(std::io::Error),
    /// The target's seccomp mode could not be read.
    #[error("reading the seccomp mode of pid {pid}: {source}")]
    Seccomp {
        /// The process.
        pid: u32,
        /// Why.
        source: crate::watch::procfs::ProcError,
    },
    /// The sample rate is out of range.
    #[error("--sample-rate must be at most {MAX_SAMPLE_RATE} bytes (got {0})")]
    SampleRate(u64),
    /// The kernel's BTF could not be parsed (the BTF tracepoint programs need it).
    #[error("reading the kernel's BTF ({BTF}): {0}")]
    Btf(#[from] aya::BtfError),
    /// No tracefs for the system-call tracepoints.
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    /// The unwind tables could not be set up.
    #[error("the unwind tables: {0}")]
    Unwind(#[from] TablesError),
}

/// Where [`Tracer::attach_empty`] puts its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyPlacement {
    /// At each function's first instruction.
    Entry,
    /// At the offsets leakmon chose (see `placement`).
    Chosen,
}

/// Probes taken off a process (see [`Tracer::detach_later`]), with the system-call tracepoints
/// when it was the last traced process and the page-fault program when it was the last traced
/// by its page faults; dropping this detaches them.
pub struct Detached {
    probes: Vec<UProbeLink>,
    tracepoints: Vec<OwnedFd>,
    page_faults: Option<BtfTracePointLink>,
}

impl Detached {
    /// Detaches every probe at once, one thread each: the kernel's grace periods then overlap
    /// instead of adding up (a second or two per process one after the other).
    pub fn detach_in_parallel(self) {
        std::thread::scope(|scope| {
            for link in self.probes {
                scope.spawn(move || drop(link));
            }
            scope.spawn(move || drop(self.tracepoints));
            scope.spawn(move || drop(self.page_faults));
        });
    }
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Detached({} probes, {} tracepoints)",
            self.probes.len(),
            self.tracepoints.len()
        )
    }
}

/// Per process, per stack id, the kernel's running totals.
pub type StackTotalsByProcess = StdHashMap<u32, StdHashMap<u64, StackStats>>;

/// Per process, per freeing site, the frees of memory the trace never saw allocated.
pub type ReleasesByProcess = StdHashMap<u32, StdHashMap<u64, ReleaseStats>>;

/// What a sweep of the allocations map found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Outstanding allocations.
    pub live: usize,
    /// Tombstones deleted.
    pub swept: usize,
    /// Tombstones recent enough to keep.
    pub kept_tombstones: usize,
    /// Entries of processes no longer traced, deleted (see [`Tracer::sweep_tombstones`]).
    pub strays: usize,
}

/// Capacities of the kernel maps.
#[derive(Debug, Clone, Copy)]
pub struct MapLimits {
    /// Outstanding allocations over all traced processes.
    pub allocations: u32,
    /// Distinct allocating stacks over all traced processes.
    pub stacks: u32,
    /// Unwind rows over all objects the traced processes map (8 bytes each).
    pub unwind_rows: u32,
}

impl Default for MapLimits {
    fn default() -> Self {
        Self {
            allocations: 262_144,
            stacks: 32_768,
            unwind_rows: 1 << 20,
        }
    }
}

/// The oldest kernel the programs load on (major, minor): `bpf_get_attach_cookie` on uprobes
/// and `bpf_task_pt_regs` arrived in 5.15.
pub const MIN_KERNEL: (u32, u32) = (5, 15);

/// `CAP_SYS_ADMIN`'s bit in the capability sets.
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_SYS_PTRACE`'s bit.
const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_DAC_READ_SEARCH`'s bit.
const CAP_DAC_READ_SEARCH: u32 = 2;

/// What [`preflight`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    euid: u32,
    /// The effective capability set (`CapEff` of `/proc/self/status`).
    capabilities: u64,
    btf: bool,
    release: String,
}

/// Checks what the kernel programs need from the host, before anything is loaded: root,
/// CAP_SYS_ADMIN, BTF and a recent enough kernel; warns when the capabilities that reach other
/// users' processes are missing.
pub fn preflight() -> Result<(), TracerError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let capabilities = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    check_host(&Host {
        // SAFETY: geteuid has no preconditions.
        euid: unsafe { libc::geteuid() },
        capabilities,
        btf: Path::new(BTF).exists(),
        release: kernel_release(),
    })
}

/// Where the kernel's BTF is.
const BTF: &str = "/sys/kernel/btf/vmlinux";

fn check_host(host: &Host) -> Result<(), TracerError> {
    if host.euid != 0 {
        return Err(TracerError::NotRoot);
    }
    let has = |capability: u32| host.capabilities & (1 << capability) != 0;
    if !has(CAP_SYS_ADMIN) {
        return Err(TracerError::NoSysAdmin);
    }
    if !has(CAP_SYS_PTRACE) {
        log::warn!("without CAP_SYS_PTRACE, processes of other users cannot be traced");
    }
    if !has(CAP_DAC_READ_SEARCH) {
        log::warn!(
            "without CAP_DAC_READ_SEARCH, programs in directories root may not search cannot \
             be traced or symbolized"
        );
    }
    if !host.btf {
        return Err(TracerError::NoBtf { path: BTF });
    }
    if kernel_version(&host.release).is_some_and(|version| version < MIN_KERNEL) {
        return Err(TracerError::UnsupportedKernel {
            release: host.release.clone(),
        });
    }
    Ok(())
}

/// The loaded kernel programs and their maps.
pub struct Tracer {
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, u32>,
    /// The filter in front of `targets` (`monitor_common::TARGET_BITS`), kept equal to the
    /// bits of `registered`.
    target_words: Array<MapData, u64>,
    /// The pids registered in `targets`.
    registered: HashSet<u32>,
    allocs: HashMap<MapData, AllocKey, AllocInfo>,
    stack_stats: HashMap<MapData, StackKey, StackStats>,
    stacks: HashMap<MapData, StackKey, StackTrace>,
    inflight: HashMap<MapData, u64, InFlight>,
    syscalls: HashMap<MapData, u64, SyscallArgs>,
    /// Frees of addresses never seen allocated, by process and freeing site.
    releases: HashMap<MapData, ReleaseKey, ReleaseStats>,
    stats: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    links: StdHashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// The processes traced by their page faults.
    page_fault_targets: HashSet<u32>,
    /// The page-fault program's attachment, while some process is traced by its page faults:
    /// it runs on every user page fault of the host.
    page_fault_link: Option<BtfTracePointLinkId>,
    /// The ids of [`SYSCALL_TRACEPOINTS`], read from tracefs at load.
    syscall_event_ids: Vec<u64>,
    /// The unwind rows and the traced processes' mappings.
    unwind: UnwindTables,
    /// The kernel programs' remembered stack walks.
    walk_cache: HashMap<MapData, WalkKey, CachedWalk>,
    /// The CPython interpreters of traced processes, for the walks' Python frames.
    python: HashMap<MapData, u32, PythonProcess>,
    /// The perf events that attach [`SYSCALL_TRACEPOINTS`]: open while a process is traced,
    /// closed with the last one, since while any system-call tracepoint is attached every
    /// system call of every process on the host takes the kernel's slower tracing path.
    syscall_events: Vec<OwnedFd>,
    /// leakmon's PID namespace when it is not the initial one (see [`PidNamespace`]).
    pid_namespace: Option<PidNamespace>,
}

/// A PID namespace, as `bpf_get_ns_current_pid_tgid` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PidNamespace {
    /// The kernel's `dev_t` of the nsfs (`MKDEV(major, minor)`, not `stat`'s encoding).
    dev: u64,
    inode: u64,
}

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO`).
const INITIAL_PID_NAMESPACE_INODE: u64 = 0xEFFF_FFFC;

impl PidNamespace {
    /// The PID namespace of `/proc/{who}/ns/pid`.
    fn of(who: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let metadata = std::fs::metadata(format!("/proc/{who}/ns/pid"))?;
        let (major, minor) = (libc::major(metadata.dev()), libc::minor(metadata.dev()));
        Ok(Self {
            dev: (u64::from(major) << 20) | u64::from(minor),
            inode: metadata.ino(),
        })
    }

    /// leakmon's PID namespace, `None` when it is the initial one (where the kernel programs
    /// need no translation).
    fn own() -> Result<Option<Self>, TracerError> {
        let own = Self::of("self").map_err(TracerError::OwnPidNamespace)?;
        Ok((own.inode != INITIAL_PID_NAMESPACE_INODE).then_some(own))
    }
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("traced", &self.links.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, TracerError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(TracerError::MissingMap {
        name,
        source: MapError::InvalidName { name: name.into() },
    })?;
    T::try_from(map).map_err(|source| TracerError::MissingMap { name, source })
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, TracerError> {
    ebpf.program_mut(name)
        .and_then(|program| <&mut UProbe>::try_from(program).ok())
        .ok_or(TracerError::MissingProgram(name))
}

fn tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, TracerError> {
    ebpf.program_mut(name)
        .and_then(|program| <&mut TracePoint>::try_from(program).ok())
        .ok_or(TracerError::MissingProgram(name))
}

impl Tracer {
    /// Loads the programs, fills the sampling table and attaches the tracepoints.
    pub fn load(limits: MapLimits) -> Result<Self, TracerError> {
        preflight()?;
        let tracefs = tracefs::find_or_mount()?;
        let pid_namespace = PidNamespace::own()?;
        let (pidns_dev, pidns_inode) = pid_namespace.map_or((0, 0), |ns| (ns.dev, ns.inode));
        if pid_namespace.is_some() {
            info!(
                "running in a PID namespace that is not the host's: tracing only its own \
                 processes, numbered as it sees them"
            );
        }
        let (task_tgid, task_exit_code) = ends::task_offsets().unwrap_or_else(|err| {
            warn!("OOM kills and deaths by signal are not recorded: {err}");
            (0, 0)
        });
        let mut ebpf = EbpfLoader::new()
            .override_global("PIDNS_DEV", &pidns_dev, true)
            .override_global("PIDNS_INO", &pidns_inode, true)
            .override_global("TASK_TGID_OFFSET", &task_tgid, true)
            .override_global("TASK_EXIT_CODE_OFFSET", &task_exit_code, true)
            .map_max_entries("ALLOCS", limits.allocations)
            .map_max_entries("STACKS", limits.stacks)
            .map_max_entries("STACK_STATS", limits.stacks)
            .map_max_entries("UNWIND_ROWS", limits.unwind_rows.max(1))
            .load(EBPF_OBJECT)?;
        for name in [
            "alloc_enter",
            "alloc_exit",
            "free_enter",
            "empty_enter",
            "empty_exit",
        ] {
            uprobe(&mut ebpf, name)?
                .load()
                .map_err(|source| load_error(name, source))?;
        }
        let btf = Btf::from_sys_fs()?;
        for name in LIFECYCLE_TRACEPOINTS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .and_then(|program| program.try_into().ok())
                .ok_or(TracerError::MissingProgram(name))?;
            program
                .load(name, &btf)
                .map_err(|source| load_error(name, source))?;
            program.attach().map_err(|source| TracerError::Program {
                what: format!("attaching {name} to its BTF tracepoint"),
                source,
            })?;
        }
        for (name, tracepoint) in END_TRACEPOINTS {
            let attached = ebpf
                .program_mut(name)
                .and_then(|program| <&mut BtfTracePoint>::try_from(program).ok())
                .ok_or(TracerError::MissingProgram(name))
                .and_then(|program| {
                    program
                        .load(tracepoint, &btf)
                        .map_err(|source| load_error(name, source))?;
                    program.attach().map_err(|source| TracerError::Program {
                        what: format!("attaching {name} to the BTF tracepoint {tracepoint}"),
                        source,
                    })
                });
            if let Err(err) = attached {
                warn!("{err}: the ends of processes are not recorded from it");
            }
        }
        let page_faults: &mut BtfTracePoint = ebpf
            .program_mut(PAGE_FAULT_PROGRAM)
            .and_then(|program| program.try_into().ok())
            .ok_or(TracerError::MissingProgram(PAGE_FAULT_PROGRAM))?;
        page_faults
            .load(PAGE_FAULT_PROGRAM, &btf)
            .map_err(|source| load_error(PAGE_FAULT_PROGRAM, source))?;
        let mut syscall_event_ids = Vec::new();
        for name in SYSCALL_TRACEPOINTS {
            tracepoint(&mut ebpf, name)?
                .load()
                .map_err(|source| load_error(name, source))?;
            syscall_event_ids.push(tracefs.event_id("syscalls", name)?);
        }
        drop(btf);
        // Loading parsed the kernel's BTF twice (relocations, BTF tracepoints): some 20 MiB
        // of small blocks, all freed now, which glibc would otherwise keep resident.
        release_free_heap();
        let mut table: Array<MapData, SampleBucket> = take_map(&mut ebpf, "SAMPLE_TABLE")?;
        for (index, bucket) in sample_table().into_iter().enumerate() {
            table
                .set(index as u32, bucket, 0)
                .map_err(|source| TracerError::Map {
                    what: "filling the sampling table",
                    source,
                })?;
        }
        Ok(Self {
            targets: take_map(&mut ebpf, "TARGETS")?,
            target_words: take_map(&mut ebpf, "TARGET_WORDS")?,
            registered: HashSet::new(),
            allocs: take_map(&mut ebpf, "ALLOCS")?,
            stack_stats: take_map(&mut ebpf, "STACK_STATS")?,
            stacks: take_map(&mut ebpf, "STACKS")?,
            inflight: take_map(&mut ebpf, "INFLIGHT")?,
            syscalls: take_map(&mut ebpf, "SYSCALLS")?,
            releases: take_map(&mut ebpf, "RELEASES")?,
            stats: take_map(&mut ebpf, "STATS")?,
            events: Some(take_map(&mut ebpf, "EVENTS")?),
            walk_cache: take_map(&mut ebpf, "WALK_CACHE")?,
            python: take_map(&mut ebpf, "PYTHON_PROCS")?,
            unwind: UnwindTables::new(
                take_map(&mut ebpf, "UNWIND_ROWS")?,
                take_map(&mut ebpf, "PROC_MAPPINGS")?,
                take_map(&mut ebpf, "UNWIND_WANTED")?,
            )?,
            ebpf,
            links: StdHashMap::new(),
            page_fault_targets: HashSet::new(),
            page_fault_link: None,
            syscall_event_ids,
            syscall_events: Vec::new(),
            pid_namespace,
        })
    }

    /// Attaches the system-call tracepoints unless they are attached.
    fn attach_syscall_tracepoints(&mut self) -> Result<(), TracerError> {
        if !self.syscall_events.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(SYSCALL_TRACEPOINTS.len());
        for (name, &id) in SYSCALL_TRACEPOINTS.iter().zip(&self.syscall_event_ids) {
            let program = tracepoint(&mut self.ebpf, name)?;
            let fd = program.fd().map_err(|source| TracerError::Program {
                what: format!("attaching {name}"),
                source,
            })?;
            events.push(tracefs::attach(
                id,
                &format!("syscalls:{name}"),
                fd.as_fd(),
            )?);
        }
        self.syscall_events = events;
        Ok(())
    }

    /// Hands out the events ring buffer (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Starts tracing `pid`: registers it with the kernel programs, then attaches the allocator
    /// probes of every object in `objects`, scoped to that process. On error nothing stays
    /// attached, and nothing the probes attached so far recorded stays in the maps.
    pub fn attach(
        &mut self,
        pid: NonZeroU32,
        objects: &[AllocatorObject],
        sample_rate: u64,
    ) -> Result<Vec<ProbeSite>, TracerError> {
        if sample_rate > MAX_SAMPLE_RATE {
            return Err(TracerError::SampleRate(sample_rate));
        }
        refuse_seccomp_uretprobes(pid.get())?;
        self.refuse_nested_pid_namespace(pid.get())?;
        self.attach_syscall_tracepoints()?;
        self.register(pid.get(), TARGET_ALLOCATIONS)?;
        let mut sites = Vec::new();
        for object in objects {
            for site in &object.sites {
                // The return probe goes first: an entry recorded before its return probe is
                // attached would wait for a return that never comes.
                let programs: &[&'static str] = if site.function.allocates() {
                    &["alloc_exit", "alloc_enter"]
                } else {
                    &["free_enter"]
                };
                if let Err(err) = self.attach_site(
                    pid,
                    &object.path,
                    programs,
                    site.cookie(sample_rate),
                    site.file_offset,
                ) {
                    self.detach(pid);
                    // The probes attached so far may have recorded allocations.
                    if let Err(purge) = self.purge(pid) {
                        log::warn!("releasing the kernel state of pid {pid}: {purge}");
                    }
                    return Err(err);
                }
                debug!(
                    "pid {pid}: {} probe at {}+{:#x} ({}, {}) in {}",
                    site.symbol,
                    site.symbol,
                    site.symbol_offset,
                    site.instruction,
                    if site.emulated {
                        "emulated"
                    } else {
                        "single-stepped"
                    },
                    object.display_path
                );
                sites.push(ProbeSite {
                    function: site.symbol.clone(),
                    module: object.display_path.clone(),
                    offset: site.symbol_offset,
                    file_offset: site.file_offset,
                    instruction: site.instruction.clone(),
                    emulated: site.emulated,
                });
            }
        }
        info!(
            "pid {pid}: {} allocator probes attached ({} on emulated instructions)",
            sites.len(),
            sites.iter().filter(|site| site.emulated).count()
        );
        Ok(sites)
    }

    /// Has the kernel programs stop `pid` (SIGSTOP) when it next replaces its image, until
    /// user space has published the new image's mappings and resumes it (see
    /// `monitor_common::TARGET_STOP_AT_EXEC`): a command launched under a trace then unwinds from
    /// its first allocation.
    pub fn stop_at_next_exec(&mut self, pid: NonZeroU32) -> Result<(), TracerError> {
        let what = "marking the target to stop at its exec";
        let mode = self
            .targets
            .get(&pid.get(), 0)
            .map_err(|source| TracerError::Map { what, source })?;
        self.targets
            .insert(pid.get(), mode | TARGET_STOP_AT_EXEC, 0)
            .map_err(|source| TracerError::Map { what, source })
    }

    /// Starts tracing `pid` by its page faults: registers it for the page-fault program (attached
    /// while some process is traced this way) and the memory-mapping system calls. On error
    /// nothing stays registered.
    pub fn attach_page_faults(&mut self, pid: NonZeroU32) -> Result<(), TracerError> {
        self.refuse_nested_pid_namespace(pid.get())?;
        self.attach_syscall_tracepoints()?;
        if self.page_fault_link.is_none() {
            let program: &mut BtfTracePoint = self
                .ebpf
                .program_mut(PAGE_FAULT_PROGRAM)
                .and_then(|program| program.try_into().ok())
                .ok_or(TracerError::MissingProgram(PAGE_FAULT_PROGRAM))?;
            let link = program.attach().map_err(|source| TracerError::Program {
                what: format!("attaching {PAGE_FAULT_PROGRAM} to its BTF tracepoint"),
                source,
            })?;
            self.page_fault_link = Some(link);
        }
        self.page_fault_targets.insert(pid.get());
        if let Err(err) = self.register(pid.get(), TARGET_PAGE_FAULTS) {
            drop(self.detach_later(pid));
            return Err(err);
        }
        info!("pid {pid}: traced by its page faults");
        Ok(())
    }

    /// Registers `pid` in `TARGETS` with `mode`, its filter bit set first (a program must never
    /// see a registered process's bit clear). On error nothing stays registered.
    fn register(&mut self, pid: u32, mode: u32) -> Result<(), TracerError> {
        let what = "registering the target";
        self.registered.insert(pid);
        let registered = self
            .write_target_word(pid)
            .and_then(|()| self.targets.insert(pid, mode, 0));
        if let Err(source) = registered {
            self.unregister(pid);
            return Err(TracerError::Map { what, source });
        }
        Ok(())
    }

    /// Removes `pid` from `TARGETS`, then its filter bit unless another registered process
    /// shares it.
    fn unregister(&mut self, pid: u32) {
        if let Err(err) = ignore_missing(self.targets.remove(&pid)) {
            debug!("unregistering pid {pid}: {err}");
        }
        self.registered.remove(&pid);
        if let Err(err) = self.write_target_word(pid) {
            warn!("clearing the filter bit of pid {pid}: {err}");
        }
    }

    /// Writes the word of `TARGET_WORDS` that holds `pid`'s bit, from the registered pids.
    fn write_target_word(&mut self, pid: u32) -> Result<(), MapError> {
        let (word, _) = target_bit(pid);
        let bits = self
            .registered
            .iter()
            .map(|&other| target_bit(other))
            .filter(|&(other_word, _)| other_word == word)
            .fold(0, |bits, (_, mask)| bits | mask);
        self.target_words.set(word, bits, 0)
    }

    /// Refuses a process outside leakmon's PID namespace when that is not the initial one: the
    /// kernel programs see its threads only by their numbers in its own namespace.
    fn refuse_nested_pid_namespace(&self, pid: u32) -> Result<(), TracerError> {
        let Some(own) = self.pid_namespace else {
            return Ok(());
        };
        match PidNamespace::of(&pid.to_string()) {
            Ok(theirs) if theirs == own => Ok(()),
            Ok(_) => Err(TracerError::NestedPidNamespace { pid }),
            Err(_) => Err(TracerError::ProcessGone { pid }),
        }
    }

    fn attach_site(
        &mut self,
        pid: NonZeroU32,
        path: &Path,
        programs: &[&'static str],
        cookie: u64,
        file_offset: u64,
    ) -> Result<(), TracerError> {
        let function = AllocFn::from_cookie(cookie).map_or("?", AllocFn::symbol);
        for &name in programs {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(file_offset),
                cookie: Some(cookie),
            };
            let link = uprobe(&mut self.ebpf, name)?
                .attach(point, path, UProbeScope::OneProcess(pid))
                .map_err(|source| match source {
                    ProgramError::SyscallError(SyscallError { ref io_error, .. })
                        if io_error.raw_os_error() == Some(libc::ESRCH) =>
                    {
                        TracerError::ProcessGone { pid: pid.get() }
                    }
                    source => TracerError::Program {
                        what: format!(
                            "attaching {name} to {function} at file offset {file_offset:#x} of {}",
                            path.display()
                        ),
                        source,
                    },
                })?;
            self.links.entry(pid.get()).or_default().push((name, link));
        }
        Ok(())
    }

    /// Attaches programs that do nothing where the allocator probes of `pid` would go (at each
    /// function's entry, or at the chosen offsets): what the breakpoints alone cost, for the
    /// probe-cost benchmark. [`Tracer::detach`] removes them.
    pub fn attach_empty(
        &mut self,
        pid: NonZeroU32,
        objects: &[AllocatorObject],
        placement: EmptyPlacement,
    ) -> Result<(), TracerError> {
        for object in objects {
            for site in &object.sites {
                let offset = match placement {
                    EmptyPlacement::Entry => site.file_offset - site.symbol_offset,
                    EmptyPlacement::Chosen => site.file_offset,
                };
                let programs: &[&'static str] = if site.function.allocates() {
                    &["empty_exit", "empty_enter"]
                } else {
                    &["empty_enter"]
                };
                if let Err(err) =
                    self.attach_site(pid, &object.path, programs, site.function.cookie(0), offset)
                {
                    self.detach(pid);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Publishes the executable mappings of `pid` (its `/proc/PID/maps`, in `maps`) for the
    /// kernel programs' stack walks, loading the unwind rows of objects not loaded yet; does
    /// nothing when they are what was published last.
    pub fn publish_mappings(&mut self, pid: NonZeroU32, maps: &[MapEntry]) {
        if let Err(err) = self.unwind.publish(pid.get(), maps) {
            log::warn!("pid {pid}: publishing its mappings for unwinding: {err}");
        }
    }

    /// `pid` replaced its image: the kernel programs dropped its mappings, and the next
    /// [`Tracer::publish_mappings`] publishes them anew.
    pub fn forget_mappings(&mut self, pid: NonZeroU32) {
        self.unwind.forget(pid.get());
    }

    /// Registers the CPython interpreter of `pid`: its stacks get Python frames.
    pub fn publish_python(&mut self, pid: NonZeroU32, interpreter: &PythonProcess) {
        if let Err(err) = self.python.insert(pid.get(), interpreter, 0) {
            log::warn!("pid {pid}: registering its Python interpreter: {err}");
        }
    }

    /// A stack walk of `pid` asked for its mappings to be published again.
    pub fn unwind_requested(&mut self, pid: NonZeroU32) {
        if let Err(err) = self.unwind.request(pid.get()) {
            debug!("pid {pid}: answering an unwind request: {err}");
        }
    }

    /// Answers the unwind requests that waited, frees the rows of objects no longer mapped.
    pub fn maintain_unwind(&mut self) {
        self.unwind.maintain();
    }

    /// What the unwind tables hold.
    pub fn unwind_usage(&self) -> TablesUsage {
        self.unwind.usage()
    }

    /// Stops tracing `pid`: detaches its probes and unregisters it. Its data stays in the maps
    /// until [`Tracer::purge`].
    pub fn detach(&mut self, pid: NonZeroU32) {
        drop(self.detach_later(pid));
    }

    /// Unregisters `pid` and takes its probes off the programs without detaching them yet:
    /// dropping the result detaches them, which costs the kernel a grace period per probe (a
    /// second or more for a whole process), so the daemon drops it away from its main loop.
    pub fn detach_later(&mut self, pid: NonZeroU32) -> Detached {
        let mut links = Vec::new();
        for (name, link) in self.links.remove(&pid.get()).unwrap_or_default() {
            match uprobe(&mut self.ebpf, name).map(|program| program.take_link(link)) {
                Ok(Ok(link)) => links.push(link),
                Ok(Err(err)) => debug!("detaching {name} from pid {pid}: {err}"),
                Err(err) => debug!("detaching {name} from pid {pid}: {err}"),
            }
        }
        self.unregister(pid.get());
        let mut page_faults = None;
        if self.page_fault_targets.remove(&pid.get())
            && self.page_fault_targets.is_empty()
            && let Some(link) = self.page_fault_link.take()
        {
            match self
                .ebpf
                .program_mut(PAGE_FAULT_PROGRAM)
                .and_then(|program| <&mut BtfTracePoint>::try_from(program).ok())
                .map(|program| program.take_link(link))
            {
                Some(Ok(link)) => page_faults = Some(link),
                Some(Err(err)) => debug!("detaching {PAGE_FAULT_PROGRAM}: {err}"),
                None => debug!("detaching {PAGE_FAULT_PROGRAM}: no such program"),
            }
        }
        let tracepoints = if self.links.is_empty() && self.page_fault_targets.is_empty() {
            std::mem::take(&mut self.syscall_events)
        } else {
            Vec::new()
        };
        Detached {
            probes: links,
            tracepoints,
            page_faults,
        }
    }

    /// Removes every trace of `pid` from the kernel maps, its published mappings included.
    pub fn purge(&mut self, pid: NonZeroU32) -> Result<(), TracerError> {
        let tgid = pid.get();
        self.unwind.forget(tgid);
        ignore_missing(self.python.remove(&tgid)).map_err(|source| TracerError::Map {
            what: "forgetting a Python interpreter",
            source,
        })?;
        // The calls in flight go first: a return probe records an allocation of a call whose
        // entry it finds in flight, without looking at TARGETS, and the probes stay attached
        // until the kernel's grace period after this purge. Purged after the allocations, a
        // call returning in between left an entry no trace would ever remove.
        let of_tgid = |key: &u64| (key >> 32) as u32 == tgid;
        remove_where(&mut self.inflight, of_tgid)
            .and_then(|()| remove_where(&mut self.syscalls, of_tgid))
            .and_then(|()| remove_where(&mut self.allocs, |key| key.tgid == tgid))
            .and_then(|()| remove_where(&mut self.stack_stats, |key| key.tgid == tgid))
            .and_then(|()| remove_where(&mut self.stacks, |key| key.tgid == tgid))
            .and_then(|()| remove_where(&mut self.walk_cache, |key| key.tgid == tgid))
            .and_then(|()| remove_where(&mut self.releases, |key| key.tgid == tgid))
            .map_err(|source| TracerError::Map {
                what: "purging the process's state",
                source,
            })?;
        Ok(())
    }

    /// The frees by `pid` of addresses the trace never saw allocated, by freeing site (the
    /// return address into `free`'s caller), as kept by the kernel programs.
    pub fn releases(&self, pid: NonZeroU32) -> Result<StdHashMap<u64, ReleaseStats>, TracerError> {
        Ok(self
            .releases_by_process()?
            .remove(&pid.get())
            .unwrap_or_default())
    }

    /// [`Tracer::releases`] of every traced process, in one pass over the kernel's map.
    pub fn releases_by_process(&self) -> Result<ReleasesByProcess, TracerError> {
        let mut releases = ReleasesByProcess::new();
        for entry in self.releases.iter() {
            let (key, stats) = entry.map_err(|source| TracerError::Map {
                what: "reading the frees of unknown addresses",
                source,
            })?;
            releases
                .entry(key.tgid)
                .or_default()
                .insert(key.site, stats);
        }
        Ok(releases)
    }

    /// Outstanding bytes and allocations per stack of `pid`, as kept by the kernel programs.
    pub fn stack_totals(
        &self,
        pid: NonZeroU32,
    ) -> Result<StdHashMap<u64, StackStats>, TracerError> {
        let mut totals = StdHashMap::new();
        for entry in self.stack_stats.iter() {
            let (key, stats) = entry.map_err(|source| TracerError::Map {
                what: "reading stack totals",
                source,
            })?;
            if key.tgid == pid.get() {
                totals.insert(key.stack_id, stats);
            }
        }
        Ok(totals)
    }

    /// Outstanding bytes and allocations per stack of every traced process, in one pass over
    /// the kernel's map, with the number of entries it holds.
    pub fn stack_totals_by_process(&self) -> Result<(StackTotalsByProcess, usize), TracerError> {
        let mut totals = StackTotalsByProcess::new();
        let mut entries = 0;
        for entry in self.stack_stats.iter() {
            let (key, stats) = entry.map_err(|source| TracerError::Map {
                what: "reading stack totals",
                source,
            })?;
            entries += 1;
            totals
                .entry(key.tgid)
                .or_default()
                .insert(key.stack_id, stats);
        }
        Ok((totals, entries))
    }

    /// Every outstanding allocation of `pid`: (address, record).
    pub fn allocations(&self, pid: NonZeroU32) -> Result<Vec<(u64, AllocInfo)>, TracerError> {
        let mut out = Vec::new();
        for entry in self.allocs.iter() {
            let (key, info) = entry.map_err(|source| TracerError::Map {
                what: "reading allocations",
                source,
            })?;
            if key.tgid == pid.get() && !info.is_tombstone() {
                out.push((key.addr, info));
            }
        }
        Ok(out)
    }

    /// Deletes the tombstones (entries of freed allocations kept for reuse, see the kernel's
    /// `take_alloc`) of allocations made before `before_ns` (CLOCK_MONOTONIC): addresses the
    /// program has not reused since. Also deletes the entries, made before `before_ns`, of
    /// processes `traced` says are not traced any more: a trace's entries are purged when it
    /// ends, so these are strays (an allocator call that raced the purge), which nothing else
    /// would ever remove.
    ///
    /// An entry the kernel revives between this read and the delete would be lost; only cold
    /// entries are swept to make that unlikely.
    pub fn sweep_tombstones(
        &mut self,
        before_ns: u64,
        traced: impl Fn(u32) -> bool,
    ) -> Result<Sweep, TracerError> {
        let mut sweep = Sweep::default();
        let mut cold = Vec::new();
        for (key, info) in self.allocs.iter().filter_map(Result::ok) {
            if !traced(key.tgid) && info.timestamp_ns < before_ns {
                sweep.strays += 1;
                cold.push(key);
            } else if !info.is_tombstone() {
                sweep.live += 1;
            } else if info.timestamp_ns < before_ns {
                cold.push(key);
            } else {
                sweep.kept_tombstones += 1;
            }
        }
        for key in &cold {
            ignore_missing(self.allocs.remove(key)).map_err(|source| TracerError::Map {
                what: "sweeping freed allocations",
                source,
            })?;
        }
        sweep.swept = cold.len() - sweep.strays;
        Ok(sweep)
    }

    /// Entries of the small maps, by map name (the allocations map is counted by
    /// [`Tracer::sweep_tombstones`], the stack totals by [`Tracer::stack_totals_by_process`]).
    pub fn map_entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("TARGETS", self.targets.keys().count() as u64),
            ("STACKS", self.stacks.keys().count() as u64),
            ("INFLIGHT", self.inflight.keys().count() as u64),
            ("SYSCALLS", self.syscalls.keys().count() as u64),
            ("RELEASES", self.releases.keys().count() as u64),
            ("UNWIND_ROWS", self.unwind.usage().rows),
            ("WALK_CACHE", self.walk_cache.keys().count() as u64),
            ("PYTHON_PROCS", self.python.keys().count() as u64),
            ("PROC_MAPPINGS", self.unwind.usage().processes),
        ]
    }

    /// The frames of a stack of `pid`, innermost first, and why its walk stopped, if the kernel
    /// has it.
    pub fn stack_frames(&self, pid: NonZeroU32, stack_id: u64) -> Option<(Vec<u64>, StackEnd)> {
        let trace = self
            .stacks
            .get(
                &StackKey {
                    tgid: pid.get(),
                    pad: 0,
                    stack_id,
                },
                0,
            )
            .ok()?;
        let len = usize::try_from(trace.len).ok()?.min(trace.frames.len());
        let end = StackEnd::from_raw(trace.end).unwrap_or(StackEnd::BadFrame);
        Some((trace.frames[..len].to_vec(), end))
    }

    /// The statistics counters summed over CPUs, in [`Stat::ALL`] order.
    pub fn counters(&self) -> Result<[u64; STAT_COUNT as usize], TracerError> {
        let mut out = [0; STAT_COUNT as usize];
        for stat in Stat::ALL {
            let values = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(|source| TracerError::Map {
                    what: "reading counters",
                    source,
                })?;
            out[stat as usize] = values.iter().sum();
        }
        Ok(out)
    }
}

/// What aya says of a program error, with the causes it keeps as sources (the system call's
/// error: "`perf_event_open` failed: No such process").
fn describe_program_error(error: &ProgramError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(next) = cause {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        cause = next.source();
    }
    text
}

/// A failed program load: the verifier's log, which runs to hundreds of lines, goes to the debug
/// log rather than into the one-line error.
fn load_error(program: &'static str, source: ProgramError) -> TracerError {
    match source {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            debug!("verifier log of {program}:\n{verifier_log}");
            TracerError::Verifier {
                program,
                reason: io_error,
            }
        }
        source => TracerError::Program {
            what: format!("loading {program}"),
            source,
        },
    }
}

/// Whether return probes on kernel `release` (as `uname -r` prints it) return through the
/// `uretprobe` system call without seccomp letting it pass: Linux 6.11 to 6.13. A process whose
/// seccomp filter does not allow that system call is killed at its first probed return.
pub fn uretprobe_uses_syscall(release: &str) -> bool {
    matches!(kernel_version(release), Some((6, 11..=13)))
}

/// The (major, minor) version of a kernel release such as `6.12.9-arch1-1`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    Some((numbers.next()??, numbers.next()??))
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: an all-zero utsname is a valid value for uname to fill.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a live local.
    if unsafe { libc::uname(&mut name) } != 0 {
        return String::new();
    }
    // SAFETY: uname leaves a NUL-terminated string in `release`.
    unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Refuses to attach return probes to a process with a seccomp filter on the kernels where
/// that could kill it, with a log line saying why.
fn refuse_seccomp_uretprobes(pid: u32) -> Result<(), TracerError> {
    let kernel = kernel_release();
    if !uretprobe_uses_syscall(&kernel) {
        return Ok(());
    }
    let mode = crate::watch::procfs::seccomp_mode(pid)
        .map_err(|source| TracerError::Seccomp { pid, source })?;
    if mode == 2 {
        let refusal = TracerError::SeccompUretprobe { pid, kernel };
        log::warn!("{refusal}");
        return Err(refusal);
    }
    Ok(())
}

/// How often the event loops drain the ring buffer of the events the kernel programs send
/// without a wakeup (page faults): the 1 MiB buffer holds about 14,500 events, the faults of
/// 57 MiB; at this period, growth up to ~500 MiB/s fits.
pub const QUIET_EVENTS_DRAIN: Duration = Duration::from_millis(100);

/// Hands every event waiting in the ring buffer to `handle`, oldest first.
pub fn drain_events(ring: &mut RingBuf<MapData>, mut handle: impl FnMut(Event)) {
    while let Some(item) = ring.next() {
        if item.len() < size_of::<Event>() {
            continue;
        }
        // SAFETY: the kernel wrote a whole `Event`; read_unaligned copes with alignment.
        let event = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
        drop(item);
        handle(event);
    }
}

/// Gives the free pages of the process's heap back to the kernel: glibc returns them only from
/// the top of an arena (and never from the middle), so a burst of short-lived allocations (the
/// BTF parsed at load, a large report symbolized) stays resident long after it was freed.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

/// Removes the entries of `map` whose key `matches`: the keys are listed first, since a hash
/// map's iteration restarts when the entry it stands on is deleted.
fn remove_where<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    matches: impl Fn(&K) -> bool,
) -> Result<(), MapError> {
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|key| matches(key))
        .collect();
    keys.iter()
        .try_for_each(|key| ignore_missing(map.remove(key)))
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(err) if is_missing(&err) => Ok(()),
        other => other,
    }
}

/// The size-weighted sampling table: bucket `i` covers sizes around
/// `(i + 0.5) / SAMPLE_BUCKET_SCALE * rate`, recorded with probability `p = 1 - exp(-size/rate)`
/// and weighted `1/p`, so the expected weighted bytes equal the true bytes (the same `p` is used
/// for the decision and the weight).
pub fn sample_table() -> Vec<SampleBucket> {
    (0..SAMPLE_BUCKETS)
        .map(|index| {
            let x = (f64::from(index) + 0.5) / SAMPLE_BUCKET_SCALE as f64;
            let p = -(-x).exp_m1();
            let threshold = p * 4_294_967_296.0;
            SampleBucket {
                threshold: if threshold >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    threshold as u32
                },
                weight: (f64::from(WEIGHT_ONE) / p).round() as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uretprobe_syscall_kernels_are_6_11_to_6_13() {
        for release in ["6.11.0", "6.12.9-arch1-1", "6.13.2-200.fc41.x86_64"] {
            assert!(uretprobe_uses_syscall(release), "{release}");
        }
        for release in [
            "6.10.14",
            "6.14.0",
            "6.18.44-fc-v669",
            "5.15.0-91-generic",
            "7.0.1",
            "",
        ] {
            assert!(!uretprobe_uses_syscall(release), "{release}");
        }
        assert!(kernel_release().starts_with(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn preflight_names_what_is_missing() {
        let full = (1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
        let host = Host {
            euid: 0,
            capabilities: full,
            btf: true,
            release: "6.18.44-fc-v669".to_owned(),
        };
        check_host(&host).unwrap();
        check_host(&Host {
            capabilities: 1 << CAP_SYS_ADMIN,
            release: "5.15.0-91-generic".to_owned(),
            ..host.clone()
        })
        .unwrap();
        let error = |host: Host| check_host(&host).unwrap_err().to_string();
        assert!(
            error(Host {
                euid: 1000,
                ..host.clone()
            })
            .starts_with("leakmon needs root")
        );
        assert!(
            error(Host {
                capabilities: full & !(1 << CAP_SYS_ADMIN),
                ..host.clone()
            })
            .starts_with("leakmon runs as root without CAP_SYS_ADMIN")
        );
        assert!(
            error(Host {
                btf: false,
                ..host.clone()
            })
            .starts_with("this kernel has no BTF")
        );
        assert_eq!(
            error(Host {
                release: "5.10.0-28-amd64".to_owned(),
                ..host.clone()
            }),
            "kernel 5.10.0-28-amd64 is too old: leakmon needs Linux 5.15 or later (BPF cookies on \
             uprobes, bpf_task_pt_regs)"
        );
        assert_eq!(kernel_version("4.19.0"), Some((4, 19)));
        assert_eq!(kernel_version("weird"), None);
    }

    #[test]
    fn sample_table_is_unbiased_and_monotonic() {
        let table = sample_table();
        assert_eq!(table.len(), SAMPLE_BUCKETS as usize);
        for pair in table.windows(2) {
            assert!(pair[0].threshold <= pair[1].threshold);
            assert!(pair[0].weight >= pair[1].weight);
        }
        for bucket in &table {
            let p = f64::from(bucket.threshold) / 4_294_967_296.0;
            let expected = p * f64::from(bucket.weight) / f64::from(WEIGHT_ONE);
            assert!(
                (expected - 1.0).abs() < 1e-3,
                "bucket {bucket:?} gives {expected}"
            );
        }
        let last = table.last().map(|bucket| bucket.weight);
        assert_eq!(last, Some(WEIGHT_ONE));
    }
}
