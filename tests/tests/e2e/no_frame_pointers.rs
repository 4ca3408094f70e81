//! The leak scenarios built as distributions build their packages (`-O2`, no frame pointers):
//! the stacks must still reach the culprit, through wrappers and shared libraries, every frame
//! must be code of an object the process mapped (no junk read from a register that was not a
//! frame pointer), and one leak site must give one stack.

use std::time::Duration;

use leakmon_tests::{
    Report, TraceRun, assert_leak, describe_report, has_frame, kernel_maps_of, scenario_path,
    serial, stacks_with, start_leakmon, trace_command,
};

use crate::{INTERVAL, RUN_SECONDS};

/// Traces the `-O2` build of `scenario` and checks its leak and that every frame is code.
fn traced(scenario: &str) -> TraceRun {
    let run = trace_command(INTERVAL, &format!("{scenario}_nofp"), &[RUN_SECONDS]);
    assert_leak(&run.report, &run.summary);
    assert_frames_are_code(&run.report);
    run
}

/// Every frame of every stack lies in an executable file mapping the process had (the
/// symbolizer located it in one): an address read from a register that held data would not.
fn assert_frames_are_code(report: &Report) {
    for stack in &report.stacks {
        for frame in &stack.frames {
            assert!(
                frame.module.is_some(),
                "frame {:#x} is in no mapped object\n{}",
                frame.address,
                describe_report(report)
            );
        }
    }
}

/// The top leaking stack names each of `functions`.
fn assert_top_leak_names(report: &Report, functions: &[&str]) {
    let top = report
        .stacks
        .iter()
        .find(|stack| stack.leaking)
        .unwrap_or_else(|| panic!("no leaking stack\n{}", describe_report(report)));
    for function in functions {
        assert!(
            has_frame(top, function),
            "the top leaking stack does not name {function}\n{}",
            describe_report(report)
        );
    }
}

#[test]
fn steady_leak_is_one_complete_stack() {
    let run = traced("steady_leak");
    assert_top_leak_names(&run.report, &["leak_steady", "main"]);
    let stacks = stacks_with(&run.report, "leak_steady");
    assert_eq!(
        stacks.len(),
        1,
        "one leak site gave several stacks\n{}",
        describe_report(&run.report)
    );
    assert!(
        !stacks[0].truncated && has_frame(stacks[0], "__libc_start_main"),
        "the stack does not reach the process's start\n{}",
        describe_report(&run.report)
    );
}

#[test]
fn error_path_leak() {
    let run = traced("error_path_leak");
    assert_top_leak_names(&run.report, &["read_request", "handle_request"]);
}

#[test]
fn exception_leak_through_operator_new() {
    let run = traced("exception_leak");
    assert_top_leak_names(&run.report, &["process_item"]);
}

#[test]
fn thread_leak() {
    let run = traced("thread_leak");
    assert_top_leak_names(&run.report, &["produce_message"]);
}

#[test]
fn mmap_leak_unwinds_from_the_system_call() {
    let run = traced("mmap_leak");
    assert_top_leak_names(&run.report, &["map_region", "main"]);
}

#[test]
fn realloc_chain() {
    let run = traced("realloc_chain");
    assert_top_leak_names(&run.report, &["grow_chain"]);
}

/// The culprits sit above allocation wrappers: `remember_session` two frames above malloc
/// (through `xmalloc`), `cache_response` three frames up through a helper in a shared library.
#[test]
fn culprits_above_wrappers_and_a_shared_library() {
    let run = trace_command(INTERVAL, "wrapper_leak", &[RUN_SECONDS]);
    assert_frames_are_code(&run.report);
    let leaking: Vec<_> = run
        .report
        .stacks
        .iter()
        .filter(|stack| stack.leaking)
        .collect();
    for (culprit, path) in [
        ("remember_session", ["xmalloc", "main"].as_slice()),
        (
            "cache_response",
            ["helper_alloc", "helper_dup", "main"].as_slice(),
        ),
    ] {
        let stack = leaking
            .iter()
            .find(|stack| has_frame(stack, culprit))
            .unwrap_or_else(|| {
                panic!(
                    "no leaking stack names {culprit}\n{}",
                    describe_report(&run.report)
                )
            });
        for function in path {
            assert!(
                has_frame(stack, function),
                "the leaking stack through {culprit} misses {function}\n{}",
                describe_report(&run.report)
            );
        }
        let rate = stack.growth_bytes_per_second;
        assert!(
            (rate - 204_800.0).abs() <= 0.25 * 204_800.0,
            "{culprit} leaks 200 KiB/s; the report says {rate:.0} B/s\n{}",
            describe_report(&run.report)
        );
    }
    assert!(
        leaking
            .iter()
            .any(|stack| stack.frames.iter().any(|frame| frame
                .module
                .as_deref()
                .is_some_and(|module| module.ends_with("/libleak_helper.so")))),
        "no leaking stack goes through libleak_helper.so\n{}",
        describe_report(&run.report)
    );
}

/// Over a long window, one leak site reached through code without frame pointers stays one
/// stack, and the kernel's stack map holds only the few stacks the program has: words that are
/// not return addresses never enter a stack's frames (or its id).
#[test]
fn one_site_stays_one_stack_over_a_long_window() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = dir.path().join("report.json");
    let scenario = scenario_path("steady_leak_nofp");
    let leakmon = start_leakmon([
        "trace".as_ref(),
        "--format".as_ref(),
        "json".as_ref(),
        "--output".as_ref(),
        output.as_os_str(),
        "--interval".as_ref(),
        "1".as_ref(),
        "--".as_ref(),
        scenario.as_os_str(),
        "20".as_ref(),
    ]);
    std::thread::sleep(Duration::from_secs(16));
    let stacks = kernel_maps_of(leakmon.pid())
        .entries
        .get("STACKS")
        .copied()
        .expect("leakmon's stacks map");
    let run = leakmon.finish();
    assert!(run.status.success(), "leakmon failed:\n{}", run.stderr);
    let report: Report =
        serde_json::from_slice(&std::fs::read(&output).expect("the report")).expect("it parses");
    assert_frames_are_code(&report);
    assert_eq!(
        stacks_with(&report, "leak_steady").len(),
        1,
        "one leak site gave several stacks over 20 s\n{}",
        describe_report(&report)
    );
    assert!(
        stacks <= 32,
        "the stacks map holds {stacks} stacks for a program with a handful of call sites"
    );
}
