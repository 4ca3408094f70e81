//! leakmon's kernel programs.
//!
//! * `alloc_enter` / `alloc_exit`: a uprobe and a uretprobe on every allocating libc entry point
//!   (the attach cookie says which one). The entry remembers the arguments per thread, the return
//!   records the allocation under `(tgid, address)` with its size, time and stack, and adds it to
//!   the per-stack totals. Allocator calls nested inside another one on the same thread (realloc
//!   calling malloc, malloc calling mmap) are counted once, as the outer call.
//! * `free_enter`: removes the freed allocation and subtracts it from its stack's totals. A free
//!   of an address it never saw allocated (memory allocated before the trace) is counted by
//!   process and freeing site (the return address into `free`'s caller) in `RELEASES`, with the
//!   block's usable size where the allocator keeps it in a header (glibc).
//! * `sys_{enter,exit}_{mmap,munmap,mremap,brk}`: the memory-mapping system calls of traced
//!   processes, sent to user space (which keeps the interval bookkeeping partial unmaps need).
//! * `sched_process_exit` / `sched_process_exec` (BTF tracepoints): stop tracing a process that
//!   exits and tell user space, which then releases the process's state, so a reused pid never
//!   inherits it.
//! * `oom_mark_victim` / `process_end` (BTF tracepoints, in `ends`): how processes end (the OOM
//!   killer's victims, deaths by signal), told to user space.
//! * `empty_enter` / `empty_exit`: do nothing; the probe-cost benchmark attaches them.
//!
//! Every record that cannot be kept is counted in the per-CPU `STATS` array.
#![no_std]
#![no_main]
// Atomic read-modify-write on map values: core's atomic types have no RMW methods on the BPF
// target, the intrinsics lower to the BPF atomic add instruction.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "atomic intrinsics, see above")]
// Map keys and values are passed by reference on purpose: by value they would be copied onto the
// 512-byte BPF stack (a stack trace alone is 520 bytes).
#![allow(clippy::needless_borrows_for_generic_args)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_ANY, BPF_NOEXIST, BPF_RB_NO_WAKEUP, bpf_pidns_info},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_attach_cookie, bpf_get_current_task_btf, bpf_get_ns_current_pid_tgid,
            bpf_get_prandom_u32, bpf_send_signal, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, map, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
mod ends;
mod page_faults;
mod python;
mod unwind;

use monitor_common::{
    AllocFn, AllocInfo, AllocKey, BRK_NESTED, EXEC_STOPPED, Event, EventKind, FreedSize, InFlight,
    ReleaseKey, ReleaseStats, SAMPLE_BUCKET_SCALE, SAMPLE_BUCKETS, STAT_COUNT, SampleBucket,
    StackKey, StackStats, StackTrace, Stat, SyscallArgs, TARGET_BITS, TARGET_BITS_PER_WORD,
    TARGET_STOP_AT_EXEC, WEIGHT_ONE, glibc_usable_size, target_bit,
};

/// `MAP_ANONYMOUS` from `<sys/mman.h>`.
const MAP_ANONYMOUS: u64 = 0x20;
/// `SIGSTOP`.
const SIGSTOP: u32 = 19;
/// `PROT_EXEC` from `<sys/mman.h>`.
const PROT_EXEC: u64 = 0x4;
/// The `madvise` advice that releases pages, from `<sys/mman.h>`.
const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;
const MADV_REMOVE: u64 = 9;
const MADV_DONTNEED_LOCKED: u64 = 24;
/// Offset of the first argument in a `syscalls:sys_enter_*` record (and of `ret` in `sys_exit_*`).
const SYSCALL_ARG0: usize = 16;
/// Offsets in x86-64 `struct pt_regs` (a kernel ABI: r15, r14, r13, r12, bp, bx, r11, r10, r9,
/// r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss; 8 bytes each).
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_SP: usize = 19 * 8;
/// `-EEXIST`, as map helpers return it.
const EEXIST: i32 = -17;

/// The PID namespace (device, inode) user space sees processes in, when it is not the initial
/// one: pids are then translated into it. Set at load; 0 means the initial namespace.
#[unsafe(no_mangle)]
static PIDNS_DEV: u64 = 0;
#[unsafe(no_mangle)]
static PIDNS_INO: u64 = 0;

use unwind::{Captured, UserRegs, capture_stack, walk_stack};

#[map]
pub(crate) static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// The filter in front of `TARGETS` (see `monitor_common::TARGET_BITS`), written by user space.
#[map]
static TARGET_WORDS: Array<u64> = Array::with_max_entries(TARGET_BITS / TARGET_BITS_PER_WORD, 0);

#[map]
static INFLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(16384, 0);

#[map]
static ALLOCS: HashMap<AllocKey, AllocInfo> = HashMap::with_max_entries(262_144, 0);

#[map]
static STACK_STATS: HashMap<StackKey, StackStats> = HashMap::with_max_entries(32768, 0);

#[map]
static STACKS: HashMap<StackKey, StackTrace> = HashMap::with_max_entries(32768, 0);

#[map]
static SYSCALLS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16384, 0);

#[map]
static RELEASES: HashMap<ReleaseKey, ReleaseStats> = HashMap::with_max_entries(16384, 0);

#[map]
pub(crate) static SCRATCH: PerCpuArray<StackTrace> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SAMPLE_TABLE: Array<SampleBucket> = Array::with_max_entries(SAMPLE_BUCKETS, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

#[inline(always)]
pub(crate) fn count(stat: Stat) {
    if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// The current thread's (pid_tgid, tgid) as user space numbers them; (0, 0), never a target, for
/// a thread outside user space's PID namespace.
#[inline(always)]
pub(crate) fn current() -> (u64, u32) {
    // SAFETY: plain loads of globals user space sets before loading; volatile so that they are
    // not folded to their initial value.
    let (dev, ino) = unsafe {
        (
            core::ptr::read_volatile(&PIDNS_DEV),
            core::ptr::read_volatile(&PIDNS_INO),
        )
    };
    if dev == 0 {
        let pid_tgid = bpf_get_current_pid_tgid();
        return (pid_tgid, (pid_tgid >> 32) as u32);
    }
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `info` is a writable `bpf_pidns_info` of the size given.
    let translated = unsafe {
        bpf_get_ns_current_pid_tgid(dev, ino, &mut info, size_of::<bpf_pidns_info>() as u32)
    };
    if translated != 0 {
        return (0, 0);
    }
    (
        (u64::from(info.tgid) << 32) | u64::from(info.pid),
        info.tgid,
    )
}

/// The `TARGETS` value (mode bits) of the process, if it is traced. The filter bit is read
/// first: clear, it proves the process is not traced from one array read (the verifier inlines
/// it), so the programs that fire for every process skip the hash lookup.
#[inline(always)]
pub(crate) fn target_mode(tgid: u32) -> Option<*mut u32> {
    let (word, mask) = target_bit(tgid);
    if TARGET_WORDS.get(word).is_none_or(|bits| bits & mask == 0) {
        return None;
    }
    TARGETS.get_ptr_mut(&tgid)
}

/// Whether the process is traced (the memory-mapping tracepoints fire for every process).
#[inline(always)]
fn is_target(tgid: u32) -> bool {
    target_mode(tgid).is_some()
}

/// The sampling weight for an allocation of `size` bytes, or 0 to skip it.
#[inline(always)]
fn sample_weight(size: u64, rate: u64) -> u32 {
    if rate == 0 {
        return WEIGHT_ONE;
    }
    // User space caps the rate far below u64::MAX / SAMPLE_BUCKET_SCALE, so no overflow here.
    if size >= rate * (u64::from(SAMPLE_BUCKETS) / SAMPLE_BUCKET_SCALE) {
        return WEIGHT_ONE;
    }
    let bucket = size * SAMPLE_BUCKET_SCALE / rate;
    let Some(entry) = SAMPLE_TABLE.get(bucket as u32) else {
        return WEIGHT_ONE;
    };
    // SAFETY: plain helper call.
    if entry.threshold == u32::MAX || unsafe { bpf_get_prandom_u32() } < entry.threshold {
        entry.weight
    } else {
        0
    }
}

/// Adds `value` to `*dst` atomically (wrapping, so adding a negated value subtracts).
///
/// # Safety
/// `dst` must point into a live map value.
#[inline(always)]
unsafe fn atomic_add(dst: *mut u64, value: u64) {
    // SAFETY: guaranteed by the caller.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, value) };
}

#[inline(always)]
fn stats_add(key: &StackKey, bytes: u64, weight: u64) -> bool {
    match STACK_STATS.get_ptr_mut(key) {
        Some(stats) => {
            // SAFETY: `stats` points into a live map value; the atomics make concurrent updates
            // from other CPUs safe.
            unsafe {
                atomic_add(&raw mut (*stats).bytes, bytes);
                atomic_add(&raw mut (*stats).count, weight);
            }
            true
        }
        None => false,
    }
}

#[inline(always)]
fn stats_sub(tgid: u32, info: &AllocInfo) {
    let key = StackKey {
        tgid,
        pad: 0,
        stack_id: info.stack_id,
    };
    if let Some(stats) = STACK_STATS.get_ptr_mut(&key) {
        // SAFETY: as in `stats_add`.
        unsafe {
            atomic_add(&raw mut (*stats).bytes, info.weighted_bytes.wrapping_neg());
            atomic_add(
                &raw mut (*stats).count,
                u64::from(info.weight).wrapping_neg(),
            );
        }
    }
}

/// Stores the captured stack under `key` unless it is already known.
#[inline(always)]
fn intern_stack(key: &StackKey, trace: *mut StackTrace) -> bool {
    // SAFETY: `trace` is the per-CPU scratch buffer filled by `capture_stack`.
    match STACKS.insert(key, unsafe { &*trace }, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        Err(err) => err == EEXIST, // another CPU stored the same stack first
    }
}

/// `size * weight / WEIGHT_ONE` without 128-bit arithmetic (which BPF lacks).
#[inline(always)]
fn weigh(size: u64, weight: u32) -> u64 {
    if weight == WEIGHT_ONE {
        return size;
    }
    let weight = u64::from(weight);
    (size >> 16).wrapping_mul(weight) + (((size & 0xffff) * weight) >> 16)
}

/// Records a new allocation and adds it to its stack's totals.
#[inline(always)]
fn record_alloc(regs: UserRegs, tgid: u32, addr: u64, size: u64, weight: u32, kind: u32) {
    let weighted_bytes = weigh(size, weight);
    let mut key = StackKey {
        tgid,
        pad: 0,
        stack_id: 0,
    };
    let mut captured = capture_stack(tgid, regs);
    if let Some(Captured::Remembered(id)) = captured {
        key.stack_id = id;
        // A remembered stack has its totals entry, unless they were full when it was first
        // seen: then walk it again for its frames.
        captured = if stats_add(&key, weighted_bytes, u64::from(weight)) {
            None
        } else {
            key.stack_id = 0;
            walk_stack(tgid, regs)
        };
    }
    if let Some(Captured::Walked(id, trace)) = captured {
        key.stack_id = id;
        if !stats_add(&key, weighted_bytes, u64::from(weight)) {
            if intern_stack(&key, trace) {
                let fresh = StackStats {
                    bytes: weighted_bytes,
                    count: u64::from(weight),
                };
                if STACK_STATS
                    .insert(&key, &fresh, u64::from(BPF_NOEXIST))
                    .is_err()
                    && !stats_add(&key, weighted_bytes, u64::from(weight))
                {
                    count(Stat::DroppedStacksFull);
                    key.stack_id = 0;
                }
            } else {
                count(Stat::DroppedStacksFull);
                key.stack_id = 0;
            }
        }
    }
    if key.stack_id == 0 && !stats_add(&key, weighted_bytes, u64::from(weight)) {
        let fresh = StackStats {
            bytes: weighted_bytes,
            count: u64::from(weight),
        };
        if STACK_STATS
            .insert(&key, &fresh, u64::from(BPF_NOEXIST))
            .is_err()
        {
            stats_add(&key, weighted_bytes, u64::from(weight));
        }
    }
    let alloc_key = AllocKey { tgid, pad: 0, addr };
    let info = AllocInfo {
        size,
        weighted_bytes,
        // SAFETY: plain helper call.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        stack_id: key.stack_id,
        weight,
        kind,
    };
    // Allocators hand freed addresses out again quickly, so most allocations land on an entry
    // left as a tombstone by `take_alloc`: it is rewritten in place, with no map update.
    if let Some(slot) = ALLOCS.get_ptr_mut(&alloc_key) {
        // SAFETY: a live map value; no other thread can be handed this address concurrently.
        unsafe {
            if (*slot).weight != 0 {
                // An allocation at an address we still hold means we missed its free.
                stats_sub(tgid, &*slot);
            }
            *slot = info;
        }
    } else if ALLOCS
        .insert(&alloc_key, &info, u64::from(BPF_NOEXIST))
        .is_err()
    {
        count(Stat::DroppedAllocsFull);
        stats_sub(tgid, &info);
        return;
    }
    count(Stat::Allocs);
}

/// Allocations at least this large are deleted when freed rather than left as tombstones:
/// allocators map them on their own (glibc's default mmap threshold is 128 KiB), so their
/// addresses are rarely handed out again.
const TOMBSTONE_MAX_SIZE: u64 = 128 * 1024;

/// Removes the allocation at `addr`, returning its record. A small allocation's entry stays as
/// a tombstone (`weight == 0`) for the next allocation at the same address to reuse in place,
/// which saves a map delete and an insert (the most expensive operations of the hot path); user
/// space sweeps tombstones that stay unused.
#[inline(always)]
fn take_alloc(tgid: u32, addr: u64) -> Option<AllocInfo> {
    let key = AllocKey { tgid, pad: 0, addr };
    let slot = ALLOCS.get_ptr_mut(&key)?;
    // SAFETY: a live map value; the address is being freed by this thread.
    let info = unsafe {
        if (*slot).weight == 0 {
            return None;
        }
        let info = *slot;
        (*slot).weight = 0;
        info
    };
    if info.size >= TOMBSTONE_MAX_SIZE {
        let _ = ALLOCS.remove(&key);
    }
    stats_sub(tgid, &info);
    Some(info)
}

#[uprobe]
pub fn alloc_enter(ctx: ProbeContext) -> u32 {
    let (pid_tgid, tgid) = current();
    // SAFETY: a uprobe's context is the user registers at the probe.
    let sp = unsafe { (*ctx.regs).rsp };
    let existing = INFLIGHT.get_ptr_mut(&pid_tgid);
    if let Some(inflight) = existing {
        // SAFETY: the entry belongs to this thread; no other CPU touches it.
        unsafe {
            if (*inflight).active != 0 {
                // A nested call runs deeper in the stack, or at the same depth when the
                // outer function tail-jumps into it (reallocarray into realloc).
                if sp <= (*inflight).sp {
                    (*inflight).depth += 1;
                    count(Stat::Nested);
                    return 0;
                }
                // Shallower than the call in flight: that call never returned through its
                // probe, so its entry is stale and this call starts afresh.
                count(Stat::DroppedUnmatchedReturn);
            }
        }
    }
    // SAFETY: plain helper call.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(kind) = AllocFn::from_cookie(cookie) else {
        return 0;
    };
    let arg = |n| ctx.arg::<u64>(n).unwrap_or(0);
    let (size, old_addr, memptr) = match kind {
        AllocFn::Malloc | AllocFn::Valloc | AllocFn::Pvalloc => (arg(0), 0, 0),
        AllocFn::Calloc => (arg(0).wrapping_mul(arg(1)), 0, 0),
        AllocFn::Realloc => (arg(1), arg(0), 0),
        AllocFn::Reallocarray => (arg(1).wrapping_mul(arg(2)), arg(0), 0),
        AllocFn::PosixMemalign => (arg(2), 0, arg(0)),
        AllocFn::AlignedAlloc | AllocFn::Memalign => (arg(1), 0, 0),
        AllocFn::Free => return 0,
    };
    let record = InFlight {
        kind: kind as u32,
        depth: 0,
        active: 1,
        weight: sample_weight(size, AllocFn::cookie_sample_rate(cookie)),
        old_valid: 0,
        pad: 0,
        size,
        memptr,
        old_addr,
        sp,
        old: AllocInfo {
            size: 0,
            weighted_bytes: 0,
            timestamp_ns: 0,
            stack_id: 0,
            weight: 0,
            kind: 0,
        },
    };
    match existing {
        // SAFETY: this thread's idle entry, reused in place.
        Some(inflight) => unsafe { *inflight = record },
        None => {
            // A thread's first call, or its first since user space purged the process: its
            // probes may outlive its registration by the grace periods of their detaching,
            // and nothing recorded then would ever be purged.
            if !is_target(tgid) {
                return 0;
            }
            if INFLIGHT
                .insert(&pid_tgid, &record, u64::from(BPF_ANY))
                .is_err()
            {
                count(Stat::DroppedInflightFull);
                return 0;
            }
        }
    }
    if old_addr != 0 {
        // The old block stops being ours now: realloc may free it before returning, and another
        // thread may be handed the same address before our return probe runs.
        if let Some(old) = take_alloc(tgid, old_addr)
            && let Some(inflight) = INFLIGHT.get_ptr_mut(&pid_tgid)
        {
            // SAFETY: this thread's entry.
            unsafe {
                (*inflight).old = old;
                (*inflight).old_valid = 1;
            }
        }
    }
    0
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    let (pid_tgid, tgid) = current();
    // A return without an entry in flight belongs to a call that began before the entry probe
    // was attached: nothing of it was recorded, so nothing is lost.
    let Some(inflight) = INFLIGHT.get_ptr_mut(&pid_tgid) else {
        return 0;
    };
    // SAFETY: this thread's entry.
    let record = unsafe {
        if (*inflight).active == 0 {
            return 0;
        }
        if (*inflight).depth > 0 {
            (*inflight).depth -= 1;
            return 0;
        }
        (*inflight).active = 0;
        *inflight
    };
    let ret: u64 = ctx.ret();
    let addr = if record.kind == AllocFn::PosixMemalign as u32 {
        if ret == 0 {
            // SAFETY: reads user memory through the checked helper.
            unsafe { bpf_probe_read_user(record.memptr as *const u64) }.unwrap_or(0)
        } else {
            0
        }
    } else {
        ret
    };
    if addr == 0 {
        // A failed realloc leaves the old block allocated; realloc(p, 0) freed it.
        if record.old_valid != 0 && record.size != 0 {
            let key = AllocKey {
                tgid,
                pad: 0,
                addr: record.old_addr,
            };
            let stack = StackKey {
                tgid,
                pad: 0,
                stack_id: record.old.stack_id,
            };
            if ALLOCS.insert(&key, &record.old, u64::from(BPF_ANY)).is_ok() {
                stats_add(
                    &stack,
                    record.old.weighted_bytes,
                    u64::from(record.old.weight),
                );
            } else {
                count(Stat::DroppedAllocsFull);
            }
        }
        return 0;
    }
    if record.weight == 0 {
        count(Stat::Unsampled);
        return 0;
    }
    // SAFETY: a return probe's context is the user registers at the return address, where
    // the allocator's caller resumes.
    let regs = unsafe {
        UserRegs {
            ip: (*ctx.regs).rip,
            sp: (*ctx.regs).rsp,
            bp: (*ctx.regs).rbp,
            ip_is_return: true,
        }
    };
    record_alloc(regs, tgid, addr, record.size, record.weight, record.kind);
    0
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let (_, tgid) = current();
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    if addr == 0 {
        return 0;
    }
    if take_alloc(tgid, addr).is_some() {
        count(Stat::Frees);
        return 0;
    }
    count(Stat::FreesUnknown);
    record_release(&ctx, tgid, addr);
    0
}

/// Counts the free of `addr`, an address never seen allocated, under its freeing site.
#[inline(always)]
fn record_release(ctx: &ProbeContext, tgid: u32, addr: u64) {
    // SAFETY: a uprobe's context is the user registers at the probe, which sits before `free`
    // moves the stack pointer or stores through it (see the placement of probes in user
    // space): [rsp] is the return address into the caller.
    let site = unsafe { bpf_probe_read_user((*ctx.regs).rsp as *const u64) }.unwrap_or(0);
    // SAFETY: plain helper call.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let bytes = match FreedSize::from_cookie(cookie) {
        FreedSize::GlibcChunk => {
            // SAFETY: reads user memory through the checked helper.
            let header =
                unsafe { bpf_probe_read_user(addr.wrapping_sub(8) as *const u64) }.unwrap_or(0);
            glibc_usable_size(header)
        }
        FreedSize::Unknown => 0,
    };
    let key = ReleaseKey { tgid, pad: 0, site };
    let add = |stats: *mut ReleaseStats| {
        // SAFETY: `stats` points into a live map value; the atomics make concurrent updates
        // from other CPUs safe.
        unsafe {
            atomic_add(&raw mut (*stats).frees, 1);
            atomic_add(&raw mut (*stats).bytes, bytes);
        }
    };
    if let Some(stats) = RELEASES.get_ptr_mut(&key) {
        add(stats);
        return;
    }
    // As in `alloc_enter`: a probe that outlived the process's registration must not leave
    // an entry nothing would purge.
    if !is_target(tgid) {
        return;
    }
    let fresh = ReleaseStats { frees: 1, bytes };
    if RELEASES
        .insert(&key, &fresh, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU inserted the same site first, or the map is full.
        match RELEASES.get_ptr_mut(&key) {
            Some(stats) => add(stats),
            None => count(Stat::DroppedReleasesFull),
        }
    }
}

/// The user registers the current system call was made with, for [`capture_stack`].
#[inline(always)]
fn syscall_regs() -> Option<UserRegs> {
    // SAFETY: plain helper calls.
    user_regs_at(unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8)
}

/// The user registers saved in the kernel's `struct pt_regs` at `regs`, where the thread was
/// interrupted (a system call, a page fault): its instruction pointer is not a return address.
#[inline(always)]
pub(crate) fn user_regs_at(regs: *const u8) -> Option<UserRegs> {
    if regs.is_null() {
        return None;
    }
    // SAFETY: the fields are read through the checked helper.
    let read = |offset: usize| unsafe {
        bpf_probe_read_kernel(regs.wrapping_add(offset).cast::<u64>()).ok()
    };
    Some(UserRegs {
        ip: read(PT_REGS_IP)?,
        sp: read(PT_REGS_SP)?,
        bp: read(PT_REGS_BP)?,
        ip_is_return: false,
    })
}

/// The id of the user stack from `regs`, stored in the stacks map if new; 0 when none could be
/// captured or stored.
#[inline(always)]
pub(crate) fn interned_stack(tgid: u32, regs: UserRegs) -> u64 {
    let mut captured = capture_stack(tgid, regs);
    if let Some(Captured::Remembered(id)) = captured {
        let key = StackKey {
            tgid,
            pad: 0,
            stack_id: id,
        };
        if STACKS.get_ptr(&key).is_some() {
            return id;
        }
        captured = walk_stack(tgid, regs);
    }
    let Some(Captured::Walked(id, trace)) = captured else {
        return 0;
    };
    let key = StackKey {
        tgid,
        pad: 0,
        stack_id: id,
    };
    if intern_stack(&key, trace) {
        id
    } else {
        count(Stat::DroppedStacksFull);
        0
    }
}

/// Decides whether a memory-mapping call of the current thread is reported, and captures its
/// stack when it is. `arg(n)` reads the call's `n`th argument.
///
/// Inside an allocator call, the allocator itself is mapping memory: the outer call accounts
/// for it. Unmapping needs no such care (user space ignores ranges it does not track), and a
/// nested brk is still reported, flagged, so user space follows the program break without
/// attributing the growth: free() shrinks the heap outside any allocation, and the shrink
/// must be measured from where malloc left the break.
#[inline(always)]
fn mapping_call(
    pid_tgid: u64,
    tgid: u32,
    kind: EventKind,
    arg: impl Fn(usize) -> u64,
) -> Option<SyscallArgs> {
    let nested = !matches!(kind, EventKind::Munmap | EventKind::Madvise)
        && INFLIGHT
            .get_ptr(&pid_tgid)
            // SAFETY: this thread's entry.
            .is_some_and(|inflight| unsafe { (*inflight).active } != 0);
    let mut with_stack = !matches!(kind, EventKind::Munmap | EventKind::Madvise);
    if nested {
        count(Stat::Nested);
        if kind != EventKind::Brk {
            return None;
        }
        with_stack = false;
    }
    let mut args = SyscallArgs {
        kind: kind as u32,
        addr: arg(0),
        ..SyscallArgs::default()
    };
    match kind {
        EventKind::Mmap => {
            args.len = arg(1);
            args.prot = arg(2) as u32;
            args.flags = arg(3);
            if args.flags & MAP_ANONYMOUS == 0 {
                // File mappings are not allocations, but an executable one is code being loaded
                // (dlopen): user space records it while the mapping is alive, so frames in a
                // library unloaded later still symbolize.
                if u64::from(args.prot) & PROT_EXEC == 0 {
                    return None;
                }
                with_stack = false;
            }
        }
        EventKind::Munmap => args.len = arg(1),
        EventKind::Mremap => {
            args.len = arg(1);
            args.new_len = arg(2);
            args.flags = arg(3);
        }
        EventKind::Brk => args.flags = if nested { BRK_NESTED } else { 0 },
        EventKind::Madvise => {
            args.len = arg(1);
            args.flags = arg(2);
            if !matches!(
                args.flags,
                MADV_DONTNEED | MADV_FREE | MADV_REMOVE | MADV_DONTNEED_LOCKED
            ) {
                return None;
            }
        }
        EventKind::Exit
        | EventKind::Exec
        | EventKind::UnwindTableWanted
        | EventKind::PageFault
        | EventKind::End => {}
    }
    if with_stack && let Some(regs) = syscall_regs() {
        args.stack_id = interned_stack(tgid, regs);
    }
    Some(args)
}

/// Sends a memory-mapping call that returned `ret` to user space, unless it failed.
#[inline(always)]
fn mapping_done(tgid: u32, args: &SyscallArgs, ret: i64) {
    if (-4095..0).contains(&ret) {
        return;
    }
    let Some(kind) = EventKind::from_raw(args.kind) else {
        return;
    };
    let mut event = Event {
        kind: args.kind,
        tgid,
        // SAFETY: plain helper call.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        addr: args.addr,
        len: args.len,
        prot: args.prot,
        flags: args.flags,
        stack_id: args.stack_id,
        ..Event::default()
    };
    match kind {
        EventKind::Mmap => event.addr = ret as u64,
        EventKind::Mremap => {
            event.new_addr = ret as u64;
            event.new_len = args.new_len;
        }
        EventKind::Brk => event.new_addr = ret as u64,
        EventKind::Munmap
        | EventKind::Madvise
        | EventKind::Exit
        | EventKind::Exec
        | EventKind::UnwindTableWanted
        | EventKind::PageFault
        | EventKind::End => {}
    }
    emit(&event);
}

/// Remembers a memory-mapping call of a traced process until it returns.
#[inline(always)]
fn syscall_enter(ctx: &TracePointContext, kind: EventKind) {
    let (pid_tgid, tgid) = current();
    if !is_target(tgid) {
        return;
    }
    // SAFETY: offsets from the tracepoints' format files, within the record.
    let arg = |n: usize| unsafe { ctx.read_at::<u64>(SYSCALL_ARG0 + 8 * n) }.unwrap_or(0);
    if let Some(args) = mapping_call(pid_tgid, tgid, kind, arg)
        && SYSCALLS
            .insert(&pid_tgid, &args, u64::from(BPF_ANY))
            .is_err()
    {
        count(Stat::DroppedInflightFull);
    }
}

/// Sends the call remembered by [`syscall_enter`] to user space once it returned.
#[inline(always)]
fn syscall_exit(ctx: &TracePointContext, kind: EventKind) {
    let (pid_tgid, tgid) = current();
    // SAFETY: the value is copied before the map is modified.
    let Some(args) = unsafe { SYSCALLS.get(&pid_tgid) }.copied() else {
        return;
    };
    let _ = SYSCALLS.remove(&pid_tgid);
    if args.kind != kind as u32 {
        return;
    }
    // SAFETY: `ret` is at the documented offset of every sys_exit record.
    if let Ok(ret) = unsafe { ctx.read_at::<i64>(SYSCALL_ARG0) } {
        mapping_done(tgid, &args, ret);
    }
}

#[inline(always)]
pub(crate) fn emit(event: &Event) {
    emit_with(event, 0);
}

/// Sends `event` to user space without waking it: for events frequent enough that a wakeup
/// each would cost more than the event (page faults); user space drains them on a timer.
#[inline(always)]
pub(crate) fn emit_quietly(event: &Event) {
    emit_with(event, u64::from(BPF_RB_NO_WAKEUP));
}

#[inline(always)]
fn emit_with(event: &Event, flags: u64) {
    if EVENTS.output::<Event>(event, flags).is_ok() {
        count(Stat::MapEvents);
    } else {
        count(Stat::DroppedRingbufFull);
    }
}

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, EventKind::Mmap);
    0
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, EventKind::Mmap);
    0
}

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, EventKind::Munmap);
    0
}

#[tracepoint]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, EventKind::Munmap);
    0
}

#[tracepoint]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, EventKind::Mremap);
    0
}

#[tracepoint]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, EventKind::Mremap);
    0
}

#[tracepoint]
pub fn sys_enter_madvise(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, EventKind::Madvise);
    0
}

#[tracepoint]
pub fn sys_exit_madvise(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, EventKind::Madvise);
    0
}

#[tracepoint]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    syscall_enter(&ctx, EventKind::Brk);
    0
}

#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    syscall_exit(&ctx, EventKind::Brk);
    0
}

/// `sched_process_exit(task, group_dead)`, a BTF tracepoint (no tracefs needed): a thread of a
/// traced process exits, and its reusable entries go with it; when it is the last one, the
/// process is unregistered and user space told.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let (pid_tgid, tgid) = current();
    if !is_target(tgid) {
        return 0;
    }
    let _ = INFLIGHT.remove(&pid_tgid);
    let _ = SYSCALLS.remove(&pid_tgid);
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return 0;
    }
    let _ = TARGETS.remove(&tgid);
    // SAFETY: plain helper call.
    let timestamp_ns = unsafe { bpf_ktime_get_ns() };
    emit(&Event {
        kind: EventKind::Exit as u32,
        tgid,
        timestamp_ns,
        ..Event::default()
    });
    0
}

/// `sched_process_exec`, a BTF tracepoint.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(_ctx: BtfTracePointContext) -> u32 {
    let (_, tgid) = current();
    let Some(mode) = target_mode(tgid) else {
        return 0;
    };
    // The old image's mappings are gone: walks find none until user space publishes the new.
    let _ = unwind::PROC_MAPPINGS.remove(&tgid);
    let mut flags = 0;
    // SAFETY: a live map value, written by this thread only while it execs.
    unsafe {
        if *mode & TARGET_STOP_AT_EXEC != 0 {
            *mode &= !TARGET_STOP_AT_EXEC;
            // Delivered on the way back to user space: before the new image's first instruction.
            if bpf_send_signal(SIGSTOP) == 0 {
                flags = EXEC_STOPPED;
            }
        }
    }
    // SAFETY: plain helper call.
    let timestamp_ns = unsafe { bpf_ktime_get_ns() };
    emit(&Event {
        kind: EventKind::Exec as u32,
        tgid,
        timestamp_ns,
        flags,
        ..Event::default()
    });
    0
}

/// An empty entry probe: `leakmon bench-probes` attaches it where the allocator probes would go
/// to measure what the breakpoint alone costs.
#[uprobe]
pub fn empty_enter(_ctx: ProbeContext) -> u32 {
    0
}

/// The empty return probe beside [`empty_enter`].
#[uretprobe]
pub fn empty_exit(_ctx: RetProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
