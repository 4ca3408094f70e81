//! Leaking scenarios: the report must flag the stacks through the leaking function as leaking
//! and account for the bytes the scenario says it leaked.

use leakmon_tests::{
    StackReport, TraceRun, assert_leak, describe_report, has_frame, stacks_with, trace_command,
};

use crate::memory::assert_grows_in;
use crate::{INTERVAL, RUN_SECONDS};

fn traced(scenario: &str) -> TraceRun {
    let run = trace_command(INTERVAL, scenario, &[RUN_SECONDS]);
    assert_leak(&run.report, &run.summary);
    run
}

/// The leaking stacks through `function`.
fn leaking_through<'r>(run: &'r TraceRun, function: &str) -> Vec<&'r StackReport> {
    let stacks: Vec<&StackReport> = stacks_with(&run.report, function)
        .into_iter()
        .filter(|stack| stack.leaking)
        .collect();
    assert!(
        !stacks.is_empty(),
        "no leaking stack through {function}\n{}",
        describe_report(&run.report)
    );
    stacks
}

/// Asserts that `function` is the innermost frame (the allocator's caller) of every stack.
fn assert_innermost(run: &TraceRun, stacks: &[&StackReport], function: &str) {
    for stack in stacks {
        let innermost = stack
            .frames
            .first()
            .and_then(|frame| frame.symbol.as_deref());
        assert!(
            innermost.is_some_and(|symbol| symbol.contains(function)),
            "innermost frame {innermost:?} is not {function}\n{}",
            describe_report(&run.report)
        );
    }
}

#[test]
fn steady_leak() {
    let run = traced("steady_leak");
    let report = &run.report;
    assert_eq!(report.comm, "steady_leak", "{}", describe_report(report));
    assert!(
        (5.5..=10.0).contains(&report.duration_seconds),
        "a 6 s run was watched for {} s",
        report.duration_seconds
    );
    let stacks = leaking_through(&run, "leak_steady");
    assert_innermost(&run, &stacks, "leak_steady");
    let growth: f64 = stacks
        .iter()
        .map(|stack| stack.growth_bytes_per_second)
        .sum();
    assert!(
        (growth - 409_600.0).abs() <= 0.25 * 409_600.0,
        "leak_steady leaks 409600 B/s; the report says {growth:.0} B/s\n{}",
        describe_report(report)
    );
    let oldest = stacks
        .iter()
        .map(|stack| stack.oldest_age_seconds)
        .fold(0.0, f64::max);
    assert!(
        oldest >= 4.5,
        "the first record leaked about 6 s before the end; the oldest is {oldest} s old"
    );
    for stack in &stacks {
        assert_eq!(
            stack.bytes,
            stack.allocations * 4096,
            "leak_steady leaks 4096 B blocks"
        );
    }
}

#[test]
fn error_path_leak() {
    let run = traced("error_path_leak");
    let stacks = leaking_through(&run, "read_request");
    assert_innermost(&run, &stacks, "read_request");
    assert!(
        stacks
            .iter()
            .all(|stack| has_frame(stack, "handle_request")),
        "read_request is only called by handle_request\n{}",
        describe_report(&run.report)
    );
}

#[test]
fn exception_leak() {
    let run = traced("exception_leak");
    for stack in leaking_through(&run, "process_item") {
        assert_eq!(
            stack.bytes,
            stack.allocations * 2048,
            "process_item leaks 2048 B arrays, each counted once\n{}",
            describe_report(&run.report)
        );
    }
}

#[test]
fn realloc_chain() {
    let run = traced("realloc_chain");
    // Each chain ends as one 16 KiB block; the blocks realloc replaced were released.
    for stack in stacks_with(&run.report, "grow_chain") {
        assert_eq!(
            stack.bytes,
            stack.allocations * 16384,
            "grow_chain leaves only 16 KiB blocks outstanding\n{}",
            describe_report(&run.report)
        );
    }
}

#[test]
fn mmap_leak() {
    let run = traced("mmap_leak");
    let stacks = leaking_through(&run, "map_region");
    for stack in &stacks {
        assert_eq!(
            stack.bytes,
            stack.allocations * 1024 * 1024,
            "map_region leaks whole 1 MiB mappings, touched or not\n{}",
            describe_report(&run.report)
        );
    }
    // The scratch mappings were unmapped in two halves each: nothing of them is outstanding.
    for stack in stacks_with(&run.report, "map_scratch") {
        assert!(
            stack.bytes == 0 && !stack.leaking,
            "partial unmaps of map_scratch's regions did not balance\n{}",
            describe_report(&run.report)
        );
    }
    // The program's own mappings, not the allocator's heap.
    assert_grows_in(&run.report, "anon_mappings");
}

#[test]
fn dlopen_plugin() {
    let run = traced("dlopen_plugin");
    let stacks = leaking_through(&run, "plugin_singleton_create");
    assert_innermost(&run, &stacks, "plugin_singleton_create");
    // The plugin was unloaded long before the report; its frames must still be symbolized.
    for stack in stacks {
        let frame = &stack.frames[0];
        assert!(
            frame
                .module
                .as_deref()
                .is_some_and(|module| module.ends_with("/libleak_plugin.so")),
            "plugin_singleton_create is in libleak_plugin.so, not {:?}",
            frame.module
        );
    }
}

#[test]
fn thread_leak() {
    let run = traced("thread_leak");
    let stacks = leaking_through(&run, "produce_message");
    assert_innermost(&run, &stacks, "produce_message");
    // The producer thread allocates from an arena of its own: still the heap.
    assert_grows_in(&run.report, "heap");
}

#[test]
fn aligned_leak() {
    let run = traced("aligned_leak");
    let stacks = leaking_through(&run, "aligned_leak");
    // One call site per entry point: posix_memalign(64, 1000) and aligned_alloc(4096, 8192).
    for size in [1000, 8192] {
        assert!(
            stacks
                .iter()
                .any(|stack| stack.allocations > 0 && stack.bytes == stack.allocations * size),
            "no leaking stack of {size} B blocks\n{}",
            describe_report(&run.report)
        );
    }
}
