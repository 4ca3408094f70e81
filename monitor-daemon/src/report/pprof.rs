//! The pprof rendering of a [`Report`]: a gzipped `perftools.profiles.Profile` message
//! (github.com/google/pprof, `proto/profile.proto`), read by `go tool pprof`, Pyroscope,
//! speedscope and others.
//!
//! The messages are written by hand with prost's derive and have every field of upstream
//! `profile.proto` (checked against google/pprof b9395ee), with its field numbers.
//!
//! Each stack becomes a sample with the values `inuse_objects/count` and `inuse_space/bytes`
//! (the default), a string label `leaking` (`"true"` or `"false"`) and a numeric label
//! `growth_bytes_per_second` (rounded). Frames sharing an address, inlined ones first, become one
//! location with a line per function, innermost first as pprof expects; a frame without a symbol
//! becomes a location without lines. Locations and functions are shared between samples, and
//! there is a mapping per module. The report does not say where modules were loaded, so each
//! mapping spans the addresses seen in it and claims to be symbolized, which keeps pprof from
//! re-symbolizing addresses it would get wrong.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message;

use super::text::TRUNCATED;
use super::{Frame, Report};

/// A profile (`perftools.profiles.Profile`).
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    /// What each value of a sample measures.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The objects the locations are in.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// The program locations the samples refer to.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// The functions the locations' lines refer to.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string of the profile; `string_table[0]` is `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regexp (string index) of frames to drop with their callees.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regexp (string index) of frames to keep even when matched by `drop_frames`.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Start of the collection, in nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Length of the collection, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What `period` counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Events between two samples.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The preferred sample type (string index of its `type`).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    /// String index of a URL documenting the profile's sample types.
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// The meaning and unit of a value (`perftools.profiles.ValueType`).
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    /// String index of the type, e.g. `inuse_space`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// String index of the unit, e.g. `bytes`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// Values recorded at one stack (`perftools.profiles.Sample`).
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Location ids, the leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per `Profile::sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra context.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A key with a string or numeric value (`perftools.profiles.Label`).
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of the value, for a string label.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// The value of a numeric label.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the unit of `num`.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// An object mapped into the process (`perftools.profiles.Mapping`).
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Where the mapping starts.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// Where the mapping ends.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset of `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the object's path.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of the object's build id.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Locations carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Functions carry file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Lines carry line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Locations list inlined functions.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A program location (`perftools.profiles.Location`).
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Id of its mapping, 0 when unknown.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The instruction address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// The functions at the address, inlined ones first, the caller they are inlined in last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several symbols map to this address (identical code folding).
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and line at a location (`perftools.profiles.Line`).
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    /// Id of the function.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line, 0 when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Source column, 0 when unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function (`perftools.profiles.Function`).
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of the readable name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of the name as the system knows it (mangled).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of the source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line of the function in its file.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Why a profile could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    /// Gzip compression failed.
    #[error("cannot gzip the profile: {0}")]
    Compress(#[source] std::io::Error),
    /// The input is not valid gzip.
    #[error("cannot gunzip the profile: {0}")]
    Decompress(#[source] std::io::Error),
    /// The input is not a valid `Profile` message.
    #[error("not a pprof profile: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Encodes `report` as a gzipped pprof profile.
pub fn encode_pprof(report: &Report) -> Result<Vec<u8>, PprofError> {
    let profile = build_profile(report);
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(&profile.encode_to_vec())
        .map_err(PprofError::Compress)?;
    encoder.finish().map_err(PprofError::Compress)
}

/// Decodes a gzipped pprof profile.
pub fn decode_pprof(bytes: &[u8]) -> Result<Profile, PprofError> {
    let mut raw = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .map_err(PprofError::Decompress)?;
    Ok(Profile::decode(raw.as_slice())?)
}

/// The profile of `report`, before encoding.
fn build_profile(report: &Report) -> Profile {
    let mut builder = Builder::default();
    builder.strings.intern("");
    let objects = builder.value_type("inuse_objects", "count");
    let space = builder.value_type("inuse_space", "bytes");
    let period_type = builder.value_type("space", "bytes");
    let leaking_key = builder.strings.intern("leaking");
    let growth_key = builder.strings.intern("growth_bytes_per_second");
    let truncated_key = builder.strings.intern("truncated");
    // The outermost frame of a stack whose walk stopped early, as in the folded rendering.
    let truncated_frame = [Frame {
        address: 0,
        symbol: Some(TRUNCATED.to_owned()),
        module: None,
        file: None,
        line: None,
        inlined: false,
        ..Default::default()
    }];

    let mut samples = Vec::with_capacity(report.stacks.len());
    for stack in &report.stacks {
        let mut location_id: Vec<u64> = group_frames(&stack.frames)
            .into_iter()
            .map(|group| builder.location(group))
            .collect();
        if stack.truncated {
            location_id.push(builder.location(&truncated_frame));
        }
        let leaking = builder
            .strings
            .intern(if stack.leaking { "true" } else { "false" });
        let mut label = vec![
            Label {
                key: leaking_key,
                str: leaking,
                ..Label::default()
            },
            Label {
                key: growth_key,
                // `as` saturates, and maps NaN to 0.
                num: stack.growth_bytes_per_second.round() as i64,
                ..Label::default()
            },
        ];
        if stack.truncated {
            label.push(Label {
                key: truncated_key,
                str: builder.strings.intern("true"),
                ..Label::default()
            });
        }
        samples.push(Sample {
            location_id,
            value: vec![saturate(stack.allocations), saturate(stack.bytes)],
            label,
        });
    }

    let mut comment = vec![
        builder
            .strings
            .intern(&format!("pid {} ({})", report.pid, report.comm)),
    ];
    if report.partial {
        comment.push(
            builder
                .strings
                .intern("partial: data was lost or the window was cut short"),
        );
    }
    for note in &report.notes {
        comment.push(builder.strings.intern(note));
    }

    let default_sample_type = space.r#type;
    let mapping = builder.mappings();
    Profile {
        sample_type: vec![objects, space],
        sample: samples,
        mapping,
        location: builder.locations,
        function: builder.functions,
        default_sample_type,
        duration_nanos: (report.duration_seconds * 1e9).round() as i64,
        period_type: Some(period_type),
        period: saturate(report.sample_rate),
        comment,
        string_table: builder.strings.table,
        ..Profile::default()
    }
}

/// `value` as an `i64`, saturating.
fn saturate(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Splits `frames` (innermost first) into the frames of each address: a run of inlined frames
/// with the address of the frame that ends it.
fn group_frames(frames: &[Frame]) -> Vec<&[Frame]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for (i, frame) in frames.iter().enumerate() {
        let continues = frame.inlined
            && frames
                .get(i + 1)
                .is_some_and(|next| next.address == frame.address);
        if !continues {
            groups.push(&frames[start..=i]);
            start = i + 1;
        }
    }
    groups
}

/// The string table, each string once.
#[derive(Debug, Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// What a mapping covers, gathered while adding locations.
#[derive(Debug)]
struct MappingSpan {
    id: u64,
    filename: i64,
    start: u64,
    end: u64,
    has_filenames: bool,
    has_line_numbers: bool,
    has_inline_frames: bool,
}

/// Identity of a location: its address, module and (symbol, file, line) of each function.
type LocationKey = (
    u64,
    Option<String>,
    Vec<(String, Option<String>, Option<u32>)>,
);

/// The shared tables of a profile being built.
#[derive(Debug, Default)]
struct Builder {
    strings: Strings,
    mappings: BTreeMap<String, MappingSpan>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<LocationKey, u64>,
}

impl Builder {
    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.strings.intern(kind),
            unit: self.strings.intern(unit),
        }
    }

    /// The id of the location of `group`, the frames of one address, adding it if new.
    fn location(&mut self, group: &[Frame]) -> u64 {
        let Some(last) = group.last() else {
            return 0;
        };
        let address = last.address;
        let module = last.module.clone();
        let functions: Vec<(String, Option<String>, Option<u32>)> = group
            .iter()
            .filter_map(|f| f.symbol.clone().map(|s| (s, f.file.clone(), f.line)))
            .collect();
        let key = (address, module, functions);
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }

        let mapping_id = key
            .1
            .as_deref()
            .map_or(0, |m| self.mapping(m, &key.2, address));
        let line = key
            .2
            .iter()
            .map(|(symbol, file, line)| Line {
                function_id: self.function(symbol, file.as_deref()),
                line: line.map_or(0, i64::from),
                column: 0,
            })
            .collect();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }

    /// The id of the mapping of `module`, widened to cover `address`.
    fn mapping(
        &mut self,
        module: &str,
        functions: &[(String, Option<String>, Option<u32>)],
        address: u64,
    ) -> u64 {
        let next_id = self.mappings.len() as u64 + 1;
        let filename = self.strings.intern(module);
        let span = self
            .mappings
            .entry(module.to_owned())
            .or_insert(MappingSpan {
                id: next_id,
                filename,
                start: address,
                end: address,
                has_filenames: false,
                has_line_numbers: false,
                has_inline_frames: false,
            });
        span.start = span.start.min(address);
        span.end = span.end.max(address);
        span.has_filenames |= functions.iter().any(|(_, file, _)| file.is_some());
        span.has_line_numbers |= functions.iter().any(|(_, _, line)| line.is_some());
        span.has_inline_frames |= functions.len() > 1;
        span.id
    }

    /// The id of the function `name` in `file`, adding it if new.
    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let name = self.strings.intern(name);
        let filename = file.map_or(0, |f| self.strings.intern(f));
        if let Some(&id) = self.function_ids.get(&(name, filename)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert((name, filename), id);
        id
    }

    /// The mappings, by id.
    fn mappings(&self) -> Vec<Mapping> {
        let mut mappings: Vec<Mapping> = self
            .mappings
            .values()
            .map(|span| Mapping {
                id: span.id,
                memory_start: span.start,
                memory_limit: span.end.saturating_add(1),
                file_offset: 0,
                filename: span.filename,
                build_id: 0,
                has_functions: true,
                has_filenames: span.has_filenames,
                has_line_numbers: span.has_line_numbers,
                has_inline_frames: span.has_inline_frames,
            })
            .collect();
        mappings.sort_by_key(|m| m.id);
        mappings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StackReport;
    use crate::testing::frame;

    fn located(mut f: Frame, file: &str, line: u32, inlined: bool) -> Frame {
        f.file = Some(file.to_owned());
        f.line = Some(line);
        f.inlined = inlined;
        f
    }

    const APP: &str = "/usr/bin/app";
    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

    fn report() -> Report {
        let shared_caller = located(frame(0x2000, Some("handle"), Some(APP)), "srv.c", 40, false);
        let main = located(frame(0x3000, Some("main"), Some(APP)), "main.c", 7, false);
        let stack = |bytes: u64, growth: f64, leaking: bool, frames: Vec<Frame>| StackReport {
            bytes,
            allocations: bytes / 32,
            growth_bytes_per_second: growth,
            oldest_age_seconds: 12.0,
            leaking,
            frames,
            ..StackReport::default()
        };
        Report {
            duration_seconds: 30.5,
            sample_rate: 512,
            min_age_seconds: 5.0,
            notes: vec!["a probe was not placed".to_owned()],
            ..crate::testing::report(
                77,
                "app",
                vec![
                    stack(
                        65_536,
                        1234.6,
                        true,
                        vec![
                            // Two functions inlined into `parse` at one address.
                            located(frame(0x1000, Some("push"), Some(APP)), "vec.h", 3, true),
                            located(frame(0x1000, Some("grow"), Some(APP)), "buf.c", 12, true),
                            located(
                                frame(0x1000, Some("parse"), Some(APP)),
                                "parse.c",
                                90,
                                false,
                            ),
                            shared_caller.clone(),
                            main.clone(),
                        ],
                    ),
                    stack(
                        4096,
                        -3.0,
                        false,
                        vec![
                            frame(0x7f00_0000_1234, None, Some(LIBC)),
                            frame(0x42, None, None),
                            frame(0x2100, Some("handle"), Some(APP)),
                            shared_caller,
                            main,
                        ],
                    ),
                    stack(0, 0.0, false, Vec::new()),
                ],
            )
        }
    }

    /// A sample resolved back to frames and values.
    #[derive(Debug, PartialEq)]
    struct Resolved {
        frames: Vec<Frame>,
        values: Vec<i64>,
        leaking: String,
        growth: i64,
    }

    fn string(profile: &Profile, index: i64) -> String {
        profile.string_table[usize::try_from(index).unwrap()].clone()
    }

    fn optional(profile: &Profile, index: i64) -> Option<String> {
        (index != 0).then(|| string(profile, index))
    }

    fn resolve(profile: &Profile) -> Vec<Resolved> {
        let location = |id: u64| profile.location.iter().find(|l| l.id == id).unwrap();
        let function = |id: u64| profile.function.iter().find(|f| f.id == id).unwrap();
        let module = |id: u64| {
            profile
                .mapping
                .iter()
                .find(|m| m.id == id)
                .map(|m| string(profile, m.filename))
        };
        let label = |sample: &Sample, key: &str| {
            sample
                .label
                .iter()
                .find(|l| string(profile, l.key) == key)
                .unwrap()
                .clone()
        };
        profile
            .sample
            .iter()
            .map(|sample| {
                let mut frames = Vec::new();
                for &id in &sample.location_id {
                    let loc = location(id);
                    if loc.line.is_empty() {
                        frames.push(Frame {
                            address: loc.address,
                            symbol: None,
                            module: module(loc.mapping_id),
                            file: None,
                            line: None,
                            inlined: false,
                            ..Default::default()
                        });
                    }
                    for (k, line) in loc.line.iter().enumerate() {
                        let f = function(line.function_id);
                        frames.push(Frame {
                            address: loc.address,
                            symbol: Some(string(profile, f.name)),
                            module: module(loc.mapping_id),
                            file: optional(profile, f.filename),
                            line: (line.line != 0).then(|| u32::try_from(line.line).unwrap()),
                            inlined: k + 1 < loc.line.len(),
                            ..Default::default()
                        });
                    }
                }
                Resolved {
                    frames,
                    values: sample.value.clone(),
                    leaking: string(profile, label(sample, "leaking").str),
                    growth: label(sample, "growth_bytes_per_second").num,
                }
            })
            .collect()
    }

    #[test]
    fn a_truncated_stack_ends_in_a_marked_frame_and_label() {
        let mut report = report();
        report.stacks[0].truncated = true;
        let profile = decode_pprof(&encode_pprof(&report).unwrap()).unwrap();
        let resolved = resolve(&profile);
        let outermost = resolved[0].frames.last().and_then(|f| f.symbol.clone());
        assert_eq!(outermost.as_deref(), Some(TRUNCATED));
        assert_eq!(resolved[0].frames.len(), report.stacks[0].frames.len() + 1);
        let truncated = |sample: &Sample| {
            sample.label.iter().any(|l| {
                string(&profile, l.key) == "truncated" && string(&profile, l.str) == "true"
            })
        };
        assert!(truncated(&profile.sample[0]));
        assert!(!truncated(&profile.sample[1]));
    }

    #[test]
    fn round_trip_keeps_the_stacks() {
        let report = report();
        let bytes = encode_pprof(&report).unwrap();
        let profile = decode_pprof(&bytes).unwrap();
        let resolved = resolve(&profile);
        let expected: Vec<Resolved> = report
            .stacks
            .iter()
            .map(|s| Resolved {
                frames: s.frames.clone(),
                values: vec![
                    i64::try_from(s.allocations).unwrap(),
                    i64::try_from(s.bytes).unwrap(),
                ],
                leaking: s.leaking.to_string(),
                growth: s.growth_bytes_per_second.round() as i64,
            })
            .collect();
        assert_eq!(resolved, expected);
        assert_eq!(resolved[0].growth, 1235);
        assert_eq!(resolved[1].growth, -3);
    }

    #[test]
    fn header_fields() {
        let profile = decode_pprof(&encode_pprof(&report()).unwrap()).unwrap();
        assert_eq!(profile.string_table[0], "");
        let types: Vec<(String, String)> = profile
            .sample_type
            .iter()
            .map(|t| (string(&profile, t.r#type), string(&profile, t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("inuse_objects".to_owned(), "count".to_owned()),
                ("inuse_space".to_owned(), "bytes".to_owned())
            ]
        );
        assert_eq!(string(&profile, profile.default_sample_type), "inuse_space");
        assert_eq!(profile.duration_nanos, 30_500_000_000);
        assert_eq!(profile.period, 512);
        let comments: Vec<String> = profile
            .comment
            .iter()
            .map(|&c| string(&profile, c))
            .collect();
        assert_eq!(comments, ["pid 77 (app)", "a probe was not placed"]);
    }

    #[test]
    fn tables_are_deduplicated() {
        let profile = build_profile(&report());
        // Locations: 0x1000 (3 lines), 0x2000, 0x3000, the libc address, 0x42, 0x2100.
        assert_eq!(profile.location.len(), 6);
        let inlined = profile
            .location
            .iter()
            .find(|l| l.address == 0x1000)
            .unwrap();
        let names: Vec<String> = inlined
            .line
            .iter()
            .map(|l| {
                let f = profile
                    .function
                    .iter()
                    .find(|f| f.id == l.function_id)
                    .unwrap();
                string(&profile, f.name)
            })
            .collect();
        assert_eq!(names, ["push", "grow", "parse"]);
        // Functions: push, grow, parse, handle (srv.c), main, handle (no file).
        assert_eq!(profile.function.len(), 6);
        let mut strings = profile.string_table.clone();
        strings.sort();
        strings.dedup();
        assert_eq!(strings.len(), profile.string_table.len());
        // Mappings: the app and libc; the app's spans its addresses.
        assert_eq!(profile.mapping.len(), 2);
        let app = &profile.mapping[0];
        assert_eq!(string(&profile, app.filename), APP);
        assert_eq!((app.memory_start, app.memory_limit), (0x1000, 0x3001));
        assert!(app.has_inline_frames && app.has_line_numbers && app.has_filenames);
        let libc = &profile.mapping[1];
        assert_eq!(string(&profile, libc.filename), LIBC);
        assert!(!libc.has_inline_frames && !libc.has_line_numbers);
        let unmapped = profile.location.iter().find(|l| l.address == 0x42).unwrap();
        assert_eq!(unmapped.mapping_id, 0);
        // Ids are 1-based and match positions.
        for (i, l) in profile.location.iter().enumerate() {
            assert_eq!(l.id, i as u64 + 1);
        }
    }

    #[test]
    fn inlined_frames_group_by_address() {
        let frames = [
            frame(1, Some("a"), None),
            located(frame(2, Some("b"), None), "f", 1, true),
            frame(2, Some("c"), None),
            // Marked inlined but the next frame has another address: a group of its own.
            located(frame(3, Some("d"), None), "f", 2, true),
            frame(4, Some("e"), None),
        ];
        let sizes: Vec<usize> = group_frames(&frames).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [1, 2, 1, 1]);
        assert!(group_frames(&[]).is_empty());
    }

    #[test]
    fn wire_tags_match_profile_proto() {
        let profile = Profile {
            string_table: vec![String::new()],
            duration_nanos: 1,
            default_sample_type: 2,
            doc_url: 3,
            ..Profile::default()
        };
        // Key byte = field number << 3 | wire type (0 varint, 2 length-delimited).
        assert_eq!(
            profile.encode_to_vec(),
            [0x32, 0x00, 0x50, 0x01, 0x70, 0x02, 0x78, 0x03]
        );
        let sample = Sample {
            location_id: vec![1, 2],
            value: vec![3],
            label: Vec::new(),
        };
        // Repeated integers are packed.
        assert_eq!(
            sample.encode_to_vec(),
            [0x0a, 0x02, 0x01, 0x02, 0x12, 0x01, 0x03]
        );
        let line = Line {
            function_id: 1,
            line: 2,
            column: 3,
        };
        assert_eq!(line.encode_to_vec(), [0x08, 0x01, 0x10, 0x02, 0x18, 0x03]);
        let mapping = Mapping {
            filename: 1,
            has_inline_frames: true,
            ..Mapping::default()
        };
        assert_eq!(mapping.encode_to_vec(), [0x28, 0x01, 0x50, 0x01]);
        let label = Label {
            key: 1,
            num: 2,
            num_unit: 3,
            ..Label::default()
        };
        assert_eq!(label.encode_to_vec(), [0x08, 0x01, 0x18, 0x02, 0x20, 0x03]);
        let location = Location {
            mapping_id: 1,
            is_folded: true,
            ..Location::default()
        };
        assert_eq!(location.encode_to_vec(), [0x10, 0x01, 0x28, 0x01]);
        let function = Function {
            filename: 1,
            start_line: 2,
            ..Function::default()
        };
        assert_eq!(function.encode_to_vec(), [0x20, 0x01, 0x28, 0x02]);
    }

    #[test]
    fn output_is_gzip() {
        let bytes = encode_pprof(&report()).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(matches!(
            decode_pprof(b"not gzip"),
            Err(PprofError::Decompress(_))
        ));
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&[0xff, 0xff, 0xff]).unwrap();
        let gzipped_garbage = encoder.finish().unwrap();
        assert!(matches!(
            decode_pprof(&gzipped_garbage),
            Err(PprofError::Decode(_))
        ));
    }
}
