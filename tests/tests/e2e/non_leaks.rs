//! Scenarios that do not leak: a cache that plateaus, a sawtooth of batches and churn must not
//! be flagged, although their memory is outstanding at the end and was growing at times.

use leakmon_tests::{Report, assert_no_leak, describe_report, stacks_with, trace_command};

use crate::{INTERVAL, RUN_SECONDS};

fn traced(scenario: &str) -> Report {
    let run = trace_command(INTERVAL, scenario, &[RUN_SECONDS]);
    assert_eq!(run.summary.leak_function, None);
    assert_eq!(run.summary.leaked_bytes, 0);
    assert_no_leak(&run.report);
    run.report
}

/// Asserts that the stacks through `function` hold some but at most `max_bytes` of
/// `block`-byte blocks: the tracer saw the memory and did not over-count it.
fn assert_holds(report: &Report, function: &str, block: Option<u64>, max_bytes: u64) {
    let stacks = stacks_with(report, function);
    let bytes: u64 = stacks.iter().map(|stack| stack.bytes).sum();
    assert!(
        bytes > 0 && bytes <= max_bytes,
        "stacks through {function} hold {bytes} B; expected some, at most {max_bytes}\n{}",
        describe_report(report)
    );
    if let Some(block) = block {
        for stack in stacks {
            assert_eq!(
                stack.bytes,
                stack.allocations * block,
                "{function} allocates {block} B"
            );
        }
    }
}

#[test]
fn cache_plateau() {
    let report = traced("cache_plateau");
    assert_holds(&report, "cache_insert", Some(4096), 2 * 1024 * 1024);
}

#[test]
fn sawtooth() {
    let report = traced("sawtooth");
    assert_holds(&report, "batch_collect", Some(4096), 100 * 4096);
}

#[test]
fn churn() {
    let report = traced("churn");
    assert_holds(&report, "churn_replace", None, 64 * 4096);
}
