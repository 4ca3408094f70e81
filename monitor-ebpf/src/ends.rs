//! How processes end: the OOM killer's victims and the exit code of the processes user space
//! wants to hear of, sent as [`EventKind::End`] events.
//!
//! * `oom_mark_victim` (BTF tracepoint `mark_victim`, which the OOM killer fires for the task it
//!   chose, usually from another task): remembers the victim's process in `OOM_VICTIMS`.
//! * `process_end` (BTF tracepoint `sched_process_exit`, in the exiting task): when the last
//!   thread of a process exits and the OOM killer chose it, a signal killed it, or it is
//!   traced, sends its exit code.
//!
//! The task's `tgid` and `exit_code` are read at offsets user space finds in the kernel's BTF
//! and sets before loading; an offset of 0 (not found) turns the program off.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map},
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use monitor_common::{END_OOM_VICTIM, Event, EventKind};

/// Offset of `tgid` in `struct task_struct`.
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u64 = 0;
/// Offset of `exit_code` in `struct task_struct`.
#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFFSET: u64 = 0;

/// Processes (global tgid) the OOM killer chose, with when; the oldest go first when full.
#[map]
static OOM_VICTIMS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Reads an `i32` field of a task at `offset`, when the offset is known.
#[inline(always)]
fn task_field(task: *const u8, offset: u64) -> Option<i32> {
    if offset == 0 {
        return None;
    }
    // SAFETY: a checked kernel read; `task` is the tracepoint's task pointer.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize) as *const i32) }.ok()
}

/// `mark_victim(task, uid)`.
#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim(ctx: BtfTracePointContext) -> u32 {
    // SAFETY: a plain load of a global user space sets before loading (volatile: not folded).
    let offset = unsafe { core::ptr::read_volatile(&TASK_TGID_OFFSET) };
    let task: *const u8 = ctx.arg(0);
    if let Some(tgid) = task_field(task, offset) {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_ns() };
        let _ = OOM_VICTIMS.insert(&(tgid as u32), &now, 0);
    }
    0
}

/// `sched_process_exit(task, group_dead)`, in the exiting task.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_end(ctx: BtfTracePointContext) -> u32 {
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return 0;
    }
    let global_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let oom = OOM_VICTIMS.get_ptr(&global_tgid).is_some();
    if oom {
        let _ = OOM_VICTIMS.remove(&global_tgid);
    }
    // SAFETY: as in `oom_mark_victim`.
    let offset = unsafe { core::ptr::read_volatile(&TASK_EXIT_CODE_OFFSET) };
    let task: *const u8 = ctx.arg(0);
    let exit_code = task_field(task, offset).unwrap_or(0) as u32;
    let (_, tgid) = crate::current();
    if tgid == 0 || !(oom || exit_code & 0x7f != 0 || crate::is_target(tgid)) {
        return 0;
    }
    // SAFETY: plain helper call.
    let timestamp_ns = unsafe { bpf_ktime_get_ns() };
    crate::emit(&Event {
        kind: EventKind::End as u32,
        tgid,
        timestamp_ns,
        addr: if oom { END_OOM_VICTIM } else { 0 },
        flags: u64::from(exit_code),
        ..Event::default()
    });
    0
}
