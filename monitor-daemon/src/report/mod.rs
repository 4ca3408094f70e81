//! The leak report: the data model every output format is drawn from, and its JSON contract.
//!
//! `leakmon trace`, the daemon's reports on disk and the HTTP API all produce a [`Report`]; the
//! submodules encode it as text for a terminal, flame-graph folded stacks and gzipped pprof
//! `profile.proto`. The JSON form is the serde encoding of [`Report`] and is a contract: other
//! tools and the end-to-end tests read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a trace of one process found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The traced process.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub comm: String,
    /// Length of the observation window, in seconds.
    pub duration_seconds: f64,
    /// Seconds between two samples of the per-stack totals.
    pub interval_seconds: f64,
    /// Mean bytes between samples; 0 when every allocation was recorded.
    pub sample_rate: u64,
    /// Only allocations at least this old count as outstanding.
    pub min_age_seconds: f64,
    /// True when data was lost (a full map, a failed stack capture, a dropped event) or the
    /// window was cut short, so the figures are lower bounds.
    pub partial: bool,
    /// What happened during the window, one sentence each (the process exited, a probe could
    /// not be placed, ...).
    pub notes: Vec<String>,
    /// Where each allocator probe was attached.
    pub probes: Vec<ProbeSite>,
    /// Outstanding memory over every stack.
    pub totals: Totals,
    /// Counters of lost data, by name (see `monitor_common::Stat`).
    pub dropped: BTreeMap<String, u64>,
    /// Counters of ordinary activity (allocations, frees, ...), by name.
    pub events: BTreeMap<String, u64>,
    /// Stacks holding outstanding memory, by outstanding bytes, largest first.
    pub stacks: Vec<StackReport>,
}

/// One allocator entry point as probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSite {
    /// Symbol name, e.g. `malloc`.
    pub function: String,
    /// Absolute path of the object the probe is in.
    pub module: String,
    /// Offset of the probe from the start of the function, in bytes.
    pub offset: u64,
    /// Offset of the probe in the object file.
    pub file_offset: u64,
    /// The instruction at the probe (e.g. `push r12`).
    pub instruction: String,
    /// Whether the kernel emulates that instruction (cheap) instead of single-stepping it.
    pub emulated: bool,
}

/// Outstanding memory over all stacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Bytes allocated and not freed at the end of the window.
    pub outstanding_bytes: u64,
    /// Allocations not freed at the end of the window.
    pub outstanding_allocations: u64,
}

/// The outstanding memory of one allocating stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackReport {
    /// Outstanding bytes at the end of the window.
    pub bytes: u64,
    /// Outstanding allocations at the end of the window.
    pub allocations: u64,
    /// Robust slope of the stack's outstanding bytes over the window.
    pub growth_bytes_per_second: f64,
    /// Age of the oldest outstanding allocation, in seconds.
    pub oldest_age_seconds: f64,
    /// Whether the outstanding bytes kept growing across the window (see `trend::is_leak`).
    pub leaking: bool,
    /// Frames, innermost (the allocator's caller) first.
    pub frames: Vec<Frame>,
}

/// One frame of a stack. An address that maps to inlined functions yields one frame per
/// function, innermost first, all with the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The return address (the instruction pointer for the innermost frame).
    pub address: u64,
    /// Demangled function name, when known.
    pub symbol: Option<String>,
    /// Path of the object the address is in, when known.
    pub module: Option<String>,
    /// Source file, when debug information says.
    pub file: Option<String>,
    /// Source line, when debug information says.
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    #[serde(default)]
    pub inlined: bool,
}
