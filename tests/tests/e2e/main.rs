//! End-to-end tests of `leakmon trace`: each test traces a scenario program (built from
//! `scenarios/`) with real eBPF, so it needs root, and checks the report against what the
//! scenario says it did.

mod errors;
mod formats;
mod leaks;
mod lifecycle;
mod memory;
mod modes;
mod no_frame_pointers;
mod non_leaks;
mod packaged;
mod page_faults;
mod python;
mod turnover;

/// Options of every traced scenario run: per-stack totals sampled twice a second.
const INTERVAL: &[&str] = &["--interval", "0.5"];

/// How long each scenario runs, in seconds (its argv[1]).
const RUN_SECONDS: &str = "6";
