//! The contract between leakmon's kernel programs (`monitor-ebpf`) and its user space
//! (`monitor-daemon`): map keys and values, ring-buffer events, probe cookies and the indices of
//! the per-CPU statistics map. Everything here is `#[repr(C)]` plain old data so both sides agree
//! on the layout byte for byte.
#![no_std]

/// Deepest user stack captured for an allocation, in frames.
pub const MAX_FRAMES: usize = 64;

/// Fixed-point unit of an allocation's sampling weight: a weight of `WEIGHT_ONE` means the
/// allocation stands for exactly itself (no sampling), `2 * WEIGHT_ONE` for two allocations.
pub const WEIGHT_ONE: u32 = 1 << 16;

/// Number of entries of the sampling table. Entry `i` covers sizes with
/// `size * SAMPLE_BUCKET_SCALE / sample_rate == i`; sizes past the table are always recorded.
pub const SAMPLE_BUCKETS: u32 = 4096;
/// Buckets per `sample_rate` bytes of allocation size (so the table spans `16 * sample_rate`).
pub const SAMPLE_BUCKET_SCALE: u64 = 256;

/// Bits of a probe cookie below the sample rate (see [`AllocFn::cookie`]).
pub const COOKIE_RATE_SHIFT: u32 = 8;

/// Which allocator entry point a uprobe is attached to; passed to the programs as the probe's
/// attach cookie so one program serves every entry point with the same argument layout.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AllocFn {
    /// `malloc(size)`
    Malloc = 0,
    /// `calloc(nmemb, size)`
    Calloc = 1,
    /// `realloc(ptr, size)`
    Realloc = 2,
    /// `reallocarray(ptr, nmemb, size)`
    Reallocarray = 3,
    /// `posix_memalign(memptr, alignment, size)`
    PosixMemalign = 4,
    /// `aligned_alloc(alignment, size)`
    AlignedAlloc = 5,
    /// `memalign(alignment, size)`
    Memalign = 6,
    /// `valloc(size)`
    Valloc = 7,
    /// `pvalloc(size)`
    Pvalloc = 8,
    /// `free(ptr)`
    Free = 9,
}

impl AllocFn {
    /// Every allocator entry point leakmon probes, in cookie order.
    pub const ALL: [Self; 10] = [
        Self::Malloc,
        Self::Calloc,
        Self::Realloc,
        Self::Reallocarray,
        Self::PosixMemalign,
        Self::AlignedAlloc,
        Self::Memalign,
        Self::Valloc,
        Self::Pvalloc,
        Self::Free,
    ];

    /// The attach cookie of a probe on this entry point for a process traced with
    /// `sample_rate` (at most `u64::MAX >> COOKIE_RATE_SHIFT`): the probes need no map lookup
    /// to learn either.
    pub const fn cookie(self, sample_rate: u64) -> u64 {
        self as u64 | sample_rate << COOKIE_RATE_SHIFT
    }

    /// The sample rate carried by a cookie made by [`AllocFn::cookie`].
    pub const fn cookie_sample_rate(cookie: u64) -> u64 {
        cookie >> COOKIE_RATE_SHIFT
    }

    /// The entry point carried by a cookie made by [`AllocFn::cookie`].
    pub const fn from_cookie(cookie: u64) -> Option<Self> {
        match cookie & ((1 << COOKIE_RATE_SHIFT) - 1) {
            0 => Some(Self::Malloc),
            1 => Some(Self::Calloc),
            2 => Some(Self::Realloc),
            3 => Some(Self::Reallocarray),
            4 => Some(Self::PosixMemalign),
            5 => Some(Self::AlignedAlloc),
            6 => Some(Self::Memalign),
            7 => Some(Self::Valloc),
            8 => Some(Self::Pvalloc),
            9 => Some(Self::Free),
            _ => None,
        }
    }

    /// The C symbol name of the entry point.
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Malloc => "malloc",
            Self::Calloc => "calloc",
            Self::Realloc => "realloc",
            Self::Reallocarray => "reallocarray",
            Self::PosixMemalign => "posix_memalign",
            Self::AlignedAlloc => "aligned_alloc",
            Self::Memalign => "memalign",
            Self::Valloc => "valloc",
            Self::Pvalloc => "pvalloc",
            Self::Free => "free",
        }
    }

    /// Number of integer arguments the probe reads (System V: rdi, rsi, rdx, ...).
    pub const fn arg_count(self) -> usize {
        match self {
            Self::Malloc | Self::Valloc | Self::Pvalloc | Self::Free => 1,
            Self::Calloc | Self::Realloc | Self::AlignedAlloc | Self::Memalign => 2,
            Self::Reallocarray | Self::PosixMemalign => 3,
        }
    }

    /// Whether the entry point returns an allocation (and so needs a return probe).
    pub const fn allocates(self) -> bool {
        !matches!(self, Self::Free)
    }
}

/// Key of one outstanding allocation: the process and the address it was given.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocKey {
    /// Process (thread group) id.
    pub tgid: u32,
    /// Always zero; keeps the layout free of implicit padding.
    pub pad: u32,
    /// Address returned by the allocator.
    pub addr: u64,
}

/// What leakmon remembers of one outstanding allocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocInfo {
    /// Requested size in bytes.
    pub size: u64,
    /// `size` scaled by the sampling weight (equal to `size` when not sampling).
    pub weighted_bytes: u64,
    /// `bpf_ktime_get_ns()` at allocation.
    pub timestamp_ns: u64,
    /// Id of the allocating stack in the stacks map.
    pub stack_id: u64,
    /// Sampling weight in units of [`WEIGHT_ONE`]; 0 marks a tombstone: the allocation was
    /// freed and the entry waits to be reused by the next allocation at the same address.
    pub weight: u32,
    /// The [`AllocFn`] that made it.
    pub kind: u32,
}

impl AllocInfo {
    /// Whether the entry is a freed allocation kept for reuse rather than a live one.
    pub const fn is_tombstone(&self) -> bool {
        self.weight == 0
    }
}

/// Key of a stack: the process and a 64-bit hash of its frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    /// Process (thread group) id.
    pub tgid: u32,
    /// Always zero.
    pub pad: u32,
    /// Hash of the frames (never zero).
    pub stack_id: u64,
}

/// Running totals of the outstanding allocations of one stack, kept by the kernel programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Outstanding bytes (sampling-weighted).
    pub bytes: u64,
    /// Outstanding allocations in units of [`WEIGHT_ONE`].
    pub count: u64,
}

/// The frames of a user stack, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    /// Number of valid entries in `frames`.
    pub len: u64,
    /// Return addresses, innermost (the allocator's caller) first.
    pub frames: [u64; MAX_FRAMES],
}

/// An allocator call between its entry and return probes, keyed by thread. The entry of a
/// thread is reused from call to call (`active` says whether a call is under way), so the hot
/// path updates it in place instead of inserting and deleting; it is deleted when the thread
/// exits.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    /// The outer [`AllocFn`] being executed.
    pub kind: u32,
    /// How many allocator calls are nested inside the outer one on this thread.
    pub depth: u32,
    /// 1 while a call is under way, 0 between calls.
    pub active: u32,
    /// Sampling weight chosen at entry; 0 when the call is not recorded.
    pub weight: u32,
    /// 1 when `old` holds the removed record of `old_addr` (restored if realloc fails).
    pub old_valid: u32,
    /// Always zero.
    pub pad: u32,
    /// Requested size.
    pub size: u64,
    /// `posix_memalign`'s `memptr`; unused otherwise.
    pub memptr: u64,
    /// `realloc`'s old pointer (0 when none).
    pub old_addr: u64,
    /// The stack pointer at entry: a call on the same thread with a stack pointer above it
    /// cannot be nested inside this one, so this one lost its return (an exception or
    /// `longjmp` through the allocator) and its entry is stale.
    pub sp: u64,
    /// The record of `old_addr`, removed at entry so a concurrent reuse of that address by
    /// another thread is never confused with it.
    pub old: AllocInfo,
}

/// One entry of the sampling table, see [`SAMPLE_BUCKETS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleBucket {
    /// An allocation is recorded when `bpf_get_prandom_u32() < threshold` (`u32::MAX` means
    /// always).
    pub threshold: u32,
    /// 1/probability in units of [`WEIGHT_ONE`].
    pub weight: u32,
}

/// A memory-mapping system call seen in flight, keyed by thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallArgs {
    /// [`EventKind`] of the call.
    pub kind: u32,
    /// `prot` for mmap.
    pub prot: u32,
    /// `flags` for mmap and mremap.
    pub flags: u64,
    /// First address argument.
    pub addr: u64,
    /// Length argument.
    pub len: u64,
    /// mremap's new length.
    pub new_len: u64,
    /// Stack of the caller (0 when not captured).
    pub stack_id: u64,
}

/// `Event::flags` of a [`EventKind::Brk`] made by the allocator itself (inside malloc): the
/// break moved, but the memory is accounted as the allocations that caused it.
pub const BRK_NESTED: u64 = 1;

/// What an [`Event`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `mmap` returned `addr` for `len` bytes.
    Mmap = 1,
    /// `munmap(addr, len)` succeeded.
    Munmap = 2,
    /// `mremap(addr, len, new_len)` returned `new_addr`.
    Mremap = 3,
    /// `brk` moved the program break to `new_addr`.
    Brk = 4,
    /// The process exited (its last thread).
    Exit = 5,
    /// The process replaced its image with `execve`.
    Exec = 6,
}

impl EventKind {
    /// Decodes the raw `kind` field of an [`Event`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Mmap),
            2 => Some(Self::Munmap),
            3 => Some(Self::Mremap),
            4 => Some(Self::Brk),
            5 => Some(Self::Exit),
            6 => Some(Self::Exec),
            _ => None,
        }
    }
}

/// A record sent to user space through the events ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// Process (thread group) id.
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` when the call returned.
    pub timestamp_ns: u64,
    /// Address argument (mmap: the mapped address).
    pub addr: u64,
    /// Length argument.
    pub len: u64,
    /// mremap's and brk's resulting address.
    pub new_addr: u64,
    /// mremap's new length.
    pub new_len: u64,
    /// mmap's `prot`.
    pub prot: u32,
    /// Always zero.
    pub pad: u32,
    /// mmap's and mremap's `flags`; [`BRK_NESTED`] for brk.
    pub flags: u64,
    /// Stack of the caller (0 when not captured).
    pub stack_id: u64,
}

/// Indices of the per-CPU statistics array. Every lost or dropped record has a counter here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Allocations recorded.
    Allocs = 0,
    /// Frees that matched a recorded allocation.
    Frees = 1,
    /// Frees of addresses leakmon never saw allocated (allocated before attach, or unsampled).
    FreesUnknown = 2,
    /// Allocations not recorded because sampling skipped them.
    Unsampled = 3,
    /// Allocator calls nested inside another allocator call on the same thread (not recorded).
    Nested = 4,
    /// Memory-mapping events sent to user space.
    MapEvents = 5,
    /// Allocations lost because the outstanding-allocations map was full.
    DroppedAllocsFull = 6,
    /// Allocations recorded without a stack because capturing it failed.
    DroppedStackCapture = 7,
    /// Allocations recorded without a stack because the stacks map was full.
    DroppedStacksFull = 8,
    /// Allocator calls lost because the in-flight map was full.
    DroppedInflightFull = 9,
    /// Events lost because the ring buffer was full.
    DroppedRingbufFull = 10,
    /// Allocator calls whose entry was recorded but whose return never came (an exception or
    /// `longjmp` through the allocator): the call is not recorded.
    DroppedUnmatchedReturn = 11,
}

/// Number of entries of the statistics array.
pub const STAT_COUNT: u32 = 12;

impl Stat {
    /// Every counter, in index order.
    pub const ALL: [Self; STAT_COUNT as usize] = [
        Self::Allocs,
        Self::Frees,
        Self::FreesUnknown,
        Self::Unsampled,
        Self::Nested,
        Self::MapEvents,
        Self::DroppedAllocsFull,
        Self::DroppedStackCapture,
        Self::DroppedStacksFull,
        Self::DroppedInflightFull,
        Self::DroppedRingbufFull,
        Self::DroppedUnmatchedReturn,
    ];

    /// Stable snake_case name used in reports and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allocs => "allocs",
            Self::Frees => "frees",
            Self::FreesUnknown => "frees_unknown",
            Self::Unsampled => "unsampled",
            Self::Nested => "nested",
            Self::MapEvents => "map_events",
            Self::DroppedAllocsFull => "allocs_map_full",
            Self::DroppedStackCapture => "stack_capture_failed",
            Self::DroppedStacksFull => "stacks_map_full",
            Self::DroppedInflightFull => "inflight_map_full",
            Self::DroppedRingbufFull => "ringbuf_full",
            Self::DroppedUnmatchedReturn => "unmatched_return",
        }
    }

    /// Whether the counter reports lost data (as opposed to ordinary activity).
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Self::DroppedAllocsFull
                | Self::DroppedStackCapture
                | Self::DroppedStacksFull
                | Self::DroppedInflightFull
                | Self::DroppedRingbufFull
                | Self::DroppedUnmatchedReturn
        )
    }
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every type user space reads from or writes to a map.
    use super::{
        AllocInfo, AllocKey, Event, InFlight, SampleBucket, StackKey, StackStats, StackTrace,
        SyscallArgs,
    };

    // SAFETY: all of these are #[repr(C)] structs of integers with no implicit padding.
    unsafe impl aya::Pod for AllocKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AllocInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackTrace {}
    // SAFETY: as above.
    unsafe impl aya::Pod for InFlight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SampleBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SyscallArgs {}
}
