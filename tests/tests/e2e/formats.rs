//! The report formats other than JSON: text, folded stacks and pprof.

use std::io::Read as _;

use leakmon_tests::{TraceOutput, trace_output};

use crate::INTERVAL;

fn traced(format: &str) -> TraceOutput {
    let traced = trace_output(format, INTERVAL, "steady_leak", &["3"]);
    assert!(
        traced.run.status.success(),
        "leakmon trace --format {format} failed ({}):\n{}",
        traced.run.status,
        traced.run.stderr
    );
    traced
}

#[test]
fn text() {
    let traced = traced("text");
    let text = String::from_utf8(traced.output).expect("the text report is UTF-8");
    assert!(text.contains("leak_steady"), "text report:\n{text}");
    // With --output, leakmon prints no report of its own: stdout has only the scenario's line.
    let lines: Vec<&str> = traced
        .run
        .stdout
        .lines()
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "stdout:\n{}", traced.run.stdout);
    assert!(lines[0].starts_with("{\"scenario\":\"steady_leak\""));
}

#[test]
fn folded() {
    let traced = traced("folded");
    let text = String::from_utf8(traced.output).expect("folded stacks are UTF-8");
    let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
    assert!(!lines.is_empty(), "no folded stacks");
    for line in &lines {
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("folded line without a count: {line:?}"));
        assert!(
            count.parse::<u64>().is_ok_and(|count| count > 0),
            "bad count in {line:?}"
        );
        assert!(
            stack.split(';').all(|frame| !frame.is_empty()),
            "empty frame in {line:?}"
        );
    }
    assert!(
        lines.iter().any(|line| line.contains("leak_steady")),
        "no folded stack goes through leak_steady:\n{text}"
    );
}

#[test]
fn pprof() {
    let traced = traced("pprof");
    assert!(
        traced.output.starts_with(&[0x1f, 0x8b]),
        "pprof output is not gzipped: starts {:02x?}",
        &traced.output[..traced.output.len().min(4)]
    );
    let mut profile = Vec::new();
    flate2::read::GzDecoder::new(&traced.output[..])
        .read_to_end(&mut profile)
        .expect("pprof output gunzips");
    assert!(
        profile
            .windows(b"leak_steady".len())
            .any(|window| window == b"leak_steady"),
        "the profile's string table lacks leak_steady"
    );
}
