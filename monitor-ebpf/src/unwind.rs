//! The user-stack walk: from the registers at an allocation (or a memory-mapping system call),
//! frame after frame through the call-frame information user space compiled from each
//! object's `.eh_frame` into [`UNWIND_ROWS`], so code built without frame pointers unwinds as
//! well as code built with them.
//!
//! Per frame: find the executable mapping holding the address in the process's
//! [`PROC_MAPPINGS`] (a binary search, skipped while the walk stays in one mapping), record the
//! address (so every recorded frame is code the process had mapped), find the object's row
//! covering it (a binary search over the object's rows), and compute the caller's stack
//! pointer (the CFA), return address and frame pointer. The stack is read once as a window
//! from the stack pointer and frames are taken from that copy; the rare value beyond it is read
//! on its own.
//!
//! The walk stops, recording why in the trace's `end`, at the outermost frame, at an address in
//! no known mapping or in an object whose table is not loaded (user space is then asked, once
//! until it answers, to publish the process's mappings again), where no rule applies, at stack
//! memory that cannot be read or does not lead to an older frame, or after [`MAX_FRAMES`].
//!
//! The frames run in a `bpf_loop` callback whose loop-carried state lives in a per-CPU map
//! value rather than on the BPF stack and whose searches are branchless: the verifier then
//! converges on the callback in one pass instead of exploring every frame count.
//!
//! A walk is a pure function of the starting registers, the stack words it reads and the
//! published tables. So a finished walk is remembered in [`WALK_CACHE`] under (process,
//! publication generation, instruction pointer, stack pointer) with every word it read (and
//! the frame pointer when a rule used its starting value): when an allocation site is hit again
//! at the same stack depth (a loop, a request handler), the walk is replaced by comparing those
//! words with the stack, which is several times cheaper than a search of the rows per frame.
//! A walk that read beyond the stack copy, or stopped for a missing table, is not remembered.
//!
//! Uses the maps and helpers of the crate root (`SCRATCH`, `EVENTS`, `STATS`).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_ktime_get_ns, bpf_loop, bpf_probe_read_user, bpf_probe_read_user_buf},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use monitor_common::{
    CACHED_WORDS, CachedWalk, Event, EventKind, ExecMapping, MAX_EXEC_MAPPINGS, MAX_FRAMES,
    ProcMappings, PythonProcess, RULE_RBP, RULE_RSP, RULE_STOP, StackEnd, StackTrace, Stat,
    UnwindRow, WalkKey,
};

use crate::python::{self, PYTHON_PROCS};
use crate::{SCRATCH, count, current, emit};

/// Bytes of stack copied at the start of a walk (20 frames of C code usually span 2-4 KiB).
const WINDOW: usize = 4096;

/// Every object's unwind rows, each object a contiguous sorted range (sized by user space).
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1 << 20, 0);

/// Per traced process, its executable mappings. Not preallocated: user space replaces a
/// process's value whole, and the kernel frees the old one after the walks reading it end.
#[map]
pub static PROC_MAPPINGS: HashMap<u32, ProcMappings> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Processes whose walks asked user space to publish their mappings again, until it did.
#[map]
pub static UNWIND_WANTED: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// The copy of the stack a walk reads its frames from.
#[map]
static STACK_WINDOW: PerCpuArray<[u8; WINDOW]> = PerCpuArray::with_max_entries(1, 0);

/// Remembered walks (least recently used evicted).
#[map]
pub static WALK_CACHE: LruHashMap<WalkKey, CachedWalk> = LruHashMap::with_max_entries(8192, 0);

/// The walk being remembered.
#[map]
static WALK_RECORD: PerCpuArray<CachedWalk> = PerCpuArray::with_max_entries(1, 0);

/// The state carried from frame to frame.
#[repr(C)]
struct WalkState {
    /// The frame's code address.
    pc: u64,
    /// Its stack pointer.
    sp: u64,
    /// Its frame pointer.
    bp: u64,
    /// Subtracted from `pc` to find its rule: 1 for a return address (whose call instruction
    /// ends just before it, possibly at the end of a function), 0 for an interrupted
    /// instruction.
    back: u64,
    /// Frames recorded.
    len: u64,
    /// A hash of the frames recorded.
    hash: u64,
    /// Why the walk stopped ([`StackEnd`]), or `u64::MAX` while it runs.
    end: u64,
    /// Where the stack copy starts and how many bytes it holds.
    window_base: u64,
    window_len: u64,
    /// 1 while the walk can be remembered: every word it read came from the stack copy.
    cacheable: u64,
    /// 1 once rbp holds a value read from the stack (the starting value is no longer used).
    bp_loaded: u64,
    /// The next Python frame to report (0: none), and 1 while a run of them is being reported
    /// before the interpreter frame at stack pointer `python_sp`.
    python_frame: u64,
    python_pending: u64,
    python_sp: u64,
    /// The mapping of the previous frame.
    mapping: ExecMapping,
}

#[map]
static WALK: PerCpuArray<WalkState> = PerCpuArray::with_max_entries(1, 0);

/// Still walking.
const RUNNING: u64 = u64::MAX;

/// Where a walk starts.
#[derive(Clone, Copy)]
pub struct UserRegs {
    /// The instruction pointer.
    pub ip: u64,
    /// The stack pointer.
    pub sp: u64,
    /// The frame pointer (rbp).
    pub bp: u64,
    /// Whether `ip` is a return address (at a return probe: the allocator's caller) rather than
    /// the next instruction to run (at a system call).
    pub ip_is_return: bool,
}

/// What the frame callback needs besides the per-CPU state.
struct Walk {
    state: *mut WalkState,
    mappings: *const ProcMappings,
    trace: *mut StackTrace,
    window: *const [u8; WINDOW],
    record: *mut CachedWalk,
    /// The process's interpreter, null for a process without one.
    python: *const PythonProcess,
}

/// The stack of an allocation.
pub enum Captured {
    /// Walked now: its id and its frames in the per-CPU trace.
    Walked(u64, *mut StackTrace),
    /// A remembered walk matched the stack: its id (the stacks map holds its frames).
    Remembered(u64),
}

/// The current thread's user stack from `regs`: remembered, or walked into the per-CPU scratch
/// trace. `None` when the process has no published mappings yet (user space is asked for them)
/// or no frame was recorded.
#[inline(always)]
pub fn capture_stack(tgid: u32, regs: UserRegs) -> Option<Captured> {
    let Some(mappings) = PROC_MAPPINGS.get_ptr(&tgid) else {
        want_tables(tgid, regs.ip);
        count(Stat::TruncatedNoMapping);
        return None;
    };
    let window = STACK_WINDOW.get_ptr_mut(0)?;
    let key = WalkKey {
        tgid,
        // SAFETY: a live map value.
        generation: unsafe { (*mappings).generation },
        pc: regs.ip,
        sp: regs.sp,
    };
    // A Python process's stacks go on through its interpreter's frames, which a remembered walk
    // does not check: they are always walked.
    if PYTHON_PROCS.get_ptr(&tgid).is_none()
        // SAFETY: this CPU's window; the remembered value is copied before use.
        && let Some(stack_id) = unsafe { remembered(&key, regs, &mut *window) }
    {
        return Some(Captured::Remembered(stack_id));
    }
    walk(tgid, &key, regs, mappings, window)
}

/// Walks the current thread's user stack from `regs` without looking for a remembered walk
/// (whose stack the caller found missing from the stacks map).
#[inline(always)]
pub fn walk_stack(tgid: u32, regs: UserRegs) -> Option<Captured> {
    let mappings = PROC_MAPPINGS.get_ptr(&tgid)?;
    let window = STACK_WINDOW.get_ptr_mut(0)?;
    let key = WalkKey {
        tgid,
        // SAFETY: a live map value.
        generation: unsafe { (*mappings).generation },
        pc: regs.ip,
        sp: regs.sp,
    };
    walk(tgid, &key, regs, mappings, window)
}

/// The stack id of a remembered walk from `key` if the words it read are still on the stack.
///
/// # Safety
/// `window` is this CPU's stack copy.
#[inline(always)]
unsafe fn remembered(key: &WalkKey, regs: UserRegs, window: &mut [u8; WINDOW]) -> Option<u64> {
    let cached = WALK_CACHE.get_ptr(key)?;
    // SAFETY: a live map value; fields are copied out one at a time, and a value replaced
    // meanwhile fails the checksum.
    let cached = unsafe { &*cached };
    if cached.uses_bp != 0 && cached.bp != regs.bp {
        return None;
    }
    let span = cached.span as usize;
    if span == 0 || span > WINDOW {
        return None;
    }
    // SAFETY: reads user memory through the checked helper into our buffer.
    unsafe { bpf_probe_read_user_buf(regs.sp as *const u8, &mut window[..span]) }.ok()?;
    let words = cached.words as usize;
    let mut checksum = checksum_start(cached.stack_id, cached.bp, cached.uses_bp, words);
    for index in 0..CACHED_WORDS {
        if index >= words {
            break;
        }
        let offset = usize::from(cached.offsets[index]) & (WINDOW - 1);
        if offset > WINDOW - 8 {
            return None;
        }
        let value = cached.values[index];
        // SAFETY: within the window (offset bounded above).
        let on_stack =
            unsafe { core::ptr::read_unaligned(window.as_ptr().add(offset).cast::<u64>()) };
        if on_stack != value {
            return None;
        }
        checksum = checksum_add(checksum, offset as u64, value);
    }
    (checksum == cached.checksum).then_some(cached.stack_id)
}

#[inline(always)]
fn checksum_start(stack_id: u64, bp: u64, uses_bp: u32, words: usize) -> u64 {
    let mut checksum = 0x9e37_79b9_7f4a_7c15 ^ stack_id;
    checksum = checksum_add(checksum, bp, u64::from(uses_bp) << 32 | words as u64);
    checksum
}

#[inline(always)]
fn checksum_add(checksum: u64, offset: u64, value: u64) -> u64 {
    let mixed = (checksum ^ value ^ offset << 48).wrapping_mul(0x0000_0100_0000_01b3);
    mixed ^ mixed >> 31
}

/// Walks the stack from `regs` into the per-CPU trace, and remembers the walk when it can.
#[inline(always)]
fn walk(
    tgid: u32,
    key: &WalkKey,
    regs: UserRegs,
    mappings: *const ProcMappings,
    window: *mut [u8; WINDOW],
) -> Option<Captured> {
    let trace = SCRATCH.get_ptr_mut(0)?;
    let state = WALK.get_ptr_mut(0)?;
    let record = WALK_RECORD.get_ptr_mut(0)?;
    let python = PYTHON_PROCS.get_ptr(&tgid);
    let python_frame = python
        // SAFETY: a live map value.
        .and_then(|python| python::current_frame(unsafe { &*python }, current().0 as u32))
        .unwrap_or(0);
    // SAFETY: this CPU's state, window, record and trace, used by one program at a time.
    unsafe {
        *state = WalkState {
            pc: regs.ip,
            sp: regs.sp,
            bp: regs.bp,
            back: u64::from(regs.ip_is_return),
            len: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            end: RUNNING,
            window_base: regs.sp,
            window_len: copy_window(regs.sp, &mut *window),
            // Python frames are read from the interpreter's memory, not the stack.
            cacheable: u64::from(python_frame == 0),
            bp_loaded: 0,
            python_frame,
            python_pending: 0,
            python_sp: 0,
            mapping: ExecMapping::default(),
        };
        (*record).words = 0;
        (*record).span = 0;
        (*record).uses_bp = 0;
        let mut walk = Walk {
            state,
            mappings,
            trace,
            window,
            record,
            python: python.unwrap_or_default(),
        };
        bpf_loop(
            MAX_FRAMES as u32,
            frame as *mut c_void,
            (&raw mut walk).cast(),
            0,
        );
        let state = &mut *state;
        if state.end == RUNNING {
            state.end = StackEnd::TooDeep as u64;
        }
        let end = state.end as u32;
        let end_kind = StackEnd::from_raw(end);
        match end_kind {
            Some(StackEnd::NoMapping) => count(Stat::TruncatedNoMapping),
            Some(StackEnd::NoTable) => count(Stat::TruncatedNoTable),
            Some(StackEnd::NoRule) => count(Stat::TruncatedNoRule),
            Some(StackEnd::BadFrame) => count(Stat::TruncatedBadFrame),
            Some(StackEnd::TooDeep) => count(Stat::TruncatedTooDeep),
            Some(StackEnd::Complete) | None => {}
        }
        if matches!(end_kind, Some(StackEnd::NoMapping | StackEnd::NoTable)) {
            want_tables(tgid, state.pc);
        }
        (*trace).len = state.len as u32;
        (*trace).end = end;
        if state.len == 0 {
            return None;
        }
        let hash = state.hash ^ u64::from(end) << 56;
        let stack_id = if hash == 0 { 1 } else { hash };
        // A walk that stopped for want of a table is walked again once the table is there.
        if state.cacheable != 0
            && matches!(
                end_kind,
                Some(StackEnd::Complete | StackEnd::NoRule | StackEnd::TooDeep)
            )
        {
            let record = &mut *record;
            record.stack_id = stack_id;
            record.bp = regs.bp;
            let words = record.words as usize;
            let mut checksum = checksum_start(stack_id, record.bp, record.uses_bp, words);
            for index in 0..CACHED_WORDS {
                if index >= words {
                    break;
                }
                checksum = checksum_add(
                    checksum,
                    u64::from(record.offsets[index]),
                    record.values[index],
                );
            }
            record.checksum = checksum;
            let _ = WALK_CACHE.insert(key, &*record, 0);
        }
        Some(Captured::Walked(stack_id, trace))
    }
}

/// Copies the stack from `sp` into `window`; returns how many bytes it holds. Near the top of
/// the stack a whole window would cross the end of the mapping: the copy then stops at the end
/// of `sp`'s page.
#[inline(always)]
fn copy_window(sp: u64, window: &mut [u8; WINDOW]) -> u64 {
    // SAFETY: reads user memory through the checked helper into our buffer.
    if unsafe { bpf_probe_read_user_buf(sp as *const u8, window) }.is_ok() {
        return WINDOW as u64;
    }
    let to_page_end = (4096 - (sp & 4095)) as usize;
    if to_page_end == 0 || to_page_end > WINDOW {
        return 0;
    }
    // SAFETY: as above; the length is checked against the buffer.
    match unsafe { bpf_probe_read_user_buf(sp as *const u8, &mut window[..to_page_end]) } {
        Ok(()) => to_page_end as u64,
        Err(_) => 0,
    }
}

/// Asks user space, once until it clears the request, to publish `tgid`'s mappings again.
#[inline(always)]
fn want_tables(tgid: u32, pc: u64) {
    if UNWIND_WANTED
        .insert(&tgid, &1, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        emit(&Event {
            kind: EventKind::UnwindTableWanted as u32,
            tgid,
            // SAFETY: plain helper call.
            timestamp_ns: unsafe { bpf_ktime_get_ns() },
            addr: pc,
            ..Event::default()
        });
    }
}

/// A word of the stack: from the window when it holds it (and then noted in the walk's record),
/// else read on its own (and the walk cannot be remembered).
#[inline(always)]
fn load(walk: &Walk, state: &mut WalkState, addr: u64) -> Option<u64> {
    let offset = addr.wrapping_sub(state.window_base);
    if offset.wrapping_add(8) <= state.window_len {
        let index = (offset as usize) & (WINDOW - 1);
        if index <= WINDOW - 8 {
            // SAFETY: within the per-CPU window buffer (index bounded above).
            let value = unsafe {
                core::ptr::read_unaligned(walk.window.cast::<u8>().add(index).cast::<u64>())
            };
            // SAFETY: this CPU's record; the slot index is masked into it.
            unsafe {
                let record = &mut *walk.record;
                let slot = record.words as usize;
                if slot < CACHED_WORDS {
                    record.offsets[slot & (CACHED_WORDS - 1)] = index as u16;
                    record.values[slot & (CACHED_WORDS - 1)] = value;
                    record.words += 1;
                    let end = (index + 8) as u32;
                    if end > record.span {
                        record.span = end;
                    }
                } else {
                    state.cacheable = 0;
                }
            }
            return Some(value);
        }
    }
    state.cacheable = 0;
    // SAFETY: reads user memory through the checked helper.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// Records `frame` as the walk's next frame.
#[inline(always)]
fn push(walk: &Walk, state: &mut WalkState, frame: u64) {
    // SAFETY: this CPU's trace; the index is masked into it.
    unsafe { (*walk.trace).frames[(state.len as usize) & (MAX_FRAMES - 1)] = frame };
    state.len += 1;
    state.hash = (state.hash ^ frame).wrapping_mul(0x0000_0100_0000_01b3);
    state.hash ^= state.hash >> 29;
}

/// Records the next Python frame of the run being reported, or ends the run.
#[inline(always)]
fn python_step(walk: &Walk, state: &mut WalkState) {
    // (A run is pending only for a Python process; the verifier is told so here.)
    if walk.python.is_null() {
        state.python_pending = 0;
        return;
    }
    // SAFETY: a live map value.
    let python = unsafe { &*walk.python };
    match python::step(python, state.python_frame) {
        Some(step) => {
            if let Some(frame) = step.frame {
                push(walk, state, frame);
            }
            state.python_frame = step.previous;
            if step.run_ends || step.previous == 0 {
                state.python_pending = 0;
            }
        }
        None => {
            state.python_frame = 0;
            state.python_pending = 0;
        }
    }
}

/// Stops the walk with `end`.
#[inline(always)]
fn stop(state: &mut WalkState, end: StackEnd) -> i64 {
    state.end = end as u64;
    1
}

/// One frame: `bpf_loop`'s callback (0: go on, 1: stop).
unsafe extern "C" fn frame(_index: u32, context: *mut c_void) -> i64 {
    // SAFETY: bpf_loop hands back the `Walk` of `capture_stack`, whose pointers are live.
    let walk = unsafe { &*context.cast::<Walk>() };
    // SAFETY: this CPU's state.
    let state = unsafe { &mut *walk.state };
    if state.python_pending != 0 {
        python_step(walk, state);
        return 0;
    }
    let pc = state.pc;
    let look = pc.wrapping_sub(state.back);
    if !(state.mapping.start <= look && look < state.mapping.end) {
        // SAFETY: a live map value.
        let mappings = unsafe { &*walk.mappings };
        // The greatest start <= look, over the padded array, with no branch per step.
        let mut base: usize = 0;
        let mut half: usize = MAX_EXEC_MAPPINGS / 2;
        while half > 0 {
            let start = mappings.starts[(base + half) & (MAX_EXEC_MAPPINGS - 1)];
            base += half & !(((look as i64).wrapping_sub(start as i64) >> 63) as usize);
            half /= 2;
        }
        let mapping = mappings.mappings[base & (MAX_EXEC_MAPPINGS - 1)];
        if look < mapping.start || look >= mapping.end {
            return stop(state, StackEnd::NoMapping);
        }
        state.mapping = mapping;
    }
    // An interpreter frame: first the Python frames its activation runs, one per step.
    if !walk.python.is_null() && state.python_frame != 0 && state.python_sp != state.sp {
        // SAFETY: a live map value.
        let python = unsafe { &*walk.python };
        if python.eval_start <= look && look < python.eval_end {
            state.python_pending = 1;
            state.python_sp = state.sp;
            return 0;
        }
    }
    push(walk, state, pc);

    let rows = state.mapping.rows_len;
    if rows == 0 {
        return stop(state, StackEnd::NoTable);
    }
    let address = look.wrapping_sub(state.mapping.bias);
    if address > u64::from(u32::MAX) {
        return stop(state, StackEnd::NoRule);
    }
    let address = address as u32;
    // The last row whose address is <= `address`, again with no branch per step.
    let mut base = state.mapping.rows_first;
    let mut len = rows;
    for _ in 0..21 {
        let half = len / 2;
        let Some(row) = UNWIND_ROWS.get(base + half) else {
            return stop(state, StackEnd::NoRule);
        };
        base += half & !(((i64::from(address) - i64::from(row.addr)) >> 63) as u32);
        len -= half;
    }
    let Some(row) = UNWIND_ROWS.get(base) else {
        return stop(state, StackEnd::NoRule);
    };
    if row.addr > address {
        return stop(state, StackEnd::NoRule);
    }
    let rule = row.rule;
    let from = match rule & 0xf {
        RULE_RSP => state.sp,
        RULE_RBP => {
            if state.bp_loaded == 0 {
                // SAFETY: this CPU's record.
                unsafe { (*walk.record).uses_bp = 1 };
            }
            state.bp
        }
        RULE_STOP => return stop(state, StackEnd::Complete),
        _ => return stop(state, StackEnd::NoRule),
    };
    let cfa = from.wrapping_add(u64::from(rule >> 12) * 8);
    // The caller's frame is older, so higher on the stack.
    if cfa <= state.sp {
        return stop(state, StackEnd::BadFrame);
    }
    let Some(return_address) = load(walk, state, cfa - 8) else {
        return stop(state, StackEnd::BadFrame);
    };
    let slot = (rule >> 4) & 0xff;
    if slot != 0 {
        let Some(bp) = load(walk, state, cfa.wrapping_sub(u64::from(slot) * 8)) else {
            return stop(state, StackEnd::BadFrame);
        };
        state.bp = bp;
        state.bp_loaded = 1;
    }
    state.sp = cfa;
    state.pc = return_address;
    state.back = 1;
    if return_address == 0 {
        return stop(state, StackEnd::Complete);
    }
    0
}
