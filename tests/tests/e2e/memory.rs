//! What the RSS is made of: a traced program that builds a large index of small records and
//! frees most of them keeps a large resident heap whose live allocations are small and flat, and
//! the report says the difference is retained by the allocator; a program whose threads pile up
//! grows in `thread_stacks`. (The mmap and thread scenarios of `leaks.rs` check `anon_mappings`
//! and `heap`.)

use leakmon_tests::{Report, assert_no_leak, describe_report, trace_command};
use monitor_daemon::model::Memory;
use monitor_daemon::report::text::memory_line;

use crate::{INTERVAL, RUN_SECONDS};

/// The report's memory object; panics without one.
pub fn memory(report: &Report) -> &Memory {
    report.memory.as_ref().unwrap_or_else(|| {
        panic!(
            "the report has no memory object\n{}",
            describe_report(report)
        )
    })
}

/// Asserts that `class` is the class of the report's memory that grows fastest.
pub fn assert_grows_in(report: &Report, class: &str) {
    let memory = memory(report);
    let fastest = memory.fastest_growing().map(|(name, _)| name);
    assert_eq!(
        fastest,
        Some(class),
        "the growth is not in {class}: {memory:?}\n{}",
        describe_report(report)
    );
}

#[test]
fn a_pruned_index_is_retained_not_leaked() {
    let run = trace_command(INTERVAL, "index_retained", &[RUN_SECONDS]);
    let report = &run.report;
    assert_no_leak(report);
    let memory = memory(report);
    let live = memory
        .heap_live
        .expect("a traced heap has its live allocations");
    assert!(
        memory.heap.resident_bytes >= 30 << 20,
        "the 32 MiB index is resident in the heap: {memory:?}"
    );
    assert!(
        live.live_bytes <= 1 << 20,
        "512 KiB of records stay live: {memory:?}\n{}",
        describe_report(report)
    );
    let retained = live.retained_bytes.expect("traced from its start");
    assert!(retained >= 28 << 20, "{memory:?}");
    assert!(
        live.live_growth_bytes_per_second.abs() < 256.0 * 1024.0,
        "the live allocations are flat after the pruning: {memory:?}"
    );
    let line = memory_line(memory);
    assert!(
        line.contains("retained by the allocator, not leaked"),
        "{line}"
    );
}

#[test]
fn piled_up_threads_grow_in_thread_stacks() {
    let run = trace_command(INTERVAL, "stuck_workers", &[RUN_SECONDS]);
    assert_grows_in(&run.report, "thread_stacks");
    let stacks = memory(&run.report).thread_stacks;
    // 4 threads a second, a few pages of stack each.
    assert!(stacks.growth_bytes_per_second >= 4.0 * 4096.0, "{stacks:?}");
}
