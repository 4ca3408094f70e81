//! The leak report: the data model every output format is drawn from, and its JSON contract.
//!
//! `leakmon trace`, the daemon's reports on disk and the HTTP API all produce a [`Report`]; the
//! submodules encode it as text for a terminal, flame-graph folded stacks and gzipped pprof
//! `profile.proto`. The JSON form is the serde encoding of [`Report`] and is a contract: other
//! tools and the end-to-end tests read it.
//!
//! The report layer is used by every layer above it (the symbolizer's frames, the tracer's
//! sessions, the server, the command line) and uses nothing else of the crate but the shared
//! model's memory breakdown ([`crate::model::Memory`]): a report is plain data, whoever
//! produced it.

pub mod folded;
pub mod pprof;
pub mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::model::Memory;
pub use crate::model::Method;

use self::folded::render_folded;
use self::pprof::{PprofError, encode_pprof};
use self::text::render_text;

/// The formats a [`Report`] can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A summary for a terminal (see [`text`]).
    Text,
    /// The JSON contract, pretty-printed.
    Json,
    /// Folded stacks for flame graphs (see [`folded`]).
    Folded,
    /// A gzipped pprof profile (see [`pprof`]).
    Pprof,
}

impl OutputFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Text,
        OutputFormat::Json,
        OutputFormat::Folded,
        OutputFormat::Pprof,
    ];

    /// The lowercase name of the format, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Text => "text",
            OutputFormat::Json => "json",
            OutputFormat::Folded => "folded",
            OutputFormat::Pprof => "pprof",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the [`OutputFormat`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format `{0}` (expected text, json, folded or pprof)")]
pub struct UnknownFormat(pub String);

impl FromStr for OutputFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutputFormat::ALL
            .into_iter()
            .find(|format| format.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

/// Why a report could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// JSON serialization failed.
    #[error("cannot encode the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// pprof encoding failed.
    #[error(transparent)]
    Pprof(#[from] PprofError),
}

/// Encodes `report` in `format`; `top` bounds the stacks of the text format, the others hold
/// every stack.
pub fn encode(report: &Report, format: OutputFormat, top: usize) -> Result<Vec<u8>, EncodeError> {
    Ok(match format {
        OutputFormat::Text => render_text(report, top).into_bytes(),
        OutputFormat::Json => {
            let mut json = serde_json::to_vec_pretty(report)?;
            json.push(b'\n');
            json
        }
        OutputFormat::Folded => render_folded(report).into_bytes(),
        OutputFormat::Pprof => encode_pprof(report)?,
    })
}

/// What a trace of one process found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The traced process.
    pub pid: u32,
    /// Its start time in clock ticks since boot (with the pid, its identity: a later process
    /// with the same pid is another process), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_ticks: Option<u64>,
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
    /// How the process was looked at: by its allocations (each stack's figures are its
    /// outstanding allocations) or by its page faults (each stack's figures are the resident
    /// memory it brought in and the process still holds, in pages for `allocations`).
    #[serde(default)]
    pub method: Method,
    /// An interim report, written while the trace window was still running (the trace of a
    /// process whose exhaustion is imminent is stored early and refreshed); the final report
    /// replaces it when the window ends.
    #[serde(default, skip_serializing_if = "is_false")]
    pub interim: bool,
    /// How the process ended, once it has (recorded on its latest report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<ProcessEnd>,
    /// Frees of memory allocated before the window (addresses the trace never saw allocated),
    /// by freeing site, most bytes (then frees) first; the evidence of the stacks judged
    /// `turnover`, which name the sites that offset them.
    #[serde(default)]
    pub releases: Vec<ReleaseSite>,
    /// What the process's memory was made of over the window, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Why a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The kernel's OOM killer chose it (`oom:mark_victim`).
    OomKill,
    /// It exited (or the way it ended is unknown).
    Exit,
    /// A signal killed it.
    Signal,
}

/// How and when a process ended, and where its memory stood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEnd {
    /// Why.
    pub reason: EndReason,
    /// When, in seconds since the Unix epoch.
    pub unix_seconds: f64,
    /// The signal that killed it (9 for the OOM killer's SIGKILL), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<u32>,
    /// Its exit status, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u32>,
    /// Its resident set size at the last sample before the end.
    pub rss_bytes: u64,
    /// Its tightest memory limit at the last sample before the end, bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// Which limit that is, e.g. `memory.limit_in_bytes of /leakmon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// The frees, at one site, of memory allocated before the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReleaseSite {
    /// The site: the return address into `free`'s caller, then, from the same address, the
    /// functions inlined there (innermost first), as in a stack. Empty when the return
    /// address could not be read.
    pub frames: Vec<Frame>,
    /// Frees over the window.
    pub frees: u64,
    /// Their usable bytes, when the allocator keeps them in a header (glibc); `None` when it
    /// does not say (jemalloc, tcmalloc, mimalloc: counted only).
    pub bytes: Option<u64>,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StackReport {
    /// Outstanding bytes at the end of the window.
    pub bytes: u64,
    /// Outstanding allocations at the end of the window.
    pub allocations: u64,
    /// Robust slope of the stack's outstanding bytes over the window.
    pub growth_bytes_per_second: f64,
    /// Age of the oldest outstanding allocation, in seconds.
    pub oldest_age_seconds: f64,
    /// Whether the outstanding bytes kept growing across the window (see `trend::assess`), with
    /// no release of older memory to offset them.
    pub leaking: bool,
    /// Whether they grew across the window but the release of memory allocated before it
    /// offsets that growth: a cache turning over, not a leak (see `trend::match_turnover`).
    #[serde(default)]
    pub turnover: bool,
    /// Bytes released of memory allocated before the window that were matched to this stack's
    /// growth (estimated from the frees when the allocator does not tell the bytes).
    #[serde(default)]
    pub released_bytes: u64,
    /// The report's `releases` (indices) matched to this stack's growth.
    #[serde(default)]
    pub release_sites: Vec<usize>,
    /// Frames, innermost (the allocator's caller) first.
    pub frames: Vec<Frame>,
    /// The stack walk stopped before the outermost frame (no unwind rule for the next frame,
    /// code in no known mapping, unreadable stack, or too deep): the frames are the innermost
    /// ones, and the stack's callers are missing. The report's `events` count the walks cut
    /// short by reason (`stacks_truncated_*`).
    #[serde(default)]
    pub truncated: bool,
}

/// What a frame is code of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// Machine code (C, C++, Rust, Go, ...).
    #[default]
    Native,
    /// A Python function run by the CPython interpreter (its `address` is the code object's).
    Python,
}

/// One frame of a stack. An address that maps to inlined functions yields one frame per
/// function, innermost first, all with the same address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Native code, or a Python function (whose `symbol` is its qualified name).
    #[serde(default)]
    pub language: Language,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let stack = StackReport {
            bytes: 100,
            allocations: 2,
            growth_bytes_per_second: 5.0,
            oldest_age_seconds: 1.0,
            leaking: true,
            frames: vec![crate::testing::frame(0x10, Some("f"), None)],
            ..StackReport::default()
        };
        Report {
            duration_seconds: 2.0,
            ..crate::testing::report(9, "app", vec![stack])
        }
    }

    #[test]
    fn format_names_round_trip() {
        for format in OutputFormat::ALL {
            assert_eq!(format.to_string().parse::<OutputFormat>(), Ok(format));
        }
        assert_eq!("pprof".parse(), Ok(OutputFormat::Pprof));
        assert_eq!(
            "JSON".parse::<OutputFormat>(),
            Err(UnknownFormat("JSON".to_owned()))
        );
    }

    #[test]
    fn encode_each_format() {
        let report = report();
        let json = encode(&report, OutputFormat::Json, 10).unwrap();
        let back: Report = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, report);
        assert!(json.starts_with(b"{\n  \"pid\": 9,"));
        assert_eq!(
            encode(&report, OutputFormat::Folded, 0).unwrap(),
            b"f 100\n"
        );
        let text = String::from_utf8(encode(&report, OutputFormat::Text, 1).unwrap()).unwrap();
        assert!(text.contains("#1 LEAKING"));
        let pprof = encode(&report, OutputFormat::Pprof, 0).unwrap();
        assert_eq!(pprof::decode_pprof(&pprof).unwrap().sample.len(), 1);
    }
}
