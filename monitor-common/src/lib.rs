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

    /// The attach cookie of a `free` probe whose allocator lays blocks out as `size` says
    /// (`free` samples nothing, so the bits of the sample rate carry it).
    pub const fn free_cookie(size: FreedSize) -> u64 {
        Self::Free as u64 | (size as u64) << COOKIE_RATE_SHIFT
    }
}

/// How `free_enter` learns the size of a block it never saw allocated, from the allocator that
/// owns the probed `free`: carried in the probe's cookie (see [`AllocFn::free_cookie`]).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FreedSize {
    /// The allocator does not say: such frees are counted, their bytes are 0 (jemalloc,
    /// tcmalloc, mimalloc: their sizes live in side tables the kernel programs cannot search).
    Unknown = 0,
    /// glibc's malloc: the chunk header just before the block holds the chunk size (see
    /// [`glibc_usable_size`]).
    GlibcChunk = 1,
}

impl FreedSize {
    /// The layout carried by a `free` probe's cookie.
    pub const fn from_cookie(cookie: u64) -> Self {
        match cookie >> COOKIE_RATE_SHIFT {
            1 => Self::GlibcChunk,
            _ => Self::Unknown,
        }
    }
}

/// glibc's chunk flag: the chunk was mapped on its own (`IS_MMAPPED`).
const GLIBC_IS_MMAPPED: u64 = 0x2;
/// glibc's three flag bits at the bottom of a chunk's size field.
const GLIBC_SIZE_FLAGS: u64 = 0x7;
/// glibc's smallest chunk on x86-64, and its alignment.
const GLIBC_MIN_CHUNK: u64 = 32;
/// See [`GLIBC_MIN_CHUNK`].
const GLIBC_CHUNK_ALIGN: u64 = 16;

/// The usable size of a glibc malloc block whose chunk header's size field (the 8 bytes just
/// before the block) is `header`, as `malloc_usable_size` computes it: the chunk size without
/// its flag bits, less the header (16 bytes for a chunk mapped on its own, else 8: the next
/// chunk's `prev_size` belongs to this one while it is in use). 0 when `header` is no chunk
/// size (not aligned, or smaller than the smallest chunk).
pub const fn glibc_usable_size(header: u64) -> u64 {
    let chunk = header & !GLIBC_SIZE_FLAGS;
    if chunk < GLIBC_MIN_CHUNK || !chunk.is_multiple_of(GLIBC_CHUNK_ALIGN) {
        return 0;
    }
    if header & GLIBC_IS_MMAPPED != 0 {
        chunk - 16
    } else {
        chunk - 8
    }
}

/// `TARGETS` value bit: the process's allocator calls are probed.
pub const TARGET_ALLOCATIONS: u32 = 1;
/// `TARGETS` value bit: the process's page faults are followed.
pub const TARGET_PAGE_FAULTS: u32 = 2;
/// `TARGETS` value bit: stop the process (SIGSTOP) when it next replaces its image, so that
/// user space publishes the new image's mappings before its first instruction runs; the
/// [`EventKind::Exec`] event then carries [`EXEC_STOPPED`] and user space resumes it.
pub const TARGET_STOP_AT_EXEC: u32 = 4;
/// Bits of `TARGET_BITS`, a filter the programs that fire for every process (page faults,
/// memory-mapping system calls, exits, execs) test before they look a process up in `TARGETS`:
/// the bit of a tgid ([`target_bit`]) is set while any registered process shares it, so a clear
/// bit proves the process is not traced, at the cost of an inlined array read instead of a hash
/// lookup.
pub const TARGET_BITS: u32 = 1 << 16;
/// Bits per word of `TARGET_BITS`.
pub const TARGET_BITS_PER_WORD: u32 = 64;

/// The word of `TARGET_BITS` and the mask of `tgid`'s bit in it.
#[inline(always)]
pub fn target_bit(tgid: u32) -> (u32, u64) {
    let bit = tgid & (TARGET_BITS - 1);
    (
        bit / TARGET_BITS_PER_WORD,
        1 << (bit % TARGET_BITS_PER_WORD),
    )
}

/// `Event::flags` of an [`EventKind::Exec`] after which the process waits for SIGCONT.
pub const EXEC_STOPPED: u64 = 1;

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

/// Key of the frees, in one process at one freeing site, of addresses the trace never saw
/// allocated (allocated before the probes were attached, mostly).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReleaseKey {
    /// Process (thread group) id.
    pub tgid: u32,
    /// Always zero.
    pub pad: u32,
    /// The return address into `free`'s caller (0 when it could not be read).
    pub site: u64,
}

/// Running totals of the frees of one [`ReleaseKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseStats {
    /// Frees.
    pub frees: u64,
    /// Their usable bytes, where the allocator tells them (see [`FreedSize`]); else 0.
    pub bytes: u64,
}

/// The frames of a user stack, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackTrace {
    /// Number of valid entries in `frames`.
    pub len: u32,
    /// Why the walk stopped, a [`StackEnd`]: only [`StackEnd::Complete`] means the stack
    /// reaches its outermost frame.
    pub end: u32,
    /// Code addresses, innermost first: the instruction pointer, then return addresses. Each
    /// lies in an executable mapping of the process at the time of the walk.
    pub frames: [u64; MAX_FRAMES],
}

/// Why a stack walk stopped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackEnd {
    /// At the outermost frame: the unwind rules say there is no caller (`_start`, a thread's
    /// start routine), or the return address is 0.
    Complete = 0,
    /// The next address is in no executable mapping the kernel programs know of (code
    /// generated at run time, or a mapping user space has not published yet).
    NoMapping = 1,
    /// The next address is in an object whose unwind table user space has not loaded yet.
    NoTable = 2,
    /// No usable unwind rule covers the next address (no call-frame information there, or a
    /// rule the kernel programs cannot follow).
    NoRule = 3,
    /// The stack memory a rule points at could not be read, or it did not lead to an older
    /// frame.
    BadFrame = 4,
    /// [`MAX_FRAMES`] frames were recorded.
    TooDeep = 5,
}

impl StackEnd {
    /// Decodes [`StackTrace::end`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Complete),
            1 => Some(Self::NoMapping),
            2 => Some(Self::NoTable),
            3 => Some(Self::NoRule),
            4 => Some(Self::BadFrame),
            5 => Some(Self::TooDeep),
            _ => None,
        }
    }

    /// Stable snake_case name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::NoMapping => "no_mapping",
            Self::NoTable => "no_table",
            Self::NoRule => "no_rule",
            Self::BadFrame => "bad_frame",
            Self::TooDeep => "too_deep",
        }
    }
}

/// One row of an object's unwind table: from `addr` (an address of the object, as its ELF
/// program headers number them) up to the next row's, the caller's frame is found by `rule`
/// (see [`UnwindRule`]). Rows of one object are sorted by `addr`; a table is shared by every
/// process that maps the object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    /// First address the rule covers.
    pub addr: u32,
    /// The rule, packed by [`UnwindRule::pack`].
    pub rule: u32,
}

/// How to find the caller's frame at an address, from the canonical frame address (CFA, the
/// stack pointer before the call instruction pushed the return address), which the rule
/// computes from the stack or frame pointer. The return address is always at `CFA - 8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnwindRule {
    /// No rule the kernel programs can follow: the walk stops, truncated.
    Invalid,
    /// The outermost frame: there is no caller.
    Stop,
    /// `CFA = rsp + cfa_offset`; the caller's rbp is saved at `CFA - 8 * rbp_slot`, or, with
    /// slot 0, still in rbp.
    Rsp {
        /// Bytes from rsp to the CFA (a multiple of 8).
        cfa_offset: u32,
        /// Where rbp is saved, in words below the CFA; 0: not saved.
        rbp_slot: u8,
    },
    /// `CFA = rbp + cfa_offset`, rbp as in [`UnwindRule::Rsp`] (a frame-pointer frame is
    /// `Rbp { cfa_offset: 16, rbp_slot: 2 }`).
    Rbp {
        /// Bytes from rbp to the CFA (a multiple of 8).
        cfa_offset: u32,
        /// Where rbp is saved, in words below the CFA; 0: not saved.
        rbp_slot: u8,
    },
}

/// [`UnwindRule`] kinds in the low 4 bits of a packed rule.
pub const RULE_INVALID: u32 = 0;
/// See [`RULE_INVALID`].
pub const RULE_STOP: u32 = 1;
/// See [`RULE_INVALID`].
pub const RULE_RSP: u32 = 2;
/// See [`RULE_INVALID`].
pub const RULE_RBP: u32 = 3;
/// Largest CFA offset a packed rule holds (20 bits of words).
pub const MAX_CFA_OFFSET: u32 = ((1 << 20) - 1) * 8;

impl UnwindRule {
    /// Packs the rule into a row's `rule`: kind in bits 0-3, the rbp slot in bits 4-11 and
    /// the CFA offset in words in bits 12-31. `None` when it does not fit (an offset that is
    /// not a multiple of 8 or is larger than [`MAX_CFA_OFFSET`]).
    pub const fn pack(self) -> Option<u32> {
        let (kind, cfa_offset, slot) = match self {
            Self::Invalid => return Some(RULE_INVALID),
            Self::Stop => return Some(RULE_STOP),
            Self::Rsp {
                cfa_offset,
                rbp_slot,
            } => (RULE_RSP, cfa_offset, rbp_slot),
            Self::Rbp {
                cfa_offset,
                rbp_slot,
            } => (RULE_RBP, cfa_offset, rbp_slot),
        };
        if cfa_offset % 8 != 0 || cfa_offset > MAX_CFA_OFFSET {
            return None;
        }
        Some(kind | (slot as u32) << 4 | (cfa_offset / 8) << 12)
    }

    /// Unpacks a row's `rule`.
    pub const fn unpack(packed: u32) -> Self {
        let cfa_offset = (packed >> 12) * 8;
        let rbp_slot = ((packed >> 4) & 0xff) as u8;
        match packed & 0xf {
            RULE_STOP => Self::Stop,
            RULE_RSP => Self::Rsp {
                cfa_offset,
                rbp_slot,
            },
            RULE_RBP => Self::Rbp {
                cfa_offset,
                rbp_slot,
            },
            _ => Self::Invalid,
        }
    }
}

/// Most stack words a remembered stack walk may have read (two per frame: the return address
/// and the saved rbp).
pub const CACHED_WORDS: usize = 64;

/// Where a remembered stack walk started (the key of the kernel programs' walk cache).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkKey {
    /// Process (thread group) id.
    pub tgid: u32,
    /// [`ProcMappings::generation`] at the walk.
    pub generation: u32,
    /// The instruction pointer the walk started from.
    pub pc: u64,
    /// The stack pointer it started from.
    pub sp: u64,
}

/// A remembered stack walk: its stack id and every stack word it read, so that a walk from the
/// same place over the same words can be skipped.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CachedWalk {
    /// The stack's id.
    pub stack_id: u64,
    /// The starting frame pointer, when a rule used it (`uses_bp`).
    pub bp: u64,
    /// A checksum of the rest, so that a value torn by a concurrent replacement is not used.
    pub checksum: u64,
    /// 1 when the walk used the starting frame pointer.
    pub uses_bp: u32,
    /// Words read.
    pub words: u32,
    /// Bytes of stack from the stack pointer that the words span.
    pub span: u32,
    /// Always zero.
    pub pad: u32,
    /// Each word's offset from the stack pointer.
    pub offsets: [u16; CACHED_WORDS],
    /// Each word's value.
    pub values: [u64; CACHED_WORDS],
}

/// Bit 63 of a [`StackTrace`] frame marks a Python frame: code object address in bits 0-46,
/// instruction index (in 2-byte code units, capped at [`PYTHON_LASTI_MAX`]) in bits 47-62.
pub const PYTHON_FRAME: u64 = 1 << 63;
/// Bits of a Python frame's code object address.
pub const PYTHON_CODE_MASK: u64 = (1 << 47) - 1;
/// Largest instruction index a Python frame holds.
pub const PYTHON_LASTI_MAX: u64 = (1 << 16) - 1;

/// A Python frame as a [`StackTrace`] frame.
pub const fn python_frame(code: u64, lasti: u64) -> u64 {
    let lasti = if lasti > PYTHON_LASTI_MAX {
        PYTHON_LASTI_MAX
    } else {
        lasti
    };
    PYTHON_FRAME | lasti << 47 | (code & PYTHON_CODE_MASK)
}

/// The (code object address, instruction index) of a frame made by [`python_frame`], `None` for
/// a native frame.
pub const fn python_frame_parts(frame: u64) -> Option<(u64, u64)> {
    if frame & PYTHON_FRAME == 0 {
        return None;
    }
    Some((frame & PYTHON_CODE_MASK, (frame >> 47) & PYTHON_LASTI_MAX))
}

/// Where the stack walk finds the Python frames of a CPython process: user space fills one per
/// traced Python process from its interpreter's version (`Py_Version`) and a table of struct
/// offsets. The walk finds the allocating thread's `PyThreadState` in the interpreter's thread
/// list by its native thread id, and at each native frame in `_PyEval_EvalFrameDefault` inserts
/// the Python frames that activation of the interpreter runs (a run ends at the frame marked as
/// the activation's entry, or, from 3.12, just before the C-stack shim frame).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProcess {
    /// Address of `_PyRuntime.interpreters.head` (the first interpreter's state pointer).
    pub interpreters_head: u64,
    /// `_PyEval_EvalFrameDefault`'s addresses in the process, `[start, end)`.
    pub eval_start: u64,
    /// See `eval_start`.
    pub eval_end: u64,
    /// Offset of `threads.head` in `PyInterpreterState`.
    pub threads_head: u32,
    /// Offset of `next` in `PyThreadState`.
    pub thread_next: u32,
    /// Offset of `native_thread_id` in `PyThreadState`.
    pub thread_native_id: u32,
    /// Offset in `PyThreadState` of `cframe` (3.11, 3.12) or `current_frame` (3.13).
    pub thread_frame: u32,
    /// Offset of `current_frame` in `_PyCFrame`, or [`NO_CFRAME`] when `thread_frame` is the
    /// frame itself.
    pub cframe_frame: u32,
    /// Offsets in `_PyInterpreterFrame` of the code object, the previous frame, the
    /// instruction pointer and the byte that marks a run's end.
    pub frame_code: u32,
    /// See `frame_code`.
    pub frame_previous: u32,
    /// See `frame_code`.
    pub frame_instr: u32,
    /// See `frame_code`.
    pub frame_marker: u32,
    /// The marker byte's value at a run's end (`is_entry` 1; `owner` FRAME_OWNED_BY_CSTACK 3).
    pub marker_value: u32,
    /// 1 when the marked frame is a shim that ends the run and is not reported (3.12+); 0 when
    /// it is the run's outermost Python frame (3.11).
    pub marker_is_shim: u32,
    /// Offset of the bytecode in a code object (`co_code_adaptive`).
    pub code_adaptive: u32,
}

/// [`PythonProcess::cframe_frame`] when there is no `_PyCFrame` indirection.
pub const NO_CFRAME: u32 = u32::MAX;

/// Most executable mappings of one process the kernel programs can unwind through.
pub const MAX_EXEC_MAPPINGS: usize = 256;

/// One executable mapping of a process, as the unwinder sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecMapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// What to subtract from an address in the mapping to get the object's own address (the
    /// one its unwind rows use).
    pub bias: u64,
    /// The object's rows: `rows_len` entries of the rows map from `rows_first`. 0 rows: the
    /// table is not loaded yet.
    pub rows_first: u32,
    /// See `rows_first`.
    pub rows_len: u32,
}

/// The executable mappings of one process, sorted by start address, for the unwinder's
/// binary search: `starts` repeats each mapping's start (the search reads only it) and pads
/// the unused tail with `i64::MAX` (the search compares as signed numbers; user addresses are
/// below 2^47).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcMappings {
    /// Number of mappings.
    pub len: u32,
    /// Changes with every publication (over all processes): stack walks cached under another
    /// generation are not reused.
    pub generation: u32,
    /// `mappings[i].start`, then `i64::MAX`.
    pub starts: [u64; MAX_EXEC_MAPPINGS],
    /// The mappings.
    pub mappings: [ExecMapping; MAX_EXEC_MAPPINGS],
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
    /// A stack walk of the process met an address in no known executable mapping, or in an
    /// object without an unwind table (`addr`): user space should publish its mappings again.
    /// Sent once until user space clears the request.
    UnwindTableWanted = 7,
    /// A thread of a process traced by its page faults wrote to a page that was not writable
    /// yet (`addr`, page-aligned): most often a page of anonymous memory brought in.
    PageFault = 8,
    /// `madvise(addr, len, advice)` released pages (`MADV_DONTNEED`, `MADV_FREE`,
    /// `MADV_REMOVE`, `MADV_DONTNEED_LOCKED`; the advice in `flags`).
    Madvise = 9,
    /// A process ended that user space wants to hear of: one the OOM killer chose, one a
    /// signal killed, or a traced one. `flags` is its exit code as `wait` reports it (the
    /// signal in bits 0-6, the exit status in bits 8-15); `addr` is [`END_OOM_VICTIM`] when the
    /// OOM killer chose it.
    End = 10,
}

/// `Event::addr` of an [`EventKind::End`] whose process the OOM killer chose.
pub const END_OOM_VICTIM: u64 = 1;

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
            7 => Some(Self::UnwindTableWanted),
            8 => Some(Self::PageFault),
            9 => Some(Self::Madvise),
            10 => Some(Self::End),
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
    /// Stack walks cut short at an address in no known executable mapping.
    TruncatedNoMapping = 12,
    /// Stack walks cut short at an object whose unwind table was not loaded yet.
    TruncatedNoTable = 13,
    /// Stack walks cut short where no usable unwind rule covers the address.
    TruncatedNoRule = 14,
    /// Stack walks cut short at unreadable or inconsistent stack memory.
    TruncatedBadFrame = 15,
    /// Stack walks cut short at [`MAX_FRAMES`].
    TruncatedTooDeep = 16,
    /// Write faults of processes traced by their page faults, sent to user space.
    PageFaults = 17,
    /// Frees of unknown addresses not counted by site because the releases map was full.
    DroppedReleasesFull = 18,
}

/// Number of entries of the statistics array.
pub const STAT_COUNT: u32 = 19;

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
        Self::TruncatedNoMapping,
        Self::TruncatedNoTable,
        Self::TruncatedNoRule,
        Self::TruncatedBadFrame,
        Self::TruncatedTooDeep,
        Self::PageFaults,
        Self::DroppedReleasesFull,
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
            Self::TruncatedNoMapping => "stacks_truncated_no_mapping",
            Self::TruncatedNoTable => "stacks_truncated_no_table",
            Self::TruncatedNoRule => "stacks_truncated_no_rule",
            Self::TruncatedBadFrame => "stacks_truncated_bad_frame",
            Self::TruncatedTooDeep => "stacks_truncated_too_deep",
            Self::PageFaults => "page_faults",
            Self::DroppedReleasesFull => "releases_map_full",
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
                | Self::DroppedReleasesFull
        )
    }
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every type user space reads from or writes to a map.
    use super::{
        AllocInfo, AllocKey, CachedWalk, Event, ExecMapping, InFlight, ProcMappings, PythonProcess,
        ReleaseKey, ReleaseStats, SampleBucket, StackKey, StackStats, StackTrace, SyscallArgs,
        UnwindRow, WalkKey,
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
    // SAFETY: as above.
    unsafe impl aya::Pod for UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExecMapping {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ProcMappings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for WalkKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PythonProcess {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CachedWalk {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ReleaseKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ReleaseStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tgid_has_one_filter_bit_shared_only_modulo_the_filter_size() {
        assert_eq!(target_bit(0), (0, 1));
        assert_eq!(target_bit(65), (1, 2));
        assert_eq!(
            target_bit(TARGET_BITS - 1),
            (TARGET_BITS / TARGET_BITS_PER_WORD - 1, 1 << 63)
        );
        assert_eq!(target_bit(TARGET_BITS + 65), target_bit(65));
        assert_ne!(target_bit(4_194_303), target_bit(4_194_302));
    }

    #[test]
    fn rules_pack_and_unpack() {
        let rules = [
            UnwindRule::Invalid,
            UnwindRule::Stop,
            UnwindRule::Rsp {
                cfa_offset: 8,
                rbp_slot: 0,
            },
            UnwindRule::Rsp {
                cfa_offset: 1_048_720,
                rbp_slot: 3,
            },
            UnwindRule::Rbp {
                cfa_offset: 16,
                rbp_slot: 2,
            },
            UnwindRule::Rbp {
                cfa_offset: MAX_CFA_OFFSET,
                rbp_slot: 255,
            },
        ];
        for rule in rules {
            let packed = rule.pack().expect("fits");
            assert_eq!(UnwindRule::unpack(packed), rule);
        }
        let odd = UnwindRule::Rsp {
            cfa_offset: 12,
            rbp_slot: 0,
        };
        assert_eq!(odd.pack(), None);
        let huge = UnwindRule::Rbp {
            cfa_offset: MAX_CFA_OFFSET + 8,
            rbp_slot: 0,
        };
        assert_eq!(huge.pack(), None);
        assert_eq!(UnwindRule::unpack(0xf), UnwindRule::Invalid);
    }

    #[test]
    fn stack_ends_and_stats_round_trip() {
        for raw in 0..6 {
            let end = StackEnd::from_raw(raw).expect("known");
            assert_eq!(end as u32, raw);
        }
        assert_eq!(StackEnd::from_raw(6), None);
        for (index, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, index);
        }
    }

    #[test]
    fn free_cookies_carry_the_block_layout() {
        for size in [FreedSize::Unknown, FreedSize::GlibcChunk] {
            let cookie = AllocFn::free_cookie(size);
            assert_eq!(AllocFn::from_cookie(cookie), Some(AllocFn::Free));
            assert_eq!(FreedSize::from_cookie(cookie), size);
        }
        assert_eq!(
            FreedSize::from_cookie(AllocFn::Free.cookie(0)),
            FreedSize::Unknown
        );
    }

    #[test]
    fn glibc_usable_sizes_as_malloc_usable_size() {
        // malloc(4096) on x86-64: a 4112-byte chunk in use after an in-use one (PREV_INUSE).
        assert_eq!(glibc_usable_size(4112 | 1), 4104);
        // malloc(24): the smallest chunk; NON_MAIN_ARENA does not change the size.
        assert_eq!(glibc_usable_size(32 | 1 | 4), 24);
        // A 256 KiB block mapped on its own: 4 KiB pages, 16 bytes of header.
        assert_eq!(glibc_usable_size(266_240 | 2), 266_224);
        // Not a chunk size: misaligned, too small.
        assert_eq!(glibc_usable_size(4104), 0);
        assert_eq!(glibc_usable_size(16 | 1), 0);
        assert_eq!(glibc_usable_size(0), 0);
    }
}
