//! Following a process's memory growth by its page faults: resident memory arrives one page at
//! a time, each through a fault taken by the code that first writes it, whatever allocator (or
//! runtime) handed the address out. For a process registered with [`TARGET_PAGE_FAULTS`], every
//! write fault is sent to user space with its page and the stack of the faulting code (unwound as
//! the allocation stacks are). User space keeps which pages each stack brought in and drops those
//! the process gives back (`munmap`, `madvise`, the program break moving down), so a stack's
//! figure is the resident memory it brought in and the process still holds.
//!
//! Read faults are left out: a read of an untouched anonymous page maps the shared zero page and
//! adds nothing until the first write, which faults again. The cost for other processes is the
//! tracepoint and one array read (see `target_mode`) per user page fault, paid only while a
//! process is traced this way (user space attaches the program then).
//!
//! Uses the crate root's maps and stack capture.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use monitor_common::{Event, EventKind, Stat, TARGET_PAGE_FAULTS};

use crate::{count, current, emit_quietly, interned_stack, target_mode, user_regs_at};

/// The write bit of a page fault's error code (`X86_PF_WRITE`).
const PF_WRITE: u64 = 1 << 1;
/// Bytes of a page.
const PAGE_SIZE: u64 = 4096;

/// `exceptions:page_fault_user(address, regs, error_code)`, a BTF tracepoint.
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(ctx: BtfTracePointContext) -> u32 {
    let (_, tgid) = current();
    let Some(mode) = target_mode(tgid) else {
        return 0;
    };
    // SAFETY: a live map value.
    if unsafe { *mode } & TARGET_PAGE_FAULTS == 0 {
        return 0;
    }
    let error_code: u64 = ctx.arg(2);
    if error_code & PF_WRITE == 0 {
        return 0;
    }
    let address: u64 = ctx.arg(0);
    let regs: *const u8 = ctx.arg(1);
    let stack_id = user_regs_at(regs).map_or(0, |regs| interned_stack(tgid, regs));
    emit_quietly(&Event {
        kind: EventKind::PageFault as u32,
        tgid,
        // SAFETY: plain helper call.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        addr: address & !(PAGE_SIZE - 1),
        len: PAGE_SIZE,
        stack_id,
        ..Event::default()
    });
    count(Stat::PageFaults);
    0
}
